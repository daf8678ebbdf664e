"""RVT's box rules and label-frame alignment (src/leod/preprocess/labels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from leod.data.config import DatasetPreset
from leod.labels.boxes import empty_boxes
from leod.preprocess.labels import filter_boxes, frames_to_repr, grid_start, label_frame_times


def preset(**kw) -> DatasetPreset:
    base = dict(format="raw", height=100, width=200, classes=["a", "b"])
    base.update(kw)
    return DatasetPreset(**base)


def boxes(rows: list[tuple]) -> np.ndarray:
    b = empty_boxes(len(rows))
    for i, (t, x, y, w, h, c) in enumerate(rows):
        b[i]["t"], b[i]["x"], b[i]["y"], b[i]["w"], b[i]["h"], b[i]["class_id"] = t, x, y, w, h, c
    return b


def test_crop_and_drop_empty():
    b = boxes(
        [(0, -10, -5, 30, 20, 0), (0, 195, 10, 20, 20, 1), (0, 250, 10, 20, 20, 0), (0, 10, 10, 0, 5, 0)]
    )
    kept, stats = filter_boxes(b, preset(), train=False)
    # first box cropped to (0, 0, 20, 15); second to width 5; third entirely outside; fourth empty
    assert kept[["x", "y", "w", "h"]].tolist() == [(0, 0, 20, 15), (195, 10, 5, 20)]
    assert stats.dropped_empty == 1 and stats.dropped_outside == 1 and stats.kept == 2 and stats.total == 4
    assert not stats.none_on_sensor


def test_no_box_on_the_sensor_is_flagged():
    b = boxes([(0, 250, 10, 20, 20, 0), (0, -40, 10, 20, 20, 1), (0, 10, 10, 0, 5, 0), (0, 10, 10, 9, 9, 7)])
    kept, stats = filter_boxes(b, preset(), train=False)
    # two boxes wholly off the 200-wide sensor, one empty, one of an unknown class: nothing left
    assert len(kept) == 0 and stats.dropped_outside == 2 and stats.dropped_class == 1
    assert stats.none_on_sensor
    _, only_class = filter_boxes(b[3:], preset(), train=False)
    assert not only_class.none_on_sensor  # unknown classes alone are a legitimate skip


def test_prophesee_min_diag_and_side():
    b = boxes([(0, 0, 0, 20, 25, 0), (0, 0, 0, 9, 50, 0), (0, 0, 0, 20, 20, 0)])
    kept, stats = filter_boxes(b, preset(min_box_diag=30, min_box_side=10), train=False)
    # diag of 20x25 = 32.0 >= 30 kept; side 9 < 10 dropped; 20x20 diag 28.3 < 30 dropped
    assert kept["h"].tolist() == [25]
    assert stats.dropped_small == 2


def test_wide_boxes_dropped_on_train_only():
    b = boxes([(0, 0, 0, 185, 10, 0), (0, 0, 0, 170, 10, 0)])
    assert len(filter_boxes(b, preset(), train=True)[0]) == 1  # 185 > 0.9 * 200
    assert len(filter_boxes(b, preset(), train=False)[0]) == 2


def test_keep_classes_reindexes_and_drops_others():
    b = boxes([(0, 0, 0, 10, 10, c) for c in (0, 1, 2, 3, 5)])
    kept, stats = filter_boxes(b, preset(classes=["ped", "2w", "car"], keep_classes=[0, 1, 2]), train=False)
    assert kept["class_id"].tolist() == [0, 1, 2]
    assert stats.dropped_class == 2


def test_class_ids_beyond_the_class_list_are_dropped():
    b = boxes([(0, 0, 0, 10, 10, 0), (0, 0, 0, 10, 10, 7)])
    kept, stats = filter_boxes(b, preset(), train=False)
    assert kept["class_id"].tolist() == [0] and stats.dropped_class == 1


def test_label_frames_on_a_250ms_grid_with_jitter():
    # reference = first stamp >= 100 ms (130 ms); 1 ms jitter is kept (631 ms), off-grid stamps
    # are dropped (500 ms), and of two stamps near one slot the closer wins (380 over 381)
    grid = 130_000 + 250_000 * np.arange(10)
    ts = np.sort(np.concatenate([[50_000, 381_000, 500_000], grid]))
    ts[ts == grid[2]] += 1_000
    kept = label_frame_times(ts, preset(label_period_ms=250))
    expected = grid.copy()
    expected[2] += 1_000
    assert kept.tolist() == expected.tolist()


def test_label_frames_60hz_subsampled_to_about_10hz():
    ts = np.round(np.arange(0, 61) * 1e6 / 60).astype(np.int64) + 200_000
    kept = label_frame_times(ts, preset(label_period_ms=100))
    # median period 16667 us -> base delta 6 * 16667 = 100 ms: every 6th stamp
    assert kept.tolist() == ts[::6].tolist()


def test_grid_and_frame_mapping():
    assert grid_start(1_000_000, 50_000, 50_000) == 50_000
    assert grid_start(130_000, 50_000, 50_000) == 80_000
    ends = np.arange(80_000, 1_000_001, 50_000)
    idx = frames_to_repr(np.array([130_000, 381_000, 2_000_000, 80_000]), ends, 50_000, 2_000)
    assert idx.tolist() == [1, 6, -1, 0]


@pytest.mark.parametrize("bad", [dict(height=0), dict(width=-3)])
def test_preset_dimensions_are_validated(bad):
    from leod.plumbing.errors import ConfigError
    from leod.schema import from_dict

    with pytest.raises(ConfigError, match="datasets.x"):
        from_dict(
            DatasetPreset, {**dict(format="raw", height=10, width=10, classes=["a"]), **bad}, "datasets.x"
        )
