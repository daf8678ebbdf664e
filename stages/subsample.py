"""Stage subsample: choose the training label frames the detector may see (WSOD / SSOD).

Example (what `dvc repro subsample` runs):
  python stages/subsample.py --data data/preprocessed --out data/splits/train_split.json \
      --metrics metrics/subsample.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leod.config import Params
from leod.data.layout import load_manifest
from leod.plumbing.atomic import write_json
from leod.plumbing.stage import parser, run
from leod.subsample import make_split


def body(args: argparse.Namespace, params: Params) -> None:
    root = Path(args.data)
    manifest = load_manifest(root)
    history = params.loader.sequence_length
    split = make_split(manifest, root, params.subsample, history)
    record = split.to_dict(params.subsample, history)
    write_json(args.out, record)
    write_json(args.metrics, {k: v for k, v in record.items() if k.startswith(("frames", "boxes"))})
    print(
        f"subsample ({split.mode}): kept {split.frames_kept}/{split.frames_total} label frames and "
        f"{split.boxes_kept}/{split.boxes_total} boxes in {len(split.sequences)} train sequences "
        f"({sum(1 for v in split.sequences.values() if v)} with labels)"
    )


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--data", required=True, help="preprocessed dataset folder")
    p.add_argument("--out", required=True, help="split file to write (JSON)")
    p.add_argument("--metrics", required=True, help="metrics file to write (JSON)")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
