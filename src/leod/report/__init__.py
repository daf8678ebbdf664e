"""The self-training report: one table, one CSV and three figures over every run of the pipeline.

It reads what the other stages left behind and never recomputes a metric. The package
imports nothing itself, so a caller loads only what it uses: ``rows`` (the metrics files of
each run) and ``tables`` (text tables) need neither matplotlib nor h5py, which only
``figures`` (matplotlib), ``frames`` (example frames from the dataset) and ``document``
(the whole report: markdown, CSV, figures) load.
"""
