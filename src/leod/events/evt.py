"""Prophesee RAW files in EVT 2.0 (32-bit words) and EVT 3.0 (16-bit words) encodings.

Both encodings are stateful streams: a word may set the time base, the row or the polarity
that later words rely on. Each block is decoded in one numba pass through the shared policy
(:mod:`leod.events.policy`), the decoder state kept in a small int64 array between blocks,
so a block boundary can fall on any word. Undefined word types are skipped and counted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from leod.events.policy import A_LAST, KERNEL, ReadPolicy, clean_run, count_corrupt_word, keep_event, limits
from leod.events.reader import (
    DEFAULT_CHUNK_SIZE,
    EventReader,
    OutputBuffer,
    count_records,
    parse_header_int,
    read_blocks,
    read_percent_header,
    resolve_dimension,
)
from leod.plumbing.errors import DataFormatError

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

# EVT 2.0 word types (bits 31..28); the others are reserved.
_EVT2_CD_OFF, _EVT2_CD_ON, _EVT2_TIME_HIGH = 0x0, 0x1, 0x8
_EVT2_IGNORED = (0xA, 0xE, 0xF)  # EXT_TRIGGER, OTHERS, CONTINUED
_EVT2_TIME_HIGH_BITS = 28
_EVT2_TIME_LOW_BITS = 6

# EVT 3.0 word types (bits 15..12); 0x1, 0x9, 0xB and 0xD are reserved.
_EVT3_ADDR_Y, _EVT3_ADDR_X, _EVT3_VECT_BASE_X = 0x0, 0x2, 0x3
_EVT3_VECT_12, _EVT3_VECT_8, _EVT3_TIME_LOW, _EVT3_TIME_HIGH = 0x4, 0x5, 0x6, 0x8
_EVT3_IGNORED = (0x7, 0xA, 0xC, 0xE, 0xF)  # CONTINUED_4, EXT_TRIGGER, IMU, OTHERS, CONTINUED_12
_EVT3_TIME_BITS = 12
_EVT3_MAX_PER_WORD = 12  # a VECT_12 word

# Decoder state slots shared by both decoders (an int64 array carried across blocks).
_S_TIME_HIGH, _S_TIME_LOW, _S_WRAPS, _S_Y, _S_POL, _S_BASE_X = range(6)
_STATE_SIZE = 6


def _new_state() -> np.ndarray:
    state = np.zeros(_STATE_SIZE, np.int64)
    state[_S_TIME_HIGH] = -1  # no time base yet: CD events are dropped, as Metavision does
    return state


@njit(**KERNEL)
def _decode_evt2(
    words: np.ndarray,
    state: np.ndarray,
    acc: np.ndarray,
    out_t: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_p: np.ndarray,
    n: int,
) -> tuple[int, int]:
    """Decode EVT 2.0 words; return the next free output slot (-1 on a policy error) and
    the words consumed. A TIME_HIGH value lower by over half its range is a counter wrap."""
    time_high = state[_S_TIME_HIGH]
    wraps = state[_S_WRAPS]
    half = np.int64(1) << (_EVT2_TIME_HIGH_BITS - 1)
    bounds = limits(acc)
    last = acc[A_LAST]
    for i in range(words.shape[0]):
        word = np.int64(words[i])
        kind = word >> 28
        if kind <= _EVT2_CD_ON:
            if time_high >= 0:
                t = wraps + (time_high << _EVT2_TIME_LOW_BITS) + ((word >> 22) & 0x3F)
                n, last = keep_event(
                    acc,
                    bounds,
                    i,
                    t,
                    (word >> 11) & 0x7FF,
                    word & 0x7FF,
                    kind,
                    out_t,
                    out_x,
                    out_y,
                    out_p,
                    n,
                    last,
                )
                if n < 0:
                    break
        elif kind == _EVT2_TIME_HIGH:
            value = word & ((1 << _EVT2_TIME_HIGH_BITS) - 1)
            if time_high - value > half:
                wraps += np.int64(1) << (_EVT2_TIME_HIGH_BITS + _EVT2_TIME_LOW_BITS)
            time_high = value
        elif kind != 0xA and kind != 0xE and kind != 0xF:
            count_corrupt_word(acc, i, kind)
    state[_S_TIME_HIGH] = time_high
    state[_S_WRAPS] = wraps
    acc[A_LAST] = last
    return n, words.shape[0]


@njit(**KERNEL)
def _decode_evt3(
    words: np.ndarray,
    state: np.ndarray,
    acc: np.ndarray,
    out_t: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_p: np.ndarray,
    n: int,
) -> tuple[int, int]:
    """Decode EVT 3.0 words; return the next free output slot (-1 on a policy error) and
    the words consumed, stopping early when fewer than 12 output slots are left.

    ``t`` is ``wraps + TIME_HIGH << 12 + TIME_LOW``: a TIME_LOW lower than the previous one
    is jitter (left to the policy), a TIME_HIGH lower by over half its range a counter wrap.
    """
    time_high = state[_S_TIME_HIGH]
    time_low = state[_S_TIME_LOW]
    wraps = state[_S_WRAPS]
    row = state[_S_Y]
    pol = state[_S_POL]
    base_x = state[_S_BASE_X]
    half = np.int64(1) << (_EVT3_TIME_BITS - 1)
    bounds = limits(acc)
    last = acc[A_LAST]
    room = out_t.shape[0] - _EVT3_MAX_PER_WORD
    t = wraps + (time_high << _EVT3_TIME_BITS) + time_low
    consumed = words.shape[0]
    for i in range(words.shape[0]):
        if n > room:
            consumed = i
            break
        word = np.int64(words[i])
        kind = word >> 12
        if kind == _EVT3_ADDR_X:
            if time_high >= 0:
                n, last = keep_event(
                    acc,
                    bounds,
                    i,
                    t,
                    word & 0x7FF,
                    row,
                    (word >> 11) & 1,
                    out_t,
                    out_x,
                    out_y,
                    out_p,
                    n,
                    last,
                )
                if n < 0:
                    consumed = i
                    break
        elif kind == _EVT3_ADDR_Y:
            row = word & 0x7FF
        elif kind == _EVT3_VECT_12 or kind == _EVT3_VECT_8:  # noqa: SIM109 (plain compares in numba)
            width = 12 if kind == _EVT3_VECT_12 else 8
            mask = word & ((1 << width) - 1)
            if time_high >= 0 and mask:
                if clean_run(bounds, t, row, base_x + width - 1, last):
                    # Branch-free: write every column, advance past the set bits only
                    # (the loop head left room for 12 events).
                    while mask:
                        out_t[n] = t
                        out_x[n] = base_x + trailing_zeros(mask)
                        out_y[n] = row
                        out_p[n] = pol
                        n += 1
                        mask &= mask - 1
                    last = t
                else:
                    for k in range(width):
                        if (mask >> k) & 1:
                            n, last = keep_event(
                                acc, bounds, i, t, base_x + k, row, pol, out_t, out_x, out_y, out_p, n, last
                            )
                            if n < 0:
                                break
                    if n < 0:
                        consumed = i
                        break
            base_x += width
        elif kind == _EVT3_TIME_LOW:
            time_low = word & 0xFFF
            t = wraps + (time_high << _EVT3_TIME_BITS) + time_low
        elif kind == _EVT3_VECT_BASE_X:
            pol = (word >> 11) & 1
            base_x = word & 0x7FF
        elif kind == _EVT3_TIME_HIGH:
            value = word & 0xFFF
            if time_high - value > half:
                wraps += np.int64(1) << (2 * _EVT3_TIME_BITS)
            time_high = value
            t = wraps + (time_high << _EVT3_TIME_BITS) + time_low
        elif kind == 0x1 or kind == 0x9 or kind == 0xB or kind == 0xD:
            count_corrupt_word(acc, i, kind)
    state[_S_TIME_HIGH] = time_high
    state[_S_TIME_LOW] = time_low
    state[_S_WRAPS] = wraps
    state[_S_Y] = row
    state[_S_POL] = pol
    state[_S_BASE_X] = base_x
    acc[A_LAST] = last
    return n, consumed


@dataclass(frozen=True)
class _Encoding:
    """How to cut one encoding into words and decode them; ``per_word`` bounds events per word."""

    word_dtype: np.dtype
    decode: Callable[..., tuple[int, int]]
    per_word: int


_ENCODINGS = {
    "2.0": _Encoding(np.dtype("<u4"), _decode_evt2, 1),
    "3.0": _Encoding(np.dtype("<u2"), _decode_evt3, _EVT3_MAX_PER_WORD),
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
        policy: ReadPolicy | None = None,
    ) -> None:
        super().__init__(path, chunk_size, policy)
        self.header = read_raw_header(self.path)
        self._encoding = _ENCODINGS[self.header.encoding]
        word_size = self._encoding.word_dtype.itemsize
        self.num_words = count_records(
            self.path, self.header.body_offset, word_size, f"the {word_size}-byte word"
        )
        self._corrupt_what = f"undefined EVT {self.header.encoding} word type"
        hint_h, hint_w = plugin_size_hint(self.header.plugin_name) or (None, None)
        self.height = resolve_dimension(self.path, "height", self.header.height, height) or hint_h
        self.width = resolve_dimension(self.path, "width", self.header.width, width) or hint_w

    def _total_records(self) -> int:
        return self.num_words

    def _capacity(self, records: int) -> int:
        # EVT 2.0: at most one event per word. EVT 3.0 streams carry about one event per
        # word (vectors pack up to 12, but address words share them); the decoder stops
        # and the buffer grows when a block holds more.
        return records + self._encoding.per_word

    def _blocks(self) -> Iterator[np.ndarray]:
        return read_blocks(self.path, self.header.body_offset, self._encoding.word_dtype, self.chunk_size)

    def _new_state(self) -> np.ndarray:
        return _new_state()

    def _decode(
        self, block: np.ndarray, start: int, state: np.ndarray, acc: np.ndarray, out: OutputBuffer
    ) -> int:
        n, consumed = self._encoding.decode(block[start:], state, acc, out.t, out.x, out.y, out.p, out.n)
        if n >= 0:
            out.n = n
        return consumed

    def _position(self, index: int) -> str:
        return f"byte {self.header.body_offset + index * self._encoding.word_dtype.itemsize}"
