"""The synthetic event-camera dataset: simulation semantics, labels, files, determinism, config."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from leod.events.dat import DatReader
from leod.events.types import Events
from leod.labels.boxes import BOX_DTYPE, load_bbox_npy
from leod.plumbing.errors import ConfigError
from leod.schema import from_dict, to_dict
from leod.synthetic.config import ObjectClassConfig, Range, SplitCounts, SyntheticConfig
from leod.synthetic.esim import EsimSensor
from leod.synthetic.generate import FIXED_DAT_DATE, generate_dataset
from leod.synthetic.scene import Scene, Track, label_times_us, sample_track, scene_boxes
from leod.synthetic.simulate import scene_events, sequence_seed, simulate_sequence

H, W = 48, 64
CLASSES = ["car", "pedestrian"]


def tiny(**overrides: object) -> SyntheticConfig:
    """A 1 s config whose scenes always hold a few objects of both classes."""
    base = SyntheticConfig()
    objects = {name: replace(p, initial_count=2.0) for name, p in base.objects.items()}
    cfg = replace(base, duration_s=1.0, sequences=SplitCounts(1, 1, 1), objects=objects)
    return replace(cfg, **overrides)


def empty_scene_cfg(**overrides: object) -> SyntheticConfig:
    """No objects at all: every event is sensor noise."""
    cfg = tiny(**overrides)
    still = {n: replace(p, initial_count=0.0, arrival_rate_hz=0.0) for n, p in cfg.objects.items()}
    return replace(cfg, objects=still)


def events_equal(a: Events, b: Events) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in "txyp")


def test_same_seed_same_sequence_other_seed_differs() -> None:
    cfg = tiny()
    ev1, bx1 = simulate_sequence(cfg, sequence_seed(3, "train", 0), H, W, CLASSES)
    ev2, bx2 = simulate_sequence(cfg, sequence_seed(3, "train", 0), H, W, CLASSES)
    ev3, bx3 = simulate_sequence(cfg, sequence_seed(3, "train", 1), H, W, CLASSES)
    assert len(ev1) > 1000
    assert events_equal(ev1, ev2)
    assert np.array_equal(bx1, bx2)
    assert not (len(ev1) == len(ev3) and events_equal(ev1, ev3))
    assert not np.array_equal(bx1, bx3)


def test_events_are_sorted_typed_and_in_bounds() -> None:
    ev, _ = simulate_sequence(tiny(), 11, H, W, CLASSES)
    assert (ev.t.dtype, ev.x.dtype, ev.y.dtype, ev.p.dtype) == (np.int64, np.uint16, np.uint16, np.uint8)
    assert np.all(np.diff(ev.t) >= 0)
    assert ev.t.min() >= 0 and ev.t.max() < 1_000_000
    assert ev.x.max() < W and ev.y.max() < H
    assert set(np.unique(ev.p).tolist()) == {0, 1}


def test_label_grid_starts_at_first_label_and_runs_to_the_end() -> None:
    times = label_times_us(tiny())
    assert times[0] == 50_000 and times[-1] == 1_000_000
    assert np.all(np.diff(times) == 50_000) and len(times) == 20


def test_boxes_lie_on_the_label_grid_and_overlap_the_frame() -> None:
    cfg = tiny()
    _, boxes = simulate_sequence(cfg, 5, H, W, CLASSES)
    assert boxes.dtype == BOX_DTYPE and len(boxes) > 20
    assert np.isin(boxes["t"], label_times_us(cfg)).all()
    assert np.all(np.diff(boxes["t"]) >= 0)
    assert np.all((boxes["x"] < W) & (boxes["x"] + boxes["w"] > 0))
    assert np.all((boxes["y"] < H) & (boxes["y"] + boxes["h"] > 0))
    for tid in np.unique(boxes["track_id"]):
        track = boxes[boxes["track_id"] == tid]
        assert len(np.unique(track["class_id"])) == 1
        assert len(np.unique(track["t"])) == len(track)  # one box per label time


def test_classes_differ_in_aspect_ratio() -> None:
    boxes = np.concatenate([simulate_sequence(tiny(), s, H, W, CLASSES)[1] for s in range(3)])
    aspect = boxes["w"] / boxes["h"]
    car, ped = aspect[boxes["class_id"] == 0], aspect[boxes["class_id"] == 1]
    assert len(car) > 10 and len(ped) > 10
    assert car.min() > 16 / 14 - 1e-6 and ped.max() < 8 / 12 + 1e-6
    assert car.mean() > 2.5 * ped.mean()


def test_objects_enter_and_leave_the_frame() -> None:
    cfg = tiny()
    track = sample_track(cfg, cfg.objects["car"], 0, 0.0, np.random.default_rng(0), H, W)
    _, _, alive = track.centers(track.key_t[[0, -1]])
    assert alive.all()
    for k in (0, -1):  # wholly outside at both ends of the path
        x, y = track.key_x[k], track.key_y[k]
        hw, hh = track.width / 2, track.height / 2
        assert x + hw <= 1e-6 or x - hw >= W - 1e-6 or y + hh <= 1e-6 or y - hh >= H - 1e-6


def test_a_stopping_object_stops_fully_in_view() -> None:
    cfg = tiny()
    always = replace(cfg.objects["pedestrian"], stop_probability=1.0)
    track = sample_track(cfg, always, 1, 0.0, np.random.default_rng(1), H, W)
    assert len(track.key_t) == 4
    assert track.key_x[1] == track.key_x[2] and track.key_y[1] == track.key_y[2]
    pause = (track.key_t[2] - track.key_t[1]) / 1e6
    assert cfg.stop_duration_s.min <= pause <= cfg.stop_duration_s.max
    assert track.width / 2 <= track.key_x[1] <= W - track.width / 2
    assert track.height / 2 <= track.key_y[1] <= H - track.height / 2


def stopping_car(cfg: SyntheticConfig) -> Scene:
    """One striped car: moves 0-0.3 s, stands still 0.3-0.7 s, moves again until 1 s."""
    v = 40.0 / 1e6
    key_t = np.array([0.0, 300_000.0, 700_000.0, 1_000_000.0])
    key_x = np.array([10.0, 10.0 + v * 300_000, 10.0 + v * 300_000, 10.0 + v * 600_000])
    rows = np.arange(14)[:, None] + np.arange(24)[None, :]
    texture = np.where((rows // 3) % 2 == 0, 0.9, 0.6).astype(np.float32)
    car = Track(0, 0, 22.0, 12.0, 0.3, key_t, key_x, np.full(4, 24.0), texture)
    background = np.full((H, W), cfg.background_mean, dtype=np.float32)
    return Scene(background=background, tracks=[car], duration_us=1_000_000)


def test_a_stopped_object_fires_no_events() -> None:
    cfg = tiny(noise_rate_hz=0.0, hot_pixels=0)
    scene = stopping_car(cfg)
    ev = scene_events(cfg, scene, np.random.default_rng(0))
    boxes = scene_boxes(scene, np.array([200_000, 500_000]), H, W)
    x0, y0, w, h = (float(boxes[1][f]) for f in "xywh")
    inside = (ev.x >= x0 - 1) & (ev.x <= x0 + w + 1) & (ev.y >= y0 - 1) & (ev.y <= y0 + h + 1)
    moving = inside & (ev.t >= 100_000) & (ev.t < 300_000)
    stopped = inside & (ev.t > 301_000) & (ev.t < 700_000)
    assert moving.sum() > 200
    assert stopped.sum() == 0
    assert np.count_nonzero((ev.t > 301_000) & (ev.t < 700_000)) == 0


def test_static_background_without_noise_fires_nothing() -> None:
    ev, boxes = simulate_sequence(empty_scene_cfg(noise_rate_hz=0.0, hot_pixels=0), 2, H, W, CLASSES)
    assert len(ev) == 0 and len(boxes) == 0


def test_background_activity_and_hot_pixels() -> None:
    cfg = empty_scene_cfg(noise_rate_hz=1.0, hot_pixels=2, hot_pixel_rate_hz=300.0)
    ev, _ = simulate_sequence(cfg, 4, H, W, CLASSES)
    counts = np.bincount(ev.y.astype(np.int64) * W + ev.x, minlength=H * W)
    top = np.sort(counts)[::-1]
    assert top[0] > 200 and top[1] > 200  # the two hot pixels
    assert top[2] < 15
    background = counts.sum() - top[:2].sum()
    assert abs(background - H * W) < 5 * np.sqrt(H * W)  # Poisson, 1 Hz per pixel for 1 s


def test_low_contrast_objects_fire_far_fewer_events() -> None:
    quiet = {"noise_rate_hz": 0.0, "hot_pixels": 0}
    normal, _ = simulate_sequence(tiny(low_contrast_fraction=0.0, **quiet), 8, H, W, CLASSES)
    low, _ = simulate_sequence(tiny(low_contrast_fraction=1.0, **quiet), 8, H, W, CLASSES)
    assert 0 < len(low) < 0.4 * len(normal)


def one_pixel_sensor(refractory_ms: float) -> EsimSensor:
    cfg = replace(tiny(), threshold_mean=0.25, threshold_sigma=0.0, refractory_ms=refractory_ms)
    sensor = EsimSensor(cfg, np.random.default_rng(0), 1, 1)
    sensor.start(np.zeros((1, 1), np.float32), 0.0)
    return sensor


def test_crossings_have_interpolated_times_and_respect_the_refractory_period() -> None:
    ramp = np.array([1.0, 1.25, 0.5], np.float32).reshape(3, 1, 1)
    times = np.array([1000.0, 2000.0, 3000.0])
    free = one_pixel_sensor(0.0).feed(ramp, times)
    assert free.t.tolist() == [250, 500, 750, 1000, 2000, 2333, 2666, 3000]
    assert free.p.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    sensor = one_pixel_sensor(0.3)
    first = sensor.feed(ramp[:1], times[:1])
    assert first.t.tolist() == [250, 750]  # 500 and 1000 fall inside the refractory period
    assert sensor.ref[0, 0] == 1.0  # ... but the reference level moved past them
    rest = sensor.feed(ramp[1:], times[1:])
    assert rest.t.tolist() == [2000, 2333, 2666, 3000]


def test_generate_dataset_writes_a_reproducible_gen1_layout(tmp_path: Path) -> None:
    cfg = tiny(duration_s=0.5, sequences=SplitCounts(train=2, val=1, test=1))
    summary = generate_dataset(cfg, tmp_path / "a", H, W, CLASSES, workers=1, progress=False)
    root = tmp_path / "a"
    assert json.loads((root / "dataset.json").read_text()) == summary
    assert {s: summary["splits"][s]["sequences"] for s in ("train", "val", "test")} == {
        "train": 2,
        "val": 1,
        "test": 1,
    }
    assert summary["classes"] == CLASSES and (summary["height"], summary["width"]) == (H, W)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert "train/synth_train_0001_td.dat" in files and "test/synth_test_0000_bbox.npy" in files
    assert len(files) == 9

    events, boxes = simulate_sequence(cfg, sequence_seed(cfg.seed, "val", 0), H, W, CLASSES)
    dat = root / "val" / "synth_val_0000_td.dat"
    assert f"% Date {FIXED_DAT_DATE:%Y-%m-%d %H:%M:%S}\n".encode() in dat.read_bytes()[:200]
    read = DatReader(dat)
    assert (read.height, read.width) == (H, W)
    assert events_equal(Events.concatenate(list(read.iter_chunks())), events)
    assert summary["sequences"][2]["events"] == len(events) > 0
    loaded = load_bbox_npy(root / "val" / "synth_val_0000_bbox.npy")
    for f in ("t", "x", "y", "w", "h", "class_id", "track_id"):
        assert np.array_equal(loaded[f], boxes[f])

    generate_dataset(cfg, tmp_path / "b", H, W, CLASSES, workers=2, progress=False)
    for name in files:
        assert (root / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_default_config_round_trips_through_the_schema() -> None:
    cfg = SyntheticConfig()
    assert from_dict(SyntheticConfig, to_dict(cfg), "synthetic") == cfg
    assert [p.width_px.max for p in cfg.profiles(CLASSES)] == [28.0, 8.0]


def _full(over: dict, base: dict | None = None) -> dict:
    """A complete ``synthetic`` section (params.yaml must give every key), ``over`` merged in."""
    out = dict(to_dict(SyntheticConfig()) if base is None else base)
    for key, value in over.items():
        merge = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _full(value, out[key]) if merge else value
    return out


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"substep_ms": 40.0}, "synthetic.substep_ms"),
        ({"first_label_ms": 7000.0}, "synthetic.first_label_ms"),
        ({"threshold_min": 0.3}, "synthetic.threshold_min"),
        ({"noise_rate_hz": -1.0}, "synthetic.noise_rate_hz"),
        ({"low_contrast_fraction": 1.5}, "synthetic.low_contrast_fraction"),
        ({"contrast": {"min": 1.0, "max": 0.5}}, "synthetic.contrast.min"),
        ({"sequences": {"train": 2.5}}, "synthetic.sequences.train"),
        ({"bogus": 1}, "synthetic.bogus"),
    ],
)
def test_config_errors_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_dict(SyntheticConfig, _full(data), "synthetic")


def test_object_profile_errors_name_the_key() -> None:
    car = to_dict(SyntheticConfig().objects["car"])
    car["speed_px_s"] = {"min": 9.0, "max": 3.0}
    with pytest.raises(ConfigError, match="'synthetic.objects.car.speed_px_s.min'"):
        from_dict(SyntheticConfig, _full({"objects": {"car": car}}), "synthetic")
    fast = ObjectClassConfig(Range(5, 6), Range(5, 6), Range(100, 900), 0.0, 0.0, 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="'synthetic.substep_ms'"):
        from_dict(SyntheticConfig, _full({"objects": {"car": to_dict(fast)}}), "synthetic")
    car["speed_px_s"] = {"min": 0.0, "max": 3.0}
    with pytest.raises(ConfigError, match="'synthetic.objects.car.speed_px_s.min'"):
        from_dict(SyntheticConfig, _full({"objects": {"car": car}}), "synthetic")
    with pytest.raises(ConfigError, match="'synthetic.objects'.*'truck'"):
        SyntheticConfig().profiles(["car", "truck"])
