"""Device choice and mixed precision: CUDA when present (bf16 or fp16 autocast), else CPU fp32.

Two optional speed-ups apply on CUDA only (CPU results stay as they are): channels-last
convolutions and ``torch.compile`` of the backbone, neck and head (compiled in place, so
the weights keep their names).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from leod.plumbing.errors import ConfigError
from leod.training.config import TrainConfig

#: the first compute capability with bf16 units (Ampere: A100, RTX 30xx, and later). bf16's
#: range equals fp32's, so no loss scaling; older GPUs (V100, T4) compute in fp16, whose
#: small range underflows small gradients, so training scales the loss there.
BF16_CAPABILITY = (8, 0)


def pick_device(choice: str) -> torch.device:
    """``auto`` takes the GPU when one is visible; asking for ``cuda`` without one is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params key 'train.device' = 'cuda' but no CUDA device is visible")
    return torch.device(choice)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype: bf16 on Ampere and newer, fp16 on older GPUs, None (fp32) on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= BF16_CAPABILITY else torch.float16


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast; a disabled scaler (a no-op pass-through) otherwise."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device, enabled) == torch.float16)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """Autocast in :func:`amp_dtype` on CUDA when enabled; a no-op on CPU."""
    dtype = amp_dtype(device, enabled)
    if dtype is None:
        yield
    else:
        with torch.autocast("cuda", dtype=dtype):
            yield


def prepare_for_gpu(model: torch.nn.Module, device: torch.device, tcfg: TrainConfig) -> None:
    """``train.channels_last`` and ``train.compile`` on CUDA (in place); nothing on CPU."""
    if device.type != "cuda":
        return
    if tcfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if tcfg.compile:
        for part in model.children():
            part.compile()
