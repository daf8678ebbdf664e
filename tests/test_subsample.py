"""LEOD's WSOD / SSOD label splits (src/leod/subsample.py) and the split file they make."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leod.data.config import SubsampleConfig
from leod.data.layout import MANIFEST, Manifest
from leod.labels.boxes import empty_boxes
from leod.plumbing.atomic import save_npy, save_npz
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.subsample import make_split, ssod_sequences, wsod_frames


def test_wsod_stride_history_offset():
    repr_idx = np.arange(2, 62, 2)  # 30 label frames, every 2nd representation from index 2
    # stride 10; the first frame with 5 frames of history (repr >= 4) is frame 1
    assert wsod_frames(repr_idx, 0.1, 0, 5) == [1, 11, 21]
    assert wsod_frames(repr_idx, 0.1, 3, 5) == [4, 14, 24]
    assert wsod_frames(repr_idx, 0.1, 13, 5) == [4, 14, 24]  # offset wraps at the stride
    assert wsod_frames(np.array([0, 1]), 0.01, 0, 1) == [0]  # at least one frame
    assert wsod_frames(np.arange(5), 1.0, 0, 1) == [0, 1, 2, 3, 4]


def test_ssod_strided_deterministic():
    names = [f"s{i:02d}" for i in range(10)]
    assert ssod_sequences(names[::-1], 0.2, 0) == ["s00", "s05"]
    assert ssod_sequences(names, 0.2, 1) == ["s01", "s06"]
    assert ssod_sequences(names, 0.01, 0) == ["s00"]


def make_dataset(root: Path, frames_per_seq: dict[str, int]) -> Manifest:
    for name, n in frames_per_seq.items():
        seq = root / "train" / name
        rd = seq / "event_representations_v2" / "stacked_histogram_dt=50_nbins=2"
        rd.mkdir(parents=True)
        save_npy(rd / "objframe_idx_2_repr_idx.npy", np.arange(n, dtype=np.int64) + 1)
        save_npy(rd / "timestamps_us.npy", np.arange(n + 1, dtype=np.int64) * 50_000)
        boxes = empty_boxes(2 * n)  # two boxes per frame
        save_npz(
            seq / "labels_v2" / "labels.npz", labels=boxes, objframe_idx_2_label_idx=np.arange(0, 2 * n, 2)
        )
    manifest = Manifest("t", 8, 8, 8, 8, False, ["a"], 2, 50.0, 50.0, {"train": sorted(frames_per_seq)})
    (root / MANIFEST).write_text(manifest.to_json())
    return manifest


def test_make_split_counts_and_determinism(tmp_path):
    manifest = make_dataset(tmp_path, {"a": 40, "b": 25, "c": 3})
    cfg = SubsampleConfig(mode="wsod", ratio=0.1)
    split = make_split(manifest, tmp_path, cfg, history=3)
    assert split.sequences == {"a": (1, 11, 21, 31), "b": (1, 11, 21), "c": (1,)}
    assert split.frames_kept == 8 and split.frames_total == 68
    assert split.boxes_kept == 16 and split.boxes_total == 136
    assert make_split(manifest, tmp_path, cfg, history=3) == split

    ssod = make_split(manifest, tmp_path, SubsampleConfig(mode="ssod", train_ratio=0.34), history=3)
    assert ssod.sequences == {"a": tuple(range(40)), "b": (), "c": ()}
    full = make_split(manifest, tmp_path, SubsampleConfig(mode="full"), history=3)
    assert full.frames_kept == full.frames_total


def test_empty_split_and_missing_files(tmp_path):
    manifest = Manifest("t", 8, 8, 8, 8, False, ["a"], 2, 50.0, 50.0, {"train": []})
    with pytest.raises(DataFormatError, match="empty split"):
        make_split(manifest, tmp_path, SubsampleConfig(), history=1)
    manifest = Manifest("t", 8, 8, 8, 8, False, ["a"], 2, 50.0, 50.0, {"train": ["ghost"]})
    with pytest.raises(DataFormatError, match="ghost"):
        make_split(manifest, tmp_path, SubsampleConfig(), history=1)


def test_stage_needs_preprocessed_data(tmp_path, repo_root, run_stage):
    proc = run_stage(
        "subsample",
        "--params",
        repo_root / "params.yaml",
        "--data",
        tmp_path / "nothing",
        "--out",
        tmp_path / "s.json",
        "--metrics",
        tmp_path / "m.json",
    )
    assert proc.returncode == 2, proc.stderr
    assert "run `dvc repro preprocess`" in proc.stderr
    assert not (tmp_path / "s.json").exists()


def test_stage_writes_split_and_metrics(tmp_path, repo_root, run_stage):
    make_dataset(tmp_path / "data", {"a": 50, "b": 50})
    proc = run_stage(
        "subsample",
        "--params",
        repo_root / "params.yaml",
        "--data",
        tmp_path / "data",
        "--out",
        tmp_path / "s.json",
        "--metrics",
        tmp_path / "m.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert "kept" in proc.stdout
    split = json.loads((tmp_path / "s.json").read_text())
    assert split["mode"] == "wsod" and set(split["sequences"]) == {"a", "b"}
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["frames_kept"] == split["frames_kept"] > 0


def test_sequence_length_beyond_the_data_is_refused(tmp_path):
    manifest = make_dataset(tmp_path, {"a": 40, "b": 25})
    make_split(manifest, tmp_path, SubsampleConfig(), history=41)  # the longest has 41 frames
    with pytest.raises(ConfigError, match=r"'loader.sequence_length' = 20000 exceeds .* \(41 frames\)"):
        make_split(manifest, tmp_path, SubsampleConfig(), history=20000)


def test_corrupt_label_map_names_the_file(tmp_path):
    manifest = make_dataset(tmp_path, {"a": 4})
    victim = next(tmp_path.rglob("objframe_idx_2_repr_idx.npy"))
    victim.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataFormatError, match="objframe_idx_2_repr_idx.npy: unreadable"):
        make_split(manifest, tmp_path, SubsampleConfig(), history=1)
