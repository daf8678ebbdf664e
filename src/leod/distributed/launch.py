"""One launcher for every multi-process stage: the stage's own command line under torchrun.

A stage whose params ask for more than one process, and that is not already a rank, runs
itself under ``python -m torch.distributed.run`` (standalone on one machine, a c10d
rendezvous across machines) and waits, so dvc.yaml reads the same for 1 and N processes.
The ranks' output passes through; a failed job ends with the first rank's ``error:`` line.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from leod.plumbing.cpu import job_thread_env
from leod.plumbing.errors import LeodError


@dataclass(frozen=True)
class LaunchSpec:
    """How many processes a stage runs as, and where the ranks of several machines meet."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # host:port of the c10d rendezvous; None: one machine
    rdzv_id: str = "leod"

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes


def is_rank() -> bool:
    """True inside a torch.distributed job (torchrun sets ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def torchrun_command(spec: LaunchSpec, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run ... <argv>``: ``argv`` (script first) under torchrun."""
    if spec.rdzv_endpoint:
        rdzv = ["--rdzv-backend=c10d", f"--rdzv-endpoint={spec.rdzv_endpoint}", f"--rdzv-id={spec.rdzv_id}"]
    else:
        rdzv = ["--standalone"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={spec.nproc_per_node}",
        f"--nnodes={spec.nnodes}",
        *rdzv,
        *argv,
    ]


def rank_env(spec: LaunchSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The ranks' environment: this machine's cores split over its ranks as OMP/MKL threads,
    unless ``OMP_NUM_THREADS`` is set (torchrun alone would give every rank one thread)."""
    if "OMP_NUM_THREADS" in environ:
        return dict(environ)
    return {**job_thread_env(spec.nproc_per_node), **environ}  # an MKL count set alone stays


def relaunch(spec: LaunchSpec, argv: Sequence[str] | None = None, what: str = "processes") -> bool:
    """Run ``argv`` (default ``sys.argv``) under torchrun when ``spec`` asks for more than one
    process and this is not already a rank. True when the ranks did the work (the caller has
    nothing left to do); False when the caller should do it itself."""
    if spec.world == 1 or is_rank():
        return False
    cmd = torchrun_command(spec, list(sys.argv if argv is None else argv))
    env = rank_env(spec, os.environ)
    print(
        f"launching {spec.world} {what} ({env['OMP_NUM_THREADS']} threads each): {' '.join(cmd[1:])}",
        flush=True,
    )
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env)
    try:
        errors = _pass_through(proc.stderr)  # type: ignore[arg-type]
        status = proc.wait()
    except BaseException:  # Ctrl-C or SIGTERM: torchrun forwards the signal to its ranks
        proc.terminate()
        proc.wait()
        raise
    if status != 0:
        why = errors[0] if errors else "see the ranks' output above"
        raise LeodError(f"{why} (torchrun exit status {status})")
    return True


def _pass_through(stream: IO[bytes]) -> list[str]:
    """Copy ``stream`` to stderr as it comes (progress bars redraw on ``\\r``), holding back
    its ``error:`` lines: they are returned, and the first ends the output once."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    errors: list[str] = []
    pending = ""
    for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b""):
        *pieces, pending = re.split(r"(?<=[\r\n])", pending + decoder.decode(chunk))
        for piece in pieces:
            if piece.startswith("error: "):
                errors.append(piece.removeprefix("error: ").rstrip())
            else:
                sys.stderr.write(piece)
        sys.stderr.flush()
    sys.stderr.write(pending)
    return errors
