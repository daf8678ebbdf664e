"""Models from outside the pipeline: published RVT / LEOD Lightning checkpoints.

:mod:`unpickle` reads a checkpoint without running code from it; :mod:`rvt_import` maps
RVT's parameter layout onto :class:`leod.model.RecurrentDetector` and writes a model folder.
"""
