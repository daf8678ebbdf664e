"""From raw head outputs to per-image detections (RVT's YOLOX postprocess).

Each anchor proposes its best class; it survives if ``objectness * class_confidence``
reaches the confidence threshold, then per-class NMS runs on that product. Detections
keep both factors because they are used separately downstream: COCO AP scores with the
class confidence alone, and LEOD's pseudo-label filter thresholds objectness and class
confidence independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from leod.labels.boxes import empty_boxes
from leod.model.box_ops import cxcywh_to_xyxy
from leod.model.head import RawPredictions
from leod.model.nms import batched_nms


@dataclass(frozen=True)
class Detections:
    """Detections of one image, sorted by decreasing score (all CPU-or-device tensors)."""

    boxes: Tensor  # (K, 4) float32 x1, y1, x2, y2 in input pixels
    scores: Tensor  # (K,) objectness * class_confidence
    class_confidence: Tensor  # (K,)
    objectness: Tensor  # (K,)
    labels: Tensor  # (K,) int64 class ids

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to_box_array(self, t_us: int) -> np.ndarray:
        """As :data:`leod.labels.boxes.BOX_DTYPE` rows at time ``t_us``, in input pixels (not
        clipped to the frame)."""
        out = empty_boxes(len(self))
        xyxy = self.boxes.detach().float().cpu().numpy()
        out["t"] = t_us
        out["x"], out["y"] = xyxy[:, 0], xyxy[:, 1]
        out["w"], out["h"] = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
        out["class_id"] = self.labels.cpu().numpy()
        out["class_confidence"] = self.class_confidence.detach().float().cpu().numpy()
        out["objectness"] = self.objectness.detach().float().cpu().numpy()
        return out


@torch.no_grad()
def postprocess(preds: RawPredictions, conf_threshold: float, nms_iou: float) -> list[Detections]:
    """Threshold and NMS every image of ``preds``."""
    obj = preds.obj_logits.float().sigmoid()
    class_conf, labels = preds.cls_logits.float().sigmoid().max(dim=-1)
    scores = obj * class_conf
    boxes = cxcywh_to_xyxy(preds.boxes)
    out = []
    for b in range(len(preds)):
        sel = (scores[b] >= conf_threshold).nonzero().squeeze(1)
        keep = sel[batched_nms(boxes[b, sel], scores[b, sel], labels[b, sel], nms_iou)]
        out.append(
            Detections(
                boxes=boxes[b, keep],
                scores=scores[b, keep],
                class_confidence=class_conf[b, keep],
                objectness=obj[b, keep],
                labels=labels[b, keep],
            )
        )
    return out
