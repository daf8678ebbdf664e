"""The full recurrent detector: RVT backbone -> YOLOX PAFPN -> YOLOX head.

The model is stepped one event representation at a time; the LSTM states carry the history
and belong to the caller, who resets them when a new sequence starts and detaches them
between training batches. Frames go in unpadded; padding to the backbone's multiple is
bottom/right only, so all boxes in and out are in unpadded-frame pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from leod.model.backbone import RecurrentBackbone, pad_to_multiple
from leod.model.config import ModelConfig
from leod.model.convlstm import LstmStates, detach_states, reset_states
from leod.model.head import RawPredictions, YOLOXHead
from leod.model.losses import LossTerms, yolox_loss
from leod.model.pafpn import PAFPN
from leod.model.postprocess import Detections, postprocess
from leod.model.targets import BoxTargets
from leod.plumbing.errors import DataFormatError


class RecurrentDetector(nn.Module):
    """RVT + YOLOX detector built from a :class:`ModelConfig`."""

    reset = staticmethod(reset_states)
    detach = staticmethod(detach_states)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = RecurrentBackbone(cfg)
        in_dims = cfg.fpn_in_dims
        self.fpn = PAFPN((in_dims[0], in_dims[1], in_dims[2]), cfg.bottlenecks_per_csp)
        self.head = YOLOXHead(cfg.num_classes, in_dims, cfg.fpn_strides, cfg.head_hidden)

    def _check_frames(self, x: Tensor, ndim: int, what: str) -> None:
        if x.ndim != ndim or x.shape[-3] != self.cfg.in_channels:
            raise DataFormatError(
                f"detector input {what}: expected {ndim} dims with {self.cfg.in_channels} channels at dim "
                f"-3 (model.in_channels), got shape {tuple(x.shape)}"
            )

    def forward_backbone(self, x: Tensor, states: LstmStates | None) -> tuple[list[Tensor], LstmStates]:
        """One time step of the backbone: ``x (B, C, H, W)`` -> FPN input features, new states."""
        self._check_frames(x, 4, "frame")
        return self.backbone(pad_to_multiple(x, self.cfg.pad_multiple), states)

    def forward_detect(self, features: list[Tensor]) -> RawPredictions:
        """Neck and head on backbone features (any batch of frames)."""
        return self.head(self.fpn(features))

    def forward_step(self, x: Tensor, states: LstmStates | None) -> tuple[RawPredictions, LstmStates]:
        """Streaming step: predictions for frame ``x`` and the states to pass to the next step."""
        features, states = self.forward_backbone(x, states)
        return self.forward_detect(features), states

    forward = forward_step

    # Training follows RVT: the backbone runs over every time step (stage by stage, see
    # RecurrentBackbone.forward), the neck and head once, on the supervised (time, sample)
    # pairs only, so unlabelled frames only feed the memory.
    def forward_sequence(
        self, frames: Tensor, states: LstmStates | None, supervised: Tensor
    ) -> tuple[RawPredictions | None, LstmStates]:
        """Run ``frames (T, B, C, H, W)``; predict only where ``supervised (T, B)`` is True.

        Predictions come in the order of ``supervised.nonzero()`` (time-major, then sample),
        which is the order the caller must give the matching targets in. Returns None for
        the predictions when nothing is supervised.
        """
        self._check_frames(frames, 5, "sequence")
        if tuple(supervised.shape) != tuple(frames.shape[:2]):
            raise ValueError(f"supervised mask {tuple(supervised.shape)} does not match frames (T, B)")
        features, states = self.backbone(pad_to_multiple(frames, self.cfg.pad_multiple), states)
        rows = supervised.to(torch.bool).cpu().flatten().nonzero().squeeze(1)  # t * B + b, time-major
        if not rows.numel():
            return None, states
        levels = [f.flatten(0, 1) for f in features]
        if rows.numel() < supervised.numel():  # else every frame is supervised: take them all
            rows = rows.to(frames.device)
            levels = [f.index_select(0, rows) for f in levels]
        return self.forward_detect(levels), states

    def loss(self, preds: RawPredictions, targets: BoxTargets) -> LossTerms:
        """YOLOX loss with ignore flags, weighted as configured."""
        cfg = self.cfg
        return yolox_loss(preds, targets, cfg.reg_weight, cfg.obj_weight, cfg.cls_weight)

    def predict(
        self, preds: RawPredictions, conf_threshold: float | None = None, nms_iou: float | None = None
    ) -> list[Detections]:
        """Per-image detections; thresholds default to the config's."""
        return postprocess(
            preds,
            self.cfg.confidence_threshold if conf_threshold is None else conf_threshold,
            self.cfg.nms_iou if nms_iou is None else nms_iou,
        )
