"""One synthetic sequence in memory: scene -> frames -> events, plus its dense ground truth.

Each sequence is seeded only from ``(seed, split, index)`` so sequences are independent
and can be generated in any order or in parallel with identical results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from leod.events.types import Events
from leod.synthetic.config import SPLITS, SyntheticConfig
from leod.synthetic.esim import EsimSensor, noise_events
from leod.synthetic.render import SceneRenderer
from leod.synthetic.scene import Scene, label_times_us, sample_scene, scene_boxes

#: frames rendered per batch: bounds memory (frames x H x W float32) independent of duration
FRAMES_PER_BATCH = 256


def sequence_seed(seed: int, split: str, index: int) -> tuple[int, int, int]:
    """The entropy of one sequence, independent of every other sequence."""
    return (seed, SPLITS.index(split), index)


def frame_times_us(cfg: SyntheticConfig, duration_us: int) -> np.ndarray:
    """Render times from 0 to the end of the sequence, one sub-step apart (last one clipped)."""
    step = cfg.substep_ms * 1000.0
    n = int(math.ceil(duration_us / step))
    return np.minimum(np.arange(n + 1) * step, duration_us)


def scene_events(cfg: SyntheticConfig, scene: Scene, rng: np.random.Generator) -> Events:
    """All events of a scene in ``[0, duration)``: simulated crossings plus sensor noise, time-sorted."""
    height, width = scene.background.shape
    renderer = SceneRenderer(scene)
    eps = np.float32(cfg.log_eps)
    sensor = EsimSensor(cfg, rng, height, width)
    times = frame_times_us(cfg, scene.duration_us)
    sensor.start(np.log(renderer.render(times[:1])[0] + eps), times[0])
    packets = []
    for a in range(1, len(times), FRAMES_PER_BATCH):
        batch = times[a : a + FRAMES_PER_BATCH]
        packets.append(sensor.feed(np.log(renderer.render(batch) + eps), batch))
    packets.append(noise_events(cfg, rng, height, width, scene.duration_us))
    events = Events.concatenate(packets)
    keep = np.flatnonzero(events.t < scene.duration_us)
    order = keep[np.argsort(events.t[keep], kind="stable")]
    return Events(t=events.t[order], x=events.x[order], y=events.y[order], p=events.p[order])


def simulate_sequence(
    cfg: SyntheticConfig,
    seed: int | Sequence[int],
    height: int,
    width: int,
    classes: Sequence[str],
) -> tuple[Events, np.ndarray]:
    """Events and ground-truth boxes (BOX_DTYPE, every label period) of one random sequence.

    The scene and the sensor draw from separate streams of ``seed``, so changing a sensor
    knob (noise, thresholds) leaves the objects and the labels unchanged.
    """
    scene_rng, sensor_rng = (
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,))) for k in range(2)
    )
    scene = sample_scene(cfg, cfg.profiles(classes), scene_rng, height, width)
    events = scene_events(cfg, scene, sensor_rng)
    return events, scene_boxes(scene, label_times_us(cfg), height, width)
