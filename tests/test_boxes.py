"""Sensor <-> representation pixels and LEOD's ignore class (src/leod/labels/boxes.py)."""

from __future__ import annotations

import numpy as np

from leod.labels.boxes import (
    IGNORE_CLASS_ID,
    empty_boxes,
    fold_ignore_class,
    representation_size,
    to_representation_pixels,
    to_sensor_pixels,
)


def test_half_resolution_sizes_floor_like_rvt():
    assert representation_size(720, 1280, True) == (360, 640)
    assert representation_size(5, 7, True) == (2, 3)
    assert representation_size(5, 7, False) == (5, 7)


def test_box_scaling_is_exact_and_leaves_its_input_alone():
    boxes = empty_boxes(3)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = (
        [1.1, 0.3, 1e-7],
        [2.5, 7.7, 3.3],
        [3.9, 1.0, 0.1],
        [4.0, 5.5, 1e6],
    )
    half = to_representation_pixels(boxes, True)
    for key in ("x", "y", "w", "h"):
        assert np.array_equal(half[key], boxes[key] / np.float32(2))
        assert np.array_equal(to_sensor_pixels(half, True)[key], boxes[key])  # a power of two: exact
    assert np.array_equal(to_representation_pixels(boxes, False), boxes)
    assert np.array_equal(half["t"], boxes["t"]) and half.dtype == boxes.dtype
    assert boxes["x"][0] == np.float32(1.1)


def test_ignore_class_is_folded_into_the_flag():
    boxes = empty_boxes(3)
    boxes["class_id"] = [0, IGNORE_CLASS_ID, 1]
    boxes["ignore"] = [False, False, True]
    assert fold_ignore_class(boxes)["ignore"].tolist() == [False, True, True]
    assert boxes["ignore"].tolist() == [False, False, True]
