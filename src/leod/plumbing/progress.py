"""One progress bar for every long loop: live on a terminal, a line every half minute in logs.

Under ``dvc repro`` or CI the output is not a terminal; a bar redrawn ten times a second
would fill the log with carriage returns, so there it refreshes rarely and still shows the
count, rate and ETA.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> tqdm:
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=not enabled,
        mininterval=0.1 if tty else LOG_INTERVAL_S,
        dynamic_ncols=tty,
    )


def close_all() -> None:
    """Close every open bar, so that a message printed next is not redrawn over or followed."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
