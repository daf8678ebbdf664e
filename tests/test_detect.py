"""Detection on recordings: format, time order, window count, bounded memory, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leod.config import load_params
from leod.detect.recording import DetectOptions, detect_recording
from leod.events import open_recording
from leod.events.dat import write_dat
from leod.events.types import Events
from leod.labels.boxes import EVALUATOR_DTYPE
from leod.model.detector import RecurrentDetector
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
    save_model(path, model.state_dict(), params, {})
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


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leod", *map(str, args)], capture_output=True, text=True)


@needs_real
def test_detect_cli_refuses_a_size_the_model_cannot_take(model_dir, tmp_path):
    fixed = tmp_path / "gen1-sized"
    shutil.copytree(model_dir, fixed)
    info = json.loads((fixed / "model.json").read_text())
    (fixed / "model.json").write_text(json.dumps({**info, "input_size": [240, 304]}))
    rec, out = REAL / "tonic_sample_ncars.dat", tmp_path / "boxes.npy"
    done = _cli("detect", rec, "--model", fixed, "--out", out, "--height", 64, "--width", 96)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {rec}: histograms of 64x96 but the model takes 240x304 "
        "(use --half-resolution for a 1Mpx recording and a 1Mpx model)"
    )
    assert not out.exists()


def _peak_rss_mb(*args: object) -> float:
    # VmHWM, not ru_maxrss: Linux carries the spawning process's high-water mark across exec
    # into ru_maxrss, so the test's own event arrays would count
    code = (
        "import sys; from leod.plumbing.cli import main; rc = main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print(int(hwm.split()[1]) / 1024); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from Linux's /proc")
def test_detect_memory_does_not_grow_with_length(tmp_path):
    """Peak RSS of 1 and 10 minutes of events at the same rate (20k ev/s) differ by < 10%."""
    params = load_params(REPO / "params.yaml")
    torch.manual_seed(0)
    model_dir = tmp_path / "nano"
    save_model(model_dir, RecurrentDetector(params.model_config).state_dict(), params, {})  # untrained
    rng = np.random.default_rng(0)
    peaks = []
    for minutes in (1, 10):
        n = minutes * 60 * 20_000
        t = np.sort(rng.integers(0, minutes * 60_000_000, n)).astype(np.int64)
        xy = (rng.integers(0, 128, n).astype(np.uint16), rng.integers(0, 96, n).astype(np.uint16))
        events = Events(t, *xy, rng.integers(0, 2, n).astype(np.uint8))
        write_dat(tmp_path / "rec.dat", events, 96, 128)
        del events, t, xy
        args = ("detect", tmp_path / "rec.dat", "--model", model_dir, "--out", tmp_path / "b.npy")
        peaks.append(_peak_rss_mb(*args, "--window-ms", 500, "--no-progress"))
    assert abs(peaks[1] - peaks[0]) < 0.1 * peaks[0], peaks
