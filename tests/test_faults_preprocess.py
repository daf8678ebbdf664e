"""Bad input and faults around preprocess, subsample and atomic outputs (issue #9).

Each table case runs a stage script as a fresh process, with progress bars on, and expects
exit status 2, one ``error:`` line naming the file or key as the LAST line printed, and
neither the output nor a temporary beside it left behind.
"""

from __future__ import annotations

import copy
import filecmp
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from h5_encode import write_h5_events
from leod.config import params_from_dict
from leod.data.config import DataConfig
from leod.data.layout import load_manifest
from leod.data.loader import iterate_batches
from leod.data.sampling import TrainSampler
from leod.data.sequence import load_split, open_sequences
from leod.events import open_recording
from leod.events.dat import write_dat
from leod.events.types import Events
from leod.plumbing.atomic import stale_temporaries, write_json
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.preprocess.convert import stream_histograms
from leod.preprocess.dataset import convert_dataset
from leod.synthetic.generate import generate_dataset
from tiny import REPO, tiny_dict


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The tiny raw dataset, its clean conversion (which also warms the numba cache) and params."""
    d = tiny_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    d["preprocess"]["read_chunk_events"] = 4096  # several chunks per sequence
    params = params_from_dict(d)
    root = tmp_path_factory.mktemp("faults")
    preset = params.datasets["synthetic"]
    generate_dataset(
        params.synthetic, root / "raw", preset.height, preset.width, preset.classes, progress=False
    )
    convert_dataset(params, root / "raw", root / "pre", log=lambda _: None, progress=False)
    return root / "raw", root / "pre", d


@dataclass
class Ctx:
    """One case's scratch folder: a params dict to edit and copies of the inputs on demand."""

    tmp: Path
    raw_src: Path
    pre_src: Path
    params: dict

    def raw(self) -> Path:
        if not (self.tmp / "raw").exists():
            shutil.copytree(self.raw_src, self.tmp / "raw")
        return self.tmp / "raw"

    def pre(self) -> Path:
        if not (self.tmp / "pre_in").exists():
            shutil.copytree(self.pre_src, self.tmp / "pre_in")
        return self.tmp / "pre_in"

    def train_files(self, pattern: str) -> list[Path]:
        return sorted((self.raw() / "train").glob(pattern))


def _edit_boxes(ctx: Ctx, edit: Callable[[np.ndarray], np.ndarray]) -> Path:
    victim = ctx.train_files("*_bbox.npy")[-1]  # the last one: the progress bar is running by then
    np.save(victim, edit(np.load(victim, allow_pickle=False)), allow_pickle=False)
    return victim


def _off_sensor(ctx: Ctx) -> str:
    def shift(b: np.ndarray) -> np.ndarray:
        b["x"] += 10_000
        return b

    return _edit_boxes(ctx, shift).name


def _string_class_ids(ctx: Ctx) -> str:
    def to_strings(b: np.ndarray) -> np.ndarray:
        dtype = [(n, "U8" if n == "class_id" else b.dtype[n]) for n in b.dtype.names]
        out = np.zeros(len(b), dtype=dtype)
        for n in b.dtype.names:
            out[n] = b[n].astype(str) if n == "class_id" else b[n]
        return out

    return _edit_boxes(ctx, to_strings).name


def _boxes_0d(ctx: Ctx) -> str:
    return _edit_boxes(ctx, lambda b: b[0].reshape(())).name


def _boxes_2d(ctx: Ctx) -> str:
    return _edit_boxes(ctx, lambda b: np.stack([b, b], axis=1)).name


def _tiny_step(ctx: Ctx) -> str:
    ctx.params["representation"]["step_ms"] = 0.0001
    return "representation.step_ms"


def _events_hours_late(ctx: Ctx) -> str:
    """An event 3 h after the others, in an HDF5 recording (int64 time: no wrap involved)."""
    dat = ctx.train_files("*_td.dat")[-1]
    events = open_recording(dat).read_all()
    t = events.t.copy()
    t[-1] += 3 * 3600 * 1_000_000
    h5 = dat.with_name(dat.name.removesuffix(".dat") + ".h5")
    write_h5_events(h5, Events(t, events.x, events.y, events.p), 48, 64)
    dat.unlink()
    return h5.name


def _dat_high_bit_flipped(ctx: Ctx) -> str:
    """Bit 31 of the timestamps set from the middle on: every later event 35.8 min ahead."""
    dat = ctx.train_files("*_td.dat")[0]
    events = open_recording(dat).read_all()
    t = events.t.copy()
    t[len(t) // 2 :] += 1 << 31
    write_dat(dat, Events(t, events.x, events.y, events.p), 48, 64)
    return dat.name


def _rvt_download(ctx: Ctx, corrupt: Callable[[Path], None]) -> Path:
    ctx.params["datasets"]["synthetic"]["format"] = "rvt_preprocessed"
    victim = sorted(ctx.pre().rglob("event_representations.h5"))[-1]
    corrupt(victim)
    return victim


def _rvt_truncated_h5(ctx: Ctx) -> str:
    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:3000])

    return str(_rvt_download(ctx, truncate).relative_to(ctx.tmp))


def _rvt_garbage_h5(ctx: Ctx) -> str:
    return str(_rvt_download(ctx, lambda p: p.write_bytes(b"not hdf5" * 100)).relative_to(ctx.tmp))


def _out_under_a_file(ctx: Ctx) -> str:
    (ctx.tmp / "blocker").write_text("a file, not a folder")
    return "blocker"


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Ctx], str]  # edits the inputs, returns what the error must name
    raw_from: str = "raw"  # "raw": the raw copy; "pre": the preprocessed copy (an RVT download)
    out: str = "out/pre"  # relative to the case folder


PREPROCESS_CASES = [
    Case("every box of a sequence off the sensor", _off_sensor),
    Case("box file with string class ids", _string_class_ids),
    Case("box file holding a 0-d array", _boxes_0d),
    Case("box file holding a 2-D array", _boxes_2d),
    Case("representation.step_ms below 1 us", _tiny_step),
    Case("event 3 h after the others", _events_hours_late),
    Case("DAT timestamps with bit 31 flipped", _dat_high_bit_flipped),
    Case("RVT download with a truncated h5", _rvt_truncated_h5, raw_from="pre"),
    Case("RVT download with a non-HDF5 h5", _rvt_garbage_h5, raw_from="pre"),
    Case("output whose parent is a file", _out_under_a_file, out="blocker/pre"),
]


def run_script(stage: str, *args: object, limit_file_bytes: int | None = None, prefix: tuple = ()):
    """A stage script in a fresh process (optionally under RLIMIT_FSIZE or a command prefix)."""

    def limit() -> None:
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    cmd = [*prefix, sys.executable, str(REPO / "stages" / f"{stage}.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300)


def assert_one_error_line(proc: subprocess.CompletedProcess, names: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr
    assert names in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    if out.parent.is_dir():
        left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not left, left


@pytest.mark.parametrize("case", PREPROCESS_CASES, ids=lambda c: c.name)
def test_preprocess_bad_input(case: Case, base, tmp_path):
    raw_src, pre_src, d = base
    ctx = Ctx(tmp_path, raw_src, pre_src, copy.deepcopy(d))
    names = case.setup(ctx)
    raw = ctx.raw() if case.raw_from == "raw" else ctx.pre()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(ctx.params))
    out = tmp_path / case.out
    proc = run_script("preprocess", "--params", tmp_path / "params.yaml", "--raw", raw, "--out", out)
    assert_one_error_line(proc, names)
    assert_nothing_left(out)


def _subsample(tmp_path: Path, params: dict, data: Path) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ("--data", data, "--out", tmp_path / "split.json", "--metrics", tmp_path / "m.json")
    return run_script("subsample", "--params", tmp_path / "params.yaml", *args)


def test_subsample_sequence_length_far_beyond_the_data(base, tmp_path):
    _, pre, d = base
    params = copy.deepcopy(d)
    params["loader"]["sequence_length"] = 20000
    proc = _subsample(tmp_path, params, pre)
    assert_one_error_line(proc, "loader.sequence_length")
    assert_nothing_left(tmp_path / "split.json")
    assert not (tmp_path / "m.json").exists()


def test_subsample_corrupt_label_map(base, tmp_path):
    _, pre_src, d = base
    ctx = Ctx(tmp_path, pre_src, pre_src, d)
    victim = sorted((ctx.pre() / "train").rglob("objframe_idx_2_repr_idx.npy"))[0]
    victim.write_bytes(b"\x93NUMPY\x01\x00garbage")
    proc = _subsample(tmp_path, d, ctx.pre())
    assert_one_error_line(proc, str(victim))
    assert_nothing_left(tmp_path / "split.json")


def test_loader_refuses_a_sequence_length_beyond_the_data(base):
    """Before any frame is allocated (today 39 GB for the default batch at length 20000)."""
    _, pre, _ = base
    manifest = load_manifest(pre)
    seqs = open_sequences(pre, manifest, "train")
    sampler = TrainSampler(seqs, DataConfig(batch_size=2, sequence_length=20000), seed=0)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"'loader.sequence_length' = 20000 exceeds"):
            next(iterate_batches(seqs, sampler))
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


def test_split_with_an_out_of_range_frame_names_the_split_file(base, tmp_path):
    _, pre, _ = base
    manifest = load_manifest(pre)
    name = manifest.splits["train"][0]
    split = tmp_path / "split.json"
    write_json(split, {"mode": "wsod", "sequences": {name: [0, 999]}})
    with pytest.raises(DataFormatError, match=rf"^{split}: kept label frame 999 of sequence '{name}'"):
        open_sequences(pre, manifest, "train", kept=load_split(split).sequences)
    write_json(split, {"mode": "wsod", "sequences": {name: [2**70]}})
    with pytest.raises(DataFormatError, match=rf"^{split}: sequences.{name} must be"):
        load_split(split)


def test_windows_are_computed_in_bounded_blocks(base):
    """A corrupt timestamp 500 s ahead means 10 000 windows: never all of them at once."""
    raw, _, d = base
    params = params_from_dict(d)
    events = open_recording(next((raw / "train").glob("*_td.dat"))).read_all()
    late = Events(
        np.append(events.t, events.t[-1] + 500_000_000),
        *(np.append(c, c[-1]) for c in (events.x, events.y, events.p)),
    )
    tracemalloc.start()
    try:
        frames = 0
        for ends, block in stream_histograms(
            iter([late]), 50_000, 50_000, 50_000, params.preset, params.representation
        ):
            assert len(ends) == len(block)
            frames += len(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames == (int(late.t[-1]) - 50_000) // 50_000 + 1
    # all at once: 10 000 frames of 20x48x64 bytes = 614 MB; one 64 MiB block and its events
    assert peak < 160 << 20, peak


def test_disk_full_is_one_error_line_and_no_crash(base, tmp_path):
    """Outputs over RLIMIT_FSIZE fail with EFBIG, as a full disk fails with ENOSPC (no mount needed)."""
    raw, _, d = base
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
    out = tmp_path / "out" / "pre"
    args = ("--params", tmp_path / "params.yaml", "--raw", raw, "--out", out)
    proc = run_script("preprocess", *args, limit_file_bytes=16 << 10)
    line = assert_one_error_line(proc, "File too large")
    assert line.startswith(f"error: {out}/train/") and "event_representations.h5:" in line  # final path
    assert_nothing_left(out)


def test_synthesize_on_a_full_disk(base, tmp_path):
    _, _, d = base
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
    synth = tmp_path / "synth"
    proc = run_script(
        "synthesize", "--params", tmp_path / "params.yaml", "--out", synth, limit_file_bytes=8 << 10
    )
    assert_nothing_left(synth)
    assert_one_error_line(proc, "File too large")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_works(), reason="needs user+mount namespaces (unshare -rm)")


@needs_unshare
@pytest.mark.parametrize(
    ("mount", "names"),
    [
        ("mount -t tmpfs -o size=48k tmpfs {d}", "No space left on device"),
        ("mount --bind {d} {d} && mount -o remount,bind,ro {d}", "Read-only file system"),
    ],
    ids=["full tmpfs", "read-only bind mount"],
)
def test_full_or_read_only_file_system(base, tmp_path, mount, names):
    raw, _, d = base
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
    target = tmp_path / "mnt"
    target.mkdir()
    stage = [sys.executable, str(REPO / "stages" / "preprocess.py")]
    args = ["--params", str(tmp_path / "params.yaml"), "--raw", str(raw), "--out", str(target / "pre")]
    script = (
        f'{mount.format(d=target)} && {{ "$@"; rc=$?; ls -A {target} > {tmp_path / "left.txt"}; exit $rc; }}'
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", *stage, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_error_line(proc, names)
    assert (tmp_path / "left.txt").read_text() == ""  # checked inside the namespace, before unmounting


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "m.json"
    stale_file = tmp_path / f".m.json.{dead.pid}-abcd1234.tmp"
    stale_dir = tmp_path / f".m.json.{dead.pid}-zz_9xy00.tmp"
    live = tmp_path / f".m.json.{os.getpid()}-abcd1234.tmp"
    foreign = [tmp_path / ".m.json.abcd1234.tmp", tmp_path / f".other.json.{dead.pid}-abcd1234.tmp"]
    for path in (stale_file, live, *foreign):
        path.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "inner").write_text("x")
    assert stale_temporaries(target) == sorted([stale_file, stale_dir])
    write_json(target, {"a": 1})
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and all(p.exists() for p in foreign)  # a live owner, or not ours


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_matches_a_clean_run(base, tmp_path):
    raw, pre, d = base
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(d))
    out = tmp_path / "pre"
    cmd = [sys.executable, str(REPO / "stages" / "preprocess.py"), "--params", str(tmp_path / "params.yaml")]
    cmd += ["--raw", str(raw), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    temps: list[Path] = []
    while not temps and proc.poll() is None and time.monotonic() < deadline:
        temps = list(tmp_path.glob(".pre.*.tmp"))
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temps and temps[0].is_dir() and not out.exists(), "the run ended before it could be killed"
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert not list(tmp_path.glob(".pre.*.tmp"))
    compared = filecmp.dircmp(pre, out)
    assert _identical(compared), "rerun differs from the clean run"


def _identical(cmp: filecmp.dircmp) -> bool:
    same = not (cmp.left_only or cmp.right_only or cmp.funny_files)
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    return same and not mismatch and not errors and all(_identical(sub) for sub in cmp.subdirs.values())
