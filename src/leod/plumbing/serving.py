"""The detector as an MLflow ``pyfunc`` model, logged as code (never pickled).

MLflow's "models from code" stores a small script with the model (``pyfunc_entry.py``, which
builds :class:`DetectorModel`) and executes it on load, so nothing is unpickled: the weights
are read with ``torch.load(weights_only=True)`` from the model folder logged as the artefact
``model`` (``model.pt`` + ``model.json``).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from leod.model.detector import RecurrentDetector
from leod.plumbing.errors import DataFormatError
from leod.training.model_files import load_model

COLUMNS = ["frame", "x", "y", "w", "h", "class_id", "class_confidence", "objectness"]


def detection_table(parts: list[tuple[int, np.ndarray]]) -> pd.DataFrame:
    """One row per detection (:data:`COLUMNS`) of ``(frame index, BOX_DTYPE boxes)`` pairs."""
    tables = [
        pd.DataFrame(
            {
                "frame": np.full(len(boxes), frame, np.int64),
                **{k: boxes[k] for k in ("x", "y", "w", "h")},
                "class_id": boxes["class_id"].astype(np.int64),
                "class_confidence": boxes["class_confidence"],
                "objectness": boxes["objectness"],
            }
        )
        for frame, boxes in parts
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)


@torch.inference_mode()
def detect_frames(
    model: RecurrentDetector,
    frames: np.ndarray,
    conf_threshold: float | None = None,
    nms_iou: float | None = None,
) -> pd.DataFrame:
    """Detections of every frame of one sequence ``(T, C, H, W)`` (thresholds: the model's)."""
    if frames.ndim != 4:
        raise DataFormatError(f"expected event histograms (T, C, H, W), got shape {frames.shape}")
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).to(device)
    states = None
    parts = []
    for t in range(x.shape[0]):
        preds, states = model.forward_step(x[t : t + 1], states)
        parts.append((t, model.predict(preds, conf_threshold, nms_iou)[0].to_box_array(t)))
    return detection_table(parts)


class DetectorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: the model folder is the artefact ``model``; CPU unless CUDA is visible."""

    detector: RecurrentDetector
    info: dict

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.detector, self.info = load_model(Path(context.artifacts["model"]))
        if torch.cuda.is_available():
            self.detector = self.detector.cuda()

    def predict(self, context, model_input, params=None):
        """Detections with the model's own thresholds (``model.confidence_threshold``, ``nms_iou``).

        ``model_input``: the event histograms of one recording, ``(T, C, H, W)`` as preprocess
        writes them, streamed in time order with the LSTM state carried over; one row per
        detection: ``frame, x, y, w, h, class_id, class_confidence, objectness`` (input pixels).

        Left without type hints on purpose: MLflow reads a hinted ``predict`` as a schema and
        expects ``list[...]`` inputs, while this model takes one array of frames.
        """
        return detect_frames(self.detector, np.asarray(model_input, np.float32))
