"""The embedded synthetic event-camera dataset (ESIM-style simulation of moving objects)."""
