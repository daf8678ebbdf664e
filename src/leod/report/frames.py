"""Example frames for the report: withheld train frames with their pseudo labels and test frames
with the model's predictions, drawn from the preprocessed dataset (reads HDF5, no plotting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leod.data.layout import load_manifest
from leod.data.sequence import SequenceData, Split
from leod.labels.boxes import BOX_DTYPE, fold_ignore_class, to_representation_pixels, validate_boxes
from leod.plumbing.errors import DataFormatError
from leod.pseudo.store import SequenceLabels
from leod.visual.draw import histogram_to_rgb


@dataclass(frozen=True)
class FrameExample:
    """One panel of the example-frame figure; boxes in representation pixels."""

    title: str
    image: np.ndarray  # (H, W, 3) float in [0, 1]
    gt: np.ndarray  # BOX_DTYPE
    pseudo: np.ndarray | None = None  # None: not shown (test frame or no pseudo labels)
    pred: np.ndarray | None = None  # None: not shown (train frame or no predictions)


def load_predictions(path: Path) -> dict[str, np.ndarray] | None:
    """Test predictions of a model (``test_predictions.npz``: sequence -> BOX_DTYPE); None if absent."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc})") from exc
    for name, boxes in out.items():
        if boxes.dtype != BOX_DTYPE:
            raise DataFormatError(f"{path}: predictions of '{name}' have dtype {boxes.dtype}, not BOX_DTYPE")
        validate_boxes(boxes, f"{path}:{name}")
    return out


def _spread_order(names: Sequence[str], n: int) -> list[str]:
    """``n`` names spread evenly over the list first, then the rest in order (fallbacks)."""
    if not names or n <= 0:
        return list(names)
    first = sorted({(2 * i + 1) * len(names) // (2 * n) for i in range(n)})
    return [names[i] for i in first] + [s for i, s in enumerate(names) if i not in first]


def _best_frame(seq: SequenceData, candidates: np.ndarray) -> int | None:
    """The candidate label frame with the most GT boxes (latest on ties: more model history)."""
    counts = np.array([len(seq.boxes(int(seq.label_repr[f]))) for f in candidates], np.int64)
    if not counts.size or counts.max() == 0:
        return None
    return int(candidates[np.flatnonzero(counts == counts.max())[-1]])


def pseudo_at(labels: SequenceLabels | None, repr_idx: int, downsample: bool) -> np.ndarray:
    """A sequence's pseudo labels at one repr frame, in representation pixels."""
    if labels is None:
        return np.zeros(0, BOX_DTYPE)
    hits = np.flatnonzero(labels.repr_idx == repr_idx)
    boxes = labels.frame(int(hits[0])) if hits.size else np.zeros(0, BOX_DTYPE)
    return to_representation_pixels(fold_ignore_class(boxes), downsample)


def _frame_title(split: str, seq: SequenceData, f: int, extra: str = "") -> str:
    return f"{split} {seq.name} @ {seq.label_times_us[f] / 1e6:.2f} s{extra}"


@dataclass(frozen=True)
class FrameInputs:
    """Inputs of the example-frame figure; the pseudo-label and prediction files may be absent."""

    data: Path  # preprocessed dataset folder
    split: Split  # which train label frames supervised r0 (the others were withheld)
    pseudo: Path | None  # labels.npz of the round whose pseudo labels are drawn
    predictions: Path | None  # test_predictions.npz of the model whose predictions are drawn
    score: float = 0.3  # predictions are drawn from objectness x class confidence >= score
    min_time_us: int = 0  # skip earlier frames (the recurrent model has no history yet)

    def caption(self) -> str:
        """What the figure shows, naming the files the overlays come from."""
        pseudo = f" (`{self.pseudo}`)" if self.pseudo else ""
        preds = f" (`{self.predictions}`)" if self.predictions else ""
        return (
            f"Example frames. Train frames whose labels the split withheld: ground truth green, pseudo "
            f"labels{pseudo} blue (dashed: ignore regions). Test frames: ground truth green, "
            f"predictions{preds} with objectness x class confidence >= {self.score:g} red. "
            "Events summed over the window: ON red, OFF blue."
        )


def select_examples(
    inputs: FrameInputs,
    pseudo: Mapping[str, SequenceLabels] | None,
    predictions: Mapping[str, np.ndarray] | None,
    n_train: int = 2,
    n_test: int = 2,
) -> list[FrameExample]:
    """Deterministic example frames spread over the sequences: withheld train frames with GT
    (with ``pseudo`` drawn there), then test frames (with ``predictions``); ``None`` for an
    overlay that is not available. Per sequence the frame with the most GT boxes is shown."""
    manifest = load_manifest(inputs.data)
    out = []
    for split_name, n in (("train", n_train), ("test", n_test)):
        found = 0
        for name in _spread_order(manifest.splits.get(split_name, []), n):
            if found == n:
                break
            seq = SequenceData(manifest.sequence(inputs.data, split_name, name))
            frames = np.flatnonzero(seq.label_times_us >= inputs.min_time_us)
            if split_name == "train":
                frames = np.setdiff1d(frames, inputs.split.sequences.get(name, ()))
            f = _best_frame(seq, frames)
            if f is None:
                continue
            r = int(seq.label_repr[f])
            image = histogram_to_rgb(seq.read_frames(r, r + 1)[0])
            if split_name == "train":
                shown = None if pseudo is None else pseudo_at(pseudo.get(name), r, manifest.downsample)
                out.append(
                    FrameExample(_frame_title("train", seq, f, ", GT withheld"), image, seq.boxes(r), shown)
                )
            else:
                shown = (
                    None
                    if predictions is None
                    else _predictions_at(predictions.get(name), seq, f, inputs.score)
                )
                out.append(FrameExample(_frame_title("test", seq, f), image, seq.boxes(r), pred=shown))
            found += 1
    return out


def _predictions_at(boxes: np.ndarray | None, seq: SequenceData, f: int, score: float) -> np.ndarray:
    """The predictions stamped at label frame ``f`` whose objectness x class confidence reach ``score``."""
    if boxes is None:
        return np.zeros(0, BOX_DTYPE)
    keep = (boxes["t"] == seq.label_times_us[f]) & (boxes["class_confidence"] * boxes["objectness"] >= score)
    return boxes[keep]
