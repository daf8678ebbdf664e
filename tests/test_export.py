"""ONNX export: onnxruntime reproduces the PyTorch model frame by frame on real events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leod.events import open_recording
from leod.export.onnx import OPSET, RecurrentStep, export_onnx, state_names, state_shapes
from leod.model.config import ModelConfig
from leod.model.detector import RecurrentDetector
from leod.model.head import RawPredictions
from leod.model.postprocess import postprocess
from leod.preprocess.histogram import stacked_histograms

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-events" / "expelliarmus_evt2_sample.raw"
needs_real = pytest.mark.skipif(not REAL.is_file(), reason="../shared/real-events not present")
FRAMES = 30


def _real_frames() -> np.ndarray:
    """30 overlapping 5 ms windows (1.5 ms apart) of a real 640x480 EVT2 recording, at half size."""
    reader = open_recording(REAL)
    events = reader.read_all()
    ends = int(events.t[0]) + 5000 + 1500 * np.arange(FRAMES)
    frames = stacked_histograms(events, ends, 5000, reader.height, reader.width, 10, 10, downsample=True)
    return frames.astype(np.float32)


def _detections(decoded: np.ndarray) -> list:
    """The exported output through the model's postprocess (same thresholds, same NMS)."""
    out = torch.from_numpy(np.ascontiguousarray(decoded))
    preds = RawPredictions(
        boxes=out[..., :4],
        obj_logits=torch.logit(out[..., 4]),
        cls_logits=torch.logit(out[..., 5:]),
        anchors=None,
    )
    return postprocess(preds, 0.1, 0.45)


def _sorted(dets) -> torch.Tensor:
    """``[label, x1, y1, x2, y2, score]`` rows in a fixed order (equal scores may sort either way)."""
    rows = torch.cat([dets.labels[:, None].float(), dets.boxes, dets.scores[:, None]], dim=1)
    order = np.lexsort(np.round(rows.numpy()[:, ::-1], 2).T)
    return rows[torch.from_numpy(order)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default ``nano`` model with every LayerScale active (U(0.25, 1), not the 1e-5 init)
    and random objectness/class predictors (spread scores, many above the threshold),
    exported at the frames' size, and an onnxruntime session on it."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset="nano")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.25, 1.0)
            if name.startswith(("head.obj_preds", "head.cls_preds")):
                p.normal_(0.0, 1.0)
    frames = _real_frames()
    path = tmp_path_factory.mktemp("onnx") / "nano.onnx"
    export_onnx(model, path, *frames.shape[-2:])
    return model, frames, path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@needs_real
def test_onnxruntime_streams_like_pytorch(exported):
    model, frames, _, session = exported
    height, width = frames.shape[-2:]
    names = state_names(4)
    step = RecurrentStep(model)
    ort_states = [np.zeros(s, np.float32) for s in state_shapes(model, height, width)]
    pt_states = [torch.zeros(s) for s in state_shapes(model, height, width)]
    worst_box = worst_score = 0.0
    for t in range(FRAMES):
        got = session.run(None, {"events": frames[t : t + 1], **dict(zip(names, ort_states, strict=True))})
        with torch.no_grad():
            want = [w.numpy() for w in step(torch.from_numpy(frames[t : t + 1]), *pt_states)]
        ort_states, pt_states = got[1:], [torch.from_numpy(w) for w in want[1:]]
        worst_box = max(worst_box, np.abs(got[0][..., :4] - want[0][..., :4]).max())
        worst_score = max(worst_score, np.abs(got[0][..., 4:] - want[0][..., 4:]).max())
        ours, theirs = _detections(got[0])[0], _detections(want[0])[0]
        assert len(ours) == len(theirs) > 0
        torch.testing.assert_close(_sorted(ours), _sorted(theirs), rtol=0, atol=1e-4)
    assert worst_box < 1e-4 and worst_score < 1e-4, (worst_box, worst_score)


@pytest.mark.slow
@needs_real
def test_batch_is_dynamic_and_io_is_declared(exported):
    import onnx

    model, frames, path, session = exported
    height, width = frames.shape[-2:]
    graph = onnx.load(str(path))
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    assert [i.name for i in session.get_inputs()] == ["events", *state_names(4)]
    assert [o.name for o in session.get_outputs()] == ["detections", *[f"{n}_out" for n in state_names(4)]]
    zeros = [np.zeros(s, np.float32) for s in state_shapes(model, height, width, batch=3)]
    batched = session.run(None, {"events": frames[:3], **dict(zip(state_names(4), zeros, strict=True))})
    assert batched[0].shape == (3, sum((256 // s) * (320 // s) for s in (8, 16, 32)), 5 + 2)  # padded 256x320
    for b in range(3):
        single = session.run(
            None,
            {"events": frames[b : b + 1], **{n: z[:1] for n, z in zip(state_names(4), zeros, strict=True)}},
        )
        np.testing.assert_allclose(batched[0][b], single[0][0], rtol=0, atol=1e-4)


def test_export_cli_bad_model_folder(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leod",
            "export",
            "--model",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "m.onnx"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'none'}: no trained model here")
    )
    assert not (tmp_path / "m.onnx").exists()
