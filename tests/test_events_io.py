"""Event-file readers: real recordings, round trips, streaming equivalence and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for the hand-made DSEC file)
import numpy as np
import pytest

from h5_encode import write_h5_events
from leod.events import open_recording
from leod.events.dat import RECORD_DTYPE, DatReader, pack_words, write_dat
from leod.events.evt import EvtReader
from leod.events.h5 import H5Reader
from leod.events.policy import ReadPolicy
from leod.events.reader import EventReader
from leod.events.types import Events
from leod.plumbing.errors import DataFormatError, MissingInputError

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-events"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real-events not present")
# Tiny hand-made streams where a few clamps are a large share of the events.
JITTERY = ReadPolicy(max_clamped_fraction=1.0)


def _events(t: list[int], x: list[int], y: list[int], p: list[int]) -> Events:
    return Events(
        np.asarray(t, np.int64), np.asarray(x, np.uint16), np.asarray(y, np.uint16), np.asarray(p, np.uint8)
    )


def _assert_same(a: Events, b: Events) -> None:
    for name in ("t", "x", "y", "p"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _write_raw_dat(path: Path, header: bytes, t: list[int], x: list[int], y: list[int], p: list[int]) -> Path:
    records = np.empty(len(t), RECORD_DTYPE)
    records["t"] = t
    records["w"] = pack_words(np.asarray(x), np.asarray(y), np.asarray(p))
    path.write_bytes(header + records.tobytes())
    return path


def _write_raw(path: Path, header: str, words: list[int], dtype: str) -> Path:
    path.write_bytes(header.encode("ascii") + np.asarray(words, dtype).tobytes())
    return path


def iter_windows(reader: EventReader, window_us: int, t_start: int | None = None) -> Iterator[Events]:
    """Yield the events of consecutive half-open windows ``[s + k*w, s + (k+1)*w)``.

    ``s`` is ``t_start`` when given (earlier events are skipped), else the first event's
    timestamp rounded down to a multiple of ``window_us``, so windows sit on a grid that
    does not depend on where a file happens to start. The first window yielded therefore
    always holds the first kept event, which lets a caller recover ``s`` as
    ``window.t[0] // window_us * window_us`` when it did not pass ``t_start``.
    Empty windows inside gaps are yielded (a consumer counting windows stays aligned);
    iteration stops after the window holding the last event.
    """
    if window_us <= 0:
        raise ValueError(f"window_us must be positive, got {window_us}")
    start = t_start
    pending: list[Events] = []
    for chunk in reader.iter_chunks():
        if start is None:
            start = int(chunk.t[0]) // window_us * window_us
        i = int(np.searchsorted(chunk.t, start, side="left"))
        n = len(chunk)
        while i < n:
            stop = start + window_us
            j = int(np.searchsorted(chunk.t, stop, side="left"))
            if j == n:
                pending.append(chunk.slice(i, n))
                break
            pending.append(chunk.slice(i, j))
            yield Events.concatenate(pending)
            pending = []
            start, i = stop, j
    if any(len(part) for part in pending):
        yield Events.concatenate(pending)


def _assert_windows_match(reader: EventReader, whole: Events, window_us: int) -> int:
    """Windows concatenate to ``whole`` and each lies inside its half-open interval."""
    windows = list(iter_windows(reader, window_us))
    _assert_same(Events.concatenate(windows), whole)
    start = int(whole.t[0]) // window_us * window_us
    for k, window in enumerate(windows):
        if len(window):
            assert window.t.min() >= start + k * window_us
            assert window.t.max() < start + (k + 1) * window_us
    assert len(windows[0]) and len(windows[-1])
    return len(windows)


# ---------------------------------------------------------------- real recordings


@needs_real
@pytest.mark.parametrize(
    ("name", "count", "t_range", "x_range", "y_range", "on_off"),
    [
        ("tonic_sample_ncars.dat", 2009, (0, 99_952), (0, 77), (0, 41), (1350, 659)),
        ("expelliarmus_dat_sample.dat", 4407, None, (0, 53), (1, 60), None),
    ],
)
def test_real_dat_samples(name, count, t_range, x_range, y_range, on_off) -> None:
    reader = open_recording(REAL / name)
    assert isinstance(reader, DatReader) and reader.header.event_type == 0
    assert (reader.height, reader.width) == (None, None)  # these headers declare no size
    events = reader.read_all()
    assert len(events) == count
    assert (int(events.x.min()), int(events.x.max())) == x_range
    assert (int(events.y.min()), int(events.y.max())) == y_range
    if t_range is not None:
        assert (int(events.t[0]), int(events.t[-1])) == t_range
    if on_off is not None:
        assert (int((events.p == 1).sum()), int((events.p == 0).sum())) == on_off
    assert np.all(np.diff(events.t) >= 0)


@needs_real
def test_real_evt3_matches_reference_decode() -> None:
    """x, y, p equal the expelliarmus decode exactly; t equals it up to expelliarmus' TIME_LOW quirk.

    expelliarmus adds 4096 us whenever a TIME_LOW value is smaller than the previous one,
    even when a TIME_HIGH word already advanced the time base or the drop is a small jitter.
    The file's TIME_HIGH only goes 2861 -> 2863, so the true span is about 8.8 ms; the
    reference is therefore ours plus 4096 us times the number of such drops seen so far.
    """
    raw = REAL / "expelliarmus_evt3_sample.raw"
    reader = open_recording(raw)
    assert isinstance(reader, EvtReader) and reader.header.encoding == "3.0"
    assert (reader.height, reader.width) == (720, 1280)  # from the gen41 plugin name
    events = reader.read_all()
    reference = np.load(REAL / "expelliarmus_evt3_sample_decoded.npy", allow_pickle=False)
    assert len(events) == len(reference) == 219_596
    for name in ("x", "y", "p"):
        np.testing.assert_array_equal(getattr(events, name), reference[name].astype(np.int64), err_msg=name)

    words = np.frombuffer(raw.read_bytes()[reader.header.body_offset :], "<u2")
    time_low = words[words >> 12 == 0x6] & 0xFFF
    drops = int(np.count_nonzero(np.diff(time_low.astype(np.int64)) < 0))
    time_high = np.unique(words[words >> 12 == 0x8] & 0xFFF)
    assert drops == 11 and time_high.tolist() == [2861, 2862, 2863]

    lag = reference["t"] - events.t
    assert np.all(lag % 4096 == 0) and np.all(np.diff(lag) >= 0)
    assert (int(lag[0]), int(lag[-1])) == (0, drops * 4096)
    assert (int(events.t[0]), int(events.t[-1])) == (11_718_656, 11_727_457)
    assert int((events.p == 1).sum()) == 115_532 and reader.stats.clamped == 0


@needs_real
def test_real_evt2_sample() -> None:
    reader = open_recording(REAL / "expelliarmus_evt2_sample.raw")
    assert isinstance(reader, EvtReader) and reader.header.encoding == "2.0"
    assert (reader.height, reader.width) == (480, 640)  # from the gen3 plugin name
    events = reader.read_all()
    assert len(events) == 539_481
    assert (int(events.x.min()), int(events.x.max())) == (60, 599)
    assert (int(events.y.min()), int(events.y.max())) == (18, 475)
    assert (int((events.p == 1).sum()), int((events.p == 0).sum())) == (367_855, 171_626)
    assert int(events.t[-1] - events.t[0]) == 50_000


@needs_real
@pytest.mark.parametrize(
    ("name", "chunk_size", "window_us", "n_windows"),
    [
        ("tonic_sample_ncars.dat", 97, 7_000, 15),
        ("expelliarmus_dat_sample.dat", 250, 3_333, 30),
        ("expelliarmus_evt3_sample.raw", 4099, 700, 14),
        ("expelliarmus_evt2_sample.raw", 9001, 3_000, 17),
    ],
)
def test_real_files_stream_like_read_all(name, chunk_size, window_us, n_windows) -> None:
    whole = open_recording(REAL / name).read_all()
    streamed = open_recording(REAL / name, chunk_size=chunk_size)
    _assert_same(Events.concatenate(list(streamed.iter_chunks())), whole)
    assert _assert_windows_match(streamed, whole, window_us) == n_windows


# ---------------------------------------------------------------- DAT


@pytest.mark.parametrize("event_type", [0, 12])
def test_dat_round_trip(tmp_path: Path, event_type: int) -> None:
    rng = np.random.default_rng(event_type)
    n = 1000
    events = Events(
        t=np.sort(rng.integers(0, 2_000_000, n)).astype(np.int64),
        x=rng.integers(0, 304, n).astype(np.uint16),
        y=rng.integers(0, 240, n).astype(np.uint16),
        p=rng.integers(0, 2, n).astype(np.uint8),
    )
    path = tmp_path / "rec_td.dat"
    write_dat(path, events, height=240, width=304, event_type=event_type)
    reader = open_recording(path, chunk_size=123)
    assert reader.header.event_type == event_type and (reader.height, reader.width) == (240, 304)
    _assert_same(reader.read_all(), events)
    assert reader.stats.clamped == 0
    assert _assert_windows_match(reader, events, 50_000) == 40


def test_dat_clamps_and_counts_backward_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "jitter.dat"
    write_dat(path, _events([10, 20, 15, 30, 25, 26, 40], [0] * 7, [1] * 7, [1] * 7), height=4, width=4)
    for chunk_size in (1, 2, 3, 100):  # the running maximum carries across chunks
        reader = DatReader(path, chunk_size=chunk_size, policy=JITTERY)
        events = reader.read_all()
        assert events.t.tolist() == [10, 20, 20, 30, 30, 30, 40]
        assert reader.stats.clamped == 3


def test_dat_unwraps_32bit_timestamps(tmp_path: Path) -> None:
    top = 2**32
    path = _write_raw_dat(
        tmp_path / "wrap.dat",
        b"% Version 2\n% Height 2\n% Width 2\n" + bytes([12, 8]),
        [top - 10, top - 5, top - 7, 3, 8],
        [0] * 5,
        [0] * 5,
        [0] * 5,
    )
    for chunk_size in (1, 2, 5):
        reader = DatReader(path, chunk_size=chunk_size, policy=JITTERY)
        assert reader.read_all().t.tolist() == [top - 10, top - 5, top - 5, top + 3, top + 8]
        assert reader.stats.clamped == 1  # the 2 us jitter is clamped, the wrap is not


def test_dat_without_header_is_type0_from_byte0(tmp_path: Path) -> None:
    path = _write_raw_dat(tmp_path / "bare.dat", b"", [1, 2, 3], [5, 6, 7], [8, 9, 10], [1, 0, 1])
    reader = open_recording(path, height=20, width=30)
    assert reader.header.body_offset == 0 and reader.header.event_type == 0
    assert (reader.height, reader.width) == (20, 30)
    _assert_same(reader.read_all(), _events([1, 2, 3], [5, 6, 7], [8, 9, 10], [1, 0, 1]))


def test_iter_windows_grid_gaps_and_start(tmp_path: Path) -> None:
    path = tmp_path / "gaps.dat"
    events = _events([5, 10, 19, 20, 55], [1, 2, 3, 4, 5], [0] * 5, [0] * 5)
    write_dat(path, events, height=1, width=8)
    reader = DatReader(path, chunk_size=2)
    assert [w.t.tolist() for w in iter_windows(reader, 10)] == [[5], [10, 19], [20], [], [], [55]]
    assert [w.t.tolist() for w in iter_windows(reader, 10, t_start=10)] == [[10, 19], [20], [], [], [55]]
    assert [w.x.tolist() for w in iter_windows(reader, 15, t_start=7)] == [[2, 3, 4], [], [], [5]]
    assert list(iter_windows(reader, 10, t_start=60)) == []
    with pytest.raises(ValueError, match="window_us"):
        next(iter_windows(reader, 0))


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        (b"% Version 2\n" + bytes([12, 8]), bytes(8 * 3 + 5), "truncated body"),
        (b"% Version 2\n", b"", "truncated header"),
        (b"% Version 2\n" + bytes([14, 8]), bytes(16), "unsupported event type 14"),
        (b"% Version 2\n" + bytes([12, 16]), bytes(32), "size 16"),
        (b"% Height abc\n% Width 304\n" + bytes([12, 8]), bytes(16), "header Height 'abc' is not an integer"),
        (b"% Version 1\n" + bytes([0, 8]), bytes(16), "version '1'"),
        (b"% Version 2\n% Date " + b"9" * 5000 + b"\n" + bytes([0, 8]), bytes(8), "over-long header line"),
        (b"% Width \xff\n" + bytes([0, 8]), bytes(8), "non-ASCII"),
    ],
)
def test_dat_bad_header_or_body(tmp_path: Path, header: bytes, body: bytes, message: str) -> None:
    path = tmp_path / "broken_td.dat"
    path.write_bytes(header + body)
    with pytest.raises(DataFormatError, match=message) as info:
        open_recording(path)
    assert str(path) in str(info.value)


def test_dat_coordinates_outside_declared_size(tmp_path: Path) -> None:
    header = b"% Version 2\n% Height 10\n% Width 10\n" + bytes([12, 8])
    path = _write_raw_dat(tmp_path / "oob.dat", header, [1, 2], [3, 20], [4, 5], [0, 1])
    reader = open_recording(path)
    with pytest.raises(DataFormatError, match=r"x=20 outside the sensor \(width 10\)") as info:
        reader.read_all()
    assert str(path) in str(info.value)
    path_y = _write_raw_dat(tmp_path / "oob_y.dat", b"", [1], [3], [12], [0])
    with pytest.raises(DataFormatError, match=r"y=12 outside the sensor \(height 10\)"):
        open_recording(path_y, height=10, width=10).read_all()


def test_caller_size_must_agree_with_header(tmp_path: Path) -> None:
    path = tmp_path / "sized.dat"
    write_dat(path, _events([1], [1], [1], [1]), height=240, width=304)
    assert open_recording(path, height=240, width=304).width == 304
    with pytest.raises(DataFormatError, match="declares sensor height 240, caller expects 480") as info:
        open_recording(path, height=480)
    assert str(path) in str(info.value)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    for name in ("absent.dat", "absent.raw", "absent.h5", "absent.npy"):
        with pytest.raises(MissingInputError, match=name):
            open_recording(tmp_path / name)
    with pytest.raises(MissingInputError, match="absent.dat"):
        DatReader(tmp_path / "absent.dat")
    other = tmp_path / "events.npy"
    other.write_bytes(b"x")
    with pytest.raises(DataFormatError, match="unknown event file suffix") as info:
        open_recording(other)
    assert str(other) in str(info.value)


# ---------------------------------------------------------------- EVT 2.0 / 3.0


def _evt3_words() -> tuple[list[int], Events]:
    """A hand-encoded EVT 3.0 stream exercising every CD word and a TIME_HIGH wrap."""
    words = [
        0x2001,  # EVT_ADDR_X before any TIME_HIGH: no time base, dropped
        0x0005,  # EVT_ADDR_Y y=5
        0x8FFF,  # TIME_HIGH 4095
        0x6007,  # TIME_LOW 7
        0x2802,  # EVT_ADDR_X pol=1 x=2
        0x7123,  # CONTINUED_4 (ignored)
        0x3004,  # VECT_BASE_X pol=0 x=4
        0x4805,  # VECT_12 mask bits 0, 2, 11 -> x=4, 6, 15; base -> 16
        0x5003,  # VECT_8 mask bits 0, 1 -> x=16, 17; base -> 24
        0xA001,  # EXT_TRIGGER (ignored)
        0x8000,  # TIME_HIGH 0: the 24-bit counter wrapped
        0x6001,  # TIME_LOW 1
        0x0009,  # EVT_ADDR_Y y=9
        0x201F,  # EVT_ADDR_X pol=0 x=31
    ]
    t0 = (0xFFF << 12) + 7
    expected = _events(
        [t0] * 6 + [(1 << 24) + 1], [2, 4, 6, 15, 16, 17, 31], [5, 5, 5, 5, 5, 5, 9], [1, 0, 0, 0, 0, 0, 0]
    )
    return words, expected


def test_evt3_hand_encoded_stream_any_chunking(tmp_path: Path) -> None:
    words, expected = _evt3_words()
    path = _write_raw(
        tmp_path / "tiny.raw", "% evt 3.0\n% format EVT3;height=16;width=32\n% end\n", words, "<u2"
    )
    for chunk_size in range(1, len(words) + 1):  # decoder state must survive every cut
        reader = open_recording(path, chunk_size=chunk_size)
        assert (reader.height, reader.width) == (16, 32)
        _assert_same(reader.read_all(), expected)


def test_evt2_hand_encoded_stream_with_wrap(tmp_path: Path) -> None:
    def cd(pol: int, t_low: int, x: int, y: int) -> int:
        return (pol << 28) | (t_low << 22) | (x << 11) | y

    top = (1 << 28) - 1
    words = [cd(1, 3, 1, 1), 0x80000000 | top, cd(1, 5, 3, 4), 0xE0000000, 0x80000000, cd(0, 1, 639, 479)]
    path = _write_raw(tmp_path / "tiny2.raw", "% evt 2.0\n% geometry 640x480\n", words, "<u4")
    expected = _events([(top << 6) + 5, (1 << 34) + 1], [3, 639], [4, 479], [1, 0])
    for chunk_size in (1, 2, 4, 10):
        reader = EvtReader(path, chunk_size=chunk_size)
        assert (reader.height, reader.width) == (480, 640)
        _assert_same(reader.read_all(), expected)


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        (
            "% evt 3.0\n",
            np.asarray([0x8001, 0x1234], "<u2").tobytes(),
            "undefined EVT 3.0 word type 0x1 at byte 12",
        ),
        ("% evt 2.0\n", np.asarray([0x80000001, 0x30000000], "<u4").tobytes(), "word type 0x3"),
        ("% evt 3.0\n", b"\x00\x80\x01", "not a multiple of the 2-byte word"),
        ("% evt 2.0\n", b"\x00\x00\x00\x80\x00\x00", "not a multiple of the 4-byte word"),
        ("% plugin_name hal_plugin_gen41_evk3\n", b"", "cannot tell the encoding"),
        ("% evt 2.1\n", b"", "EVT 2.1 not supported"),
        ("% evt 3.0\n% geometry 1280-720\n", b"", "not WIDTHxHEIGHT"),
        ("% format EVT3;height=big;width=1280\n", b"", "format height 'big'"),
    ],
)
def test_evt_bad_input(tmp_path: Path, header: str, body: bytes, message: str) -> None:
    path = tmp_path / "broken.raw"
    path.write_bytes(header.encode("ascii") + body)
    with pytest.raises(DataFormatError, match=message) as info:
        open_recording(path).read_all()
    assert str(path) in str(info.value)


def test_evt_size_from_caller_and_out_of_range(tmp_path: Path) -> None:
    words, _ = _evt3_words()
    path = _write_raw(tmp_path / "nosize.raw", "% evt 3.0\n", words, "<u2")
    reader = open_recording(path)
    assert (reader.height, reader.width) == (None, None)
    assert len(reader.read_all()) == 7
    with pytest.raises(DataFormatError, match=r"x=31 outside the sensor \(width 20\)"):
        open_recording(path, height=16, width=20).read_all()


# ---------------------------------------------------------------- HDF5


def test_h5_round_trip_and_streaming(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 5000
    events = Events(
        t=np.sort(rng.integers(10**9, 10**9 + 300_000, n)).astype(np.int64),
        x=rng.integers(0, 640, n).astype(np.uint16),
        y=rng.integers(0, 360, n).astype(np.uint16),
        p=rng.integers(0, 2, n).astype(np.uint8),
    )
    path = tmp_path / "rec_td.h5"
    write_h5_events(path, events, height=360, width=640)
    with h5py.File(path, "r") as f:
        for name in ("x", "y", "p", "t"):
            code, _, values, _ = f[f"events/{name}"].id.get_create_plist().get_filter(0)
            assert code == 32001 and values[-1] == 5  # Blosc with its zstd compressor
        assert int(f["events/height"][()]) == 360
    reader = open_recording(path, chunk_size=333)
    assert isinstance(reader, H5Reader) and (reader.height, reader.width) == (360, 640)
    _assert_same(reader.read_all(), events)
    assert _assert_windows_match(reader, events, 50_000) == 6

    empty = tmp_path / "empty.hdf5"
    write_h5_events(empty, Events.empty(), height=2, width=2)
    assert len(open_recording(empty).read_all()) == 0


def test_h5_dsec_layout_with_t_offset(tmp_path: Path) -> None:
    path = tmp_path / "events.h5"
    blosc = hdf5plugin.Blosc(cname="lz4")
    with h5py.File(path, "w") as f:
        f.create_dataset("events/x", data=np.asarray([1, 2, 3], np.uint16), **blosc)
        f.create_dataset("events/y", data=np.asarray([4, 5, 6], np.uint16), **blosc)
        f.create_dataset("events/p", data=np.asarray([1, -1, 0], np.int8), **blosc)
        f.create_dataset("events/t", data=np.asarray([0, 7, 5], np.uint32), **blosc)
        f.create_dataset("t_offset", data=np.int64(50_000_000_000))
    reader = open_recording(path, height=480, width=640, policy=JITTERY)
    assert (reader.height, reader.width) == (480, 640)
    events = reader.read_all()
    assert (events.t - 50_000_000_000).tolist() == [0, 7, 7]
    assert events.p.tolist() == [1, 0, 0] and reader.stats.clamped == 1


def test_h5_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.h5"
    with h5py.File(missing, "w") as f:
        f.create_dataset("events/x", data=np.zeros(2, np.uint16))
    with pytest.raises(DataFormatError, match=r"missing datasets \['events/y', 'events/p', 'events/t'\]"):
        open_recording(missing)

    ragged = tmp_path / "ragged.h5"
    with h5py.File(ragged, "w") as f:
        for name, size in (("x", 3), ("y", 3), ("p", 3), ("t", 2)):
            f.create_dataset(f"events/{name}", data=np.zeros(size, np.int64))
    with pytest.raises(DataFormatError, match="equal length"):
        open_recording(ragged)

    bad_p = tmp_path / "bad_p.h5"
    with h5py.File(bad_p, "w") as f:
        for name in "xyt":
            f.create_dataset(f"events/{name}", data=np.zeros(2, np.int64))
        f.create_dataset("events/p", data=np.asarray([0, 3], np.int64))
    with pytest.raises(DataFormatError, match="events/p holds 3 at row 1"):
        open_recording(bad_p).read_all()

    outside = tmp_path / "outside.h5"
    write_h5_events(outside, _events([1, 2], [5, 9], [0, 0], [0, 1]), height=4, width=10)
    with h5py.File(outside, "a") as f:
        f["events/width"][()] = 8
    with pytest.raises(DataFormatError, match=r"x=9 outside the sensor \(width 8\)"):
        open_recording(outside).read_all()

    not_h5 = tmp_path / "garbage.h5"
    not_h5.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataFormatError, match="not a readable HDF5 file") as info:
        open_recording(not_h5)
    assert str(not_h5) in str(info.value)
