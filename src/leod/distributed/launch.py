"""Start the ranks of a one-machine torch.distributed job, as ``torchrun --standalone`` does.

A stage whose params ask for N processes and that is not already a rank (no ``WORLD_SIZE``
in its environment) runs itself N times with torchrun's variables set (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and
waits. The ranks' output is relayed; when one fails the others are stopped, and its
``error: ...`` line is raised again here so that it ends the output once, with exit
status 2, as for a single process. Multi-node jobs are started by torchrun (or srun +
torchrun) instead: the stage then finds ``WORLD_SIZE`` set and simply runs as its rank.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from leod.plumbing.errors import LeodError

_ERROR = b"error: "


class RankFailed(LeodError):
    """A rank stopped on bad input; the message is its own ``error:`` line."""


def is_rank() -> bool:
    """True inside a torch.distributed job (started by torchrun or by :func:`launch_local`)."""
    return "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Relay(threading.Thread):
    """Copies one rank's stderr to ours as it comes (progress bars included), holding back
    its ``error:`` line; silenced once the job is being stopped."""

    def __init__(self, pipe: BinaryIO, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.pipe, self.lock = pipe, lock
        self.error: str | None = None
        self.quiet = False

    def run(self) -> None:
        pending = b""
        while chunk := self.pipe.read1(1 << 16):
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            done, pending = pending[:cut], pending[cut:]
            for piece in done.splitlines(keepends=True):
                self._emit(piece)
        self._emit(pending)

    def _emit(self, piece: bytes) -> None:
        if piece.startswith(_ERROR):
            self.error = piece[len(_ERROR) :].decode(errors="replace").strip()
        elif piece and not self.quiet:
            with self.lock:
                sys.stderr.buffer.write(piece)
                sys.stderr.buffer.flush()


def launch_local(nproc: int, argv: list[str]) -> None:
    """Run ``python argv`` as ranks 0..nproc-1 of one job on this machine; return when all
    succeeded. Each rank gets an equal share of the CPU threads unless OMP_NUM_THREADS is set."""
    port = _free_port()
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    lock = threading.Lock()
    procs: list[subprocess.Popen[bytes]] = []
    relays: list[_Relay] = []
    sys.stdout.flush()
    try:
        for rank in range(nproc):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(nproc),
                "LOCAL_WORLD_SIZE": str(nproc),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            env.setdefault("OMP_NUM_THREADS", threads)
            proc = subprocess.Popen([sys.executable, *argv], env=env, stderr=subprocess.PIPE)
            procs.append(proc)
            relays.append(_Relay(proc.stderr, lock))  # type: ignore[arg-type]
            relays[-1].start()
        failed = _wait_first_failure(procs)
    finally:
        for relay, proc in zip(relays, procs, strict=False):
            if proc.poll() is None:
                relay.quiet = True
                proc.terminate()
        for proc in procs:
            proc.wait()
        for relay in relays:
            relay.join()
    if failed is None:
        return
    code, error = procs[failed].returncode, relays[failed].error
    where = f"rank {failed} of {nproc}"
    if error is not None:
        raise RankFailed(f"{error} ({where})")
    print(f"{where} failed with exit status {code}", file=sys.stderr, flush=True)
    raise SystemExit(code if code > 0 else 1)


def _wait_first_failure(procs: list[subprocess.Popen[bytes]]) -> int | None:
    """The first rank seen failing, or None once all have exited cleanly."""
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                return rank
        if all(c == 0 for c in codes):
            return None
        time.sleep(0.1)
