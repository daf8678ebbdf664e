"""Detection on recordings: format, time order, window count, bounded memory, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leod.config import load_params
from leod.detect.recording import DetectOptions, detect_recording
from leod.events.reader import open_recording
from leod.labels.boxes import EVALUATOR_DTYPE
from leod.model import RecurrentDetector
from leod.training.model_files import load_model, save_model

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real-events"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real-events not present")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A folder with the default (nano) model, its class/objectness predictors randomised;
    untrained features barely vary, so a bias of -0.5 passes most anchors, -1 none."""
    params = load_params(REPO / "params.yaml")
    torch.manual_seed(0)
    model = RecurrentDetector(params.model_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("head.obj_preds", "head.cls_preds")):
                p.normal_(0.0, 1.0) if name.endswith("weight") else p.fill_(-0.5)
    path = tmp_path_factory.mktemp("models") / "nano"
    save_model(path, model, params, {})
    return path


def _expected_windows(path: Path, window_us: int, size: tuple[int, int] | None = None) -> tuple[int, int]:
    events = open_recording(path, *(size or (None, None))).read_all()
    first_end = int(events.t[0]) // window_us * window_us + window_us
    return (int(events.t[-1]) - first_end) // window_us + 1, first_end


@needs_real
@pytest.mark.parametrize(
    ("name", "half", "size"),
    [
        ("expelliarmus_evt3_sample.raw", True, None),  # 1280x720 EVT3 at half size
        ("expelliarmus_evt2_sample.raw", True, None),  # 640x480 EVT2
        ("tonic_sample_ncars.dat", False, (64, 96)),  # DAT without a stated size
    ],
)
def test_detect_real_recordings(model_dir, name, half, size):
    model, info = load_model(model_dir)
    window_us = 2000
    if name.startswith("expelliarmus"):  # thousands of boxes per frame would only time the NMS
        with torch.no_grad():
            for conv in (*model.head.obj_preds, *model.head.cls_preds):
                conv.bias.fill_(-1.0)
    opts = DetectOptions(
        window_ms=window_us / 1000, half_resolution=half, height=size and size[0], width=size and size[1]
    )
    done = detect_recording(REAL / name, model, info, opts, progress=False)
    frames, first_end = _expected_windows(REAL / name, window_us, size)
    assert done.frames == frames > 0
    boxes = done.boxes
    assert boxes.dtype == EVALUATOR_DTYPE and (len(boxes) > 0) == name.startswith("tonic")
    assert np.all(np.diff(boxes["t"]) >= 0)
    assert set(np.unique(boxes["t"]).tolist()) <= set(
        range(first_end, first_end + frames * window_us, window_us)
    )
    assert np.all(boxes["class_id"] < 2) and np.all(boxes["x"] + boxes["w"] / 2 < 96)
    assert np.all(boxes["class_id"] < 2) and np.all(
        (boxes["class_confidence"] > 0) & (boxes["class_confidence"] <= 1)
    )
