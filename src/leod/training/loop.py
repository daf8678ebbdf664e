"""The training loop: one readable function, no framework.

Reads top to bottom like nanoGPT's ``train.py``:

1. open the data (the kept label frames supervise, every other frame only feeds memory);
2. build the model, AdamW and the linear one-cycle schedule;
3. resume from ``<ckpt_dir>/last.pt`` if a killed run left one (same params required);
4. loop: mixed streaming/random-access batch -> recurrent forward over the L steps ->
   YOLOX loss at the supervised steps -> backward, clip, step; carry the streaming
   slots' LSTM states to the next batch (detached), reset them where a sequence starts;
5. validate every ``eval_every`` steps, keep the best weights; checkpoint regularly.

A resumed run replays the sampler's plans (cheap: no data is read) and restores the RNG
and recurrent states, so on CPU it ends with exactly the weights of an uninterrupted run.
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
from leod.data.layout import Manifest, load_manifest
from leod.data.loader import iterate_batches
from leod.data.sampling import TrainSampler
from leod.data.sequence import LabelArrays, LabelFiles, open_sequences
from leod.errors import LeodError
from leod.model.detector import RecurrentDetector
from leod.model.targets import BoxTargets
from leod.progress import progress_bar
from leod.schema import to_dict
from leod.tracking import NullTracker
from leod.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from leod.training.device import autocast, pick_device
from leod.training.inference import evaluate_model
from leod.training.model_files import load_weights, save_model

log = logging.getLogger("leod.train")

LAST = "last.pt"


@dataclass(frozen=True)
class TrainResult:
    best_ap: float
    best_step: int
    steps: int
    history: list[dict[str, float]]
    final_weights: dict[str, torch.Tensor]  # the weights after the last step (CPU)


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


def train(
    params: Params,
    data_root: Path,
    kept: Mapping[str, list[int]] | None,
    model_dir: Path,
    ckpt_dir: Path,
    tracker=None,
    labels_override: Mapping[str, LabelFiles | LabelArrays] | None = None,
    init_weights: Path | None = None,
    progress: bool = True,
    log_row: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a detector; writes ``model_dir/{model.pt,model.json}`` (best val AP) atomically."""
    cfg, tcfg = params.model_config, params.train
    tracker = tracker or NullTracker()
    seed_everything(params.seed)
    device = pick_device(tcfg.device)

    # -- data
    manifest = load_manifest(data_root)
    train_seqs = open_sequences(data_root, manifest, "train", kept=kept, labels_override=labels_override)
    val_seqs = open_sequences(data_root, manifest, "val")
    sampler = TrainSampler(train_seqs, params.loader, params.seed)

    # -- model, optimiser, schedule
    model = RecurrentDetector(cfg).to(device)
    if init_weights is not None:
        model.load_state_dict(load_weights(init_weights, params))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
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
    meta = run_meta(params, manifest, kept, init_weights)

    # -- resume
    step, states, best_ap, best_step, history = 0, None, -math.inf, -1, []
    last = ckpt_dir / LAST
    ckpt = load_checkpoint(last) if last.is_file() else None
    if ckpt is not None and ckpt["meta"] != meta:
        log.warning("ignoring %s: it was written by a run with other params or data", last)
        ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
        restore_rng_state(ckpt["rng_state"])
        step, extra = ckpt["step"], ckpt["extra"]
        states = [(h.to(device), c.to(device)) for h, c in extra["states"]] if extra["states"] else None
        best_ap, best_step, history = extra["best_ap"], extra["best_step"], extra["history"]
        log.info("resuming from %s at step %d", last, step)
    plans = iter(sampler)
    for _ in range(step):  # replay the sampler (plans only, no data is read)
        next(plans)
    batches = iterate_batches(train_seqs, plans, params.loader.num_workers)

    def checkpoint() -> None:
        save_checkpoint(
            last,
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
            step=step,
            rng_state=capture_rng_state(),
            meta=meta,
            extra={
                "states": [(h.cpu(), c.cpu()) for h, c in states] if states else None,
                "best_ap": best_ap,
                "best_step": best_step,
                "history": history,
            },
        )

    def validate() -> float:
        nonlocal best_ap, best_step
        result = evaluate_model(model, val_seqs, manifest, params, device, tcfg.eval_batch_size).result
        model.train()
        ap = result.metrics["AP"]
        tracker.log_metrics({f"val/{k}": v for k, v in result.metrics.items()}, step=step)
        if ap > best_ap:
            best_ap, best_step = ap, step
            save_model(model_dir, model, params, {"step": step, "val_AP": ap})
        return ap

    # -- loop
    model.train()
    bar = progress_bar(tcfg.steps, "train", "step", enabled=progress, initial=step)
    nonfinite = 0
    started, start_step = time.monotonic(), step
    while step < tcfg.steps:
        batch = next(batches).to(device)
        states = model.reset(states, batch.is_first)
        with autocast(device, tcfg.amp):
            preds, new_states = model.forward_sequence(batch.frames, states, batch.supervised)
            terms = model.loss(preds, supervised_targets(batch).to(device)) if preds is not None else None
        # streaming slots carry their memory on; random-access slots start fresh every batch
        states = model.detach(new_states)
        if terms is None:  # no kept label frame in this batch: memory only, no update
            step += 1
            if step < tcfg.steps:
                scheduler.step()
            bar.update()
            continue
        loss = terms.total
        if not torch.isfinite(loss):
            nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
            log.warning("non-finite loss at step %d (%d in a row)", step, nonfinite)
            if nonfinite >= tcfg.max_nonfinite_steps:
                raise LeodError(
                    f"training stopped: the loss was non-finite for {nonfinite} consecutive steps "
                    f"(step {step}); "
                    f"the last good checkpoint is {last if last.is_file() else 'not written yet'}; "
                    "lower train.lr or check the labels"
                )
            continue
        nonfinite = 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        step += 1
        if step < tcfg.steps:  # the schedule has exactly `steps` values; do not run past its end
            scheduler.step()
        bar.update()

        row: dict[str, float] = {}
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            row = {"step": step, "lr": scheduler.get_last_lr()[0], **terms.as_floats()}
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
    last.unlink()  # the scratch checkpoint only serves crash recovery; a finished run needs none
    final = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(best_ap, best_step, step, history, final)


def run_meta(
    params: Params, manifest: Manifest, kept: Mapping[str, list[int]] | None, init_weights: Path | None
) -> dict:
    """What a resumable checkpoint must agree with: changed params or data mean a fresh run."""
    import hashlib
    import json

    recipe = {
        "model": to_dict(params.model_config),
        "train": to_dict(params.train),
        "loader": to_dict(params.loader),
        "seed": params.seed,
        "kept": kept,
        "init": str(init_weights) if init_weights else None,
        "data": manifest.to_json(),
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {
        "recipe": digest,
        "preset": params.model_config.preset,
        "num_classes": params.model_config.num_classes,
    }
