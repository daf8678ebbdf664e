"""The training-target format of the detector loss: padded per-sample boxes with flags.

For a batch of ``B`` supervised frames, ``N`` is the largest box count among them and shorter
samples are padded. Rows are ``(cx, cy, w, h)`` in unpadded-frame input pixels (the model
pads bottom/right only). ``ignore`` boxes (LEOD's low-confidence or short-track pseudo
labels) take no part in label assignment and silence the objectness loss in their centre
region (see :mod:`leod.model.losses`); they may carry any class id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
