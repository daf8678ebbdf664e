"""One digest of every input that shapes a training run: its recipe.

A killed run resumes from its scratch checkpoint only when the rerun would train the very
same thing: the params the training loop reads (after a round's overrides), the labels and
initial weights (by content) and the preprocessed data; not the number of processes. A
published ``model.json`` keeps its recipe, so a run repeating it (a from-scratch round's
control is r0) publishes that model instead of training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from leod.config import Params
from leod.data.layout import Manifest
from leod.data.sequence import LabelArrays, LabelFiles
from leod.schema import to_dict
from leod.training.config import LAUNCH_KEYS
from leod.training.model_files import BEST_WEIGHTS, MODEL_INFO

#: the splits whose data a training run reads (train: supervision and memory; val: model choice)
_SPLITS = ("train", "val")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _content(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def dataset_fingerprint(root: Path, manifest: Manifest) -> dict:
    """The manifest, the small files' content and the representation files' size and mtime.

    Cheap but sound: the representation files are gigabytes, and any rewrite of them by
    ``preprocess`` or ``dvc checkout`` changes their modification time.
    """
    files: dict[str, object] = {}
    for split in _SPLITS:
        for seq in manifest.sequences(root, split):
            rep = seq.representations
            stat = rep.stat() if rep.is_file() else None
            files[f"{split}/{seq.name}"] = {
                "representations": [stat.st_size, stat.st_mtime_ns] if stat else None,
                **{
                    name: _content(path)
                    for name, path in (
                        ("objframe_to_repr", seq.objframe_to_repr),
                        ("repr_timestamps", seq.repr_timestamps),
                        ("labels", seq.labels),
                        ("label_timestamps", seq.label_timestamps),
                    )
                },
            }
    return {"manifest": manifest.to_json(), "files": files}


def labels_digest(labels: Mapping[str, LabelFiles | LabelArrays] | None) -> str | None:
    """The content of the label overrides (pseudo labels as the trainer sees them)."""
    if labels is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(labels):
        src = labels[name]
        digest.update(name.encode() + b"\0")
        if isinstance(src, LabelArrays):
            for array in (src.labels, src.objframe_to_repr, src.starts):
                digest.update(f"{array.dtype.descr}{array.shape}".encode())
                digest.update(array.tobytes())
        else:
            for path in (src.labels, src.objframe_to_repr, src.timestamps):
                digest.update(str(_content(path) if path else None).encode())
    return digest.hexdigest()


def recipe_digest(
    params: Params,
    data_root: Path,
    manifest: Manifest,
    kept: Mapping[str, list[int]] | None,
    labels: Mapping[str, LabelFiles | LabelArrays] | None,
    init_weights: Path | None,
) -> str:
    """One hex digest of everything that shapes a training run's weights (see the module doc)."""
    recipe = {
        "seed": params.seed,
        "dataset": params.dataset,
        "preset": to_dict(params.preset),
        "representation": to_dict(params.representation),
        "loader": to_dict(params.loader),
        "model": to_dict(params.model_config),
        "train": {k: v for k, v in to_dict(params.train).items() if k not in LAUNCH_KEYS},
        "kept": {name: list(frames) for name, frames in kept.items()} if kept is not None else None,
        "labels": labels_digest(labels),
        "init": {
            "weights": file_sha256(init_weights / BEST_WEIGHTS),
            "info": file_sha256(init_weights / MODEL_INFO),
        }
        if init_weights
        else None,
        "data": dataset_fingerprint(data_root, manifest),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
