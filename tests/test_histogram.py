"""RVT stacked histogram: hand-computed cases, edge cases, and bit-equality with the torch reference."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numba
import numpy as np
import pytest
import torch

from histogram_reference import reference_stacked_histogram
from leod.events.types import Events
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.preprocess.histogram import _time_bin, output_shape, stacked_histogram, stacked_histograms


def make_events(t: list[int], x: list[int], y: list[int], p: list[int]) -> Events:
    return Events(
        np.asarray(t, np.int64), np.asarray(x, np.uint16), np.asarray(y, np.uint16), np.asarray(p, np.uint8)
    )


def random_events(rng: np.random.Generator, n: int, height: int, width: int, t_span: int) -> Events:
    return Events(
        np.sort(rng.integers(0, t_span + 1, n)).astype(np.int64),
        rng.integers(0, width, n).astype(np.uint16),
        rng.integers(0, height, n).astype(np.uint16),
        rng.integers(0, 2, n).astype(np.uint8),
    )


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run a test serially and with the parallel split (spill buffers) to cover both code paths."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield numba.get_num_threads()
    numba.set_num_threads(before)


def test_hand_computed_histogram(threads: int) -> None:
    # 3x4 sensor, 4 bins. t_first=100, t_last=200 -> span 100, bin = floor((t-100)/100*4), max 3:
    #   t=100 -> 0.0 -> bin 0;  t=110 -> 0.4 -> bin 0;  t=130 -> 1.2 -> bin 1
    #   t=150 -> 2.0 -> bin 2;  t=200 -> 4.0 -> clamped to bin 3
    # channel = p*nbins + bin.
    ev = make_events(
        t=[100, 110, 130, 150, 200],
        x=[0, 0, 3, 2, 1],
        y=[0, 0, 1, 2, 0],
        p=[0, 0, 1, 0, 1],
    )
    expected = np.zeros((8, 3, 4), np.uint8)
    expected[0, 0, 0] = 2  # events 0 and 1: pol 0, bin 0, pixel (y=0, x=0)
    expected[4 + 1, 1, 3] = 1  # event 2: pol 1, bin 1, pixel (1, 3)
    expected[2, 2, 2] = 1  # event 3: pol 0, bin 2, pixel (2, 2)
    expected[4 + 3, 0, 1] = 1  # event 4: pol 1, bin 3, pixel (0, 1)
    np.testing.assert_array_equal(stacked_histogram(ev, 3, 4, nbins=4, count_cutoff=10), expected)
    # a cutoff of 1 turns the double count into 1
    expected[0, 0, 0] = 1
    np.testing.assert_array_equal(stacked_histogram(ev, 3, 4, nbins=4, count_cutoff=1), expected)


def test_empty_window_is_zeros() -> None:
    hist = stacked_histogram(Events.empty(), 5, 7, nbins=3, count_cutoff=10)
    assert hist.shape == (6, 5, 7) and hist.dtype == np.uint8
    assert not hist.any()
    hist_ds = stacked_histogram(Events.empty(), 5, 7, nbins=3, count_cutoff=10, downsample=True)
    assert hist_ds.shape == (6, 2, 3) and not hist_ds.any()


def test_single_event_goes_to_bin_zero() -> None:
    # span = max(t_last - t_first, 1) = 1 and dt = 0, so bin 0 whatever nbins is
    hist = stacked_histogram(make_events([12345], [2], [1], [1]), 3, 4, nbins=5, count_cutoff=10)
    assert hist[5, 1, 2] == 1  # pol 1 -> channel 5 + bin 0
    assert hist.sum() == 1


def test_equal_timestamps_all_in_bin_zero(threads: int) -> None:
    n = 40
    rng = np.random.default_rng(1)
    ev = Events(
        np.full(n, 777, np.int64),
        rng.integers(0, 6, n).astype(np.uint16),
        rng.integers(0, 4, n).astype(np.uint16),
        rng.integers(0, 2, n).astype(np.uint8),
    )
    hist = stacked_histogram(ev, 4, 6, nbins=10, count_cutoff=255)
    assert hist[0].sum() + hist[10].sum() == n
    assert hist[0].sum() == np.sum(ev.p == 0)
    assert not np.delete(hist, [0, 10], axis=0).any()


def test_count_cutoff_saturates_and_uint8_wraps_like_rvt(threads: int) -> None:
    def hot_pixel(count: int) -> Events:
        return make_events(list(range(count)), [1] * count, [0] * count, [0] * count)

    # 20 events in one bin with cutoff 10 -> 10 (nbins=1 puts them all in bin 0)
    assert stacked_histogram(hot_pixel(20), 2, 3, nbins=1, count_cutoff=10)[0, 0, 1] == 10
    # RVT accumulates in uint8 (fastmode): 256 events wrap to 0, 300 to 44, then the clip
    assert stacked_histogram(hot_pixel(256), 2, 3, nbins=1, count_cutoff=10)[0, 0, 1] == 0
    assert stacked_histogram(hot_pixel(300), 2, 3, nbins=1, count_cutoff=10)[0, 0, 1] == 10
    assert stacked_histogram(hot_pixel(300), 2, 3, nbins=1, count_cutoff=50)[0, 0, 1] == 44
    # a cutoff above 255 saturates at 255 like RVT's min(count_cutoff, 255)
    assert stacked_histogram(hot_pixel(255), 2, 3, nbins=1, count_cutoff=1000)[0, 0, 1] == 255


def test_polarity_split() -> None:
    # same pixel and time bins, 3 OFF and 2 ON events: t 0..40 over 2 bins -> [0,0,1,1,1]
    ev = make_events(t=[0, 10, 20, 30, 40], x=[3] * 5, y=[2] * 5, p=[0, 1, 0, 1, 0])
    hist = stacked_histogram(ev, 4, 5, nbins=2, count_cutoff=10)
    # bins: dt/40*2 = 0, 0.5, 1.0, 1.5, 2.0(->1) -> bins 0, 0, 1, 1, 1
    assert hist[:, 2, 3].tolist() == [1, 2, 1, 1]  # pol0 bin0, pol0 bin1, pol1 bin0, pol1 bin1
    assert hist.sum() == 5


def test_downsample_keeps_odd_pixels_and_full_window_timing(threads: int) -> None:
    # 4x6 sensor -> 2x3. nearest-exact at 0.5x keeps source pixel (2i+1, 2j+1) for output (i, j).
    # The time bins are still normalised over ALL events, including the dropped ones:
    # t_first=0 (dropped, even x), t_last=100 (dropped, even y), nbins=2 -> bin = floor(t/50)
    ev = make_events(
        t=[0, 20, 49, 50, 60, 100],
        x=[0, 1, 5, 3, 2, 1],
        y=[0, 1, 3, 1, 1, 2],
        p=[0, 0, 1, 0, 0, 1],
    )
    expected = np.zeros((4, 2, 3), np.uint8)
    expected[0, 0, 0] = 1  # t=20 at (y1, x1) -> (0, 0), bin 0, pol 0
    expected[2 + 0, 1, 2] = 1  # t=49 at (3, 5) -> (1, 2), bin 0, pol 1
    expected[1, 0, 1] = 1  # t=50 at (1, 3) -> (0, 1), bin 1, pol 0
    # t=60 at x=2 and t=100 at y=2 are dropped
    hist = stacked_histogram(ev, 4, 6, nbins=2, count_cutoff=10, downsample=True)
    np.testing.assert_array_equal(hist, expected)
    np.testing.assert_array_equal(hist, reference_stacked_histogram(ev, 4, 6, 2, 10, downsample=True).numpy())


@pytest.mark.parametrize(
    ("height", "width", "nbins", "cutoff", "downsample", "n"),
    [
        (24, 30, 10, 10, False, 3000),
        (24, 30, 10, 10, True, 3000),
        (7, 9, 3, 255, True, 2000),  # odd sizes: H//2, W//2 and clamped edge pixels
        (5, 3, 1, 255, False, 5000),  # hot pixels: uint8 wrap across the parallel merge
        (11, 13, 7, 4, False, 1),
    ],
)
def test_equals_torch_reference(
    threads: int, height: int, width: int, nbins: int, cutoff: int, downsample: bool, n: int
) -> None:
    rng = np.random.default_rng(height * 1000 + n)
    for span in (0, 1, 999, 50_000, 3 * 2**24 + 7):  # the last exercises float32 rounding of dt
        ev = random_events(rng, n, height, width, span)
        got = stacked_histogram(ev, height, width, nbins, cutoff, downsample)
        want = reference_stacked_histogram(ev, height, width, nbins, cutoff, downsample).numpy()
        assert got.shape == want.shape == output_shape(height, width, nbins, downsample)
        np.testing.assert_array_equal(got, want)


def test_time_bin_matches_torch_float32_division() -> None:
    for span in (1, 7, 999, 50_000, 2**24 + 1, 3 * 2**24 + 7, 10**12 + 3):
        dt = np.unique(
            np.concatenate([np.arange(min(span, 3000) + 1), np.linspace(0, span, 5001).astype(np.int64)])
        )
        for nbins in (1, 3, 10):
            tensor = torch.from_numpy(dt)
            want = (
                torch.clamp((tensor / max(torch.tensor(span), 1) * nbins).floor(), max=nbins - 1)
                .long()
                .numpy()
            )
            got = np.array([_time_bin(int(d), np.float32(span), nbins) for d in dt])
            np.testing.assert_array_equal(got, want, err_msg=f"span={span} nbins={nbins}")
            # the same timestamps through the whole pipeline (bin starts found by binary search)
            ev = Events(dt, (dt % 5).astype(np.uint16), (dt % 3).astype(np.uint16), (dt % 2).astype(np.uint8))
            np.testing.assert_array_equal(
                stacked_histogram(ev, 3, 5, nbins, 255),
                reference_stacked_histogram(ev, 3, 5, nbins, 255).numpy(),
            )


def test_batched_windows_are_closed_intervals() -> None:
    # window k = [end_k - 50, end_k], both ends inclusive as in RVT's searchsorted slicing
    ev = make_events(t=[0, 50, 100, 150], x=[0, 1, 2, 3], y=[0, 0, 0, 0], p=[0, 0, 0, 0])
    hists = stacked_histograms(ev, np.array([50, 100, 150, 400]), 50, 1, 4, nbins=1, count_cutoff=10)
    assert hists.shape == (4, 2, 1, 4)
    assert hists[:, 0, 0].tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert not hists[:, 1].any()


@pytest.mark.parametrize("downsample", [False, True])
def test_batched_equals_reference_per_window(threads: int, downsample: bool) -> None:
    rng = np.random.default_rng(7)
    height, width, nbins, window = 12, 16, 5, 50_000
    ev = random_events(rng, 20_000, height, width, 1_000_000)
    ends = np.array([50_000, 100_000, 120_000, 1_000_000, 2_000_000, 75_000], np.int64)  # overlap, unsorted
    for chosen in (ends, ends[:1]):  # more windows than threads, and fewer
        hists = stacked_histograms(ev, chosen, window, height, width, nbins, 10, downsample)
        assert hists.shape == (len(chosen), *output_shape(height, width, nbins, downsample))
        for k, end in enumerate(chosen):
            a = np.searchsorted(ev.t, end - window, side="left")
            z = np.searchsorted(ev.t, end, side="right")
            want = reference_stacked_histogram(ev.slice(a, z), height, width, nbins, 10, downsample).numpy()
            np.testing.assert_array_equal(hists[k], want, err_msg=f"window ending {end}")
        assert hists[0].sum() > 100
    no_events = stacked_histograms(ev, ends, window, height, width, nbins, 10, downsample)[4]
    assert not no_events.any()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("x", 8, "x=8: outside the 5x8 sensor"),
        ("y", 5, "y=5: outside the 5x8 sensor"),
        ("p", 2, "p=2: polarity must be 0 or 1"),
        ("t", 5, "timestamps decrease at event 3 (t=5 after 20)"),
    ],
)
def test_invalid_events_raise(field: str, value: int, message: str) -> None:
    cols = {"t": [0, 10, 20, 30], "x": [0, 1, 2, 3], "y": [0, 1, 2, 3], "p": [0, 1, 0, 1]}
    cols[field][3] = value
    ev = make_events(**cols)
    with pytest.raises(DataFormatError, match=re.escape(message)):
        stacked_histogram(ev, 5, 8, nbins=2, count_cutoff=10)
    with pytest.raises(DataFormatError):
        stacked_histograms(ev, np.array([5]), 10, 5, 8, nbins=2, count_cutoff=10)


@pytest.mark.parametrize("index", [5, 500, 995], ids=["before-windows", "in-window", "after-windows"])
@pytest.mark.parametrize("defect", ["y", "t"])
def test_batched_checks_every_event_of_the_chunk(threads: int, index: int, defect: str) -> None:
    ev = random_events(np.random.default_rng(3), 1000, 6, 8, 999)
    t, y = ev.t.copy(), ev.y.copy()
    if defect == "y":
        y[index] = 6
    else:
        t[index] = t[index - 1] - 1
    bad = Events(t, ev.x, y, ev.p)
    for ends in (np.array([600]), np.array([300, 450, 600, 600])):  # fewer and more windows than threads
        assert stacked_histograms(ev, ends, 500, 6, 8, 3, 10).any()
        with pytest.raises(DataFormatError, match="y=6" if defect == "y" else f"decrease at event {index}"):
            stacked_histograms(bad, ends, 500, 6, 8, 3, 10)
    with pytest.raises(DataFormatError):
        stacked_histogram(bad, 6, 8, 3, 10)


def test_other_integer_dtypes_are_checked_then_accepted() -> None:
    ev = make_events([0, 1, 2], [0, 1, 2], [0, 1, 1], [0, 1, 1])
    wide = Events(ev.t.astype(np.int32), ev.x.astype(np.int32), ev.y.astype(np.int64), ev.p.astype(np.int16))
    np.testing.assert_array_equal(stacked_histogram(wide, 2, 3, 2, 10), stacked_histogram(ev, 2, 3, 2, 10))
    negative = Events(wide.t, np.array([0, -1, 2], np.int32), wide.y, wide.p)
    with pytest.raises(DataFormatError, match="x=-1"):
        stacked_histogram(negative, 2, 3, 2, 10)
    floats = Events(wide.t, wide.x.astype(np.float32), wide.y, wide.p)
    with pytest.raises(DataFormatError, match="dtype float32"):
        stacked_histogram(floats, 2, 3, 2, 10)


def test_bad_parameters_raise_config_error() -> None:
    ev = make_events([0], [0], [0], [0])
    with pytest.raises(ConfigError, match="nbins"):
        stacked_histogram(ev, 2, 2, nbins=0, count_cutoff=10)
    with pytest.raises(ConfigError, match="count_cutoff"):
        stacked_histogram(ev, 2, 2, nbins=1, count_cutoff=0)
    with pytest.raises(ConfigError, match="too small"):
        stacked_histogram(ev, 1, 2, nbins=1, count_cutoff=1, downsample=True)
    with pytest.raises(ConfigError, match="window"):
        stacked_histograms(ev, np.array([0]), 0, 2, 2, nbins=1, count_cutoff=1)
