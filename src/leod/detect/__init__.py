"""Detection on any event recording, outside the dataset layout (:mod:`leod.detect.recording`)."""
