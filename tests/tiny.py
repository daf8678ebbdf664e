"""The tiny synthetic configuration that the slow and end-to-end tests share."""

from __future__ import annotations

import copy


def tiny_dict(params: dict, train_sequences: int = 2) -> dict:
    """params.yaml shrunk to a 64x48 sensor and 1 s sequences: a dataset in seconds."""
    d = copy.deepcopy(params)
    d["datasets"]["synthetic"].update(height=48, width=64, min_box_diag=4, min_box_side=2)
    d["datasets"]["synthetic"]["evaluation"] = {"skip_first_us": 0, "min_diag": 4, "min_side": 2}
    d["synthetic"].update(sequences={"train": train_sequences, "val": 1, "test": 1}, duration_s=1.0)
    d["synthetic"]["objects"]["car"].update(width_px={"min": 12, "max": 16}, height_px={"min": 7, "max": 9})
    d["synthetic"]["objects"]["pedestrian"].update(
        width_px={"min": 4, "max": 6}, height_px={"min": 9, "max": 12}
    )
    d["preprocess"]["workers"] = 1
    d["loader"].update(batch_size=2, sequence_length=3)
    return d
