"""Importing published RVT/LEOD checkpoints: safe loading, clear errors, parity with RVT."""

from __future__ import annotations

import collections
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leod.interop.rvt_import import import_rvt, read_rvt_state_dict
from leod.interop.unpickle import Inert, load_checkpoint
from leod.model.postprocess import postprocess
from leod.plumbing.errors import DataFormatError
from leod.training.model_files import load_model

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "rvt-parity"
CKPT = FIXTURE / "rvt_tiny_gen1_random.ckpt"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_dir(), reason="../shared/fixtures/rvt-parity not present")


class Payload:
    """Creates ``marker`` when unpickled by a loader that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class OpenPayload(Payload):
    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_checkpoint(path: Path, marker: Path) -> None:
    state = collections.OrderedDict({"mdl.w": torch.arange(6.0).view(2, 3)})
    torch.save(
        {"state_dict": state, "lr_schedulers": [{"x": Payload(marker), "y": OpenPayload(marker)}]}, path
    )


def test_code_in_a_checkpoint_is_not_run(tmp_path):
    ckpt, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    _evil_checkpoint(ckpt, marker)
    # control: the payload is live, an unrestricted unpickler runs it (so this test can fail)
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()

    loaded = load_checkpoint(ckpt)
    assert not marker.exists()
    assert torch.equal(loaded["state_dict"]["mdl.w"], torch.arange(6.0).view(2, 3))
    inert = loaded["lr_schedulers"][0]
    assert isinstance(inert["x"], Inert) and inert["x"].ref == "posix.system"
    assert isinstance(inert["y"], Inert) and inert["y"].args == (str(marker), "w")


def test_code_in_a_plain_pickle_is_not_run(tmp_path):
    path, marker = tmp_path / "evil.pkl", tmp_path / "pwned"
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    with pytest.raises(DataFormatError, match="evil.pkl"):
        load_checkpoint(path)
    assert not marker.exists()


def test_tensors_round_trip_through_torch_save(tmp_path):
    base = torch.arange(24.0).view(4, 6)
    state = {
        "f32": base,
        "view": base[1:, ::2],  # offset and strides into a shared storage
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.arange(5),
        "u8": torch.arange(7, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "empty": torch.empty(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    ours = load_checkpoint(tmp_path / "m.ckpt")["state_dict"]
    assert list(ours) == list(state)
    for key, want in state.items():
        got = ours[key]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), key
    assert ours["view"].stride() == state["view"].stride()


@needs_fixture
def test_checkpoint_loads_as_its_key_list_says():
    ours, facts = read_rvt_state_dict(CKPT)
    rows = [line.split("\t") for line in (FIXTURE / "rvt_tiny_gen1_keys.tsv").read_text().splitlines()[1:]]
    assert list(ours) == [key for key, _, _ in rows] and len(ours) == 376
    for key, shape, dtype in rows:
        assert list(ours[key].shape) == json.loads(shape) and str(ours[key].dtype) == f"torch.{dtype}", key
    assert facts["pytorch-lightning_version"] == "1.8.6"


@needs_fixture
def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(CKPT.read_bytes()[: CKPT.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="truncated.ckpt: not a readable PyTorch checkpoint"):
        import_rvt(bad, tmp_path / "out", "tiny", "gen1")
    assert not (tmp_path / "out").exists()


def test_missing_prefix_is_refused(tmp_path):
    ckpt = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"backbone.w": torch.zeros(2)}}, ckpt)
    with pytest.raises(DataFormatError, match="plain.ckpt: no 'mdl.' keys"):
        import_rvt(ckpt, tmp_path / "out", "tiny", "gen1")


@needs_fixture
@pytest.mark.parametrize(
    ("preset", "dataset", "key"),
    [
        ("small", "gen1", "mdl.backbone.stages.0.downsample_cf2cl.conv.weight"),
        ("tiny", "gen4", "mdl.yolox_head.cls_preds.0.weight"),
        ("base", "gen1", "mdl.backbone.stages.0.downsample_cf2cl.conv.weight"),
    ],
)
def test_other_architecture_names_the_key(tmp_path, preset, dataset, key):
    with pytest.raises(DataFormatError, match=f"key '{key}' has shape"):
        import_rvt(CKPT, tmp_path / "out", preset, dataset)
    assert not (tmp_path / "out").exists()


@needs_fixture
def test_missing_weight_names_the_key(tmp_path):
    state, _ = read_rvt_state_dict(CKPT)
    del state["mdl.fpn.C3_n4.m.0.conv2.bn.running_var"]
    torch.save({"state_dict": state}, tmp_path / "partial.ckpt")
    with pytest.raises(DataFormatError, match="no weights for 'fpn.c3_n4.m.0.conv2.1.running_var'"):
        import_rvt(tmp_path / "partial.ckpt", tmp_path / "out", "tiny", "gen1")


@needs_fixture
def test_cli_bad_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "cut.ckpt"
    shutil.copyfile(CKPT, bad)
    with open(bad, "r+b") as f:
        f.truncate(1000)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leod",
            "import-rvt",
            str(bad),
            "--out",
            str(tmp_path / "m"),
            "--preset",
            "tiny",
            "--dataset",
            "gen1",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: ")
    assert not (tmp_path / "m").exists()


def _rows(dets, order: np.ndarray | None = None) -> np.ndarray:
    """Detections as RVT's postprocess rows ``[x1, y1, x2, y2, obj, cls_conf, cls_id]``."""
    return np.concatenate(
        [
            dets.boxes.numpy(),
            dets.objectness[:, None].numpy(),
            dets.class_confidence[:, None].numpy(),
            dets.labels[:, None].float().numpy(),
        ],
        axis=1,
    )


def _assert_same_rows(ours: np.ndarray, ref: np.ndarray) -> None:
    """The same set of rows (any order: ties in score may sort either way), within fp32 noise."""
    assert ours.shape == ref.shape
    scale = np.maximum(np.abs(ref).max(axis=0), 1.0)  # per column: relative to its largest value
    dist = (np.abs(ours[:, None] - ref[None]) / scale).max(axis=-1)  # (ours, ref)
    match = dist.argmin(axis=0)
    assert np.unique(match).size == len(ref), "rows do not pair up one to one"
    assert dist[match, np.arange(len(ref))].max() <= 1e-4


@needs_fixture
def test_imported_model_reproduces_official_rvt(tmp_path):
    """Backbone h/c, PAFPN, raw and decoded head over 3 recurrent steps, detections at t=2."""
    torch.set_num_threads(1)
    import_rvt(CKPT, tmp_path / "rvt-t", "tiny", "gen1")
    model, info = load_model(tmp_path / "rvt-t")
    assert info["classes"] == ["car", "pedestrian"]
    assert sum(p.numel() for p in model.parameters()) == 4_405_141
    io = np.load(FIXTURE / "rvt_tiny_gen1_io.npz")
    x, states = torch.from_numpy(io["x"]), None
    with torch.no_grad():
        for t in range(3):
            features, states = model.forward_backbone(x[t], states)
            for s, (h, c) in enumerate(states):
                for name, value in (("h", h), ("c", c)):
                    np.testing.assert_allclose(
                        value.permute(0, 3, 1, 2).numpy(), io[f"t{t}_stage{s + 1}_{name}"], rtol=0, atol=1e-5
                    )
            for s, feat in zip((2, 3, 4), features, strict=True):
                np.testing.assert_allclose(feat.numpy(), io[f"t{t}_stage{s}_feat"], rtol=0, atol=1e-5)
            fpn = model.fpn(features)
            for out, name in zip(fpn, ("s8", "s16", "s32"), strict=True):
                np.testing.assert_allclose(out.numpy(), io[f"t{t}_fpn_{name}"], rtol=0, atol=1e-4)
            np.testing.assert_allclose(model.head.raw(fpn).numpy(), io[f"t{t}_head_raw"], rtol=0, atol=1e-4)
            preds = model.head(fpn)
            decoded = torch.cat(
                [preds.boxes, preds.obj_logits.sigmoid()[..., None], preds.cls_logits.sigmoid()], -1
            )
            ref = io[f"t{t}_head_decoded"]
            assert np.abs(decoded.numpy() - ref).max() <= 1e-4 * np.abs(ref).max()
    prenms = _rows(postprocess(preds, 0.1, 1.0)[0])  # IoU > 1 never suppresses
    assert prenms.shape == (827, 7)
    _assert_same_rows(prenms, io["t2_dets_prenms_b0"])
    kept = _rows(postprocess(preds, 0.1, 0.45)[0])
    assert kept.shape == (674, 7)
    _assert_same_rows(kept, io["t2_dets_refnms_b0"])
