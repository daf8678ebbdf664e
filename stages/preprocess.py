"""Stage preprocess: raw recordings -> RVT stacked-histogram layout (or index an RVT download).

Reads data/raw/<dataset>/{train,val,test}/ (DAT, EVT 2.0/3.0 RAW or HDF5 events with
*_bbox.npy labels) with the preset chosen by `dataset` in params.yaml.

Example (what `dvc repro preprocess` runs for the default dataset):
  python stages/preprocess.py --raw data/raw/synthetic --out data/preprocessed \
      --metrics metrics/preprocess.json
"""

from __future__ import annotations

import argparse
import sys

from leod.config import Params
from leod.plumbing.atomic import write_json
from leod.plumbing.stage import parser, run
from leod.preprocess.dataset import convert_dataset, index_rvt_preprocessed


def body(args: argparse.Namespace, params: Params) -> None:
    if params.preset.format == "rvt_preprocessed":
        result = index_rvt_preprocessed(params, args.raw, args.out)
    else:
        result = convert_dataset(params, args.raw, args.out, progress=not args.no_progress)
    if args.metrics:
        write_json(args.metrics, result.metrics)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--raw", required=True, help="raw dataset folder (data/raw/<dataset>)")
    p.add_argument("--out", required=True, help="output folder (data/preprocessed)")
    p.add_argument("--metrics", help="metrics file to write (JSON: per-split counts)")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
