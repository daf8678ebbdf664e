"""The training-target format of the detector loss: padded per-sample boxes with flags.

For a batch of ``B`` supervised frames, ``N`` is the largest box count among them and
shorter samples are padded. Rows are ``(cx, cy, w, h)`` in input pixels of the unpadded
frame (the model pads bottom/right only, so these are also padded-frame pixels).

``ignore`` marks boxes that must neither be learned as objects nor as background (LEOD's
low-confidence or short-track pseudo labels, class 1024 there): they take no part in the
label assignment, and anchors in their centre region (and in no valid box's) get no
objectness loss. Ignored boxes may carry any class id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from leod.plumbing.errors import DataFormatError


@dataclass(frozen=True)
class BoxTargets:
    """Padded ground truth for ``B`` frames."""

    boxes: Tensor  # (B, N, 4) float32 cx, cy, w, h
    labels: Tensor  # (B, N) int64 class ids
    ignore: Tensor  # (B, N) bool
    valid: Tensor  # (B, N) bool, False on padding rows

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> BoxTargets:
        return BoxTargets(*(t.to(device) for t in (self.boxes, self.labels, self.ignore, self.valid)))

    def check(self, num_classes: int) -> None:
        """Raise :class:`DataFormatError` for out-of-range classes of supervised boxes."""
        supervised = self.valid & ~self.ignore
        bad = supervised & ((self.labels < 0) | (self.labels >= num_classes))
        if bad.any():
            sample, row = (int(v) for v in bad.nonzero()[0])
            raise DataFormatError(
                f"detector targets: sample {sample} box {row} has class id {int(self.labels[sample, row])}, "
                f"outside [0, {num_classes}) (mark it ignore or fix the label map)"
            )
        if not torch.isfinite(self.boxes[self.valid]).all():
            raise DataFormatError("detector targets: non-finite box coordinates")

    @classmethod
    def from_list(
        cls,
        boxes: Sequence[Tensor],
        labels: Sequence[Tensor],
        ignore: Sequence[Tensor] | None = None,
    ) -> BoxTargets:
        """Pad per-sample ``(N_i, 4)`` centre boxes, ``(N_i,)`` labels and optional ignore flags."""
        if len(boxes) != len(labels) or (ignore is not None and len(ignore) != len(boxes)):
            raise ValueError("boxes, labels and ignore must list the same number of samples")
        batch = len(boxes)
        n_max = max((len(b) for b in boxes), default=0)
        device = boxes[0].device if batch else torch.device("cpu")
        out_boxes = torch.zeros(batch, n_max, 4, device=device)
        out_labels = torch.zeros(batch, n_max, dtype=torch.int64, device=device)
        out_ignore = torch.zeros(batch, n_max, dtype=torch.bool, device=device)
        out_valid = torch.zeros(batch, n_max, dtype=torch.bool, device=device)
        for i in range(batch):
            n = len(boxes[i])
            out_boxes[i, :n] = boxes[i].reshape(n, 4)
            out_labels[i, :n] = labels[i]
            out_valid[i, :n] = True
            if ignore is not None:
                out_ignore[i, :n] = ignore[i]
        return cls(out_boxes, out_labels, out_ignore, out_valid)

    @classmethod
    def from_box_arrays(cls, arrays: Sequence[np.ndarray], scale: float = 1.0) -> BoxTargets:
        """From per-frame :data:`leod.labels.boxes.BOX_DTYPE` arrays (top-left boxes).

        ``scale`` multiplies the coordinates (0.5 when the representation is downsampled,
        as RVT does for 1Mpx); the ``ignore`` field becomes the ignore flag.
        """
        boxes, labels, ignore = [], [], []
        for arr in arrays:
            x, y = arr["x"].astype(np.float32), arr["y"].astype(np.float32)
            w, h = arr["w"].astype(np.float32), arr["h"].astype(np.float32)
            centre_boxes = np.stack([x + w / 2, y + h / 2, w, h], axis=1) * np.float32(scale)
            boxes.append(torch.from_numpy(centre_boxes.reshape(-1, 4)))
            labels.append(torch.from_numpy(arr["class_id"].astype(np.int64)))
            ignore.append(torch.from_numpy(arr["ignore"].astype(bool)))
        return cls.from_list(boxes, labels, ignore)
