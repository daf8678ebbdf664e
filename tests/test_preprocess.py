"""The preprocess stage end to end: raw recordings -> RVT layout, streamed, with bad inputs."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
import yaml

from leod.config import params_from_dict
from leod.data.layout import load_manifest
from leod.events import open_recording
from leod.labels.boxes import load_bbox_npy
from leod.preprocess.dataset import convert_dataset, index_rvt_preprocessed
from leod.preprocess.histogram import stacked_histograms
from leod.synthetic.generate import generate_dataset
from tiny import tiny_dict

#: The dtype of many released Gen1 label files (``ts`` and ``confidence`` names).
LEGACY_GEN1_DTYPE = np.dtype(
    [
        ("ts", "<u8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "u1"),
        ("confidence", "<f4"),
        ("track_id", "<u4"),
    ]
)


def small_params(params_dict: dict, **preprocess) -> dict:
    d = tiny_dict(params_dict)
    d["preprocess"].update(preprocess)
    return d


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, dict]:
    repo = Path(__file__).resolve().parents[1]
    d = small_params(yaml.safe_load((repo / "params.yaml").read_text()))
    params = params_from_dict(d)
    root = tmp_path_factory.mktemp("raw")
    preset = params.datasets["synthetic"]
    generate_dataset(
        params.synthetic, root / "raw", preset.height, preset.width, preset.classes, progress=False
    )
    return root / "raw", d


def test_frames_equal_histograms_of_the_whole_recording(raw, tmp_path):
    raw_dir, d = raw
    params = params_from_dict(small_params(d, read_chunk_events=1024))  # many chunks per sequence
    manifest = convert_dataset(params, raw_dir, tmp_path / "pre", log=lambda _: None, progress=False).manifest
    assert manifest.splits["train"] and manifest.height == 48
    rep = params.representation
    for split, names in manifest.splits.items():
        for name in names:
            seq = manifest.sequence(tmp_path / "pre", split, name)
            ends = np.load(seq.repr_timestamps)
            assert np.all(np.diff(ends) == 50_000)
            with h5py.File(seq.representations) as h5:
                data = h5["data"][:]
                assert h5["data"].chunks == (1, 2 * rep.nbins, 48, 64)
            events = open_recording(raw_dir / split / f"{name}_td.dat").read_all()
            expected = stacked_histograms(events, ends, 50_000, 48, 64, rep.nbins, rep.count_cutoff)
            np.testing.assert_array_equal(data, expected)
            # every label frame sits exactly at its representation's end
            frame_times = np.load(seq.label_timestamps)
            repr_idx = np.load(seq.objframe_to_repr)
            np.testing.assert_array_equal(ends[repr_idx], frame_times)
            with np.load(seq.labels) as npz:
                labels, starts = npz["labels"], npz["objframe_idx_2_label_idx"]
            assert np.all(labels["t"][starts] == frame_times)
            assert np.all(labels["x"] >= 0) and np.all(labels["x"] + labels["w"] <= 64.001)


def test_rvt_download_is_indexed_not_copied(raw, tmp_path):
    raw_dir, d = raw
    params = params_from_dict(d)
    convert_dataset(params, raw_dir, tmp_path / "download", log=lambda _: None, progress=False)
    d2 = copy.deepcopy(d)
    d2["datasets"]["synthetic"]["format"] = "rvt_preprocessed"
    manifest = index_rvt_preprocessed(
        params_from_dict(d2), tmp_path / "download", tmp_path / "idx", log=lambda _: None
    ).manifest
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["manifest.json"]
    assert load_manifest(tmp_path / "idx").data_root == str((tmp_path / "download").resolve())
    seq = manifest.sequences(tmp_path / "idx", "train")[0]
    assert seq.representations.is_file()


def preprocess(run_stage, params: dict, raw_dir: Path, out: Path) -> subprocess.CompletedProcess:
    pfile = out.parent / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    return run_stage("preprocess", "--params", pfile, "--raw", raw_dir, "--out", out, "--no-progress")


def test_stage_bad_box_file_names_the_file_and_leaves_nothing(raw, tmp_path, run_stage):
    raw_dir, d = raw
    bad_raw = tmp_path / "raw"
    import shutil

    shutil.copytree(raw_dir, bad_raw)
    victim = sorted((bad_raw / "train").glob("*_bbox.npy"))[0]
    boxes = np.load(victim, allow_pickle=False)
    boxes["w"][3] = np.nan
    np.save(victim, boxes)
    proc = preprocess(run_stage, d, bad_raw, tmp_path / "pre")
    assert proc.returncode == 2
    assert victim.name in proc.stderr and "non-finite 'w'" in proc.stderr
    assert not (tmp_path / "pre").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pre.")]  # no temporary left over


def test_stage_events_outside_the_sensor(raw, tmp_path, run_stage):
    raw_dir, d = raw
    d2 = copy.deepcopy(d)
    d2["datasets"]["synthetic"].update(width=32)  # the recordings are 64 wide
    proc = preprocess(run_stage, d2, raw_dir, tmp_path / "pre")
    assert proc.returncode == 2 and "_td.dat" in proc.stderr and "width" in proc.stderr
    assert not (tmp_path / "pre").exists()


def test_stage_missing_raw_folder(tmp_path, params_dict, run_stage):
    proc = preprocess(run_stage, params_dict, tmp_path / "nowhere", tmp_path / "pre")
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "does not exist" in proc.stderr


def test_negative_box_size_is_rejected(tmp_path):
    from leod.labels.boxes import EVALUATOR_DTYPE
    from leod.plumbing.errors import DataFormatError

    boxes = np.zeros(2, dtype=EVALUATOR_DTYPE)
    boxes["w"], boxes["h"] = [5, -1], [5, 5]
    np.save(tmp_path / "a_bbox.npy", boxes)
    with pytest.raises(DataFormatError, match="negative w or h"):
        load_bbox_npy(tmp_path / "a_bbox.npy")
    legacy = np.zeros(1, dtype=LEGACY_GEN1_DTYPE)
    legacy["ts"], legacy["w"], legacy["h"], legacy["confidence"] = 7, 3, 4, 0.5
    np.save(tmp_path / "b_bbox.npy", legacy)
    got = load_bbox_npy(tmp_path / "b_bbox.npy")
    assert got["t"][0] == 7 and got["class_confidence"][0] == 0.5 and got["objectness"][0] == 0.5
    np.save(tmp_path / "c_bbox.npy", np.arange(3))
    with pytest.raises(DataFormatError, match="not a structured array"):
        load_bbox_npy(tmp_path / "c_bbox.npy")
