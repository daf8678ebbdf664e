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
from leod.plumbing.cli import main
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
    """Peak RSS of 10 minutes of events is within 10% of 1 minute's at the same rate (20k ev/s).

    One-sided: the short run's peak alone moves by ~15% between runs on a loaded machine; holding
    all 12M events of the long one would add ~150 MB (> 30%). Windows of 2 s (300 and 30 frames
    through the model) keep it short; a read chunk (2^18 events, 13 s here) still bounds a step."""
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
        peaks.append(_peak_rss_mb(*args, "--window-ms", 2000, "--no-progress"))
    assert peaks[1] < 1.1 * peaks[0], peaks


@pytest.fixture(scope="module")
def small_recording(tmp_path_factory) -> Path:
    """0.3 s of random events (20k ev/s) on a 128x96 sensor, as DAT: 5 whole windows of 50 ms."""
    rng = np.random.default_rng(1)
    n = 6_000
    t = np.sort(rng.integers(0, 300_000, n)).astype(np.int64)
    xy = (rng.integers(0, 128, n).astype(np.uint16), rng.integers(0, 96, n).astype(np.uint16))
    path = tmp_path_factory.mktemp("rec") / "small.dat"
    write_dat(path, Events(t, *xy, rng.integers(0, 2, n).astype(np.uint8)), 96, 128)
    return path


#: Runs the CLI with imageio-ffmpeg made unimportable, as on a machine without it.
NO_FFMPEG = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'imageio_ffmpeg':\n"
    "            raise ModuleNotFoundError(name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "from leod.plumbing.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _read_video(path: Path) -> tuple[tuple[int, int], list[np.ndarray]]:
    """(width, height) and the RGB frames of an MP4 or GIF."""
    if path.suffix == ".mp4":
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        return (w, h), [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    from PIL import Image, ImageSequence

    with Image.open(path) as gif:
        return gif.size, [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]


@pytest.mark.parametrize("ffmpeg", [True, False], ids=["mp4", "gif-fallback"])
def test_detect_video_has_a_frame_per_window_and_keeps_the_boxes(
    model_dir, small_recording, tmp_path, ffmpeg
):
    args = ["detect", str(small_recording), "--model", str(model_dir), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "plain.npy")]) == 0
    out = ["--out", str(tmp_path / "b.npy"), "--video", str(tmp_path / "v.mp4")]
    if ffmpeg:
        assert main([*args, *out]) == 0
    else:  # a fresh interpreter where imageio-ffmpeg cannot be imported
        done = subprocess.run([sys.executable, "-c", NO_FFMPEG, *args, *out], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"wrote {tmp_path / 'v.gif'} (imageio-ffmpeg missing: GIF)" in done.stdout
    video = tmp_path / ("v.mp4" if ffmpeg else "v.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["plain.npy", "b.npy", video.name])
    boxes = np.load(tmp_path / "b.npy")
    assert np.array_equal(boxes, np.load(tmp_path / "plain.npy")) and len(boxes) > 0  # video changes nothing
    (width, height), frames = _read_video(video)
    windows, _ = _expected_windows(small_recording, 50_000)
    assert len(frames) == windows == len(np.unique(boxes["t"])) == 5
    assert (width, height) == (384, 302)  # 128x96 zoomed 3x, under a 14-pixel title bar
    red = [(f[..., 0] > 180) & (f[..., 1] < 60) & (f[..., 2] < 60) for f in frames]
    assert all(r.sum() > 50 for r in red)  # box outlines in the prediction colour on every frame


@pytest.mark.parametrize(
    ("video", "reason"),
    [("sub/v.mp4", "is not a writable folder"), ("v.avi", "a video file ends in .mp4 or .gif")],
)
def test_detect_bad_video_path_fails_before_any_work(model_dir, small_recording, tmp_path, video, reason):
    (tmp_path / "sub").write_text("a file where a folder is needed")
    target = tmp_path / video
    done = _cli(
        "detect", small_recording, "--model", model_dir, "--out", tmp_path / "b.npy", "--video", target
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(target) in last and reason in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no boxes, no video, no temporary
