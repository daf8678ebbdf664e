"""Prophesee RAW files in EVT 2.0 (32-bit words) and EVT 3.0 (16-bit words) encodings.

Both encodings are stateful streams: a word may set the time base, the row or the polarity
that later words rely on. The file is decoded chunk by chunk with the decoder state kept in
a small int64 array between numba calls, so a chunk boundary can fall on any word.

Counting the output and spotting undefined word types are vectorised with numpy; only the
inherently sequential state machine runs in a numba loop. CD events seen before the first
TIME_HIGH word have no time base and are dropped, as the Metavision decoders do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from leod.errors import DataFormatError
from leod.events.reader import (
    DEFAULT_CHUNK_SIZE,
    EventReader,
    parse_header_int,
    read_percent_header,
    resolve_dimension,
)
from leod.events.types import Events

# Sensor size (height, width) by plugin-name fragment, for files without a geometry line.
# Checked in order, so the more specific fragments come first.
_PLUGIN_SIZES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("genx320", (320, 320)),
    ("imx636", (720, 1280)),
    ("gen41", (720, 1280)),
    ("gen4", (720, 1280)),
    ("gen31", (480, 640)),
    ("gen3", (480, 640)),
)

# EVT 2.0 word types (bits 31..28).
_EVT2_CD_OFF, _EVT2_CD_ON, _EVT2_TIME_HIGH = 0x0, 0x1, 0x8
_EVT2_KNOWN = (0x0, 0x1, 0x8, 0xA, 0xE, 0xF)
_EVT2_TIME_HIGH_BITS = 28
_EVT2_TIME_LOW_BITS = 6

# EVT 3.0 word types (bits 15..12).
_EVT3_ADDR_Y, _EVT3_ADDR_X, _EVT3_VECT_BASE_X = 0x0, 0x2, 0x3
_EVT3_VECT_12, _EVT3_VECT_8, _EVT3_TIME_LOW, _EVT3_TIME_HIGH = 0x4, 0x5, 0x6, 0x8
_EVT3_KNOWN = (0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xC, 0xE, 0xF)
_EVT3_TIME_BITS = 12

# Decoder state slots shared by both decoders (an int64 array carried across chunks).
_S_TIME_HIGH, _S_TIME_LOW, _S_WRAPS, _S_Y, _S_POL, _S_BASE_X = range(6)
_STATE_SIZE = 6


def _new_state() -> np.ndarray:
    state = np.zeros(_STATE_SIZE, np.int64)
    state[_S_TIME_HIGH] = -1  # no time base seen yet
    return state


@njit(cache=True)
def _advance_time_high(state: np.ndarray, value: int, bits: int) -> None:
    """Store a TIME_HIGH value; a backward jump over half its range is a counter wrap."""
    previous = state[_S_TIME_HIGH]
    if previous >= 0 and previous - value > (1 << (bits - 1)):
        state[_S_WRAPS] += 1
    state[_S_TIME_HIGH] = value


@njit(cache=True)
def _decode_evt2(
    words: np.ndarray, state: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray
) -> int:
    """Decode EVT 2.0 words into the output arrays; return the number of events written."""
    n = 0
    period_shift = _EVT2_TIME_HIGH_BITS + _EVT2_TIME_LOW_BITS
    for i in range(words.shape[0]):
        word = np.int64(words[i])
        kind = word >> 28
        if kind == _EVT2_TIME_HIGH:
            _advance_time_high(state, word & ((1 << _EVT2_TIME_HIGH_BITS) - 1), _EVT2_TIME_HIGH_BITS)
        elif kind in (_EVT2_CD_OFF, _EVT2_CD_ON) and state[_S_TIME_HIGH] >= 0:
            t[n] = (
                (state[_S_WRAPS] << period_shift)
                + (state[_S_TIME_HIGH] << _EVT2_TIME_LOW_BITS)
                + ((word >> 22) & 0x3F)
            )
            x[n] = (word >> 11) & 0x7FF
            y[n] = word & 0x7FF
            p[n] = kind
            n += 1
    return n


@njit(cache=True)
def _emit_evt3(
    state: np.ndarray,
    x_value: int,
    pol: int,
    n: int,
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
) -> None:
    """Write one CD event at the current time and row."""
    t[n] = (
        (state[_S_WRAPS] << (2 * _EVT3_TIME_BITS))
        + (state[_S_TIME_HIGH] << _EVT3_TIME_BITS)
        + state[_S_TIME_LOW]
    )
    x[n] = x_value
    y[n] = state[_S_Y]
    p[n] = pol


@njit(cache=True)
def _decode_evt3(
    words: np.ndarray, state: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray
) -> int:
    """Decode EVT 3.0 words into the output arrays; return the number of events written."""
    n = 0
    for i in range(words.shape[0]):
        word = np.int64(words[i])
        kind = word >> 12
        if kind == _EVT3_ADDR_Y:
            state[_S_Y] = word & 0x7FF
        elif kind == _EVT3_ADDR_X:
            if state[_S_TIME_HIGH] >= 0:
                _emit_evt3(state, word & 0x7FF, (word >> 11) & 1, n, t, x, y, p)
                n += 1
        elif kind == _EVT3_VECT_BASE_X:
            state[_S_POL] = (word >> 11) & 1
            state[_S_BASE_X] = word & 0x7FF
        elif kind in (_EVT3_VECT_12, _EVT3_VECT_8):
            width = 12 if kind == _EVT3_VECT_12 else 8
            mask = word & ((1 << width) - 1)
            if state[_S_TIME_HIGH] >= 0:
                for k in range(width):
                    if (mask >> k) & 1:
                        _emit_evt3(state, state[_S_BASE_X] + k, state[_S_POL], n, t, x, y, p)
                        n += 1
            state[_S_BASE_X] += width
        elif kind == _EVT3_TIME_LOW:
            state[_S_TIME_LOW] = word & 0xFFF
        elif kind == _EVT3_TIME_HIGH:
            _advance_time_high(state, word & 0xFFF, _EVT3_TIME_BITS)
    return n


def _evt2_capacity(words: np.ndarray) -> int:
    kinds = words >> 28
    return int(np.count_nonzero(kinds <= _EVT2_CD_ON))


def _evt3_capacity(words: np.ndarray) -> int:
    kinds = words >> 12
    vect12 = words[kinds == _EVT3_VECT_12] & 0xFFF
    vect8 = words[kinds == _EVT3_VECT_8] & 0xFF
    return int(
        np.count_nonzero(kinds == _EVT3_ADDR_X)
        + np.bitwise_count(vect12).sum(dtype=np.int64)
        + np.bitwise_count(vect8).sum(dtype=np.int64)
    )


@dataclass(frozen=True)
class _Encoding:
    """How to cut one encoding into words, spot reserved word types, size and decode a chunk."""

    word_dtype: np.dtype
    type_shift: int
    known_types: tuple[int, ...]
    capacity: Callable[[np.ndarray], int]
    decode: Callable[..., int]


_ENCODINGS = {
    "2.0": _Encoding(np.dtype("<u4"), 28, _EVT2_KNOWN, _evt2_capacity, _decode_evt2),
    "3.0": _Encoding(np.dtype("<u2"), 12, _EVT3_KNOWN, _evt3_capacity, _decode_evt3),
}


@dataclass(frozen=True)
class RawHeader:
    """What a RAW header declares. ``height``/``width`` come from ``geometry``/``format`` lines."""

    encoding: str
    height: int | None
    width: int | None
    plugin_name: str | None
    body_offset: int


def read_raw_header(path: Path) -> RawHeader:
    """Parse a RAW header: encoding from ``evt`` or ``format``, size from ``geometry`` or ``format``."""
    pairs, body_offset = read_percent_header(path)
    entries = dict(pairs)
    fmt_name, _, fmt_options = entries.get("format", "").partition(";")
    options = dict(item.partition("=")[::2] for item in fmt_options.split(";") if item)
    encoding = entries.get("evt") or {"EVT2": "2.0", "EVT3": "3.0", "EVT21": "2.1"}.get(fmt_name.strip(), "")
    if not encoding:
        raise DataFormatError(f"{path}: no '% evt' or '% format' header line; cannot tell the encoding")
    if encoding not in _ENCODINGS:
        raise DataFormatError(f"{path}: EVT {encoding} not supported (only {sorted(_ENCODINGS)})")
    height = width = None
    if "geometry" in entries:
        match = re.fullmatch(r"(\d+)x(\d+)", entries["geometry"])
        if match is None:
            raise DataFormatError(f"{path}: header geometry {entries['geometry']!r} is not WIDTHxHEIGHT")
        width, height = int(match.group(1)), int(match.group(2))
    elif "height" in options or "width" in options:
        height = parse_header_int(path, "format height", options.get("height", ""))
        width = parse_header_int(path, "format width", options.get("width", ""))
    return RawHeader(encoding, height, width, entries.get("plugin_name"), body_offset)


def plugin_size_hint(plugin_name: str | None) -> tuple[int, int] | None:
    """Sensor (height, width) implied by a HAL plugin name such as ``hal_plugin_gen41_evk3``."""
    if plugin_name:
        for fragment, size in _PLUGIN_SIZES:
            if fragment in plugin_name.lower():
                return size
    return None


class EvtReader(EventReader):
    """Streams an EVT 2.0 or 3.0 RAW file, ``chunk_size`` words at a time.

    The sensor size comes from the header's geometry/format line, else from the caller,
    else from the plugin-name hint; it stays ``None`` when none of them gives it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        height: int | None = None,
        width: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__(path, chunk_size)
        self.header = read_raw_header(self.path)
        self._encoding = _ENCODINGS[self.header.encoding]
        body = self.path.stat().st_size - self.header.body_offset
        word_size = self._encoding.word_dtype.itemsize
        if body % word_size:
            raise DataFormatError(
                f"{self.path}: truncated body ({body} bytes is not a multiple of the {word_size}-byte word)"
            )
        hint_h, hint_w = plugin_size_hint(self.header.plugin_name) or (None, None)
        self.height = resolve_dimension(self.path, "height", self.header.height, height) or hint_h
        self.width = resolve_dimension(self.path, "width", self.header.width, width) or hint_w

    def _decoded_chunks(self) -> Iterator[Events]:
        encoding = self._encoding
        state = _new_state()
        word_size = encoding.word_dtype.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.header.body_offset)
            offset = self.header.body_offset
            while data := f.read(self.chunk_size * word_size):
                words = np.frombuffer(data, dtype=encoding.word_dtype)
                self._check_word_types(words, offset)
                n_max = encoding.capacity(words)
                t = np.empty(n_max, np.int64)
                x = np.empty(n_max, np.uint16)
                y = np.empty(n_max, np.uint16)
                p = np.empty(n_max, np.uint8)
                n = encoding.decode(words, state, t, x, y, p)
                offset += len(data)
                yield Events(t[:n], x[:n], y[:n], p[:n])

    def _check_word_types(self, words: np.ndarray, offset: int) -> None:
        """Refuse reserved word types: they mean a corrupt file or a mislabelled encoding."""
        kinds = words >> self._encoding.type_shift
        bad = np.flatnonzero(~np.isin(kinds, self._encoding.known_types))
        if bad.size:
            first = int(bad[0])
            raise DataFormatError(
                f"{self.path}: undefined EVT {self.header.encoding} word type {int(kinds[first]):#x} at byte "
                f"{offset + first * self._encoding.word_dtype.itemsize} ({bad.size} such words in this chunk)"
            )
