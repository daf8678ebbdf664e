"""Stage synthesize: write the embedded synthetic event dataset in the Gen1 raw layout.

Events of moving textured cars and pedestrians with dense boxes every 50 ms, for the
train, val and test splits; sizes and counts come from the synthetic section of params.yaml.

Example (what `dvc repro synthesize` runs):
  python stages/synthesize.py --out data/raw/synthetic
"""

from __future__ import annotations

import argparse
import sys

from leod.config import Params
from leod.plumbing.stage import parser, run
from leod.synthetic.generate import generate_dataset


def body(args: argparse.Namespace, params: Params) -> None:
    preset = params.datasets["synthetic"]
    summary = generate_dataset(
        params.synthetic,
        args.out,
        preset.height,
        preset.width,
        preset.classes,
        workers=params.preprocess.workers,
        progress=not args.no_progress,
    )
    print(f"synthesize: wrote {args.out} ({summary_line(summary)})")


def summary_line(summary: dict) -> str:
    splits = summary.get("splits", {})
    return ", ".join(f"{k}: {v.get('sequences', '?')} sequences" for k, v in splits.items()) or "done"


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="output folder (data/raw/synthetic)")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
