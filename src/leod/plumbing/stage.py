"""What every stage script shares: argument parsing, params loading, one-line errors.

A stage script is ``main(argv)`` calling :func:`run`: bad input (a :class:`LeodError`) and
the operating system refusing a file (missing, unreadable, read-only, disk full: an
:class:`OSError`) become a single ``error: ...`` line, the last line on stderr, and exit
status 2 (1 is left to genuine crashes, whose traceback is worth seeing). Nothing else of
the stage's output is left behind because all outputs are written atomically.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from leod.config import Params, load_params
from leod.plumbing.errors import LeodError, one_line
from leod.plumbing.progress import close_all

EXIT_BAD_INPUT = 2


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    return p


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def report_error(exc: BaseException) -> int:
    """Print ``exc`` as the one ``error:`` line that ends the output; returns the exit status."""
    close_all()
    sys.stdout.flush()
    print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def run(
    body: Callable[[argparse.Namespace, Params], None],
    p: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, load and validate params, then run ``body``; returns the exit status.

    A ``--round`` option, when the stage has one, must name a round of params.yaml.
    """
    args = p.parse_args(argv)
    # a terminated stage (Ctrl-C, `kill`, a stopped DVC queue) unwinds like an exception, so
    # temporary outputs are removed and the MLflow run is closed instead of left RUNNING
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
        if getattr(args, "round", None) is not None:
            params.check_round(args.round)
        body(args, params)
    except (LeodError, OSError) as exc:
        return report_error(exc)
    return 0
