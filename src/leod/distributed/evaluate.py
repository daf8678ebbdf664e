"""Evaluation over ranks: each rank predicts its share of the sequences, rank 0 unites the
predictions in the single-process order and scores them (see :mod:`leod.distributed.shard`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from leod.config import Params
from leod.data.layout import Manifest
from leod.data.sequence import SequenceData
from leod.detect.dataset import Evaluation, evaluation_options, predict_sequences, score_predictions
from leod.distributed.shard import Ranks, gather_arrays, in_order, share
from leod.model.detector import RecurrentDetector


def evaluate_shared(
    model: RecurrentDetector,
    seqs: Sequence[SequenceData],
    manifest: Manifest,
    params: Params,
    device: torch.device,
    batch_size: int,
    ranks: Ranks,
) -> Evaluation | None:
    """Evaluation with the predictions made over all ranks; scored on rank 0, None elsewhere."""
    preds = predict_sequences(model, share(seqs, ranks), device, evaluation_options(params, batch_size))
    parts = gather_arrays(preds, ranks)
    if parts is None:
        return None
    return score_predictions(in_order(parts, [s.name for s in seqs]), seqs, manifest, params)
