"""Readers and writers of event-camera recordings, one module per file format."""
