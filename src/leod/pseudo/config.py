"""params.yaml sections ``pseudo`` (how pseudo labels are made) and ``selftrain`` (how they are used)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leod.schema import check_unit_interval, optional, rng

TrackMethod = Literal["forward", "forward_or_backward"]


@dataclass(frozen=True)
class TTAConfig:
    """Test-time augmentation passes merged per frame (LEOD: all four)."""

    hflip: bool = True
    tflip: bool = True


@dataclass(frozen=True)
class PseudoConfig:
    """How the previous round's model labels every training frame (LEOD's defaults)."""

    #: per-class thresholds; a box is kept if objectness > obj_thresh[c] and class
    #: confidence > cls_thresh[c] (LEOD Gen1: car 0.6, pedestrian 0.3)
    obj_thresh: list[float]
    cls_thresh: list[float]
    #: per class, or None: a box under those thresholds but with objectness and class
    #: confidence above this becomes an ignore region (it never joins a track), so that an
    #: object the teacher half-sees is not taught as background
    weak_thresh: list[float] | None = field(default=None, metadata=optional())
    #: score (obj x cls) threshold and NMS IoU of the raw and the TTA-merged predictions
    conf_thresh: float = field(default=0.01, metadata=rng(ge=0, le=1))
    nms_iou: float = field(default=0.45, metadata=rng(gt=0, le=1))
    #: geometric filter (sensor pixels): both sides at least min_side, width at most max_width_frac * W
    min_side: float = field(default=2.0, metadata=rng(ge=0))
    max_width_frac: float = field(default=0.9, metadata=rng(gt=0, le=1))
    tta: TTAConfig = field(default_factory=TTAConfig)
    #: a time-reversed prediction made at representation k belongs to frame k + tflip_offset
    #: (LEOD: -1); more than a frame or two away it would label another moment
    tflip_offset: int = field(default=-1, metadata=rng(ge=-2, le=2))
    #: the first frames of a sequence get no pseudo labels (the memory is still empty)
    skip_first_frames: int = field(default=1, metadata=rng(ge=0))
    batch_size: int = field(default=8, metadata=rng(ge=1))
    #: run the TTA passes side by side (one forward of passes x batch_size frames) instead of
    #: one after the other: faster; the same label bytes on one thread, not on several
    batch_tta: bool = False
    # LEOD's linear tracker: boxes of short tracks become ignore regions, misses are inpainted
    #: class-aware greedy IoU matching threshold
    track_iou: float = field(default=0.45, metadata=rng(gt=0, le=1))
    #: a track needs at least this many frames from birth to last match to be kept
    min_track_len: int = field(default=10, metadata=rng(ge=1))
    #: confidence of a new track, multiplied by ``track_conf_decay`` per missed frame; the
    #: track is deleted once it falls under ``track_min_conf`` (0.9 * 0.9^k < 0.55: ~5 misses)
    track_init_conf: float = field(default=0.9, metadata=rng(gt=0, le=1))
    track_conf_decay: float = field(default=0.9, metadata=rng(gt=0, le=1))
    track_min_conf: float = field(default=0.55, metadata=rng(ge=0, le=1))
    #: "forward_or_backward": a box is dropped only if its track is short in both directions
    track_method: TrackMethod = "forward_or_backward"
    #: add ignore boxes at frames a long track missed
    inpaint: bool = True

    def check(self, key: str) -> None:
        check_unit_interval(self.obj_thresh, f"{key}.obj_thresh")
        check_unit_interval(self.cls_thresh, f"{key}.cls_thresh")
        if self.weak_thresh is not None:
            check_unit_interval(self.weak_thresh, f"{key}.weak_thresh")

    @property
    def tracker(self) -> TrackerConfig:
        """The tracker's view of these settings (flat in params.yaml: ``-S pseudo.min_track_len=8``)."""
        return TrackerConfig(self)


@dataclass(frozen=True)
class TrackerConfig:
    """LEOD's linear tracker settings under the tracker's names: a view of ``pseudo.track_*``
    with no values of its own, so the tracker's settings live in one place only."""

    pseudo: PseudoConfig

    @property
    def iou(self) -> float:
        return self.pseudo.track_iou

    @property
    def min_track_len(self) -> int:
        return self.pseudo.min_track_len

    @property
    def init_conf(self) -> float:
        return self.pseudo.track_init_conf

    @property
    def conf_decay(self) -> float:
        return self.pseudo.track_conf_decay

    @property
    def min_conf(self) -> float:
        return self.pseudo.track_min_conf

    @property
    def method(self) -> TrackMethod:
        return self.pseudo.track_method

    @property
    def inpaint(self) -> bool:
        return self.pseudo.inpaint


@dataclass(frozen=True)
class SelfTrainConfig:
    """How a round trains on GT + pseudo labels (LEOD's rnndet-soft)."""

    #: per class: a pseudo box whose objectness or class confidence is under this becomes an
    #: ignore box (LEOD Gen1: car 0.7, pedestrian 0.35)
    soft_thresh: list[float]
    #: where each round starts: random weights (LEOD's scratch), the previous round's weights,
    #: or r0's (every round fine-tunes the sparse-label model on its own teacher's labels)
    init: Literal["scratch", "previous", "r0"] = "previous"
    #: steps of every round and its control (``rounds.<name>.steps`` overrides one round);
    #: None: ``train.steps``. Fewer than ``train.steps``: the rounds fine-tune a converged r0
    round_steps: int | None = field(default=600, metadata=optional(ge=1))
    #: quality gate: a round whose pseudo precision@0.5 is under this does not train and
    #: carries the previous model forward (0 disables the gate)
    min_precision: float = field(default=0.0, metadata=rng(ge=0, le=1))
    #: an imported model (a folder name in models/imported) published as r0 instead of
    #: training it: the chain's first teacher; None trains r0
    teacher: str | None = None

    def check(self, key: str) -> None:
        check_unit_interval(self.soft_thresh, f"{key}.soft_thresh")


@dataclass(frozen=True)
class RoundConfig:
    """One self-training round: the model it learns from, and optional per-round overrides."""

    prev: str
    steps: int | None = field(default=None, metadata=optional(ge=1))
    lr: float | None = field(default=None, metadata=optional(gt=0))
    obj_thresh: list[float] | None = field(default=None, metadata=optional())
    cls_thresh: list[float] | None = field(default=None, metadata=optional())
    soft_thresh: list[float] | None = field(default=None, metadata=optional())

    def check(self, key: str) -> None:
        for name in ("obj_thresh", "cls_thresh", "soft_thresh"):
            values = getattr(self, name)
            if values is not None:
                check_unit_interval(values, f"{key}.{name}")
