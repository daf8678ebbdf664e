"""Running a detector over a preprocessed dataset (dataset.py) or any event recording (recording.py)."""
