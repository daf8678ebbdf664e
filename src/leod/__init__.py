"""LEOD: label-efficient object detection on event cameras, as a reproducible pipeline.

The package holds all logic; the scripts in ``stages/`` only parse arguments and do I/O.
"""

__version__ = "0.1.0"
