"""One internal bounding-box record type, and conversions from the Prophesee file dtypes.

Every box in the pipeline (ground truth, predictions, pseudo labels) is a row of a numpy
structured array of :data:`BOX_DTYPE`. Coordinates are the top-left corner and size in
pixels of the *original* sensor resolution, ``t`` is in microseconds.

Files on disk come in two dtypes that the Prophesee toolbox and RVT use:

* the evaluator dtype (``t, x, y, w, h, class_id, track_id, class_confidence``);
* the legacy Gen1 dtype (``ts, x, y, w, h, class_id, confidence, track_id``).

Both normalise to :data:`BOX_DTYPE`. ``objectness`` is copied from ``class_confidence``
for ground truth (as LEOD does) and ``ignore`` marks regions that must neither be
learned as objects nor as background (pseudo labels of short tracks, low-confidence boxes).
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
        ("ignore", "?"),
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
    optional fields get defaults (confidence 1, track 0, objectness = class confidence).
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
