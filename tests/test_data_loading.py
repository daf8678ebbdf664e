"""Data loading over a tiny RVT-layout dataset whose frames encode what they are.

Channel 0 holds ``repr index + 1`` everywhere (which frame is this?), channel 1 is 1
inside the frame's label box (where is the object?), channels 2 and 3 are x and y ramps
(which way is the frame turned?).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch

from leod.data.augment import AugParams, augment_boxes, augment_frames
from leod.data.batch import Batch
from leod.data.config import AugmentConfig, DataConfig
from leod.data.layout import Manifest, load_manifest
from leod.data.loader import inference_batches, iterate_batches, load_sample
from leod.data.sampling import InferenceSampler, SampleSpec, TrainSampler, stream_stretches
from leod.data.sequence import LabelFiles, SequenceData, load_split, open_sequences
from leod.labels.boxes import BOX_DTYPE, empty_boxes, to_evaluator
from leod.plumbing.atomic import save_npy, save_npz, write_text
from leod.plumbing.errors import ConfigError, DataFormatError, MissingInputError
from leod.schema import from_dict, to_dict

H, W, NBINS = 16, 24, 2
LENGTHS = {"seq_a": 30, "seq_b": 23, "seq_c": 37}
KEPT = {"seq_a": [0, 4, 8], "seq_b": [1, 3, 5], "seq_c": [2, 9]}  # seq_b frame 3: no box
L = 4


def label_repr(n_frames: int) -> np.ndarray:
    """Label frames at repr 3, 5, 7, ... (every other frame)."""
    return np.arange(3, n_frames, 2, dtype=np.int64)


def frame_box(f: int) -> tuple[int, int, int, int]:
    """Label frame f's one box (x, y, w, h) in representation pixels; frame 3 has none."""
    return 2 + (f * 3) % 12, 1 + f % 6, 6 + f % 4, 5 + f % 3


def tiny_manifest(downsample: bool) -> Manifest:
    scale = 2 if downsample else 1
    return Manifest(
        dataset="tiny",
        height=H,
        width=W,
        orig_height=H * scale,
        orig_width=W * scale,
        downsample=downsample,
        classes=["car", "ped"],
        nbins=NBINS,
        window_ms=50.0,
        step_ms=50.0,
        splits={"train": list(LENGTHS)},
    )


def write_sequence(root: Path, name: str, n_frames: int, downsample: bool) -> None:
    seq = tiny_manifest(downsample).sequence(root, "train", name)
    reprs = label_repr(n_frames)
    data = np.zeros((n_frames, 2 * NBINS, H, W), np.uint8)
    data[:, 0] = (np.arange(n_frames) + 1)[:, None, None]
    data[:, 2] = np.arange(W)[None, None, :]
    data[:, 3] = np.arange(H)[None, :, None]
    boxes, starts = [], []
    scale = 2 if downsample else 1
    for f, r in enumerate(reprs):
        starts.append(len(boxes))
        if f == 3:
            continue
        x, y, w, h = frame_box(f)
        data[r, 1, y : y + h, x : x + w] = 1
        box = empty_boxes(1)[0]
        box["t"], box["class_id"], box["track_id"] = 1000 * r, f % 2, f
        box["x"], box["y"], box["w"], box["h"] = x * scale, y * scale, w * scale, h * scale
        boxes.append(box)
    seq.repr_dir.mkdir(parents=True)
    with h5py.File(seq.representations, "w") as h5:
        h5.create_dataset(
            "data",
            data=data,
            chunks=(1, 2 * NBINS, H, W),
            **hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE),
        )
    save_npy(seq.repr_timestamps, 50_000 * (np.arange(n_frames, dtype=np.int64) + 1))
    save_npy(seq.objframe_to_repr, reprs)
    save_npy(seq.label_timestamps, 1000 * reprs)
    save_npz(
        seq.labels,
        labels=to_evaluator(np.array(boxes, dtype=BOX_DTYPE)),  # RVT's on-disk dtype
        objframe_idx_2_label_idx=np.array(starts, np.int64),
    )


def make_dataset(root: Path, downsample: bool = False) -> Path:
    for name, n in LENGTHS.items():
        write_sequence(root, name, n, downsample)
    manifest = tiny_manifest(downsample)
    write_text(root / "manifest.json", manifest.to_json())
    write_text(root / "split.json", json.dumps({"mode": "wsod", "sequences": KEPT}))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def train_seqs(dataset: Path) -> list[SequenceData]:
    return open_sequences(
        dataset, load_manifest(dataset), "train", kept=load_split(dataset / "split.json").sequences
    )


def no_aug() -> AugmentConfig:
    return AugmentConfig(hflip_p=0.0)


def train_batches(sequences: list[SequenceData], cfg: DataConfig, seed: int) -> Iterator[Batch]:
    """Endless training batches as the training loop draws them."""
    return iterate_batches(sequences, TrainSampler(sequences, cfg, seed), cfg.num_workers)


def config(**kw) -> DataConfig:
    base = dict(batch_size=2, sequence_length=L, augment_random=no_aug(), augment_stream=no_aug())
    return DataConfig(**{**base, **kw})


def kept_reprs(seqs: list[SequenceData]) -> dict[str, set[int]]:
    return {s.name: {int(label_repr(s.num_frames)[f]) for f in KEPT[s.name]} for s in seqs}


def check_frames_match_index(batch: Batch) -> None:
    """Channel 0 says which frame was loaded: it must agree with repr_index (0 where padded)."""
    idx = batch.repr_index
    got = batch.frames[:, :, 0].amax(dim=(-1, -2))
    assert torch.equal(got, torch.where(idx >= 0, idx + 1, 0).float())
    assert torch.equal(batch.padded, idx < 0)


# --- one sequence ---------------------------------------------------------------------------


def test_sequence_labels_supervision_and_times(train_seqs: list[SequenceData]) -> None:
    seq = train_seqs[0]
    assert (seq.name, seq.num_frames, seq.frame_shape) == ("seq_a", 30, (4, H, W))
    reprs = label_repr(30)
    assert np.array_equal(seq.label_repr, reprs)
    assert np.array_equal(seq.kept_repr, reprs[KEPT["seq_a"]])
    for f, r in enumerate(reprs):
        boxes = seq.boxes(int(r))
        assert seq.repr_label_time_us[r] == 1000 * r
        if f == 3:
            assert len(boxes) == 0
            continue
        assert len(boxes) == 1
        assert tuple(boxes[0][k] for k in "xywh") == frame_box(f)
        assert boxes[0]["class_id"] == f % 2
    assert len(seq.boxes(4)) == 0 and seq.repr_label_time_us[4] == -1
    frames = seq.read_frames(5, 9)
    assert frames.dtype == np.uint8 and np.array_equal(frames[:, 0, 0, 0], [6, 7, 8, 9])


def test_downsampled_labels_are_halved(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, downsample=True)
    seq = open_sequences(root, load_manifest(root), "train")[1]
    assert seq.paths.representations.name == "event_representations_ds2_nearest.h5"
    box = seq.boxes(int(label_repr(seq.num_frames)[2]))[0]
    assert tuple(box[k] for k in "xywh") == frame_box(2)
    assert seq.supervised.sum() == len(label_repr(seq.num_frames))  # no split: every label frame


def test_labels_override_and_ignore(dataset: Path, tmp_path: Path) -> None:
    """Pseudo labels on every frame come from another folder; event data is not copied."""
    paths = load_manifest(dataset).sequence(dataset, "train", "seq_b")
    n = 23
    boxes = empty_boxes(n)
    boxes["t"], boxes["x"], boxes["y"], boxes["w"], boxes["h"] = np.arange(n), 1, 2, 3, 4
    boxes["class_id"] = np.where(np.arange(n) % 3 == 0, 1024, 0)
    boxes["class_confidence"] = 0.25
    files = LabelFiles(tmp_path / "labels.npz", tmp_path / "objframe_idx_2_repr_idx.npy")
    save_npz(files.labels, labels=boxes, objframe_idx_2_label_idx=np.arange(n))
    save_npy(files.objframe_to_repr, np.arange(n))
    seq = SequenceData(paths, labels_override=files, kept=[0, 10])
    assert np.array_equal(seq.kept_repr, [0, 10])
    assert seq.boxes(9)["ignore"][0] and not seq.boxes(10)["ignore"][0]
    assert seq.boxes(4)["class_confidence"][0] == pytest.approx(0.25) and seq.boxes(4)["objectness"][0] == 1
    assert seq.repr_label_time_us[5] == 50_000 * 6  # the repr frame's end time
    assert seq.read_frames(0, 1)[0, 0, 0, 0] == 1  # the original event data
    batch = next(inference_batches([seq], batch_size=1, chunk_length=L))
    assert batch.supervised[:, 0].tolist() == [True, False, False, False]
    assert batch.valid[0, 0, 0] and batch.ignore[0, 0, 0] and not batch.valid[1:].any()
    assert batch.class_confidence[0, 0, 0] == pytest.approx(0.25)


def test_bad_inputs_raise_clear_errors(dataset: Path, tmp_path: Path) -> None:
    manifest = load_manifest(dataset)
    paths = manifest.sequence(dataset, "train", "seq_a")
    with pytest.raises(DataFormatError, match="out of range"):
        SequenceData(paths, kept=[99])
    bad = LabelFiles(paths.labels, tmp_path / "o2r.npy", paths.label_timestamps)
    save_npy(bad.objframe_to_repr, label_repr(30)[::-1].copy())
    with pytest.raises(DataFormatError, match="increase strictly"):
        SequenceData(paths, labels_override=bad)
    with pytest.raises(MissingInputError, match="split file"):
        load_split(tmp_path / "none.json")
    write_text(tmp_path / "split.json", json.dumps({"mode": "wsod", "sequences": {"seq_a": ["x"]}}))
    with pytest.raises(DataFormatError, match="sequences.seq_a"):
        load_split(tmp_path / "split.json")
    with pytest.raises(DataFormatError, match="seq_z"):
        open_sequences(dataset, manifest, "train", kept={"seq_z": [0]})


# --- configuration ----------------------------------------------------------------------------


def _full(over: dict) -> dict:
    """A complete ``loader`` section (params.yaml must give every key) with ``over`` merged in."""
    data = to_dict(DataConfig())
    for key, value in over.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return data


def test_config_validation_and_slot_split() -> None:
    cfg = from_dict(DataConfig, _full({"batch_size": 8, "augment_random": {"zoom_in_p": 0.5}}), "train")
    assert (
        cfg.slots == (4, 4) and cfg.augment_random.zoom_in_p == 0.5 and cfg.augment_stream.zoom_out_p == 0.5
    )
    assert DataConfig(batch_size=8, w_stream=3, w_random=1).slots == (6, 2)
    assert DataConfig(batch_size=3, w_stream=0).slots == (0, 3)
    with pytest.raises(ConfigError, match="train.augment_stream.zoom_in_p"):
        from_dict(DataConfig, _full({"augment_stream": {"zoom_in_p": 0.1}}), "train")
    with pytest.raises(ConfigError, match="zoom_out_p"):
        from_dict(DataConfig, _full({"augment_random": {"zoom_in_p": 0.8, "zoom_out_p": 0.3}}), "train")
    with pytest.raises(ConfigError, match="cannot both be 0"):
        from_dict(DataConfig, _full({"w_stream": 0, "w_random": 0}), "train")


# --- streaming ----------------------------------------------------------------------------------


def test_stream_stretches_follow_label_gaps(train_seqs: list[SequenceData]) -> None:
    seq = train_seqs[0]
    assert stream_stretches(seq, 4) == [(0, 30)]
    # gaps of 2 frames exceed L=1: every label frame is its own stretch; only kept ones stay
    assert stream_stretches(seq, 1) == [(int(r), int(r) + 1) for r in seq.kept_repr]


def test_streaming_continuity_and_state_carry(train_seqs: list[SequenceData]) -> None:
    """A per-slot "state" (frames seen since the last reset) must always be one unbroken
    stretch of one sequence; it resets exactly when a new stretch begins."""
    cfg = config(batch_size=3, w_random=0)
    stretch = {s.name: stream_stretches(s, L)[0] for s in train_seqs}
    state: list[list[tuple[str, int]]] = [[] for _ in range(3)]
    firsts: list[str] = []
    for batch in itertools.islice(train_batches(train_seqs, cfg, seed=3), 60):
        check_frames_match_index(batch)
        assert batch.n_stream == 3
        for b in range(3):
            name = batch.sequences[b]
            real = batch.repr_index[:, b][~batch.padded[:, b]].tolist()
            if batch.is_first[b]:
                assert real[0] == stretch[name][0]
                state[b] = []
                firsts.append(name)
            else:
                assert state[b] and state[b][-1][0] == name, "continued slot switched sequence"
                assert real[0] == state[b][-1][1] + 1, "chunk does not start where the last ended"
                assert not batch.padded[:, b].any() or real[-1] == stretch[name][1] - 1
            assert real == list(range(real[0], real[0] + len(real)))
            padded = batch.padded[:, b].tolist()
            assert padded == sorted(padded), "streaming pads only at the end"
            if any(padded):
                assert real[-1] == stretch[name][1] - 1
            state[b].extend((name, r) for r in real)
            assert [r for _, r in state[b]] == list(range(stretch[name][0], state[b][-1][1] + 1))
    # the shared queue visits every stretch once per epoch
    for epoch in range(len(firsts) // 3):
        assert sorted(firsts[3 * epoch : 3 * epoch + 3]) == sorted(LENGTHS)


def test_stream_augmentation_is_fixed_per_stretch(train_seqs: list[SequenceData]) -> None:
    aug = AugmentConfig(hflip_p=0.5, zoom_out_p=0.5, zoom_out_max=1.5)
    sampler = TrainSampler(train_seqs, config(batch_size=2, w_random=0, augment_stream=aug), seed=0)
    current: dict[int, AugParams] = {}
    drawn = set()
    for plan in itertools.islice(sampler, 80):
        for b, spec in enumerate(plan.samples):
            if not spec.is_first:
                assert spec.aug == current[b]
            current[b] = spec.aug
            drawn.add(spec.aug)
    assert len(drawn) > 3  # different stretches get different draws


# --- random access and mixing -------------------------------------------------------------------


def test_random_access_ends_at_kept_frame(train_seqs: list[SequenceData]) -> None:
    kept = kept_reprs(train_seqs)
    seen = set()
    for batch in itertools.islice(train_batches(train_seqs, config(batch_size=3, w_stream=0), seed=1), 10):
        check_frames_match_index(batch)
        assert batch.n_stream == 0 and batch.is_first.all() and batch.frames.shape[0] == L
        for b in range(3):
            idx = batch.repr_index[:, b]
            end = int(idx[-1])
            assert end in kept[batch.sequences[b]] and batch.supervised[-1, b]
            real = idx[idx >= 0].tolist()
            assert real == list(range(end - len(real) + 1, end + 1))
            assert len(real) == min(L, end + 1)  # front padding only before the sequence start
            seen.add((batch.sequences[b], end))
    assert seen == {(n, r) for n, rs in kept.items() for r in rs}  # one epoch covers every kept frame


def test_mixed_batch_composition(train_seqs: list[SequenceData]) -> None:
    cfg = config(batch_size=4)
    assert cfg.slots == (2, 2)
    batches = list(itertools.islice(train_batches(train_seqs, cfg, seed=5), 30))
    assert all(b.n_stream == 2 and b.is_first[2:].all() for b in batches)
    assert not all(b.is_first[:2].all() for b in batches)  # streaming slots carry state
    for batch in batches:
        check_frames_match_index(batch)
        assert not batch.padded[0, :2].any()  # streams never pad in front
        assert batch.supervised[-1, 2:].all()


def test_only_kept_frames_supervise(train_seqs: list[SequenceData]) -> None:
    kept = kept_reprs(train_seqs)
    by_name = {s.name: s for s in train_seqs}
    n_supervised = n_empty = 0
    for batch in itertools.islice(train_batches(train_seqs, config(batch_size=4), seed=2), 40):
        for t, b in itertools.product(range(L), range(4)):
            r = int(batch.repr_index[t, b])
            is_kept = r in kept[batch.sequences[b]]
            has_box = r >= 0 and len(by_name[batch.sequences[b]].boxes(r)) > 0
            assert bool(batch.supervised[t, b]) == is_kept
            assert int(batch.valid[t, b].sum()) == int(is_kept and has_box)
            n_supervised += is_kept
            n_empty += is_kept and not has_box
    assert n_supervised > 20 and n_empty > 0  # includes a kept frame without boxes


# --- augmentation -------------------------------------------------------------------------------


def mask_extent(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def check_boxes_on_content(batch: Batch, tol: float = 1.0) -> int:
    """Each supervised box must cover the channel-1 pixels of its frame; returns boxes checked."""
    checked = 0
    for t, b in itertools.product(*map(range, batch.shape)):
        if not batch.valid[t, b].any():
            continue
        _, cx, cy, w, h = batch.targets[t, b, 0].tolist()
        x0, y0, x1, y1 = mask_extent(batch.frames[t, b, 1] > 0)
        assert abs(x0 - (cx - w / 2)) <= tol and abs(x1 - (cx + w / 2)) <= tol
        assert abs(y0 - (cy - h / 2)) <= tol and abs(y1 - (cy + h / 2)) <= tol
        checked += 1
    return checked


def test_hflip_moves_boxes_with_frames(train_seqs: list[SequenceData]) -> None:
    seq = train_seqs[0]
    r = int(seq.kept_repr[1])
    flipped = load_sample(seq, SampleSpec(0, r - 3, r + 1, True, aug=AugParams(hflip=True)), L)
    x, y, w, h = frame_box(KEPT["seq_a"][1])
    box = flipped.boxes[-1][0]
    assert (box["x"], box["y"], box["w"], box["h"]) == (W - x - w, y, w, h)
    assert np.array_equal(flipped.frames[-1, 2, 0], np.arange(W)[::-1])
    ys, xs = np.nonzero(flipped.frames[-1, 1])
    assert (xs.min(), xs.max() + 1) == (W - x - w, W - x)


@pytest.mark.parametrize(
    "params",
    [
        AugParams(zoom="in", factor=1.5, x0=3, y0=2),
        AugParams(True, "in", 1.3, 5, 1),
        AugParams(zoom="out", factor=1.2, x0=2, y0=1),
        AugParams(True, "out", 1.6, 9, 5),
    ],
)
def test_zoom_keeps_boxes_on_content(params: AugParams) -> None:
    frames = np.zeros((1, 1, H, W), np.uint8)
    frames[0, 0, 4:10, 7:15] = 1
    boxes = empty_boxes(1)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = 7, 4, 8, 6
    out_frames, out_boxes = augment_frames(frames, params), augment_boxes(boxes, params, (H, W))
    assert out_frames.shape == frames.shape and out_frames.dtype == np.uint8
    ys, xs = np.nonzero(out_frames[0, 0])
    box = out_boxes[0]
    assert abs(xs.min() - box["x"]) <= 1 and abs(xs.max() + 1 - box["x"] - box["w"]) <= 1
    assert abs(ys.min() - box["y"]) <= 1 and abs(ys.max() + 1 - box["y"] - box["h"]) <= 1
    grow = box["w"] / 8
    assert grow > 1 if params.zoom == "in" else grow < 1


def test_zoom_clips_and_drops_tiny_boxes() -> None:
    boxes = empty_boxes(2)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = [0, 10], [0, 5], [3, 6], [3, 6]
    out = augment_boxes(boxes, AugParams(zoom="in", factor=1.5, x0=2, y0=2), (H, W))
    # box 0 keeps a 1 px x 1 px corner inside the window (1.5 px after scaling): dropped
    assert len(out) == 1 and out[0]["x"] == pytest.approx(12.0) and out[0]["w"] == pytest.approx(9.0)
    assert out[0]["x"] + out[0]["w"] <= W and out[0]["y"] + out[0]["h"] <= H


def test_random_augmentation_keeps_labels_aligned(train_seqs: list[SequenceData]) -> None:
    aug = AugmentConfig(hflip_p=0.5, zoom_in_p=0.5, zoom_in_max=1.5, zoom_out_p=0.4, zoom_out_max=1.5)
    cfg = config(batch_size=4, augment_random=aug, augment_stream=AugmentConfig(hflip_p=0.5, zoom_out_p=0.5))
    checked = sum(
        check_boxes_on_content(b) for b in itertools.islice(train_batches(train_seqs, cfg, seed=4), 25)
    )
    assert checked > 30


def test_training_batches_are_deterministic(train_seqs: list[SequenceData]) -> None:
    aug = AugmentConfig(hflip_p=0.5, zoom_in_p=0.6, zoom_out_p=0.3)
    cfg = config(batch_size=4, augment_random=aug, augment_stream=AugmentConfig(hflip_p=0.5, zoom_out_p=0.5))

    def run(seed: int) -> list[Batch]:
        return list(itertools.islice(train_batches(train_seqs, cfg, seed), 8))

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.frames, y.frames) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.repr_index, y.repr_index) and x.sequences == y.sequences
    assert any(not torch.equal(x.repr_index, z.repr_index) for x, z in zip(a, c, strict=True))


def test_workers_deliver_the_same_batches(train_seqs: list[SequenceData]) -> None:
    cfg = config(batch_size=4, augment_stream=AugmentConfig(hflip_p=0.5, zoom_out_p=0.5))
    sampler = TrainSampler(train_seqs, cfg, seed=9)
    plans = list(itertools.islice(sampler, 6))
    local = list(iterate_batches(train_seqs, plans, num_workers=0))
    remote = list(iterate_batches(train_seqs, plans, num_workers=1))
    for x, y in zip(local, remote, strict=True):
        assert torch.equal(x.frames, y.frames) and torch.equal(x.repr_index, y.repr_index)


# --- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [1, 5])
def test_inference_covers_every_frame_once(dataset: Path, reverse: bool, chunk: int) -> None:
    seqs = open_sequences(dataset, load_manifest(dataset), "train")
    order: dict[str, list[int]] = {n: [] for n in LENGTHS}
    starts: dict[str, int] = {}
    n_batches = 0
    for batch in inference_batches(seqs, batch_size=2, chunk_length=chunk, reverse=reverse):
        n_batches += 1
        check_frames_match_index(batch)
        assert batch.frames.shape[:2] == (chunk, 2)
        for b, name in enumerate(batch.sequences):
            if not name:
                assert batch.padded[:, b].all()
                continue
            real = batch.repr_index[:, b][~batch.padded[:, b]].tolist()
            if batch.is_first[b]:
                starts[name] = real[0]
            order[name].extend(real)
            times = batch.label_time_us[:, b][~batch.padded[:, b]].tolist()
            assert times == [1000 * r if r in set(label_repr(LENGTHS[name]).tolist()) else -1 for r in real]
            supervised = batch.supervised[:, b][~batch.padded[:, b]]
            assert supervised.tolist() == [t >= 0 for t in times]  # eval: every label frame
    for name, n in LENGTHS.items():
        expect = list(range(n))[::-1] if reverse else list(range(n))
        assert order[name] == expect
        assert starts[name] == expect[0]
    assert n_batches >= -(-max(LENGTHS.values()) // chunk)


def test_inference_sampler_pads_idle_slots(dataset: Path) -> None:
    seqs = open_sequences(dataset, load_manifest(dataset), "train")
    plans = list(InferenceSampler(seqs, batch_size=4, chunk_length=10))
    assert plans[0].samples[3] is None  # three sequences, four slots
    assert sum(p.samples[0] is not None for p in plans) == 3  # seq_a (30 frames) in slot 0
    assert len(plans) == 4  # seq_c has 37 frames


def test_batch_targets_and_to(train_seqs: list[SequenceData]) -> None:
    batch = next(iter(train_batches(train_seqs, config(batch_size=3, w_stream=0), seed=0)))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved.frames.dtype == torch.float32
    assert moved.targets.shape[:2] == (L, 3) and moved.targets.shape[-1] == 5
    by_name = {s.name: s for s in train_seqs}
    pairs = torch.nonzero(moved.valid[:, :, 0]).tolist()
    assert pairs
    for t, b in pairs:
        box = by_name[batch.sequences[b]].boxes(int(batch.repr_index[t, b]))[0]
        expect = [box["class_id"], box["x"] + box["w"] / 2, box["y"] + box["h"] / 2, box["w"], box["h"]]
        assert moved.targets[t, b, 0].tolist() == pytest.approx([float(v) for v in expect])
        assert moved.objectness[t, b, 0] == 1.0 and not moved.ignore[t, b, 0]
