"""The inference stages over ranks: each rank labels or predicts its share of the sequences,
rank 0 unites the shares in the single-process order (see :mod:`leod.distributed.shard`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple

import numpy as np
import torch

from leod.config import Params
from leod.data.layout import Manifest
from leod.data.sequence import SequenceData
from leod.distributed.shard import Ranks, assign, gather_arrays, in_order
from leod.model.detector import RecurrentDetector
from leod.pseudo.label import PseudoStats, pseudo_label_sequences
from leod.pseudo.store import SequenceLabels, label_arrays, labels_from_arrays
from leod.pseudo.tracker import TrackStats
from leod.training.inference import Evaluation, evaluation_options, predict_sequences, score_predictions

#: the key of a rank's counts among its label arrays (sequence keys all hold a "/")
_COUNTS = "pseudo_counts"


def my_share(seqs: Sequence[SequenceData], ranks: Ranks) -> list[SequenceData]:
    """The sequences this rank takes (balanced by frame count)."""
    return [seqs[i] for i in assign([s.num_frames for s in seqs], ranks.world_size)[ranks.rank]]


def pseudo_label_shared(
    model: RecurrentDetector,
    seqs: Sequence[SequenceData],
    kept: Mapping[str, list[int]],
    params: Params,
    device: torch.device,
    ranks: Ranks,
    progress: bool = True,
) -> tuple[dict[str, SequenceLabels], PseudoStats] | None:
    """:func:`pseudo_label_sequences` over all ranks; the whole result on rank 0, None elsewhere."""
    if ranks.world_size == 1:
        return pseudo_label_sequences(model, seqs, kept, params, device, progress)
    labels, stats = pseudo_label_sequences(model, my_share(seqs, ranks), kept, params, device, progress)
    counts = np.array([*astuple(stats)[:4], *astuple(stats.tracker)], np.int64)
    parts = gather_arrays({**label_arrays(labels), _COUNTS: counts}, ranks)
    if parts is None:
        return None
    total = sum(p.pop(_COUNTS) for p in parts)
    shares = [labels_from_arrays(p, f"rank {r}'s pseudo labels") for r, p in enumerate(parts)]
    united = in_order(shares, [s.name for s in seqs])
    return united, PseudoStats(*map(int, total[:4]), TrackStats(*map(int, total[4:])))


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
    preds = predict_sequences(model, my_share(seqs, ranks), device, evaluation_options(params, batch_size))
    parts = gather_arrays(preds, ranks)
    if parts is None:
        return None
    return score_predictions(in_order(parts, [s.name for s in seqs]), seqs, manifest, params)
