"""Tests for autoscaler.aggregation: Knative's bucketing_test.go and max/*_test.go scenarios.

Go's tests start from time.Now(), which is anywhere inside a second; here each such
scenario runs from a slot-aligned start and from two unaligned ones, which is what that
randomness covers.
"""

from __future__ import annotations

import pytest

from autoscaler.aggregation import (
    MIN_EXPONENT,
    MaxWindow,
    TimedFloat64Buckets,
    TimeWindow,
    WeightedFloat64Buckets,
    compute_smoothing_coeff,
    round_to_n_digits,
)

BASE = 1_700_000_010.0  # a Unix time, aligned to 1 s, 2 s, 3 s and 5 s
STARTS = [
    pytest.param(BASE, id="aligned"),
    pytest.param(BASE + 0.25, id="plus-250ms"),
    pytest.param(BASE + 0.75, id="plus-750ms"),
]


def bucket_sum(buckets: TimedFloat64Buckets, now: float) -> float:
    """Knative's forEachBucket summing helper."""
    return sum(value for _, value in buckets.snapshot(now))


@pytest.mark.parametrize(
    ("num_buckets", "want"),
    [
        pytest.param(100, MIN_EXPONENT, id="nb=100"),
        pytest.param(60, MIN_EXPONENT, id="nb=60"),
        pytest.param(40, 0.20567, id="nb=40"),
        pytest.param(6, 0.78456, id="nb=6"),
    ],
)
def test_compute_decay_multiplier(num_buckets: int, want: float) -> None:
    """TestComputeDecayMultiplier (Go allows 0.9999 of slack; five decimals hold here)."""
    assert compute_smoothing_coeff(num_buckets) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    ("granularity", "stats", "want"),
    [
        pytest.param(
            1.0,
            # activator scale from 0, then a scrape in the same second, then two later slots
            [(0.0, 1.0), (0.1, 10.0), (1.0, 1.0), (3.0, 1.0)],
            {0.0: 11.0, 1.0: 1.0, 3.0: 1.0},
            id="granularity = 1s",
        ),
        pytest.param(
            5.0,
            [(0.0, 1.0), (3.0, 11.0), (6.0, 1.0)],
            {0.0: 12.0, 5.0: 1.0},
            id="granularity = 5s",
        ),
        pytest.param(1.0, [], {}, id="empty"),
    ],
)
def test_timed_float64_buckets_simple(
    granularity: float, stats: list[tuple[float, float]], want: dict[float, float]
) -> None:
    """TestTimedFloat64BucketsSimple: values land in the slot their time truncates to."""
    buckets = TimedFloat64Buckets(120.0, granularity)
    assert buckets.is_empty(BASE)
    for offset, value in stats:
        buckets.record(BASE + offset, value)
    # Later than any record, within the 2 minute window; zero slots are left out.
    got = {t - BASE: v for t, v in buckets.snapshot(BASE + 60.0) if v > 0}
    assert got == want


def test_timed_float64_buckets_many_reps() -> None:
    """TestTimedFloat64BucketsManyReps: five slots of five records each sum to 100."""
    buckets = TimedFloat64Buckets(60.0, 1.0)
    now = BASE
    for p in range(5):
        now += 1.0
        for t in range(5):
            buckets.record(now, float(p + t))
    assert bucket_sum(buckets, now) == 100.0
    assert bucket_sum(buckets, now) == 100.0  # reading does not consume


def test_timed_float64_buckets_many_reps_with_non_monotonical_order() -> None:
    """TestTimedFloat64BucketsManyRepsWithNonMonotonicalOrder: out-of-order slots still add up."""
    buckets = TimedFloat64Buckets(60.0, 1.0)
    end = BASE
    for p, d in enumerate([0, 3, 2, 1, 4]):
        end = BASE + d
        for t in range(5):
            buckets.record(end, float(p + t))
    assert bucket_sum(buckets, end) == 100.0
    assert bucket_sum(buckets, end) == 100.0


@pytest.mark.parametrize("now", STARTS)
def test_timed_float64_buckets_weighted_average(now: float) -> None:
    """TestTimedFloat64BucketsWeightedAverage."""
    buckets = WeightedFloat64Buckets(5.0, 1.0)
    m = buckets.smoothing_coeff

    buckets.record(now, 2)
    want = 2 * m
    assert buckets.window_average(now) == want
    # One second later and no write: the data moves one weight back.
    want *= 1 - m
    assert buckets.window_average(now + 1) == want
    buckets.record(now + 1, 2)
    want += 2 * m
    assert buckets.window_average(now + 1) == want

    # Fill the whole window with [2, 3, 4, 5, 6].
    for i in range(5):
        buckets.record(now + 2 + i, float(i + 2))
    want = (
        6 * m
        + 5 * m * (1 - m)
        + 4 * m * (1 - m) * (1 - m)
        + 3 * m * (1 - m) * (1 - m) * (1 - m)
        + 2 * m * (1 - m) * (1 - m) * (1 - m) * (1 - m)
    )
    # The hand expansion multiplies in another order than the loop: equal to the last ulp.
    assert buckets.window_average(now + 6) == pytest.approx(want, rel=1e-15)
    # An empty window.
    assert buckets.window_average(now + 16) == 0.0


@pytest.mark.parametrize("start", STARTS)
def test_timed_float64_buckets_window_average(start: float) -> None:
    """TestTimedFloat64BucketsWindowAverage: partial windows, trailing gaps and holes."""
    now = start
    buckets = TimedFloat64Buckets(5.0, 1.0)

    buckets.record(now, 1)
    assert buckets.window_average(now) == 1.0  # over the first slot only, not 1/5
    for i in range(1, 5):
        buckets.record(now + i, float(i + 1))
    assert buckets.window_average(now + 4) == 15.0 / 5
    assert buckets.window_average(now + 3.6) == 15.0 / 5  # `now` lags behind
    assert buckets.window_average(now + 6) == (15.0 - 1 - 2) / (5 - 2)  # a short hole
    assert buckets.window_average(now + 10) == 0.0  # a long hole

    # A write after a hole: the skipped slots count as zero.
    buckets.record(now + 6, 91)
    assert buckets.window_average(now + 6) == (15.0 - 1 - 2 + 91) / 5

    # Much later: a fresh partial window.
    now += 60
    buckets.record(now, 1984)
    assert buckets.window_average(now) == 1984.0
    buckets.record(now - 3, 4)  # an earlier time widens the window
    assert buckets.window_average(now) == (4.0 + 1984) / 4
    now += 1
    buckets.record(now, 5)
    assert buckets.window_average(now) == (4.0 + 1984 + 5) / 5
    buckets.record(now - 3, 10)  # an earlier slot again
    assert buckets.window_average(now) == (4.0 + 10 + 1984 + 5) / 5
    buckets.record(now - 6, 10)  # too early: ignored
    assert buckets.window_average(now) == (4.0 + 10 + 1984 + 5) / 5
    buckets.record(now - 5, 10)  # exactly a window early: ignored too
    assert buckets.window_average(now) == (4.0 + 10 + 1984 + 5) / 5
    # Exactly a window without data clears everything.
    buckets.record(now + 5, 10)
    assert buckets.window_average(now + 5) == 10.0


@pytest.mark.parametrize("now", STARTS)
def test_descending_record(now: float) -> None:
    """TestDescendingRecord: one 5 per slot, written newest first, averages to 5."""
    buckets = TimedFloat64Buckets(5.0, 1.0)
    for i in range(8, -1, -1):
        buckets.record(now + i, 5)
    assert buckets.window_average(now + 5) == 5.0


@pytest.mark.parametrize("now", STARTS)
def test_timed_float64_buckets_holes(now: float) -> None:
    """TestTimedFloat64BucketsHoles: a write after a gap zeroes the skipped slots."""
    buckets = TimedFloat64Buckets(5.0, 1.0)
    for i in range(5):
        buckets.record(now + i, float(i + 1))
    assert bucket_sum(buckets, now + 4) == 15.0
    assert buckets.window_average(now + 4) == 15.0 / 5
    # At +8 the slots of +5, +6, +7 become 0; [+3] = 4 aged out, [+4] = 5 and [+8] = 2 remain.
    buckets.record(now + 8, 2.0)
    assert bucket_sum(buckets, now + 8) == 7.0


@pytest.mark.parametrize("start", STARTS)
def test_weighted_float64_buckets_resize_window(start: float) -> None:
    """TestWeightedFloat64BucketsResizeWindow."""
    buckets = WeightedFloat64Buckets(5.0, 1.0)
    assert buckets.smoothing_coeff == compute_smoothing_coeff(5)
    # Fill the ring with rollover: 1 is overwritten by 6.
    for i in range(6):
        buckets.record(start + i, float(i + 1))
    now = start + 5
    assert bucket_sum(buckets, now) == 2.0 + 3 + 4 + 5 + 6
    assert round_to_n_digits(3, buckets.window_average(now)) == 5.812  # computed by hand

    buckets.resize_window(now, 10.0)
    assert buckets.num_buckets == 10
    assert buckets.window == 10.0
    assert buckets.smoothing_coeff == compute_smoothing_coeff(10)


@pytest.mark.parametrize("start", STARTS)
def test_timed_float64_buckets_resize_window(start: float) -> None:
    """TestTimedFloat64BucketsResizeWindow: growing keeps every slot, shrinking the newest."""
    buckets = TimedFloat64Buckets(5.0, 1.0)
    for i in range(6):
        buckets.record(start + i, float(i + 1))
    now = start + 5
    want_initial = 2.0 + 3 + 4 + 5 + 6
    assert bucket_sum(buckets, now) == want_initial
    assert buckets.window_average(now) == want_initial / 5

    buckets.resize_window(now, 10.0)
    assert buckets.num_buckets == 10
    assert buckets.window == 10.0
    assert bucket_sum(buckets, now) == want_initial
    # At most 5 slots are known to hold data, so the average does not change.
    assert buckets.window_average(now) == want_initial / 5

    now += 1
    buckets.record(now, 7)
    want_with_update = want_initial + 7
    assert bucket_sum(buckets, now) == want_with_update
    assert buckets.window_average(now) == round_to_n_digits(6, want_with_update / 6)

    buckets.resize_window(now, 4.0)
    assert buckets.num_buckets == 4
    want_with_shrink = want_with_update - 2 - 3  # the two oldest slots are gone
    assert bucket_sum(buckets, now) == want_with_shrink
    assert buckets.window_average(now) == want_with_shrink / 4

    # The same window again changes nothing.
    before = buckets.snapshot(now)
    buckets.resize_window(now, 4.0)
    assert buckets.num_buckets == 4
    assert buckets.snapshot(now) == before


def test_timed_float64_buckets_window_update_3s_granularity() -> None:
    """TestTimedFloat64BucketsWindowUpdate3sGranularity: ceil(5/3) = 2 buckets."""
    trunc = BASE  # aligned to 3 s
    buckets = TimedFloat64Buckets(5.0, 3.0)
    assert buckets.num_buckets == 2

    for offset, value in [(0, 10), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]:
        buckets.record(trunc + offset, value)  # the slot of +6 overwrites 10+2+3
    want = (4.0 + 5 + 6) + 7
    assert bucket_sum(buckets, trunc + 6) == want

    buckets.resize_window(trunc + 6, 10.0)
    assert buckets.num_buckets == 4
    assert buckets.window == 10.0
    assert bucket_sum(buckets, trunc + 6) == want

    buckets.record(trunc + 9.3, 42)
    want += 42
    assert bucket_sum(buckets, trunc + 9) == want

    buckets.resize_window(trunc + 9, 4.0)
    assert buckets.num_buckets == 2
    # The oldest slot is dropped and so is the one never written.
    assert bucket_sum(buckets, trunc + 9) == 42 + 7

    before = buckets.snapshot(trunc + 9)
    buckets.resize_window(trunc + 9, 4.0)
    assert buckets.snapshot(trunc + 9) == before


def test_timed_float64_buckets_window_update_no_op() -> None:
    """TestTimedFloat64BucketsWindowUpdateNoOp: a resize with no recent data forgets the start."""
    start = BASE + 0.25
    buckets = TimedFloat64Buckets(5.0, 1.0)
    buckets.record(start, 19.82)
    assert buckets.first_write == buckets.last_write == BASE
    buckets.resize_window(start + 60, 10.0)  # Knative: time.Now(), a minute after the write
    assert buckets.first_write is None


@pytest.mark.parametrize(
    ("digits", "value", "want"),
    [
        pytest.param(6, 3.6e-17, 0.0, id="tiny positive"),
        pytest.param(3, -3.6e-17, 0.0, id="tiny negative"),
        pytest.param(3, 0.0004, 0.0, id="below half"),
        pytest.param(3, 1.2345, 1.235, id="half away from zero"),
        pytest.param(4, 1.2345, 1.2345, id="exact"),
        pytest.param(6, 12345, 12345.0, id="integer"),
    ],
)
def test_round_to_n_digits(digits: int, value: float, want: float) -> None:
    """TestRoundToNDigits."""
    assert round_to_n_digits(digits, value) == want


@pytest.mark.parametrize(
    ("entries", "want"),
    [
        pytest.param([(0.0, 5)], 5, id="single value"),
        pytest.param([(0.0, 6), (0.5, 5)], 6, id="two values in same second"),
        pytest.param([(0.0, 5), (1.0, 8)], 8, id="two values"),
        pytest.param([(0.0, 5), (6.0, 4)], 4, id="time gap"),
    ],
)
@pytest.mark.parametrize("start", STARTS)
def test_timed_window_max(start: float, entries: list[tuple[float, int]], want: int) -> None:
    """TestTimedWindowMax (max/timewindow_test.go)."""
    window = TimeWindow(5.0, 1.0)
    for offset, value in entries:
        window.record(start + offset, value)
    assert window.current() == want


def _identity(i: int) -> int:
    return i


def _gap_after_three(i: int) -> int:
    return i + 3 if i >= 3 else i


def _always_one(_: int) -> int:
    return 1


@pytest.mark.parametrize(
    ("values", "index", "want"),
    [
        pytest.param([1], _identity, [1], id="single value"),
        pytest.param([1, 2], _identity, [1, 2], id="ascending values"),
        pytest.param([2, 1], _identity, [2, 2], id="descending values"),
        pytest.param([1, 2, 1], _identity, [1, 2, 2], id="up, down, up"),
        pytest.param([5, 6, 5, 5, 5, 5, 5], _identity, [5, 6, 6, 6, 6, 6, 5], id="windowing out"),
        pytest.param([6, 5, 2, 1], _gap_after_three, [6, 6, 6, 2], id="windowing out with gaps"),
        pytest.param([5, 6, 5, 7, 5, 5, 1], _identity, [5, 6, 6, 7, 7, 7, 7], id="windowing out 2"),
        pytest.param([5, 8, 5, 7, 5, 5], _identity, [5, 8, 8, 8, 8, 8], id="windowing out 3"),
        pytest.param([5, 8, 5, 7, 5, 5, 1], _identity, [5, 8, 8, 8, 8, 8, 7], id="windowing out 4"),
        pytest.param(
            [5, 8, 5, 7, 5, 5, 1, 4, 4, 4],
            _identity,
            [5, 8, 8, 8, 8, 8, 7, 7, 5, 5],
            id="windowing out 5",
        ),
        pytest.param(
            [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4],
            _identity,
            [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4],
            id="windowing out 6",
        ),
        pytest.param(
            [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4, 9],
            _identity,
            [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4, 9],
            id="windowing out 7",
        ),
        pytest.param(
            [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4, 9, 3, 4, 2, 1, 0],
            _identity,
            [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4, 9, 9, 9, 9, 9, 4],
            id="windowing out 8",
        ),
        pytest.param(
            [1, 2, 3, 4, 5, 6, 7],
            _always_one,
            [1, 2, 3, 4, 5, 6, 7],
            id="multiple with same index, ascending",
        ),
        pytest.param(
            [7, 6, 5, 4, 3, 2, 1],
            _always_one,
            [7, 7, 7, 7, 7, 7, 7],
            id="multiple with same index, descending",
        ),
    ],
)
def test_window_max(values: list[int], index: object, want: list[int]) -> None:
    """TestWindowMax (max/window_test.go): the running maximum over 5 slots."""
    assert callable(index)
    window = MaxWindow(5)
    got = []
    for i, value in enumerate(values):
        window.record(index(i), value)
        got.append(window.current())
    assert got == want


@pytest.mark.parametrize(
    ("make", "want"),
    [
        pytest.param(
            lambda: TimedFloat64Buckets(5.0, 1.0),
            "TimedFloat64Buckets(window=5.0, granularity=1.0, buckets=5, total=0.0)",
            id="linear",
        ),
        pytest.param(
            lambda: WeightedFloat64Buckets(5.0, 1.0),
            "WeightedFloat64Buckets(window=5.0, granularity=1.0, buckets=5, total=0.0, "
            "smoothing_coeff=0.84151)",
            id="weighted",
        ),
        pytest.param(
            lambda: TimeWindow(300.0, 2.0),
            "TimeWindow(granularity=2.0, MaxWindow(size=150, entries=[]))",
            id="max",
        ),
    ],
)
def test_repr(make: object, want: str) -> None:
    """Objects say what they are, for logs and debuggers."""
    assert callable(make)
    assert repr(make()) == want


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: TimedFloat64Buckets(5.0, 0.0), "granularity", id="zero granularity"),
        pytest.param(lambda: TimedFloat64Buckets(-1.0, 1.0), "window", id="negative window"),
        pytest.param(lambda: TimeWindow(0.0, 2.0), "duration", id="zero duration"),
        pytest.param(lambda: MaxWindow(0), "size", id="empty max window"),
    ],
)
def test_constructors_fail_fast(make: object, message: str) -> None:
    """A window that cannot hold a slot is refused at construction."""
    assert callable(make)
    with pytest.raises(ValueError, match=message):
        make()


def test_sub_second_granularity() -> None:
    """Short test windows work: 0.1 s slots stay exact although 0.1 is not a binary float."""
    buckets = TimedFloat64Buckets(0.5, 0.1)
    for i in range(5):
        buckets.record(10.0 + i * 0.1, 1.0)
    assert buckets.num_buckets == 5
    assert buckets.window_average(10.4) == 1.0
    assert buckets.window_average(10.6) == 1.0  # trailing gap of two slots: left out
    assert buckets.window_average(11.0) == 0.0  # a whole window without data
