"""The tracking section of params.yaml (which MLflow experiment stage runs are logged under)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: the experiment every stage run is logged under."""

    experiment: str = "leod"
