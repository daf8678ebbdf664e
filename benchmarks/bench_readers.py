"""Benchmark: our event readers against expelliarmus (C) and evlib (Rust), with output checks.

Run: ``NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bench_readers.py`` (``--help`` for
sizes). The competitors are optional (``pip install -e .[bench]``); a missing one is skipped.

1. One synthetic recording of ``--events`` events on a 1280x720 sensor is written as DAT (with
   :func:`leod.events.dat.write_dat`) and as EVT 2.0 and EVT 3.0 RAW files (with the encoders
   of ``tests/evt_encode.py``) into a temporary folder that is deleted at the end. Events come
   in short runs along a row sharing ``t`` and polarity, as sensors read them out, so EVT 3.0
   uses its vector words.
2. Each reader decodes each whole file to numpy, one thread, ``--repeats`` times, the readers
   interleaved within every repeat so that the load of a shared machine hits all of them
   alike; the medians of wall and CPU time are reported, with the ratio to expelliarmus
   (CPU time is the steadier figure when other jobs compete for the cores).
3. Every decoder's output is compared with the source events (x, y, p, t in file order); a
   mismatch is reported, not raised (expelliarmus' EVT 3.0 timestamps are known to be wrong).
   The real samples in ``../shared/real-events`` are timed too, checked against our decode.
4. The peak memory (tracemalloc) of streaming each file with ``iter_chunks`` is measured for
   two file lengths, and for a DAT file of ``--long-copies`` time-shifted copies of the DAT
   one (10: 200M events, 1.5 GiB): it does not grow with the file.
5. Our DAT read is split into its parts, each timed alone: reading the file, the decode kernel,
   allocating and first touching the outputs, and the kernel's memory floor (numpy writing
   every output byte once and reading every record once), which says what bounds it.

The machine may be shared, so the load average is printed before and after.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "RAYON_NUM_THREADS", "POLARS_MAX_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from leod.events import open_recording  # noqa: E402
from leod.events.dat import RECORD_DTYPE, _decode_dat, read_dat_header, write_dat  # noqa: E402
from leod.events.policy import ReadPolicy, new_accumulator  # noqa: E402
from leod.events.reader import DEFAULT_CHUNK_SIZE, OutputBuffer, read_blocks  # noqa: E402
from leod.events.types import Events  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the EVT encoders live with the tests
from evt_encode import write_raw  # noqa: E402
from timing import wall_ms  # noqa: E402  (benchmarks/, the script's own folder)

REAL = REPO.parent / "shared" / "real-events"
HEIGHT, WIDTH = 720, 1280
Decoder = Callable[[Path], Events]


def synthetic_events(n: int, rate_mev_s: float, seed: int = 0) -> Events:
    """``n`` events at ``rate_mev_s`` million events per second, in runs of 1-4 along a row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 5, n // 2 + 1)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n)) + 1]
    runs = len(lengths)
    run_t = np.sort(rng.integers(0, int(n / rate_mev_s), runs)).astype(np.int64)
    run_of = np.repeat(np.arange(runs), lengths)[:n]
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])[run_of]
    step = rng.integers(1, 3, n)  # next event of a run is 1 or 2 columns to the right
    walked = np.cumsum(step)
    x = rng.integers(0, WIDTH - 12, runs)[run_of] + walked - walked[first]  # at most 6 columns on
    return Events(
        t=run_t[run_of],
        x=x.astype(np.uint16),
        y=rng.integers(0, HEIGHT, runs)[run_of].astype(np.uint16),
        p=rng.integers(0, 2, runs)[run_of].astype(np.uint8),
    )


def ours(path: Path) -> Events:
    return open_recording(path).read_all()


def expelliarmus_decoder(encoding: str) -> Decoder | None:
    try:
        from expelliarmus import Wizard
    except ImportError:
        return None
    wizard = Wizard(encoding=encoding)

    def decode(path: Path) -> Events:
        a = wizard.read(path)
        return Events(a["t"], a["x"], a["y"], a["p"])

    return decode


def evlib_decoder() -> Decoder | None:
    try:
        import evlib
    except ImportError:
        return None

    def decode(path: Path) -> Events:
        df = evlib.load_events(str(path), sort=False).collect()
        t = df["t"].dt.total_microseconds().to_numpy()
        return Events(t, df["x"].to_numpy(), df["y"].to_numpy(), (df["polarity"].to_numpy() > 0))

    return decode


def mismatch(got: Events, want: Events) -> str:
    """'' when equal, else what differs (count and first differing index per field)."""
    if len(got) != len(want):
        return f"{len(got)} events, expected {len(want)}"
    parts = []
    for name in ("t", "x", "y", "p"):
        a = getattr(got, name).astype(np.int64)
        b = getattr(want, name).astype(np.int64)
        bad = np.flatnonzero(a != b)
        if bad.size:
            parts.append(f"{name}: {bad.size} differ from #{bad[0]} ({a[bad[0]]} vs {b[bad[0]]})")
    return "; ".join(parts)


@dataclass
class Case:
    name: str
    path: Path
    reference: Events | None  # None: check against our own decode
    decoders: dict[str, Decoder]


def time_case(case: Case, repeats: int, slow: set[str]) -> list[tuple[str, float, float, str]]:
    """Median wall and CPU seconds per decoder (interleaved repeats after one checked warm-up)
    and the check result. CPU time is the steadier figure when other jobs share the cores.
    The ``slow`` decoders are timed once (evlib takes ~10 s per 20M events)."""
    checks: dict[str, str] = {}
    reference = case.reference
    for name, decode in case.decoders.items():  # warm-up (numba JIT, page cache) + check
        got = decode(case.path)
        if reference is None and name == "ours":
            reference = got
        checks[name] = mismatch(got, reference) if reference is not None else "?"
        del got
        gc.collect()
    wall: dict[str, list[float]] = {name: [] for name in case.decoders}
    cpu: dict[str, list[float]] = {name: [] for name in case.decoders}
    for repeat in range(repeats):
        for name, decode in case.decoders.items():
            if name in slow and repeat:
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            got = decode(case.path)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            del got
            gc.collect()
    return [
        (name, float(np.median(wall[name])), float(np.median(cpu[name])), checks[name])
        for name in case.decoders
    ]


def dat_breakdown(path: Path, repeats: int) -> list[str]:
    """Where our whole-file DAT read spends its time: the parts timed alone, beside the floor
    that memory sets on the kernel (numpy filling and copying the same bytes)."""
    header = read_dat_header(path)
    words = np.fromfile(path, np.uint8, offset=header.body_offset).view("<u4")
    n = len(words) // 2
    warm = OutputBuffer(n)

    def read_file() -> None:
        for _ in read_blocks(path, header.body_offset, RECORD_DTYPE, DEFAULT_CHUNK_SIZE):
            pass

    def kernel() -> None:  # the numba decoder itself, into outputs already in memory
        acc = new_accumulator(ReadPolicy(), HEIGHT, WIDTH)
        _decode_dat(words, np.asarray([-1, 0], np.int64), acc, warm.t, warm.x, warm.y, warm.p, 0)

    def first_touch() -> None:  # what a fresh read_all output costs before any event is written
        out = OutputBuffer(n)
        for column in (out.t, out.x, out.y, out.p):
            column.fill(0)

    def memory_floor() -> None:  # read the records once, write every output byte once
        for column in (warm.t, warm.x, warm.y, warm.p):
            column.fill(1)
        words.sum(dtype=np.uint32)

    parts = {
        "whole read_all": lambda: ours(path),
        "read the file in blocks (page cache)": read_file,
        "decode kernel into touched outputs": kernel,
        "allocate + first touch of the outputs": first_touch,
        "kernel's memory floor (read 8 B, write 13 B per event)": memory_floor,
    }
    return [f"  {name:56s} {wall_ms(fn, repeats)[0]:7.1f} ms" for name, fn in parts.items()]


def streaming_peak_mb(path: Path) -> float:
    tracemalloc.start()
    for _ in open_recording(path).iter_chunks():
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def long_dat(src: Path, dst: Path, copies: int) -> int:
    """Write ``copies`` back-to-back copies of ``src``'s records, each shifted past the last one
    in time; returns the number of events. Never holds more than two copies in memory."""
    body = read_dat_header(src).body_offset
    records = np.fromfile(src, RECORD_DTYPE, offset=body)
    span = int(records["t"][-1]) + 1
    if copies * span >= 2**32:
        raise SystemExit(f"--long-copies {copies}: the timestamps would pass the 32-bit DAT counter")
    with open(src, "rb") as f:
        header = f.read(body)
    with open(dst, "wb") as f:
        f.write(header)
        for k in range(copies):
            shifted = records.copy()
            shifted["t"] += k * span
            f.write(shifted.tobytes())
    return copies * len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--rate", type=float, default=4.0, help="million events per second")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--formats", default="dat,evt2,evt3")
    parser.add_argument("--long-copies", type=int, default=10, help="copies in the long DAT file (0: none)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  (NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']})")
    events = synthetic_events(args.events, args.rate)
    folder = Path(tempfile.mkdtemp(prefix="bench_readers_"))
    rows: list[tuple[str, int, str, float, float, str]] = []
    peaks: list[str] = []
    profile: list[str] = []
    try:
        writers = {
            "dat": lambda p: write_dat(p, events, HEIGHT, WIDTH),
            "evt2": lambda p: write_raw(p, events, "2.0", HEIGHT, WIDTH),
            "evt3": lambda p: write_raw(p, events, "3.0", HEIGHT, WIDTH),
        }
        cases = []
        for fmt in args.formats.split(","):
            path = folder / (f"rec_td.{fmt}" if fmt == "dat" else f"rec_{fmt}.raw")
            writers[fmt](path)
            decoders: dict[str, Decoder | None] = {
                "ours": ours,
                "expelliarmus": expelliarmus_decoder(fmt),
                "evlib": evlib_decoder() if fmt != "dat" else None,  # evlib reads no DAT v2
            }
            live = {k: v for k, v in decoders.items() if v is not None}
            cases.append(Case(f"{fmt.upper()}, {len(events) / 1e6:g}M synthetic", path, events, live))
        for fmt, sample in (
            ("evt2", "expelliarmus_evt2_sample.raw"),
            ("evt3", "expelliarmus_evt3_sample.raw"),
        ):
            if (REAL / sample).is_file():
                decoders = {"ours": ours, "expelliarmus": expelliarmus_decoder(fmt), "evlib": evlib_decoder()}
                live = {k: v for k, v in decoders.items() if v is not None}
                cases.append(Case(f"{sample} (real)", REAL / sample, None, live))
        for case in cases:
            n = len(open_recording(case.path).read_all())
            for name, wall, cpu, check in time_case(case, args.repeats, {"evlib"}):
                rows.append((case.name, n, name, wall, cpu, check))
                print(
                    f"  {case.name:36s} {name:13s} wall {n / wall / 1e6:7.1f} cpu {n / cpu / 1e6:7.1f} M ev/s"
                    f"  check: {check or 'equal'}",
                    flush=True,
                )
        dat = [case for case in cases if case.path.suffix == ".dat"]
        if dat:
            profile += [f"where our DAT read of {dat[0].name} goes (medians of {args.repeats}):"]
            profile += dat_breakdown(dat[0].path, args.repeats)
        for case in cases[: len(args.formats.split(","))]:
            size = case.path.stat().st_size
            half = folder / f"half{case.path.suffix}"
            peak_full = streaming_peak_mb(case.path)
            body = open_recording(case.path).header.body_offset
            with open(case.path, "rb") as src, open(half, "wb") as dst:  # the first ~10 % of the file
                dst.write(src.read(body + (size // 10 - body) // 8 * 8))
            peak_part = streaming_peak_mb(half)
            half.unlink()
            peaks.append(
                f"  {case.name:34s} peak {peak_full:6.1f} MiB (file {size / 2**20:.0f} MiB); "
                f"first 10 % of it: {peak_part:6.1f} MiB"
            )
            if case.path.suffix == ".dat" and args.long_copies > 0:
                long = folder / "long_td.dat"
                n = long_dat(case.path, long, args.long_copies)
                peak = streaming_peak_mb(long)
                peaks.append(
                    f"  {f'DAT, {n / 1e6:g}M ({args.long_copies} copies)':34s} peak {peak:6.1f} MiB "
                    f"(file {long.stat().st_size / 2**20:.0f} MiB)"
                )
                long.unlink()
    finally:
        shutil.rmtree(folder)
    print("\n| file | decoder | M ev/s (wall) | M ev/s (CPU) | ratio to expelliarmus (wall / CPU) | output |")
    print("|---|---|---|---|---|---|")
    base = {case: (wall, cpu) for case, _, name, wall, cpu, _ in rows if name == "expelliarmus"}
    for case, n, name, wall, cpu, check in rows:
        ratio = f"{base[case][0] / wall:.2f}x / {base[case][1] / cpu:.2f}x" if case in base else "-"
        print(
            f"| {case} | {name} | {n / wall / 1e6:.1f} | {n / cpu / 1e6:.1f} | {ratio} | {check or 'exact'} |"
        )
    if profile:
        print("\n" + "\n".join(profile))
    print("\nstreaming memory (iter_chunks, default chunk size, tracemalloc peak):")
    print("\n".join(peaks))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
