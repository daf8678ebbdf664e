"""The training loop: one readable function, no framework.

Reads top to bottom like nanoGPT's ``train.py``: data; model, AdamW and a linear one-cycle
schedule; resume; then the loop (recurrent forward over L steps, YOLOX loss at the supervised
steps, backward, clip, step), validating every ``eval_every`` steps and checkpointing
regularly. The best weights are returned, never written to the output folder. Under torchrun
every rank trains its share of each batch's slots, DDP all-reduces the gradients, and rank 0
alone validates, logs and checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leod.config import Params
from leod.data.batch import Batch
from leod.data.layout import load_manifest
from leod.data.loader import iterate_batches
from leod.data.sampling import TrainSampler
from leod.data.sequence import LabelArrays, LabelFiles, open_sequences
from leod.detect.dataset import evaluate_model
from leod.distributed import group
from leod.model.convlstm import LstmStates
from leod.model.detector import RecurrentDetector
from leod.model.losses import LossTerms
from leod.model.targets import BoxTargets
from leod.plumbing.errors import DataFormatError, LeodError
from leod.plumbing.progress import progress_bar
from leod.plumbing.tracking import NullTracker
from leod.training import distributed
from leod.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from leod.training.device import autocast, grad_scaler, pick_device, prepare_for_gpu
from leod.training.model_files import BEST_WEIGHTS, load_into, load_weights
from leod.training.recipe import recipe_digest

log = logging.getLogger("leod.train")

LAST = "last.pt"


@dataclass(frozen=True)
class TrainResult:
    best_ap: float
    best_step: int
    steps: int
    history: list[dict[str, float]]
    best_weights: dict[str, torch.Tensor]  # the weights of the best validation (CPU)
    final_weights: dict[str, torch.Tensor]  # the weights after the last step (CPU)
    recipe: str  # digest of everything that shaped the run (leod.training.recipe)

    def published(self, select: str) -> tuple[dict[str, torch.Tensor], int, float]:
        """The weights to publish (``train.select``), their step and validation AP."""
        if select == "best_val":
            return self.best_weights, self.best_step, self.best_ap
        last_ap = next(row["val/AP"] for row in reversed(self.history) if "val/AP" in row)
        return self.final_weights, self.steps, last_ap


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the model's parameters, as one fused kernel where torch has one (CPU, CUDA).

    The fused step does the same per-element AdamW update as the default multi-tensor one,
    in a single pass over each parameter (it differs only in float rounding).
    """
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def seed_everything(seed: int) -> None:
    """One seed for torch, numpy and python: a fixed seed gives the same run on CPU."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (libraries may draw from the global state)
    torch.manual_seed(seed)


def supervised_targets(batch: Batch) -> BoxTargets:
    """The targets of the supervised (time, sample) pairs, in ``supervised.nonzero()`` order."""
    t_idx, b_idx = batch.supervised.nonzero(as_tuple=True)
    rows = batch.targets[t_idx, b_idx]  # (S, N, 5): class, cx, cy, w, h
    return BoxTargets(
        boxes=rows[..., 1:5].float(),
        labels=rows[..., 0].long(),
        ignore=batch.ignore[t_idx, b_idx],
        valid=batch.valid[t_idx, b_idx],
    )


class BatchLoss(torch.nn.Module):
    """The forward pass and loss of one batch: what DistributedDataParallel wraps.

    ``run_head`` runs the neck and head even on a batch without supervised frames (on an
    empty batch): a rank whose share holds none still takes part in the synchronised
    BatchNorm and the gradient all-reduce of a step that updates.
    """

    def __init__(self, model: RecurrentDetector) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, batch: Batch, states: LstmStates | None, run_head: bool
    ) -> tuple[LossTerms | None, LstmStates]:
        model = self.model
        preds, new_states = model.forward_sequence(batch.frames, states, batch.supervised)
        if preds is None and run_head:
            features, _ = model.forward_backbone(batch.frames[0, :0], None)
            preds = model.forward_detect(features)
        if preds is None:
            return None, new_states
        return model.loss(preds, supervised_targets(batch).to(batch.frames.device)), new_states


def loss_share(terms: LossTerms, device: torch.device) -> float:
    """This rank's loss as a share of the global batch's (1 alone).

    The YOLOX loss divides by the batch's positives; rescaled by the share, a rank's loss is
    normalised by the global count, and the ranks' losses add up to the global batch's loss.
    """
    if distributed.world_size() == 1:
        return 1.0
    (fg,) = distributed.all_sum([float(terms.num_fg)], device)
    return max(terms.num_fg, 1) / max(fg, 1)


def backward_loss(terms: LossTerms, share: float) -> torch.Tensor:
    """The loss to backpropagate: the share times the world size, since DDP averages the
    ranks' gradients (alone: the loss as it is)."""
    world = distributed.world_size()
    return terms.total if world == 1 else terms.total * (share * world)


def global_floats(terms: LossTerms, share: float, device: torch.device) -> dict[str, float]:
    """The global batch's loss terms and positives, for the log (all ranks call it)."""
    local = terms.as_floats()
    if distributed.world_size() == 1:
        return local
    keys = ["loss", "iou_loss", "obj_loss", "cls_loss"]
    summed = distributed.all_sum([local[k] * share for k in keys] + [local["num_fg"]], device)
    return dict(zip([*keys, "num_fg"], summed, strict=True))


def resumable(last: Path, meta: dict) -> dict | None:
    """The scratch checkpoint of a killed run of this very recipe, or None.

    A checkpoint of other inputs (stale) or one that cannot be read (corrupt) is ignored with
    a warning: the run starts over.
    """
    if not last.is_file():
        return None
    try:
        ckpt = load_checkpoint(last)
    except DataFormatError as exc:
        log.warning("ignoring %s: %s", last, exc)
        return None
    if ckpt["meta"] != meta:
        log.warning("ignoring %s: it was written by a run with other params, data or teacher", last)
        return None
    return ckpt


def clear_scratch(ckpt_dir: Path) -> None:
    """Remove the resumable checkpoint once the run's outputs are published."""
    (ckpt_dir / LAST).unlink(missing_ok=True)


def cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train(
    params: Params,
    data_root: Path,
    kept: Mapping[str, list[int]] | None,
    ckpt_dir: Path,
    tracker=None,
    labels_override: Mapping[str, LabelFiles | LabelArrays] | None = None,
    init_weights: Path | None = None,
    progress: bool = True,
    log_row: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a detector. Nothing is published here: the final and the best weights are returned
    (the best kept in the scratch checkpoint) for the caller to publish, then :func:`clear_scratch`.

    Under torchrun, ranks other than 0 return a result without best weights."""
    device = group.process_device(pick_device(params.train.device))
    with group.process_group(group.backend_for(device)):
        return _train(
            params,
            data_root,
            kept,
            ckpt_dir,
            tracker,
            labels_override,
            init_weights,
            progress,
            log_row,
            device,
        )


def _train(
    params: Params,
    data_root: Path,
    kept: Mapping[str, list[int]] | None,
    ckpt_dir: Path,
    tracker,
    labels_override: Mapping[str, LabelFiles | LabelArrays] | None,
    init_weights: Path | None,
    progress: bool,
    log_row: Callable[[dict[str, float]], None] | None,
    device: torch.device,
) -> TrainResult:
    cfg, tcfg = params.model_config, params.train
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    distributed.check_batch_split(params.loader.batch_size, world)
    tracker = (tracker or NullTracker()) if main else NullTracker()
    if not main:  # rank 0 reports progress for all
        progress = False
        log.setLevel(logging.WARNING)
    seed_everything(params.seed)

    # -- data (the kept label frames supervise, every other frame only feeds memory)
    manifest = load_manifest(data_root)
    train_seqs = open_sequences(data_root, manifest, "train", kept=kept, labels_override=labels_override)
    val_seqs = open_sequences(data_root, manifest, "val")
    sampler = TrainSampler(train_seqs, params.loader, params.seed)

    # -- model, optimiser, schedule, loss scaling (fp16 GPUs only)
    model = RecurrentDetector(cfg).to(device)
    if init_weights is not None:
        load_into(model, load_weights(init_weights, params), init_weights / BEST_WEIGHTS)
    if world > 1:
        distributed.convert_sync_batchnorm(model)  # before compiling: the graph sees the synced layers
    prepare_for_gpu(model, device, tcfg)
    batch_loss = distributed.wrap_ddp(BatchLoss(model), device)  # DDP under torchrun
    optimizer = make_optimizer(model, tcfg.lr, tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=tcfg.lr,
        total_steps=tcfg.steps,
        pct_start=tcfg.pct_start,
        anneal_strategy="linear",
        div_factor=tcfg.div_factor,
        final_div_factor=tcfg.final_div_factor,
        cycle_momentum=False,
    )
    scaler = grad_scaler(device, tcfg.amp)
    meta = {
        "recipe": recipe_digest(params, data_root, manifest, kept, labels_override, init_weights),
        "preset": cfg.preset,
        "num_classes": cfg.num_classes,
    }

    # -- resume from a killed run of the same recipe (see leod.training.recipe; a stale or
    # corrupt checkpoint is ignored with a warning). Replaying the sampler's plans and
    # restoring the RNG and recurrent states ends, on CPU, with exactly the weights of an
    # uninterrupted run; the checkpoint holds the global batch's states, so any number of
    # ranks resumes it.
    step, states, nonfinite, history = 0, None, 0, []
    best_ap, best_step, best_weights = -math.inf, -1, None
    last = ckpt_dir / LAST
    ckpt = resumable(last, meta)
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
        restore_rng_state(ckpt["rng_state"])
        step, extra = ckpt["step"], ckpt["extra"]
        if extra["scaler"]:
            scaler.load_state_dict(extra["scaler"])
        states = (
            [
                (distributed.shard_slots(h).to(device), distributed.shard_slots(c).to(device))
                for h, c in extra["states"]
            ]
            if extra["states"]
            else None
        )
        nonfinite, history = extra["nonfinite"], extra["history"]
        best_ap, best_step, best_weights = extra["best_ap"], extra["best_step"], extra["best_weights"]
        log.info("resuming from %s at step %d", last, step)
    plans = iter(sampler)
    for _ in range(step):  # replay the sampler (plans only, no data is read): one plan per step
        next(plans)
    shares = (plan.shard(rank, world) for plan in plans)
    batches = iterate_batches(train_seqs, shares, params.loader.num_workers, pin_memory=device.type == "cuda")

    def checkpoint() -> None:
        # every rank hands in its slots' states; rank 0 writes the global batch's
        saved = (
            [(distributed.gather_slots(h).cpu(), distributed.gather_slots(c).cpu()) for h, c in states]
            if states
            else None
        )
        if not main:
            return
        save_checkpoint(
            last,
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
            step=step,
            rng_state=capture_rng_state(),
            meta=meta,
            extra={
                "states": saved,
                "scaler": scaler.state_dict(),
                "nonfinite": nonfinite,
                "best_ap": best_ap,
                "best_step": best_step,
                "best_weights": best_weights,
                "history": history,
            },
        )

    def validate() -> float:
        """COCO AP on the val split, on rank 0 (the other ranks wait; they return NaN)."""
        nonlocal best_ap, best_step, best_weights
        if not main:
            group.barrier()
            return math.nan
        ev = evaluate_model(model, val_seqs, manifest, params, device, tcfg.eval_batch_size)
        assert ev is not None  # one rank: the result is here
        result = ev.result
        model.train()
        ap = result.metrics["AP"]
        tracker.log_metrics({f"val/{k}": v for k, v in result.metrics.items()}, step=step)
        if ap > best_ap:
            best_ap, best_step, best_weights = ap, step, cpu_copy(model)
        group.barrier()
        return ap

    # -- loop
    model.train()
    bar = progress_bar(tcfg.steps, "train", "step", enabled=progress, initial=step)
    started, start_step = time.monotonic(), step
    while step < tcfg.steps:
        batch = next(batches).to(device, non_blocking=True)
        states = model.reset(states, batch.is_first)
        norm_stats = [b.clone() for b in model.buffers()]  # BatchNorm statistics, kept if non-finite
        # alone: the head runs only on supervised frames; under torchrun every rank runs it
        # as soon as any rank's share holds one
        run_head = world > 1 and distributed.all_sum([float(batch.supervised.sum())], device)[0] > 0
        with autocast(device, tcfg.amp):
            terms, new_states = batch_loss(batch, states, run_head)
        # a batch without kept label frames has no loss: its memory must be finite instead
        finite = distributed.all_true(
            bool(
                torch.isfinite(terms.total)
                if terms is not None
                else all(torch.isfinite(t).all() for pair in new_states for t in pair)
            ),
            device,
        )
        # streaming slots carry their memory on (random-access slots start fresh every batch);
        # a non-finite step leaves no trace: its memory is dropped (every slot starts afresh)
        # and the BatchNorm statistics it updated are put back
        states = model.detach(new_states) if finite else None
        if not finite:
            with torch.no_grad():
                for buffer, saved in zip(model.buffers(), norm_stats, strict=True):
                    buffer.copy_(saved)
        if terms is None or not finite:  # no kept label frame, or a non-finite step: no update
            if not finite:
                nonfinite += 1
                log.warning(
                    "non-finite loss or memory at step %d (%d in a row): batch skipped", step, nonfinite
                )
                if nonfinite >= tcfg.max_nonfinite_steps:
                    bar.close()
                    raise LeodError(
                        f"training stopped: the loss was non-finite for {nonfinite} consecutive steps "
                        f"(step {step}); "
                        f"the last good checkpoint is {last if last.is_file() else 'not written yet'}; "
                        "lower train.lr or check the labels"
                    )
            step += 1  # a skipped batch still uses up its sampler plan: a resume replays in step
            if step < tcfg.steps:
                scheduler.step()
            bar.update()
            continue
        nonfinite = 0
        share = loss_share(terms, device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(backward_loss(terms, share)).backward()
        scaler.unscale_(optimizer)  # clip the true gradients (a no-op without fp16 loss scaling)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        scaler.step(optimizer)  # skips the update when fp16 gradients overflowed
        scaler.update()
        step += 1
        if step < tcfg.steps:  # the schedule has exactly `steps` values; do not run past its end
            scheduler.step()
        bar.update()

        row: dict[str, float] = {}
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            row = {"step": step, "lr": scheduler.get_last_lr()[0], **global_floats(terms, share, device)}
            rate = (step - start_step) / max(time.monotonic() - started, 1e-9)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", it_s=f"{rate:.2f}")
            if not progress:  # periodic log lines stand in for the bar (CI, piped output)
                eta = (tcfg.steps - step) / max(rate, 1e-9)
                log.info(
                    "step %d/%d loss %.3f lr %.2e %.2f step/s ETA %.0f s",
                    step,
                    tcfg.steps,
                    row["loss"],
                    row["lr"],
                    rate,
                    eta,
                )
        if step % tcfg.eval_every == 0 or step == tcfg.steps:
            row = row or {"step": step, "lr": scheduler.get_last_lr()[0]}
            row["val/AP"] = validate()
            log.info("step %d: val AP %.4f (best %.4f at %d)", step, row["val/AP"], best_ap, best_step)
        if row:
            history.append(row)
            # val/* went to the tracker inside validate(), with the per-class APs
            tracker.log_metrics(
                {k: v for k, v in row.items() if k != "step" and not k.startswith("val/")}, step=step
            )
            if log_row:
                log_row(row)
        if step % tcfg.checkpoint_every == 0 or step == tcfg.steps:
            checkpoint()
    bar.close()
    # the run ended on skipped batches before its first validation (the same on every rank)
    if not any("val/AP" in row for row in history):
        validate()
    return TrainResult(best_ap, best_step, step, history, best_weights, cpu_copy(model), meta["recipe"])
