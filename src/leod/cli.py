"""``python -m leod`` (or ``leod``): commands that work on what the pipeline produced.

``compare [SOURCE ...]``
    The round table (test AP, pseudo precision/recall, gap closed) of the workspace, of git
    revisions or of DVC experiments, read from metrics/ only (see :mod:`leod.compare`).
``register [--model DIR] [--name NAME] [--alias ALIAS]``
    Publish a model folder to the MLflow registry, load it back and check it predicts
    exactly what the pipeline's own inference predicts with the folder's model, and only
    then point the alias at it (see :mod:`leod.registry`).

Pipeline stages live in ``stages/`` and run through ``dvc repro``; these commands only read
its results. Errors are one ``error:`` line and exit status 2, as for the stages.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from leod.config import load_params
from leod.errors import ConfigError, LeodError
from leod.stage import report_error

DEFAULT_NAME = "leod-detector"
DEFAULT_ALIAS = "champion"
# what a models:/NAME@ALIAS URI can carry: no '/', '@' or spaces; MLflow reserves the
# aliases 'latest' and 'v<number>'
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)


def check_registry_names(name: str, alias: str) -> None:
    """Reject a model name or alias that a ``models:/NAME@ALIAS`` URI cannot carry."""
    if not _MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: a registered model name is letters, digits, '.', '_' and '-' "
            "(no '/', '@' or spaces), starting with a letter or digit"
        )
    if not _ALIAS.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        raise ConfigError(
            f"--alias {alias!r}: an alias is letters, digits, '_' and '-', and not 'latest' or 'v<number>'"
        )


def cmd_compare(args: argparse.Namespace) -> None:
    from leod.compare import compare

    print(compare(Path(args.repo), args.sources, args.metrics))


def cmd_register(args: argparse.Namespace) -> None:
    check_registry_names(args.name, args.alias)
    from leod.registry import check_sequence, register_model

    params = load_params(args.params)
    model_dir = Path(args.model or f"models/{params.round_order()[-1] if params.rounds else 'r0'}")
    seq = check_sequence(Path(args.data))  # bad check data fails before the registry is touched
    done = register_model(
        model_dir, args.name, args.alias, params.tracking.experiment, seq, args.check_frames
    )
    print(
        f"registered {model_dir} as {done.name} version {done.version}; it loads back through MLflow "
        f"and predicts what the pipeline predicts on {min(args.check_frames, seq.num_frames)} frames "
        f"of {seq.name}; alias '{done.alias}' now points at it ({done.uri})"
    )


HELP = """\
Commands that read what the pipeline (dvc repro) produced; they run nothing expensive.

  compare    the round table (test AP, pseudo-label precision/recall, gap closed)
  register   publish a model to the MLflow registry under an alias and check it loads back

Examples:
  python -m leod compare                       # the workspace's metrics/
  python -m leod compare HEAD~1 workspace      # a commit beside the workspace
  python -m leod compare my-exp                # a DVC experiment (dvc exp show lists them)
  python -m leod register --alias champion     # the last round's model

Errors are one 'error:' line and exit status 2, as for the stages.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leod", description=HELP, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="round table of the workspace, commits or DVC experiments")
    c.add_argument(
        "sources", nargs="*", help="'workspace' (default), a git revision or a DVC experiment name"
    )
    c.add_argument("--repo", default=".", help="repository root (default: .)")
    c.add_argument("--metrics", default="metrics", help="metrics folder inside the repository")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("register", help="publish a model to the MLflow registry under an alias")
    r.add_argument("--model", help="model folder (default: the last round of params.yaml, models/<rK>)")
    r.add_argument("--name", default=DEFAULT_NAME, help=f"registered model name (default: {DEFAULT_NAME})")
    r.add_argument(
        "--alias", default=DEFAULT_ALIAS, help=f"alias to point at the new version ({DEFAULT_ALIAS})"
    )
    r.add_argument("--params", default="params.yaml", help="params file (MLflow experiment, rounds)")
    r.add_argument(
        "--data", default="data/preprocessed", help="preprocessed data (test frames for the check)"
    )
    r.add_argument("--check-frames", type=int, default=20, help="test frames compared after loading back")
    r.set_defaults(func=cmd_register)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (LeodError, OSError) as exc:
        return report_error(exc)
    return 0
