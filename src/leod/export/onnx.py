"""The detector as an ONNX graph of one recurrent step, with its LSTM memory as explicit I/O.

Inputs: ``events (B, C, H, W)`` float32 histograms at the model's input size (the graph pads)
and ``h{s}, c{s}`` per stage, channels-last ``(B, H_s, W_s, C_s)``; zeros start a sequence.
Outputs: ``detections (B, A, 5 + K)`` = ``[cx, cy, w, h, objectness, class scores...]`` in
input pixels, then the new states ``h{s}_out, c{s}_out`` to feed back. NMS is left to the
caller (:func:`leod.model.postprocess.postprocess` semantics).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from leod.config import load_params
from leod.labels.boxes import representation_size
from leod.model import maxvit
from leod.model.backbone import pad_to_multiple
from leod.model.detector import RecurrentDetector
from leod.plumbing.atomic import atomic_path
from leod.plumbing.errors import DataFormatError, LeodError

#: ONNX opset of the exported graph (LayerNormalization needs >= 17)
OPSET = 18


def state_names(num_stages: int) -> list[str]:
    return [f"{k}{s}" for s in range(num_stages) for k in ("h", "c")]


def state_shapes(model: RecurrentDetector, height: int, width: int, batch: int = 1) -> list[tuple[int, ...]]:
    """Shapes of ``h0, c0, h1, ...`` for inputs of ``height x width``."""
    mult = model.cfg.pad_multiple
    hp, wp = -(-height // mult) * mult, -(-width // mult) * mult
    shapes = []
    for stride, dim in zip((4, 8, 16, 32), model.cfg.stage_dims, strict=True):
        shapes += [(batch, hp // stride, wp // stride, dim)] * 2
    return shapes


class RecurrentStep(nn.Module):
    """``(events, h0, c0, ..., h3, c3) -> (detections, h0', c0', ..., h3', c3')``."""

    def __init__(self, model: RecurrentDetector, raw: bool = False) -> None:
        super().__init__()
        self.model = model
        self.raw = raw
        self.eval()

    def forward(self, events: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        pairs = [(states[i], states[i + 1]) for i in range(0, len(states), 2)]
        padded = pad_to_multiple(events, model.cfg.pad_multiple)
        features, new_states = model.backbone(padded, pairs)
        fpn = model.fpn(features)
        if self.raw:
            out = model.head.raw(fpn)
        else:
            preds = model.head(fpn)
            out = torch.cat(
                [preds.boxes, preds.obj_logits.sigmoid()[..., None], preds.cls_logits.sigmoid()], -1
            )
        return (out, *[t for pair in new_states for t in pair])


def export_onnx(model: RecurrentDetector, out: Path, height: int, width: int, raw: bool = False) -> None:
    """Write ``out`` (atomically): one recurrent step at ``height x width``, dynamic batch.

    The spatial size is fixed (attention partitions and the anchor grid follow from it);
    ``raw=True`` outputs the undecoded head ``[reg(4), obj logit, cls logits]`` instead.
    """
    step = RecurrentStep(model, raw)
    events = torch.zeros(2, model.cfg.in_channels, height, width)
    states = [torch.zeros(s) for s in state_shapes(model, height, width, batch=2)]
    names = state_names(len(states) // 2)
    batch = {0: torch.export.Dim("batch", min=1, max=1024)}
    with atomic_path(out) as tmp:
        try:
            torch.onnx.export(
                step,
                (events, *states),
                str(tmp),
                input_names=["events", *names],
                output_names=["detections", *[f"{n}_out" for n in names]],
                dynamic_shapes=(batch, tuple(batch for _ in states)),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:
            raise LeodError(f"{out}: ONNX export failed ({type(exc).__name__}: {exc})") from exc
        finally:
            # the token-order index caches now hold tensors made while tracing; drop them so
            # the eager model builds real ones again
            maxvit._reorder_index.cache_clear()
            maxvit._spatial_index.cache_clear()


def model_input_size(info: dict, params_path: Path) -> tuple[int, int]:
    """``(H, W)`` of the model's input histograms: ``input_size`` of an imported model's
    ``model.json``, else the params' dataset (halved where it downsamples, as RVT's 1Mpx)."""
    size = info.get("input_size")
    if size is not None:
        if not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
        ):
            raise DataFormatError(f"model.json: 'input_size' must be [height, width], got {size!r}")
        return size[0], size[1]
    preset = load_params(params_path).preset
    return representation_size(preset.height, preset.width, preset.downsample)


def check_onnx(path: Path, model: RecurrentDetector, height: int, width: int, raw: bool = False) -> float:
    """Largest difference between onnxruntime and PyTorch on two steps of random counts."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    step = RecurrentStep(model, raw)
    names = state_names(len(model.cfg.stage_dims))
    gen = torch.Generator().manual_seed(0)
    states = [torch.zeros(s) for s in state_shapes(model, height, width)]
    worst = 0.0
    for _ in range(2):
        events = torch.randint(0, 11, (1, model.cfg.in_channels, height, width), generator=gen).float()
        got = session.run(
            None, {"events": events.numpy(), **{n: s.numpy() for n, s in zip(names, states, strict=True)}}
        )
        with torch.no_grad():
            want = step(events, *states)
        states = list(want[1:])
        worst = max(worst, *(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True)))
    return worst
