"""The RVT recurrent event-camera detector with LEOD's ignore-aware YOLOX loss.

:mod:`~leod.model.detector` wires backbone (:mod:`maxvit`, :mod:`convlstm`), :mod:`pafpn` and
:mod:`head` into :class:`RecurrentDetector`; :mod:`targets`, :mod:`simota` and :mod:`losses`
train it, :mod:`nms` and :mod:`postprocess` read its output. Import from the submodules:
this file imports nothing, so that reading the ``model`` params section
(``leod.model.config``) does not load torch.
"""
