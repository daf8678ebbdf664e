"""Device choice and mixed precision: CUDA when present (bf16 autocast), else CPU fp32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from leod.errors import ConfigError


def pick_device(choice: str) -> torch.device:
    """``auto`` takes the GPU when one is visible; asking for ``cuda`` without one is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params key 'train.device' = 'cuda' but no CUDA device is visible")
    return torch.device(choice)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CUDA when enabled (no loss scaling needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            yield
    else:
        yield
