"""The RVT recurrent event-camera detector with LEOD's ignore-aware YOLOX loss.

Layout: :mod:`config` (params section ``model`` and size presets), :mod:`maxvit` and
:mod:`convlstm` (the backbone's attention and memory), :mod:`backbone`, :mod:`blocks`,
:mod:`pafpn`, :mod:`head` (decoded predictions), :mod:`targets` (training target format),
:mod:`simota` (assignment), :mod:`losses`, :mod:`nms`, :mod:`postprocess` and
:mod:`detector`, which wires them into :class:`RecurrentDetector`.
"""

from leod.model.config import PRESETS, ModelConfig
from leod.model.convlstm import LstmStates, detach_states, reset_states
from leod.model.detector import RecurrentDetector
from leod.model.head import RawPredictions
from leod.model.losses import LossTerms
from leod.model.postprocess import Detections
from leod.model.targets import BoxTargets

__all__ = [
    "PRESETS",
    "BoxTargets",
    "Detections",
    "LossTerms",
    "LstmStates",
    "ModelConfig",
    "RawPredictions",
    "RecurrentDetector",
    "detach_states",
    "reset_states",
]
