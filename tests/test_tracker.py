"""LEOD's linear tracker filter: hand-built scenes for each rule, and a plain-Python cross-check."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import pytest

from leod.labels.boxes import BOX_DTYPE, clip_to_frame
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.pseudo.config import PseudoConfig, TrackerConfig
from leod.pseudo.tracker import TrackStats, track_filter

FRAME_US = 50_000
HW = (240, 304)  # Gen1's frame (height, width)
# the tracker's settings are a view of the pseudo section; these tests use LEOD's min_track_len
PSEUDO = PseudoConfig(obj_thresh=[0.5], cls_thresh=[0.5], min_track_len=6)
CFG = PSEUDO.tracker
FORWARD = replace(PSEUDO, track_method="forward").tracker
track = partial(track_filter, frame_hw=HW)


def boxes(f: int, rows: list[tuple[float, float, float, float, int]], ignore: bool = False) -> np.ndarray:
    """One frame's boxes from ``(x, y, w, h, class_id)`` rows, stamped with the frame time."""
    out = np.zeros(len(rows), BOX_DTYPE)
    out["t"] = f * FRAME_US
    for k, (x, y, w, h, c) in enumerate(rows):
        out[k] = (f * FRAME_US, x, y, w, h, c, 0.8, 77, 0.7, ignore)
    return out


def scene(n_frames: int, objects: list[dict]) -> list[np.ndarray]:
    """Frames of objects ``{x, y, vx, w, h, cls, frames}`` moving along x at constant speed."""
    rows: list[list[tuple[float, float, float, float, int]]] = [[] for _ in range(n_frames)]
    for o in objects:
        for f in o["frames"]:
            rows[f].append((o["x"] + o.get("vx", 0.0) * f, o["y"], o["w"], o["h"], o.get("cls", 0)))
    return [boxes(f, r) for f, r in enumerate(rows)]


def no_gt(frames: list[np.ndarray]) -> np.ndarray:
    return np.zeros(len(frames), bool)


def real(frame: np.ndarray) -> np.ndarray:
    """The input boxes of an output frame (inpainted boxes have zero confidence and objectness)."""
    return frame[frame["objectness"] > 0]


def painted(frame: np.ndarray) -> np.ndarray:
    return frame[frame["objectness"] == 0]


def test_linear_track_with_gaps_is_kept_and_inpainted() -> None:
    gaps = {2, 3, 11}
    frames = scene(
        20, [dict(x=10, y=50, vx=4, w=30, h=20, cls=1, frames=[f for f in range(20) if f not in gaps])]
    )
    out, stats = track(frames, no_gt(frames), CFG)
    assert len(out) == 20
    for f, frame in enumerate(out):
        assert frame["track_id"].tolist() == [0] and frame["class_id"].tolist() == [1]
        if f in gaps:
            # the predicted box at the missed frame: the object's true position, as an ignore region
            assert frame["ignore"].tolist() == [True]
            assert frame["t"][0] == f * FRAME_US
            np.testing.assert_allclose(frame[["x", "y", "w", "h"]].tolist(), [(10 + 4 * f, 50, 30, 20)])
            assert frame["class_confidence"][0] == 0 and frame["objectness"][0] == 0
        else:
            np.testing.assert_array_equal(
                frame[["t", "x", "y", "w", "h"]], frames[f][["t", "x", "y", "w", "h"]]
            )
            assert not frame["ignore"][0]
    assert stats == TrackStats(boxes_in=17, boxes_ignored=0, boxes_inpainted=3, tracks=1, long_tracks=1)
    # a gap right after birth: no velocity yet, so the prediction stays at the birth box
    frames = scene(20, [dict(x=10, y=50, vx=4, w=30, h=20, frames=[0, *range(2, 20)])])
    out, _ = track(frames, no_gt(frames), CFG)
    np.testing.assert_allclose(painted(out[1])[["x", "y"]].tolist(), [(10, 50)])


def leaving(n_frames: int, start: tuple[float, float], v: tuple[float, float], miss: int) -> list[np.ndarray]:
    """A 40x30 box moving at ``v`` px/frame out of the image, clipped to it as the detector's
    boxes are (``clip_to_frame``), missed at frame ``miss``; and the true clipped box there."""
    frames, truth = [], None
    for f in range(n_frames):
        x1, y1 = start[0] + v[0] * f, start[1] + v[1] * f
        box = clip_to_frame(boxes(f, [(x1, y1, 40, 30, 0)]), *HW)
        if f == miss:
            truth = box
            box = box[:0]
        frames.append(box)
    return frames, truth


@pytest.mark.parametrize(
    ("start", "v"), [((200, 100), (6, 0)), ((60, 100), (-6, 0)), ((100, 150), (0, 5)), ((100, 60), (0, -5))]
)
def test_box_leaving_the_image_keeps_the_unclamped_edge_velocity(start: tuple, v: tuple) -> None:
    # LEOD's _robust_velocity: once the prediction is clamped on one side, the clipped box's centre
    # moves at half the speed; the velocity comes from the opposite (unclamped) edge instead, so
    # the box inpainted at a miss at the border is the object's true clipped box.
    frames, truth = leaving(17, start, v, miss=15)
    assert truth["w"][0] < 40 or truth["h"][0] < 30, "the missed frame is at the border"
    out, stats = track(frames, no_gt(frames), CFG)
    assert stats.tracks == 1 and stats.boxes_ignored == 0 and stats.boxes_inpainted == 1
    np.testing.assert_allclose(
        painted(out[15])[["x", "y", "w", "h"]].tolist(), truth[["x", "y", "w", "h"]].tolist(), atol=1e-4
    )


def test_stats_add_up_over_sequences_and_name_the_counts() -> None:
    a, b = TrackStats(10, 3, 2, 5, 1), TrackStats(4, 1, 0, 2, 2)
    assert a + b == TrackStats(14, 4, 2, 7, 3)
    assert (a + b).metrics() == {
        "track_kept": 10,
        "track_ignored": 4,
        "track_inpainted": 2,
        "tracks": 7,
        "long_tracks": 3,
    }


def test_inpaint_off_adds_nothing() -> None:
    frames = scene(20, [dict(x=10, y=50, vx=4, w=30, h=20, frames=[f for f in range(20) if f != 5])])
    out, stats = track(frames, no_gt(frames), replace(PSEUDO, inpaint=False).tracker)
    assert len(out[5]) == 0 and stats.boxes_inpainted == 0
    assert sum(len(f) for f in out) == 19


def test_one_frame_false_positive_is_marked_not_removed() -> None:
    frames = scene(
        20,
        [dict(x=10, y=50, vx=2, w=30, h=20, frames=range(20)), dict(x=200, y=150, w=25, h=25, frames=[9])],
    )
    for cfg in (CFG, FORWARD):
        out, stats = track(frames, no_gt(frames), cfg)
        assert len(out[9]) == 2
        assert out[9]["ignore"].tolist() == [False, True]
        np.testing.assert_array_equal(
            out[9][["x", "y", "w", "h", "class_id"]], frames[9][["x", "y", "w", "h", "class_id"]]
        )
        assert out[9]["track_id"].tolist() == [0, 1]
        assert stats == TrackStats(boxes_in=21, boxes_ignored=1, boxes_inpainted=0, tracks=2, long_tracks=1)


def short_track_at(frames_of_track: list[int], method: str) -> bool:
    """Whether a 3-frame track (plus a steady long track) ends up ignored, in a 20-frame sequence."""
    frames = scene(
        20,
        [
            dict(x=10, y=50, vx=2, w=30, h=20, frames=range(20)),
            dict(x=200, y=150, vx=1, w=25, h=25, frames=frames_of_track),
        ],
    )
    out, _ = track(frames, no_gt(frames), replace(PSEUDO, track_method=method).tracker)
    flags = [bool(out[f]["ignore"][1]) for f in frames_of_track]
    assert len(set(flags)) == 1, "a track's boxes share one fate"
    assert not any(out[f]["ignore"][0] for f in range(20))
    return flags[0]


def test_alive_at_end_and_forward_or_backward_rules() -> None:
    # In the middle, 7 misses after it (it dies after 6) and 14 before it: short both ways.
    assert short_track_at([10, 11, 12], "forward")
    assert short_track_at([10, 11, 12], "forward_or_backward")
    # At the end: still alive after the last frame forward, so long -> kept by both methods.
    assert not short_track_at([17, 18, 19], "forward")
    assert not short_track_at([17, 18, 19], "forward_or_backward")
    # Ending 5 frames before the end: 5 misses do not kill a twice-matched track, still alive.
    assert not short_track_at([12, 13, 14], "forward")
    # Ending 6 frames before the end it dies forward; backward 11 misses follow it: ignored.
    assert short_track_at([11, 12, 13], "forward_or_backward")
    # At the start: dies forward (short) but is alive at the end of the backward pass (long).
    assert short_track_at([0, 1, 2], "forward")
    assert not short_track_at([0, 1, 2], "forward_or_backward")


def test_confidence_decay_survives_five_misses_not_six() -> None:
    # after consecutive matches conf > 0.95: 0.9^5 * conf >= 0.55 > 0.9^6 * conf
    five = scene(30, [dict(x=10, y=50, vx=2, w=30, h=20, frames=[*range(10), *range(15, 30)])])
    out, stats = track(five, no_gt(five), CFG)
    assert {int(t) for f in out for t in f["track_id"]} == {0}
    assert stats.boxes_inpainted == 5 and stats.tracks == 1
    six = scene(30, [dict(x=10, y=50, vx=2, w=30, h=20, frames=[*range(10), *range(16, 30)])])
    out, stats = track(six, no_gt(six), CFG)
    assert out[9]["track_id"].tolist() == [0] and out[16]["track_id"].tolist() == [1]
    assert stats.boxes_inpainted == 0 and stats.tracks == 2 and stats.boxes_ignored == 0
    # a newborn track (conf 0.9) dies at its 5th miss: 0.9 * 0.9^5 < 0.55
    born = scene(30, [dict(x=10, y=50, w=30, h=20, frames=[0, *range(5, 30)])])
    out, _ = track(born, no_gt(born), FORWARD)
    assert out[5]["track_id"].tolist() == [0]
    born = scene(30, [dict(x=10, y=50, w=30, h=20, frames=[0, *range(6, 30)])])
    out, _ = track(born, no_gt(born), FORWARD)
    assert out[6]["track_id"].tolist() == [1] and out[0]["ignore"].tolist() == [True]


def test_matching_is_class_aware() -> None:
    # A car (class 0) tracked over 20 frames is missing at frame 8, where a pedestrian box
    # (class 1) sits exactly on its predicted position; the pedestrian must not continue it.
    frames = scene(
        20,
        [
            dict(x=10, y=50, vx=3, w=30, h=20, cls=0, frames=[f for f in range(20) if f != 8]),
            dict(x=10, y=50, vx=3, w=30, h=20, cls=1, frames=[8]),
        ],
    )
    out, stats = track(frames, no_gt(frames), CFG)
    ped = real(out[8])
    assert (
        ped["class_id"].tolist() == [1]
        and ped["track_id"].tolist() == [1]
        and ped["ignore"].tolist() == [True]
    )
    car = painted(out[8])
    assert car["track_id"].tolist() == [0] and car["class_id"].tolist() == [0]
    assert {int(out[f]["track_id"][0]) for f in range(20) if f != 8} == {0}
    assert stats.tracks == 2 and stats.long_tracks == 1


def test_most_confident_track_matches_first() -> None:
    # An old track (conf near 1) and a newborn one (0.9) both predict near one detection at
    # frame 10; the detection overlaps the newborn's prediction more, but the old track picks first.
    old = dict(x=100, y=50, w=40, h=40, frames=range(11))
    newborn = dict(x=112, y=50, w=40, h=40, frames=[9])
    frames = scene(12, [old, newborn])
    frames[10] = boxes(10, [(108, 50, 40, 40, 0)])
    out, _ = track(frames, no_gt(frames), FORWARD)
    assert out[9]["track_id"].tolist() == [0, 1]
    assert out[10]["track_id"].tolist() == [0]


def test_gt_boxes_are_never_altered_and_make_their_track_long() -> None:
    # A GT box alone (one frame) and a 3-frame pseudo track continuing a GT box, mid-sequence.
    frames = scene(
        30,
        [
            dict(x=10, y=50, vx=2, w=30, h=20, frames=range(30)),
            dict(x=200, y=100, w=30, h=30, frames=[10]),
            dict(x=100, y=150, vx=3, w=30, h=20, frames=[9, 10, 11]),
        ],
    )
    is_gt = no_gt(frames)
    is_gt[10] = True
    frames[10] = boxes(10, [(130, 150, 30, 20, 0), (200, 100, 30, 30, 0)])  # the long track is not in GT
    frames[10]["class_confidence"] = 1.0
    frames[10]["objectness"] = 1.0
    for cfg in (CFG, FORWARD):
        out, stats = track(frames, is_gt, cfg)
        fields = [n for n in BOX_DTYPE.names if n != "track_id"]
        assert len(out[10]) == 2, "no inpainting in a GT frame"
        np.testing.assert_array_equal(out[10][fields], frames[10][fields])
        assert not out[9]["ignore"].any() and not out[11]["ignore"].any()
        gt_track = int(out[10]["track_id"][0])
        assert out[9]["track_id"][1] == gt_track == out[11]["track_id"][1]
        assert out[10]["track_id"][1] not in (gt_track, out[9]["track_id"][0])
        assert stats.boxes_ignored == 0 and stats.boxes_inpainted == 0


def test_input_ignore_boxes_pass_through() -> None:
    frames = scene(20, [dict(x=10, y=50, vx=4, w=30, h=20, frames=[f for f in range(20) if f != 7])])
    # an ignore box exactly where the track misses: it must neither fill the gap nor be changed
    frames[7] = boxes(7, [(38, 50, 30, 20, 0)], ignore=True)
    frames[3] = np.concatenate((frames[3], boxes(3, [(200, 200, 20, 20, 1)], ignore=True)))
    out, stats = track(frames, no_gt(frames), CFG)
    np.testing.assert_array_equal(out[7][:1], frames[7])
    np.testing.assert_array_equal(out[3][1:], frames[3][1:])
    assert out[3]["track_id"].tolist() == [0, 77]
    assert len(out[7]) == 2 and out[7]["track_id"][1] == 0 and out[7]["objectness"][1] == 0
    assert stats == TrackStats(boxes_in=19, boxes_ignored=0, boxes_inpainted=1, tracks=1, long_tracks=1)


def test_min_track_len_one_keeps_everything() -> None:
    frames = random_scene(np.random.default_rng(3), 40)
    out, stats = track(
        frames, no_gt(frames), replace(PSEUDO, min_track_len=1, track_method="forward").tracker
    )
    assert stats.boxes_ignored == 0 and stats.long_tracks == stats.tracks
    for before, after in zip(frames, out, strict=True):  # only the input's ignore boxes are ignored
        np.testing.assert_array_equal(after["ignore"][: len(before)], before["ignore"])


def test_output_is_new_and_deterministic() -> None:
    frames = random_scene(np.random.default_rng(5), 60)
    before = [f.copy() for f in frames]
    first, stats1 = track(frames, no_gt(frames), CFG)
    second, stats2 = track(frames, no_gt(frames), CFG)
    assert stats1 == stats2 and stats1.boxes_ignored > 0 and stats1.boxes_inpainted > 0
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, second, strict=True))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(frames, before, strict=True))
    first[0]["ignore"] = True
    assert not frames[0]["ignore"].any()


def test_inpainted_times_without_frame_boxes() -> None:
    frames = scene(20, [dict(x=10, y=50, vx=4, w=30, h=20, frames=[f for f in range(20) if f != 6])])
    out, _ = track(frames, no_gt(frames), CFG)
    assert out[6]["t"].tolist() == [6 * FRAME_US]  # interpolated between frames 5 and 7
    times = np.arange(20, dtype=np.int64) * 1000 + 7
    out, _ = track(frames, no_gt(frames), CFG, frame_times=times)
    assert out[6]["t"].tolist() == [6007]


def test_empty_inputs() -> None:
    assert track([], np.zeros(0, bool), CFG) == ([], TrackStats(0, 0, 0, 0, 0))
    out, stats = track([boxes(0, []), boxes(1, [])], no_gt([0, 0]), CFG)
    assert [len(f) for f in out] == [0, 0] and stats.tracks == 0


def test_bad_input_raises_one_clear_error() -> None:
    frames = scene(3, [dict(x=10, y=50, w=30, h=20, frames=range(3))])
    with pytest.raises(DataFormatError, match="is_gt"):
        track(frames, np.zeros(2, bool), CFG)
    with pytest.raises(DataFormatError, match="frame 1 is not"):
        track([frames[0], frames[1][["x", "y"]], frames[2]], no_gt(frames), CFG)
    bad = [f.copy() for f in frames]
    bad[2]["w"] = np.nan
    with pytest.raises(DataFormatError, match="non-finite 'w'"):
        track(bad, no_gt(frames), CFG)
    with pytest.raises(DataFormatError, match="not sorted"):
        track(frames[::-1], no_gt(frames), CFG)
    with pytest.raises(DataFormatError, match="frame_times"):
        track(frames, no_gt(frames), CFG, frame_times=np.zeros(3))
    with pytest.raises(ConfigError, match="method"):
        track(frames, no_gt(frames), replace(PSEUDO, track_method="backward").tracker)  # type: ignore[arg-type]


# --- cross-check against a plain-Python tracker written object by object, as LEOD is --------


def random_scene(rng: np.random.Generator, n_frames: int) -> list[np.ndarray]:
    """Crossing objects of two classes with misses and jitter, plus false positives."""
    objects = []
    for _ in range(7):
        start = int(rng.integers(0, n_frames - 5))
        objects.append(
            dict(
                xy=rng.uniform(0, 200, 2),
                v=rng.uniform(-5, 5, 2),
                wh=rng.uniform(15, 60, 2),
                cls=int(rng.integers(0, 2)),
                span=range(start, min(n_frames, start + int(rng.integers(3, 40)))),
            )
        )
    out = []
    for f in range(n_frames):
        rows = []
        for o in objects:
            if f in o["span"] and rng.random() > 0.2:
                x, y = o["xy"] + o["v"] * f + rng.uniform(-1, 1, 2)
                rows.append((x, y, *o["wh"], o["cls"]))
        for _ in range(int(rng.integers(0, 3))):
            rows.append((*rng.uniform(0, 250, 2), *rng.uniform(10, 40, 2), int(rng.integers(0, 2))))
        frame = boxes(f, rows)
        frame["ignore"] = rng.random(len(frame)) < 0.05
        out.append(frame)
    return out


@dataclass
class Track:
    id: int
    cls: int
    c: np.ndarray
    wh: np.ndarray
    conf: float
    gt: bool
    v: np.ndarray = field(default_factory=lambda: np.zeros(2))
    prev: np.ndarray = field(default_factory=lambda: np.zeros(2))
    age: int = 0
    hits: int = 1
    long: bool = False
    missed: dict = field(default_factory=dict)  # frame -> clamped (centre, size) predicted at a miss
    pending: dict = field(default_factory=dict)  # misses since the last match (LEOD's cache)


def clamp(c: np.ndarray, wh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A centre box clipped to the image: corners (x1, y1), (x2, y2) and which of them moved."""
    lo, hi = c - wh / 2, c + wh / 2
    size = np.array(HW[::-1], float)
    clo, chi = np.clip(lo, 0, size), np.clip(hi, 0, size)
    return clo, chi, clo != lo, chi != hi


def iou(lo_a: np.ndarray, hi_a: np.ndarray, c: np.ndarray, wh: np.ndarray) -> float:
    lo = np.maximum(lo_a, c - wh / 2)
    hi = np.minimum(hi_a, c + wh / 2)
    if np.any(hi - lo <= 0):
        return 0.0
    inter = float(np.prod(hi - lo))
    return inter / (float(np.prod(hi_a - lo_a)) + float(np.prod(wh)) - inter)


def python_pass(
    dets: list[list[tuple]], gt: list[bool], cfg: TrackerConfig
) -> tuple[list[list[Track]], list[Track]]:
    """LEOD's update loop with one object per track; returns each detection's track and all tracks."""
    live: list[Track] = []
    tracks: list[Track] = []
    owner: list[list[Track]] = []
    for f, frame in enumerate(dets):
        live = [t for t in live if np.prod(t.wh) > 0]
        pred = {}
        for t in live:
            t.age += 1
            t.prev = t.c.copy()
            t.c = t.c + t.v
            pred[t.id] = clamp(t.c, t.wh)
        mine: list[Track | None] = [None] * len(frame)
        for t in sorted(live, key=lambda t: -t.conf):
            lo, hi, moved_lo, moved_hi = pred[t.id]
            best, best_iou = -1, -1.0
            for k, (c, wh, cls) in enumerate(frame):
                if mine[k] is None and cls == t.cls and (o := iou(lo, hi, c, wh)) > best_iou:
                    best, best_iou = k, o
            if best < 0 or best_iou < cfg.iou:
                t.conf *= cfg.conf_decay
                if not gt[f]:
                    t.pending[f] = ((lo + hi) / 2, hi - lo)
                continue
            c, wh, _ = frame[best]
            mine[best] = t
            t.hits = t.age + 1
            t.v = c - t.prev
            for axis in range(2):  # clamped on one side: the opposite edge's move
                if moved_lo[axis] and not moved_hi[axis]:
                    t.v[axis] = (c[axis] + wh[axis] / 2) - (t.prev[axis] + t.wh[axis] / 2)
                elif moved_hi[axis] and not moved_lo[axis]:
                    t.v[axis] = (c[axis] - wh[axis] / 2) - (t.prev[axis] - t.wh[axis] / 2)
            t.c, t.wh = c.copy(), wh.copy()
            t.gt = t.gt or gt[f]
            s = sum(cfg.conf_decay**i for i in range(1, t.age + 1))
            t.conf = (s * t.conf + 1) / (s + 1)
            t.missed.update(t.pending)
            t.pending = {}
        for k, (c, wh, cls) in enumerate(frame):
            if mine[k] is None:
                mine[k] = Track(len(tracks), cls, c.copy(), wh.copy(), cfg.init_conf, gt[f])
                tracks.append(mine[k])
                live.append(mine[k])
        live = [t for t in live if t.conf >= cfg.min_conf]
        owner.append(mine)
    alive = {t.id for t in live}
    for t in tracks:
        t.long = t.hits >= cfg.min_track_len or t.gt or t.id in alive
    return owner, tracks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("method", ["forward", "forward_or_backward"])
def test_agrees_with_plain_python_tracker(seed: int, method: str) -> None:
    rng = np.random.default_rng(seed)
    frames = random_scene(rng, 60)
    is_gt = rng.random(60) < 0.1
    cfg = replace(PSEUDO, track_method=method).tracker
    out, stats = track(frames, is_gt, cfg)

    def detections(fr: np.ndarray) -> list[tuple]:
        keep = fr[~fr["ignore"]]
        w, h = keep["w"].astype(float), keep["h"].astype(float)
        return [
            (np.array([x + a / 2, y + b / 2]), np.array([a, b]), int(c))
            for x, y, a, b, c in zip(keep["x"], keep["y"], w, h, keep["class_id"], strict=True)
        ]

    dets = [detections(fr) for fr in frames]
    owner, tracks = python_pass(dets, list(is_gt), cfg)
    short = [[not t.long for t in mine] for mine in owner]
    if method == "forward_or_backward":
        back, _ = python_pass([d[::-1] for d in dets[::-1]], list(is_gt[::-1]), cfg)
        short = [
            [s and not t.long for s, t in zip(fs, bs[::-1], strict=True)]
            for fs, bs in zip(short, back[::-1], strict=True)
        ]
    n_painted = 0
    for f, (frame, result) in enumerate(zip(frames, out, strict=True)):
        tracked = ~frame["ignore"]
        got = result[: len(frame)]
        np.testing.assert_array_equal(got[~tracked], frame[~tracked])
        assert got["track_id"][tracked].tolist() == [t.id for t in owner[f]]
        assert got["ignore"][tracked].tolist() == short[f]
        expected = sorted(
            (t.id, *t.missed[f][0], *t.missed[f][1]) for t in tracks if t.long and f in t.missed
        )
        extra = result[len(frame) :]
        assert extra["track_id"].tolist() == [e[0] for e in expected]
        if expected:
            np.testing.assert_allclose(
                np.stack(
                    [extra["x"] + extra["w"] / 2, extra["y"] + extra["h"] / 2, extra["w"], extra["h"]], 1
                ),
                np.array([e[1:] for e in expected]),
                atol=1e-3,
            )
        n_painted += len(expected)
    assert stats.boxes_inpainted == n_painted > 0
    assert stats.tracks == len(tracks) and stats.long_tracks == sum(t.long for t in tracks)
    assert stats.boxes_ignored == sum(map(sum, short)) > 0
