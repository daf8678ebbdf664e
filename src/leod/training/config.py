"""params.yaml section ``train``: the optimisation recipe shared by every training stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leod.schema import rng

#: keys that say how a run is spread over processes, not what it trains: a checkpoint
#: written under one launch resumes under another (see leod.training.recipe)
LAUNCH_KEYS = ("nproc_per_node", "nnodes", "rdzv_endpoint", "rdzv_id")


@dataclass(frozen=True)
class TrainConfig:
    """RVT's recipe (AdamW, linear one-cycle schedule, gradient clipping), sized by params."""

    steps: int = field(default=1800, metadata=rng(ge=1))
    lr: float = field(default=0.002, metadata=rng(gt=0))
    weight_decay: float = field(default=0.0, metadata=rng(ge=0))
    grad_clip: float = field(default=1.0, metadata=rng(gt=0))
    #: one-cycle schedule: warm-up fraction, start lr = lr / div_factor, end lr = start / final_div_factor
    pct_start: float = field(default=0.05, metadata=rng(gt=0, lt=1))
    div_factor: float = field(default=20.0, metadata=rng(ge=1))
    final_div_factor: float = field(default=500.0, metadata=rng(ge=1))
    #: validate (COCO AP on the val split) every this many steps and at the end
    eval_every: int = field(default=200, metadata=rng(ge=1))
    #: which weights a run publishes: the last step's, or those of the best validation (a
    #: pick among a few noisy validations on a small split adds spread between runs)
    select: Literal["last", "best_val"] = "last"
    #: write the resumable checkpoint every this many steps
    checkpoint_every: int = field(default=50, metadata=rng(ge=1))
    log_every: int = field(default=10, metadata=rng(ge=1))
    eval_batch_size: int = field(default=4, metadata=rng(ge=1))
    #: score threshold of the predictions that are evaluated (RVT reports AP at 0.001)
    eval_conf_threshold: float = field(default=0.001, metadata=rng(ge=0, le=1))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: bf16/fp16 autocast on CUDA (ignored on CPU)
    amp: bool = True
    #: stop after this many consecutive non-finite losses (the last good checkpoint stays)
    max_nonfinite_steps: int = field(default=3, metadata=rng(ge=1))
    #: an imported model (a folder name in models/imported) that every run starting from
    #: random weights starts from instead (r0, full, rounds with selftrain.init: scratch)
    init_from: str | None = None
    #: training processes per machine (GPUs per node); > 1 runs the stage under torchrun
    #: (docs/scaling-training.md). loader.batch_size stays the global batch
    nproc_per_node: int = field(default=1, metadata=rng(ge=1))
    #: machines taking part; > 1 needs rdzv_endpoint
    nnodes: int = field(default=1, metadata=rng(ge=1))
    #: host:port of the c10d rendezvous for multi-node runs; null: one machine (--standalone)
    rdzv_endpoint: str | None = None
    #: the rendezvous' job id (the same on every node of one run)
    rdzv_id: str = "leod"
    #: torch.compile the detector (CUDA only; ignored on CPU, whose results stay as they are)
    compile: bool = False
    #: channels-last memory layout for the convolutions (CUDA only; ignored on CPU)
    channels_last: bool = False

    def check(self, key: str) -> None:
        from leod.plumbing.errors import ConfigError

        if self.pct_start * self.steps <= 1:
            raise ConfigError(
                f"params key '{key}.pct_start' = {self.pct_start} gives a warm-up of "
                f"{self.pct_start * self.steps:g} steps with {key}.steps = {self.steps}; "
                "it must exceed 1 step"
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ConfigError(
                f"params key '{key}.rdzv_endpoint' must name the rendezvous host:port when "
                f"{key}.nnodes = {self.nnodes}"
            )
