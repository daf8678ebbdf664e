"""The RVT recurrent event-camera detector with LEOD's ignore-aware YOLOX loss.

Layout: :mod:`config` (params section ``model`` and size presets), :mod:`maxvit` and
:mod:`convlstm` (the backbone's attention and memory), :mod:`backbone`, :mod:`blocks`,
:mod:`pafpn`, :mod:`head` (decoded predictions), :mod:`targets` (training target format),
:mod:`simota` (assignment), :mod:`losses`, :mod:`nms`, :mod:`postprocess` and
:mod:`detector`, which wires them into :class:`RecurrentDetector`.

Import from the submodules: this file imports nothing, so that reading the ``model``
params section (``leod.model.config``) does not load torch and the whole detector.
"""
