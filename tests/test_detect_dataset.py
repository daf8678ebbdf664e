"""``detect`` and ``visualize`` on a tiny synthetic dataset with a briefly trained model:
detect on a test recording + Prophesee evaluation gives the AP of the evaluate stage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from leod.config import params_from_dict
from leod.data.layout import load_manifest
from leod.data.sequence import open_sequences
from leod.evaluation.ground_truth import ground_truth
from leod.evaluation.prophesee import evaluate_detection, scaled_filter
from leod.labels.boxes import to_internal
from leod.plumbing.cli import main as leod
from leod.preprocess.dataset import convert_dataset
from leod.pseudo.store import SequenceLabels, save_pseudo_labels
from leod.subsample import make_split
from leod.synthetic.generate import generate_dataset
from leod.training.loop import train
from leod.training.model_files import save_model
from leod.visual.clip import ClipRange, pseudo_overlay, sequence_frames
from leod.visual.draw import GT_COLOR, PRED_COLOR, PSEUDO_COLOR, TITLE_HEIGHT, zoom_for
from leod.visual.predictions import model_overlay
from tiny import REPO, tiny_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Tiny dataset (64x48, 1 s sequences), its raw recordings, a model trained 150 steps
    (test AP above 0) and the ground truth of the train split saved as a round's pseudo labels."""
    root = tmp_path_factory.mktemp("detect_dataset")
    d = tiny_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    d["train"].update(
        steps=150, lr=0.005, pct_start=0.2, eval_every=1000, checkpoint_every=1000, device="cpu"
    )
    (root / "params.yaml").write_text(yaml.safe_dump(d))
    params = params_from_dict(d)
    preset = params.datasets["synthetic"]
    generate_dataset(
        params.synthetic, root / "raw", preset.height, preset.width, preset.classes, progress=False
    )
    convert_dataset(params, root / "raw", root / "pre", log=lambda _: None, progress=False)
    manifest = load_manifest(root / "pre")
    split = make_split(manifest, root / "pre", params.subsample, params.loader.sequence_length)
    done = train(params, root / "pre", split.sequences, root / "ck", progress=False)
    save_model(root / "model", done.final_weights, params, {})
    labels = {}
    for seq in open_sequences(root / "pre", manifest, "train"):
        frames = [seq.boxes(int(r)) for r in seq.label_repr]
        labels[seq.name] = SequenceLabels.from_frames(seq.label_repr, frames)
    (root / "pseudo" / "r1").mkdir(parents=True)
    save_pseudo_labels(root / "pseudo" / "r1" / "labels.npz", labels)
    return {"root": root, "params": params, "manifest": manifest}


def test_detect_then_prophesee_evaluation_gives_the_evaluate_stage_ap(trained, tmp_path):
    """The test sequence's raw recording through ``detect`` (windows aligned with the
    preprocessed grid by --start-ms, the evaluation thresholds) and evaluated with the
    stage's ground truth, filter and time tolerance: the same AP as ``evaluate`` (within
    1e-9; measured: equal) and the same boxes at every label frame (within 1e-4; measured: equal)."""
    root, params, manifest = trained["root"], trained["params"], trained["manifest"]
    stage = subprocess.run(
        [sys.executable, str(REPO / "stages" / "evaluate.py"), "--params", root / "params.yaml"]
        + ["--name", "r0", "--data", root / "pre", "--model", root / "model", "--out", tmp_path / "m.json"]
        + ["--confusion", tmp_path / "c.csv", "--predictions", tmp_path / "p.npz", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert stage.returncode == 0, stage.stderr[-2000:]
    expected = yaml.safe_load((tmp_path / "m.json").read_text())
    assert expected["AP50"] > 0  # the model finds objects: equal APs mean something

    (seq,) = open_sequences(root / "pre", manifest, "test")
    window_us = round(manifest.window_ms * 1000)
    recording = next((root / "raw" / "test").glob(f"{seq.name}_td.*"))
    gt = ground_truth([seq])[seq.name]
    filt = scaled_filter(params.preset.evaluation, manifest.downsample)
    tol = int(manifest.step_ms * 1000) // 2 - 1  # as evaluate_model pairs boxes with label times

    def detect(start_us: int) -> np.ndarray:
        out = tmp_path / f"boxes_{start_us}.npy"
        rc = leod(
            ["detect", str(recording), "--model", str(root / "model"), "--out", str(out), "--no-progress"]
            + ["--start-ms", str(start_us / 1000), "--window-ms", str(manifest.window_ms)]
            + ["--conf", str(params.train.eval_conf_threshold), "--nms-iou", str(params.model.nms_iou)]
        )
        assert rc == 0
        return to_internal(np.load(out, allow_pickle=False))

    aligned = int(seq.timestamps_us[0]) - window_us
    boxes = detect(aligned)
    got = evaluate_detection([gt], [boxes], manifest.classes, manifest.height, manifest.width, filt, tol)
    for key, value in expected.items():
        assert abs(got.metrics[key] - value) <= 1e-9, key

    with np.load(tmp_path / "p.npz", allow_pickle=False) as npz:
        stage_boxes = npz[seq.name]
    at_labels = boxes[np.isin(boxes["t"], seq.label_times_us)]
    assert len(at_labels) == len(stage_boxes) > 0
    for key in ("t", "class_id"):
        assert np.array_equal(at_labels[key], stage_boxes[key]), key
    for key in ("x", "y", "w", "h", "class_confidence"):
        np.testing.assert_allclose(at_labels[key], stage_boxes[key], rtol=0, atol=1e-4, err_msg=key)

    shifted = detect(aligned + window_us // 5)  # another grid sees other events: the check can fail
    assert len(shifted) != len(boxes) or not np.allclose(shifted["x"], boxes["x"])


def _colour(panel: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(np.all(panel == np.array(rgb, np.uint8), axis=-1).sum())


def test_visualize_draws_gt_pseudo_labels_and_predictions_side_by_side(trained, tmp_path, capsys):
    root, manifest = trained["root"], trained["manifest"]
    (seq, *_) = open_sequences(root / "pre", manifest, "train")
    pseudo = root / "pseudo" / "r1" / "labels.npz"
    out = tmp_path / "clip.mp4"
    args = ["visualize", "--data", str(root / "pre"), "--sequence", seq.name, "--out", str(out)]
    assert leod([*args, "--pseudo", str(pseudo), "--model", str(root / "model"), "--start", "5"]) == 0
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out))
    size = next(reader)["size"]
    zoom = zoom_for(manifest.width, 256)
    assert sum(1 for _ in reader) == seq.num_frames - 5  # 40 frames asked, clipped to the end
    assert size == (3 * manifest.width * zoom + 2 * 4, manifest.height * zoom + TITLE_HEIGHT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]

    # the same panels without the codec: exact colours. The pseudo labels are the ground
    # truth, so boxes appear in both panels on exactly the frames with ground truth.
    span = ClipRange(0, seq.num_frames)
    overlays = [
        pseudo_overlay(pseudo, seq, manifest.classes),
        model_overlay(root / "model", root / "pre", seq.name, span, 0.05, "cpu"),
    ]
    width = manifest.width * zoom + 4
    found_pred = 0
    for r, frame in enumerate(sequence_frames(seq, span, overlays, manifest.classes, False)):
        gt, ps, pred = (frame[TITLE_HEIGHT:, k * width : k * width + width - 4] for k in range(3))
        has_gt = len(seq.boxes(r)) > 0
        assert (_colour(gt, GT_COLOR) > 0) == has_gt and (_colour(ps, PSEUDO_COLOR) > 0) == has_gt, r
        assert _colour(gt, PSEUDO_COLOR) == _colour(ps, GT_COLOR) == _colour(gt, PRED_COLOR) == 0
        found_pred += _colour(pred, PRED_COLOR) > 0
    assert found_pred > 0

    test_seq = manifest.splits["test"][0]
    bad = ["visualize", "--data", str(root / "pre"), "--sequence", test_seq, "--pseudo", str(pseudo)]
    assert leod([*bad, "--out", str(tmp_path / "t.mp4")]) == 2  # a round labels the train split only
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {pseudo}: no pseudo labels for {test_seq} (a round labels the train split only)"
    )
    assert leod([*args[:-2], "--out", str(tmp_path / "t.mp4"), "--start", "999"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
