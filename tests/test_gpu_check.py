"""benchmarks/gpu_check.sh on a machine without CUDA: it says so, skips the GPU parts and runs
the rest (data, GPU tests skipped, a short CPU training, pseudolabel frames/s) to the end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from leod.plumbing.cpu import thread_env
from tiny import REPO


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_gpu_check_runs_its_cpu_parts_without_cuda(tmp_path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, **thread_env(1)}
    script = str(REPO / "benchmarks" / "gpu_check.sh")
    proc = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=2400)
    results = (tmp_path / "gpu_check.txt").read_text()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "NO CUDA" in results and "== 2. and 3. skipped: no CUDA device" in results
    assert "2 skipped" in results  # the GPU tests, skipped cleanly
    for part in ("0. the data", "1. GPU tests", "4. short training on the CPU only", "5. pseudolabel"):
        assert f"-- {part}" in results and f"-- {part}" in proc.stdout
    assert "1 process, passes in turn" in results and "2 processes, passes in turn" in results
    assert results.rstrip().endswith(f"0 part(s) failed; results in {tmp_path / 'gpu_check.txt'}")
