"""Running git: the commit a run's code comes from (tracking) and metrics at other commits (compare)."""

from __future__ import annotations

import os
import subprocess
from typing import Literal, overload

from leod.plumbing.errors import ConfigError


@overload
def git(*args: str, cwd: str | os.PathLike[str] | None = None, required: Literal[True]) -> str: ...
@overload
def git(*args: str, cwd: str | os.PathLike[str] | None = None, required: bool = False) -> str | None: ...
def git(*args: str, cwd: str | os.PathLike[str] | None = None, required: bool = False) -> str | None:
    """stdout of ``git args`` in ``cwd`` (default: the working directory). When git fails:
    a :class:`ConfigError` naming the command if ``required``, else None."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    else:
        if done.returncode == 0:
            return done.stdout
        failure = done.stderr.strip()
    if required:
        raise ConfigError(f"git {' '.join(args)} failed in {cwd or os.getcwd()}: {failure}")
    return None
