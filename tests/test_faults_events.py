"""Bad event files: each case of :mod:`leod.events.policy` gets one clear error or a counted repair.

Every bad file is written with the project's writers (or the EVT encoders of the tests) and
then byte-patched the way a flipped bit or a damaged disk would; the reader must either
refuse it with one DataFormatError naming the file and the position, or repair it and say
so in ``reader.stats``, whatever the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from evt_encode import encode_evt3, write_raw
from h5_encode import write_h5_events
from leod.events import open_recording
from leod.events.dat import EVENT_SIZE, write_dat
from leod.events.policy import ReadPolicy
from leod.events.types import Events, ReadStats
from leod.plumbing.errors import DataFormatError

HEIGHT, WIDTH = 96, 128
N = 4000


def _stream(n: int = N, t0: int = 1_000_000, seed: int = 0) -> Events:
    """``n`` events over about 20 ms, every 25th one a 3-event run along a row (EVT 3.0 vectors)."""
    rng = np.random.default_rng(seed)
    t = t0 + np.sort(rng.integers(0, 20_000, n))
    x = rng.integers(0, WIDTH - 4, n)
    y = rng.integers(0, HEIGHT, n)
    p = rng.integers(0, 2, n)
    for i in range(0, n - 3, 25):
        t[i + 1 : i + 3], y[i + 1 : i + 3], p[i + 1 : i + 3] = t[i], y[i], p[i]
        x[i + 1 : i + 3] = x[i] + np.array([1, 3])
    return Events(t.astype(np.int64), x.astype(np.uint16), y.astype(np.uint16), p.astype(np.uint8))


def _read(path: Path, chunk_size: int = 1 << 20) -> tuple[Events, ReadStats]:
    """Stream the file as preprocess does and return the events and the pass's stats."""
    reader = open_recording(path, chunk_size=chunk_size)
    events = Events.concatenate(list(reader.iter_chunks()))
    return events, reader.stats


def _dat(path: Path, events: Events) -> Path:
    write_dat(path, events, height=HEIGHT, width=WIDTH)
    return path


def _dat_patch_t(path: Path, record: int, value: int) -> None:
    """Overwrite the 32-bit timestamp of one DAT record in place."""
    body = path.stat().st_size - EVENT_SIZE * N
    with open(path, "r+b") as f:
        f.seek(body + EVENT_SIZE * record)
        f.write(np.uint32(value).tobytes())


def _evt3_words(path: Path) -> np.ndarray:
    data = path.read_bytes()
    offset = data.index(b"% end\n") + len(b"% end\n")
    return np.frombuffer(data[offset:], "<u2").copy(), offset


# ---------------------------------------------------------------- refused with one clear error


def _flipped_bit_forward(tmp: Path) -> Path:
    events = _stream()
    path = _dat(tmp / "flip_fwd.dat", events)
    _dat_patch_t(path, 1500, int(events.t[1500]) | (1 << 30))  # bit 30: 17.9 min ahead
    return path


def _flipped_bit_backward(tmp: Path) -> Path:
    events = _stream(t0=(1 << 25) + 5_000_000)
    path = _dat(tmp / "flip_back.dat", events)
    _dat_patch_t(path, 1500, int(events.t[1500]) & ~(1 << 25))  # bit 25: 33.6 s earlier
    return path


def _false_counter_wrap(tmp: Path) -> Path:
    events = _stream(t0=3_500_000_000)  # 58 min into a recording
    path = _dat(tmp / "false_wrap.dat", events)
    _dat_patch_t(path, 1500, 1234)  # a drop of over 2^31 us reads as a wrap: +13 min
    return path


def _evt3_corrupt_time_high(tmp: Path) -> Path:
    path = write_raw(tmp / "time_high.raw", _stream(t0=3000 << 12), "3.0", HEIGHT, WIDTH)
    words, offset = _evt3_words(path)
    time_high = np.flatnonzero(words >> 12 == 0x8)
    # TIME_HIGH 3002 read as 902: a drop of over half the 12-bit range is taken for a
    # counter wrap, so this and every later event would move 16.7 s ahead.
    words[time_high[2]] = 0x8000 | (int(words[time_high[2]]) & 0xFFF) - 2100
    path.write_bytes(path.read_bytes()[:offset] + words.tobytes())
    return path


def _reverse_time_order(tmp: Path) -> Path:
    events = _stream()
    backwards = Events(events.t[::-1].copy(), events.x, events.y, events.p)
    raw = tmp / "reversed.dat"
    _dat(raw, _stream())  # same size and header, then the reversed records
    header = raw.read_bytes()[: raw.stat().st_size - EVENT_SIZE * N]
    records = np.empty(N, [("t", "<u4"), ("w", "<i4")])
    records["t"] = backwards.t
    records["w"] = (events.x.astype(np.int64) | (events.y.astype(np.int64) << 14)).astype(np.int32)
    raw.write_bytes(header + records.tobytes())
    return raw


def _many_outside(tmp: Path) -> Path:
    events = _stream()
    path = _dat(tmp / "wrong_size.dat", events)
    data = bytearray(path.read_bytes())
    # Declare a smaller sensor: every event with x >= 64 now lies outside (about half).
    path.write_bytes(bytes(data).replace(f"% Width {WIDTH}\n".encode(), b"% Width  64\n", 1))
    return path


def _evt_garbage_words(tmp: Path) -> Path:
    path = write_raw(tmp / "garbage.raw", _stream(), "3.0", HEIGHT, WIDTH)
    words, offset = _evt3_words(path)
    words[100::50] = 0x9ABC  # reserved type 0x9 in 2% of the words
    path.write_bytes(path.read_bytes()[:offset] + words.tobytes())
    return path


def _h5_with(tmp: Path, name: str, column: str, value: float) -> Path:
    events = _stream()
    path = tmp / name
    write_h5_events(path, events, height=HEIGHT, width=WIDTH)
    with h5py.File(path, "a") as f:
        data = f[f"events/{column}"][:].astype(np.float64)
        data[1234] = value
        del f[f"events/{column}"]
        f.create_dataset(f"events/{column}", data=data)
    return path


def _h5_corrupt_blosc_chunk(tmp: Path) -> Path:
    path = tmp / "corrupt_chunk.h5"
    write_h5_events(path, _stream(), height=HEIGHT, width=WIDTH)
    with h5py.File(path, "r") as f:
        info = f["events/t"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 16)  # past the Blosc header, into the compressed stream
        f.write(b"\xff" * min(64, info.size - 16))
    return path


def _h5_time_jump(tmp: Path) -> Path:
    events = _stream()
    t = events.t.copy()
    t[2000:] += 3600_000_000  # an hour missing in the middle
    path = tmp / "jump.h5"
    write_h5_events(path, Events(t, events.x, events.y, events.p), height=HEIGHT, width=WIDTH)
    return path


REFUSED: list[tuple[str, Callable[[Path], Path], str]] = [
    ("DAT bit 30 set", _flipped_bit_forward, r"jump of \+1073\.\d+ s at record 1500 \(byte \d+\)"),
    ("DAT bit 25 cleared", _flipped_bit_backward, r"jump of -33\.\d+ s at record 1500"),
    ("DAT false counter wrap", _false_counter_wrap, r"jump of \+\d+\.\d+ s at record 1500"),
    ("EVT3 corrupt TIME_HIGH", _evt3_corrupt_time_high, r"jump of \+8\.1\d+ s at byte \d+"),
    ("reverse time order", _reverse_time_order, r"timestamps go backwards and were clamped"),
    ("wrong sensor size", _many_outside, r"x=\d+ outside the sensor \(width 64\) at record \d+"),
    ("EVT garbage words", _evt_garbage_words, r"undefined EVT 3\.0 word type 0x9 at byte \d+"),
    ("h5 NaN t", lambda tmp: _h5_with(tmp, "nan_t.h5", "t", np.nan), r"events/t holds nan at row 1234"),
    ("h5 inf t", lambda tmp: _h5_with(tmp, "inf_t.h5", "t", np.inf), r"events/t holds inf at row 1234"),
    ("h5 NaN x", lambda tmp: _h5_with(tmp, "nan_x.h5", "x", np.nan), r"events/x holds nan at row 1234"),
    ("h5 fractional y", lambda tmp: _h5_with(tmp, "half_y.h5", "y", 2.5), r"events/y holds 2\.5 at row 1234"),
    ("h5 corrupt Blosc chunk", _h5_corrupt_blosc_chunk, r"cannot read events/t rows 0\.\.\d+"),
    ("h5 hour-long jump", _h5_time_jump, r"jump of \+3600\.\d+ s at row 2000"),
]


@pytest.mark.parametrize(("case", "make", "message"), REFUSED, ids=[case for case, _, _ in REFUSED])
def test_bad_file_is_refused_naming_file_and_position(tmp_path: Path, case: str, make, message: str) -> None:
    path = make(tmp_path)
    for chunk_size in (1 << 20, 777):  # the verdict does not depend on the chunking
        with pytest.raises(DataFormatError, match=message) as info:
            _read(path, chunk_size)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- repaired and counted


def test_jitter_is_clamped_and_counted(tmp_path: Path) -> None:
    events = _stream()
    t = events.t.copy()
    t[[100, 2000, 3999]] -= 300  # three events read 300 us late by the sensor
    path = _dat(tmp_path / "jitter.dat", Events(t, events.x, events.y, events.p))
    for chunk_size in (1 << 20, 333):
        got, stats = _read(path, chunk_size)
        assert stats == ReadStats(events=N, clamped=3, dropped_outside=0, corrupt_words=0, records=N)
        assert np.all(np.diff(got.t) >= 0) and np.array_equal(got.x, events.x)


def test_few_events_outside_the_sensor_are_dropped_and_counted(tmp_path: Path) -> None:
    """As in a public 1280x720 dataset holding a few events with y >= 720."""
    events = _stream()
    path = _dat(tmp_path / "stray_rows.dat", events)
    data = path.read_bytes()
    path.write_bytes(data.replace(f"% Height {HEIGHT}\n".encode(), f"% Height {HEIGHT - 1}\n".encode(), 1))
    outside = events.y == HEIGHT - 1  # about 1 % of the rows: keep it under the limit below
    policy = ReadPolicy(max_outside_fraction=0.02)
    reader = open_recording(path, chunk_size=1000, policy=policy)
    got = reader.read_all()
    assert reader.stats.dropped_outside == int(outside.sum()) > 0
    assert reader.stats.events == len(got) == N - int(outside.sum())
    np.testing.assert_array_equal(got.x, events.x[~outside])
    assert reader.stats.as_dict()["dropped_outside"] == int(outside.sum())


def test_rare_corrupt_evt_words_are_skipped_and_counted(tmp_path: Path) -> None:
    events = _stream()
    path = write_raw(tmp_path / "rare_garbage.raw", events, "3.0", HEIGHT, WIDTH)
    words, offset = _evt3_words(path)
    clean = encode_evt3(events)
    # Insert two reserved words (types 0x1 and 0xD) between events: nothing else changes.
    split = len(clean) // 2
    patched = np.concatenate([words[:split], [0x1FFF], words[split:], [0xD000]]).astype("<u2")
    path.write_bytes(path.read_bytes()[:offset] + patched.tobytes())
    for chunk_size in (1 << 20, 501):
        got, stats = _read(path, chunk_size)
        assert stats.corrupt_words == 2 and stats.records == len(words) + 2 and stats.events == N
        np.testing.assert_array_equal(got.t, events.t)
        np.testing.assert_array_equal(got.x, events.x)


def test_policy_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_gap_us"):
        ReadPolicy(max_gap_us=0)
    with pytest.raises(ValueError, match="max_outside_fraction"):
        ReadPolicy(max_outside_fraction=1.5)
