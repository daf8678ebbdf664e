"""Benchmark the recurrent detector: size, streaming latency, training step time, peak memory.

For every preset x resolution the measurements run in a fresh subprocess, so the CPU peak
memory (the kernel's ``VmHWM`` high-water mark, tracemalloc does not see torch's
allocations) belongs to that configuration alone; one subprocess measures inference and
another training. On CUDA the peak is ``torch.cuda.max_memory_allocated``.

* inference: batch 1, streaming ``forward_step`` with the LSTM states carried, under
  ``torch.inference_mode`` (and autocast on CUDA); one repeat streams 5 frames after 3
  warm-up frames; the median per-frame time over repeats is reported;
* training: batch 2 x 5 time steps, loss at the last step (RVT's setting), backward and
  an AdamW step, states carried and detached between steps; the median step time over
  repeats (after one warm-up step) is reported.

CPU runs use ``--threads`` intra-op threads (2 by default, the shared development box)
in float32. The machine load (``/proc/loadavg``) is printed because other processes on
shared cores change CPU timings a lot.

Usage: ``python benchmarks/bench_model.py --presets tiny --resolutions gen1 --repeats 5``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from leod.plumbing.cpu import thread_env
from timing import loadavg  # benchmarks/, the script's own folder

#: resolution name -> (height, width, partition_split) of the (unpadded) input frame
RESOLUTIONS: dict[str, tuple[int, int, int]] = {
    "gen1": (240, 304, 1),  # padded to 256 x 320
    "1mpx": (360, 640, 2),  # 1Mpx downsampled by 2, padded to 384 x 640
}
PRESET_NAMES = ("nano", "tiny", "small", "base")
STEPS_PER_REPEAT = 5
TRAIN_BATCH = 2


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _start_memory(device: Any) -> int:
    """Reset the peak counter (CUDA) and return the CPU resident baseline in KiB."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return _rss_kib("VmRSS")


def _child(
    preset: str, resolution: str, mode: str, device_name: str, threads: int, repeats: int, amp: str
) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns a JSON-able record."""
    import torch

    from leod.model.config import ModelConfig
    from leod.model.detector import RecurrentDetector
    from leod.model.targets import BoxTargets

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    height, width, split = RESOLUTIONS[resolution]
    model = RecurrentDetector(ModelConfig(preset=preset, partition_split=split)).to(device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    use_amp = device.type == "cuda" and amp_dtype is not None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()

    record: dict[str, Any] = {
        "preset": preset,
        "resolution": resolution,
        "mode": mode,
        "params": sum(p.numel() for p in model.parameters()),
    }
    times: list[float] = []
    if mode == "infer":
        model.eval()
        pool = torch.rand(4, 1, 20, height, width, device=device)  # inputs cycle through a small pool
        base_rss = _start_memory(device)
        with torch.inference_mode(), autocast():
            states = None
            for t in range(3):
                _, states = model.forward_step(pool[t % 4], states)
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                for t in range(STEPS_PER_REPEAT):
                    _, states = model.forward_step(pool[t % 4], states)
                sync()
                times.append((time.perf_counter() - start) / STEPS_PER_REPEAT)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        frames = torch.rand(STEPS_PER_REPEAT, TRAIN_BATCH, 20, height, width, device=device)
        supervised = torch.zeros(STEPS_PER_REPEAT, TRAIN_BATCH, dtype=torch.bool)
        supervised[-1] = True
        boxes = torch.tensor(
            [[60.0, 60.0, 40.0, 30.0], [150.0, 100.0, 24.0, 48.0], [220.0, 150.0, 60.0, 40.0]]
        )
        targets = BoxTargets.from_list([boxes] * TRAIN_BATCH, [torch.tensor([0, 1, 0])] * TRAIN_BATCH).to(
            device
        )
        base_rss = _start_memory(device)
        states = None
        for r in range(1 + repeats):
            sync()
            start = time.perf_counter()
            with autocast():
                preds, states = model.forward_sequence(frames, states, supervised)
                loss = model.loss(preds, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss.total).backward()
            scaler.step(optimizer)
            scaler.update()
            states = RecurrentDetector.detach(states)
            sync()
            if r:  # the first step is a warm-up (allocator, kernel selection)
                times.append(time.perf_counter() - start)
    record["ms"] = statistics.median(times) * 1000
    record["ms_min"] = min(times) * 1000
    if device.type == "cuda":
        record["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        record["peak_mb"] = (_rss_kib("VmHWM") - base_rss) / 1024
    return record


def _run_child(
    args: argparse.Namespace, preset: str, resolution: str, mode: str, device: str
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        preset,
        resolution,
        mode,
        "--device",
        device,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--amp",
        args.amp,
    ]
    env = {**os.environ, **thread_env(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark {preset}/{resolution}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


COLUMNS = ("preset", "res", "params", "infer ms", "fps", "infer MB", "train ms", "train fps", "train MB")
WIDTHS = (6, 5, 10, 9, 6, 9, 9, 9, 9)


def _format_row(cells: list[str]) -> str:
    """Name columns left-aligned, numbers right-aligned."""
    return " ".join(
        f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, WIDTHS, strict=True))
    )


def _mode_cells(row: dict[str, Any], mode: str, frames: int) -> list[str]:
    """Time, frames/s and peak memory columns of one mode ('-' when not measured)."""
    if f"{mode}_ms" not in row:
        return ["-", "-", "-"]
    ms = row[f"{mode}_ms"]
    return [f"{ms:.1f}", f"{frames * 1000 / ms:.1f}", f"{row[f'{mode}_peak_mb']:.0f}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESET_NAMES))
    parser.add_argument("--resolutions", default=",".join(RESOLUTIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    parser.add_argument(
        "--amp", default="bf16", choices=["bf16", "fp16", "none"], help="autocast dtype on CUDA"
    )
    parser.add_argument("--modes", default="infer,train")
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "RES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        preset, resolution, mode = args.child
        print(json.dumps(_child(preset, resolution, mode, args.device, args.threads, args.repeats, args.amp)))
        return

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    presets = [p for p in args.presets.split(",") if p]
    resolutions = [r for r in args.resolutions.split(",") if r]
    modes = [m for m in args.modes.split(",") if m]
    for name, chosen, allowed in (
        ("preset", presets, PRESET_NAMES),
        ("resolution", resolutions, tuple(RESOLUTIONS)),
        ("mode", modes, ("infer", "train")),
    ):
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            raise SystemExit(f"unknown {name} {unknown[0]!r} (choose from {', '.join(allowed)})")

    precision = f"autocast {args.amp}" if device == "cuda" and args.amp != "none" else "fp32"
    threads = f", {args.threads} threads" if device == "cpu" else ""
    print(f"device {device}{threads}, {precision}, repeats {args.repeats}; loadavg before: {loadavg()}")
    header = _format_row(list(COLUMNS))
    print(header)
    print("-" * len(header))
    records = []
    for preset in presets:
        for resolution in resolutions:
            row: dict[str, Any] = {"preset": preset, "resolution": resolution, "device": device}
            for mode in modes:
                rec = _run_child(args, preset, resolution, mode, device)
                row["params"] = rec["params"]
                row.update({f"{mode}_{key}": rec[key] for key in ("ms", "ms_min", "peak_mb")})
            records.append(row)
            cells = [
                preset,
                resolution,
                f"{row['params']:,}",
                *_mode_cells(row, "infer", 1),
                *_mode_cells(row, "train", TRAIN_BATCH * STEPS_PER_REPEAT),
            ]
            print(_format_row(cells), flush=True)
    print(f"loadavg after: {loadavg()}")
    print(
        f"train = batch {TRAIN_BATCH} x {STEPS_PER_REPEAT} steps, loss at the last step, backward + AdamW; "
        "fps = frames per second;\nMB = peak memory over the baseline with model and inputs allocated "
        "(CPU: VmHWM - VmRSS; CUDA: max_memory_allocated)"
    )
    if args.json:
        from leod.plumbing.atomic import write_json

        write_json(args.json, {"device": device, "threads": args.threads, "records": records})


if __name__ == "__main__":
    main()
