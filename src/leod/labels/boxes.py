"""One internal bounding-box record type, its conversions, and its two pixel frames.

Every box in the pipeline (ground truth, predictions, pseudo labels) is a row of a numpy
structured array of :data:`BOX_DTYPE` (top-left corner and size, ``t`` in microseconds).
Files hold sensor pixels, in the Prophesee evaluator dtype or the legacy Gen1 dtype (``ts``,
``confidence``); training and evaluation work in representation pixels, halved on
downsampled datasets (:func:`to_representation_pixels` and back).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leod.plumbing.errors import DataFormatError

BOX_DTYPE = np.dtype(
    [
        ("t", "<i8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "<u4"),
        ("class_confidence", "<f4"),
        ("track_id", "<u4"),
        ("objectness", "<f4"),
        ("ignore", "?"),  # neither an object nor background (short-track, low-confidence pseudo labels)
    ]
)

#: The dtype of the Prophesee evaluator and RVT (``src/io/box_loading.py``), 40 bytes.
EVALUATOR_DTYPE = np.dtype(
    {
        "names": ["t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence"],
        "formats": ["<i8", "<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
        "offsets": [0, 8, 12, 16, 20, 24, 28, 32],
        "itemsize": 40,
    }
)

#: LEOD marks boxes that must be neither learned nor treated as background with this class.
IGNORE_CLASS_ID = 1024

_RENAMES = {"ts": "t", "confidence": "class_confidence"}
_REQUIRED = ("t", "x", "y", "w", "h", "class_id")


def empty_boxes(n: int = 0) -> np.ndarray:
    """A zero-filled box array of length ``n``; objectness and confidence default to 1."""
    boxes = np.zeros(n, dtype=BOX_DTYPE)
    boxes["class_confidence"] = 1.0
    boxes["objectness"] = 1.0
    return boxes


def to_internal(array: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Normalise any supported structured box array to :data:`BOX_DTYPE`.

    Field names are matched after renaming the legacy ``ts``/``confidence``; missing
    optional fields get defaults (confidence 1, track 0, objectness = class confidence, as
    LEOD does for ground truth).
    """
    names = array.dtype.names
    if names is None:
        raise DataFormatError(f"{source}: box array is not a structured array (dtype {array.dtype})")
    if array.ndim != 1:
        raise DataFormatError(f"{source}: box array must be 1-D, got shape {array.shape}")
    present = {_RENAMES.get(n, n): n for n in names}
    missing = [f for f in _REQUIRED if f not in present]
    if missing:
        raise DataFormatError(f"{source}: box array lacks field(s) {missing}; has {list(names)}")
    for field in BOX_DTYPE.names:
        dtype = array.dtype[present[field]] if field in present else None
        if dtype is not None and (dtype.shape != () or dtype.kind not in "biuf"):
            raise DataFormatError(f"{source}: box field '{present[field]}' is {dtype}, expected a number")
    out = empty_boxes(len(array))
    for field in BOX_DTYPE.names:
        if field in present:
            out[field] = array[present[field]]
    if "objectness" not in present and "class_confidence" in present:
        out["objectness"] = out["class_confidence"]
    return out


def validate_boxes(boxes: np.ndarray, source: str) -> None:
    """Raise :class:`DataFormatError` for non-finite values or negative sizes."""
    for field in ("x", "y", "w", "h", "class_confidence", "objectness"):
        bad = ~np.isfinite(boxes[field])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{source}: {int(bad.sum())} box(es) with non-finite '{field}' (first at row {i})"
            )
    neg = (boxes["w"] < 0) | (boxes["h"] < 0)
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise DataFormatError(f"{source}: {int(neg.sum())} box(es) with negative w or h (first at row {i})")
    if len(boxes) > 1 and np.any(np.diff(boxes["t"]) < 0):
        raise DataFormatError(f"{source}: box timestamps are not sorted")


def load_bbox_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a ``*_bbox.npy`` file (either on-disk dtype) as validated :data:`BOX_DTYPE`."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: box file not found")
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy box file ({exc})") from exc
    boxes = to_internal(raw, str(path))
    validate_boxes(boxes, str(path))
    return boxes


def to_evaluator(boxes: np.ndarray) -> np.ndarray:
    """Convert internal boxes to the 40-byte Prophesee evaluator dtype (for files and COCO)."""
    out = np.zeros(len(boxes), dtype=EVALUATOR_DTYPE)
    for field in EVALUATOR_DTYPE.names:
        out[field] = boxes[field]
    return out


def save_bbox_npy(path: str | os.PathLike[str], boxes: np.ndarray) -> None:
    """Write boxes in the evaluator dtype, the format that RVT and the toolbox read."""
    from leod.plumbing.atomic import save_npy

    save_npy(path, to_evaluator(boxes))


def clip_to_frame(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop boxes to the field of view ``[0, width] x [0, height]`` (returns a copy)."""
    out = boxes.copy()
    x1 = np.clip(boxes["x"], 0, width)
    y1 = np.clip(boxes["y"], 0, height)
    x2 = np.clip(boxes["x"] + boxes["w"], 0, width)
    y2 = np.clip(boxes["y"] + boxes["h"], 0, height)
    out["x"], out["y"], out["w"], out["h"] = x1, y1, x2 - x1, y2 - y1
    return out


def fold_ignore_class(boxes: np.ndarray) -> np.ndarray:
    """A copy of ``boxes`` with LEOD's ignore class (:data:`IGNORE_CLASS_ID`) flagged ``ignore``."""
    out = boxes.copy()
    out["ignore"] |= out["class_id"] == IGNORE_CLASS_ID
    return out


def downsample_factor(downsample: bool) -> int:
    """Sensor pixels per representation pixel: 2 where a dataset's histograms are built at half
    resolution (RVT's ``ds2_nearest`` 1Mpx / eTraM files), else 1."""
    return 2 if downsample else 1


def representation_size(height: int, width: int, downsample: bool) -> tuple[int, int]:
    """``(H, W)`` of the event representations of a ``height x width`` sensor."""
    factor = downsample_factor(downsample)
    return height // factor, width // factor


def _scaled(boxes: np.ndarray, factor: float) -> np.ndarray:
    out = boxes.copy()
    for key in ("x", "y", "w", "h"):
        out[key] *= np.float32(factor)  # a power of two: exact in float32
    return out


def to_representation_pixels(boxes: np.ndarray, downsample: bool) -> np.ndarray:
    """A copy of sensor-pixel ``boxes`` in representation pixels (halved where downsampled)."""
    return _scaled(boxes, 1 / downsample_factor(downsample))


def to_sensor_pixels(boxes: np.ndarray, downsample: bool) -> np.ndarray:
    """A copy of representation-pixel ``boxes`` in sensor pixels (doubled where downsampled)."""
    return _scaled(boxes, downsample_factor(downsample))
