"""A plain torch stacked histogram, written the way RVT computes it: the oracle for tests and benchmark.

It follows RVT's ``StackedHistogram.construct`` (fastmode) step by step, slow but obviously
right: int64 tensors, float32 time normalisation, one flat ``put_(..., accumulate=True)`` into
a uint8 tensor (``put_`` is the flat form of ``index_put_``), clamp. Downsampling is RVT's
``interpolate(scale_factor=0.5, mode='nearest-exact')`` on the finished histogram. Production
code uses :mod:`leod.preprocess.histogram`, which must equal this bit for bit.
"""

from __future__ import annotations

import torch

from leod.events.types import Events


def reference_histogram(
    t: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    p: torch.Tensor,
    height: int,
    width: int,
    nbins: int,
    count_cutoff: int,
) -> torch.Tensor:
    """RVT's histogram of one sorted window given as int64 tensors: ``uint8 (2*nbins, height, width)``."""
    hist = torch.zeros((2, nbins, height, width), dtype=torch.uint8)
    if t.numel() > 0:
        # int64 tensor / int64 tensor is a float32 true division in torch, exactly as in RVT
        t_norm = (t - t[0]) / max(t[-1] - t[0], 1) * nbins
        t_idx = torch.clamp(t_norm.floor(), max=nbins - 1).long()
        index = x + width * y + height * width * t_idx + nbins * height * width * p
        hist.put_(index, torch.ones_like(index, dtype=torch.uint8), accumulate=True)
    return torch.clamp(hist, min=0, max=min(count_cutoff, 255)).reshape(2 * nbins, height, width)


def reference_downsample(hist: torch.Tensor) -> torch.Tensor:
    """RVT's ``_ds2_nearest`` step: nearest-exact interpolation of a ``(C, H, W)`` histogram at 0.5x."""
    return torch.nn.functional.interpolate(hist[None], scale_factor=0.5, mode="nearest-exact")[0]


def reference_stacked_histogram(
    events: Events, height: int, width: int, nbins: int, count_cutoff: int, downsample: bool = False
) -> torch.Tensor:
    """:func:`reference_histogram` of an :class:`Events` window, optionally downsampled like RVT."""
    t, x, y, p = (torch.from_numpy(col.astype("int64")) for col in (events.t, events.x, events.y, events.p))
    hist = reference_histogram(t, x, y, p, height, width, nbins, count_cutoff)
    return reference_downsample(hist) if downsample else hist
