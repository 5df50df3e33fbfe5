"""Metric windows: Knative's time-bucketed averages and the sliding maximum.

Theory of operation (Knative's pkg/autoscaler/aggregation, pure and clocked by the caller):

- Time is cut into slots of ``granularity`` seconds, aligned to multiples of it from time zero
  (Go's ``time.Truncate``): with granularity 2 s, t=1001.7 falls in the slot starting at 1000.
  A ring of ``ceil(window / granularity)`` buckets holds one sum per slot; ``record`` adds to
  the slot of ``now``. E.g. a 60 s window has 60 buckets at 1 s granularity, 30 at 2 s.
- ``TimedFloat64Buckets.window_average`` is the linear average over the slots that hold valid
  data. Three cases, with window 5 s, granularity 1 s and records 1, 2, 3, 4, 5 at t=0..4:
    * at t=4 (the last write): all 5 slots are valid, (1+2+3+4+5)/5 = 3;
    * at t=6 (a *trailing* gap of 2 s): the slots of t=5, 6 carry nothing yet and the slots of
      t=0, 1 have aged out, so the average is (3+4+5)/3 = 4, not 12/5: missing recent data
      shrinks the window rather than counting as zero;
    * at t=10 (a gap of a whole window): 0.
  A gap *inside* the data counts as zero: writing 91 at t=6 clears the slots of t=5 and t=6
  and the average becomes (3+4+5+0+91)/5 = 20.6. Until a full window of data exists, only
  the slots since the first write count (one write of 1 averages to 1, not 1/5). Averages are
  rounded to 6 decimal places, as Knative does, so that float noise never flips a ceil().
- ``WeightedFloat64Buckets.window_average`` weighs slot k (0 = the newest) by
  ``c * (1 - c)**k``, with ``c = max(1 - (1 - 0.9999)**(1/n), 0.2)`` for n buckets, so that the
  weights over the window add up to 99.99 % (or c is at least 0.2 for long windows). For n=5,
  c = 0.8415: the newest slot counts 84 %, the one before 13 %. Empty trailing slots count as
  zeros that push the data further back.
- ``TimeWindow`` is the maximum of the values recorded in the last ``duration`` seconds, in
  slots of ``granularity`` (Knative's max.TimeWindow, the ascending-minima algorithm):
  the decider records its desired scale every 2 s into a window of scale-down-delay, and
  applies the maximum, so a scale-down waits until the higher values have aged out.

Times are floats of seconds on any clock the caller chooses (monotonic or Unix). Internally
they are integer nanoseconds, as Go's, so slot boundaries are exact: 1000.0 and 1002.0 are
one 2 s slot apart, never 0.99999 of one.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = [
    "MIN_EXPONENT",
    "PRECISION_DIGITS",
    "WEIGHT_PRECISION",
    "MaxWindow",
    "TimeWindow",
    "TimedFloat64Buckets",
    "WeightedFloat64Buckets",
    "compute_smoothing_coeff",
    "round_to_n_digits",
]

_NS_PER_S = 1_000_000_000

# Knative's minExponent: the smallest decay multiplier of the weighted average; without it a
# long window would weigh all its slots almost equally, i.e. become a linear average.
MIN_EXPONENT = 0.2
# Knative's weightPrecision: the weights over the window must add up to at least this much.
WEIGHT_PRECISION = 0.9999
# Knative's precision: linear averages are rounded to this many decimal places.
PRECISION_DIGITS = 6


def _to_ns(seconds: float) -> int:
    """Seconds to integer nanoseconds, rounding away float noise (0.1 * 3 is 0.3 s here)."""
    return round(seconds * _NS_PER_S)


def _go_round(x: float) -> float:
    """Go's math.Round: half away from zero (Python's round() goes half to even)."""
    t = float(math.trunc(x))
    if abs(x - t) >= 0.5:
        t += math.copysign(1.0, x)
    return t


def round_to_n_digits(n: int, f: float) -> float:
    """Round ``f`` to ``n`` decimal places, halves away from zero, as Knative does."""
    p = 10.0**n
    return _go_round(f * p) / p


def compute_smoothing_coeff(num_buckets: float) -> float:
    """The weighted average's decay multiplier for a window of ``num_buckets`` slots.

    It is the smallest c whose weights over the window add up to WEIGHT_PRECISION, but at
    least MIN_EXPONENT: e.g. 0.78456 for 6 buckets, 0.20567 for 40, 0.2 for 60 or more.
    """
    return max(1 - math.pow(1 - WEIGHT_PRECISION, 1 / num_buckets), MIN_EXPONENT)


def _bucket_count(window_ns: int, granularity_ns: int) -> int:
    # Ceiling division: a 5 s window at 3 s granularity needs 2 buckets.
    return -(-window_ns // granularity_ns)


def _positive_ns(name: str, seconds: float) -> int:
    """``seconds`` as nanoseconds, refusing a length that could not hold one slot."""
    ns = _to_ns(seconds)
    if ns <= 0:
        raise ValueError(f"{name} must be positive, got {seconds}")
    return ns


class TimedFloat64Buckets:
    """Knative's TimedFloat64Buckets: a ring of per-slot sums with a linear window average."""

    __slots__ = (
        "_buckets",
        "_first_write",
        "_granularity_ns",
        "_last_write",
        "_window_ns",
        "_window_total",
    )

    def __init__(self, window: float, granularity: float) -> None:
        """Build an empty window of ``ceil(window / granularity)`` buckets.

        Raises:
            ValueError: granularity or window is not positive.
        """
        self._granularity_ns = _positive_ns("granularity", granularity)
        self._window_ns = _positive_ns("window", window)
        self._buckets = [0.0] * _bucket_count(self._window_ns, self._granularity_ns)
        # Slot-aligned times in ns. None is Go's zero time: "never written".
        self._first_write: int | None = None
        self._last_write: int | None = None
        # Sum of every bucket in the ring, stale ones included until they are cleared.
        self._window_total = 0.0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(window={self.window}, granularity={self.granularity}, "
            f"buckets={len(self._buckets)}, total={self._window_total})"
        )

    @property
    def window(self) -> float:
        """The window length in seconds."""
        return self._window_ns / _NS_PER_S

    @property
    def granularity(self) -> float:
        """The slot length in seconds."""
        return self._granularity_ns / _NS_PER_S

    @property
    def num_buckets(self) -> int:
        """The ring's length, ``ceil(window / granularity)``."""
        return len(self._buckets)

    @property
    def first_write(self) -> float | None:
        """Start of the earliest slot the average counts from; None when unknown."""
        return None if self._first_write is None else self._first_write / _NS_PER_S

    @property
    def last_write(self) -> float | None:
        """Start of the newest slot written; None before the first record."""
        return None if self._last_write is None else self._last_write / _NS_PER_S

    def _index(self, time_ns: int) -> int:
        # Knative's timeToIndex: the slot number, which modulo the ring length is the bucket.
        return time_ns // self._granularity_ns

    def _truncate(self, now: float) -> int:
        g = self._granularity_ns
        return _to_ns(now) // g * g

    def _valid_slots(self, last: int) -> int:
        """Slots from the first write to ``last``, both included (the ring's length if unknown).

        A first write of "never" only survives a resize that found no recent data; Go then
        measures from the zero time, i.e. a span longer than any ring.
        """
        if self._first_write is None:
            return len(self._buckets)
        return (last - self._first_write) // self._granularity_ns + 1

    def is_empty(self, now: float) -> bool:
        """Whether nothing was recorded in the window that ends at ``now``."""
        return self._is_empty_at(self._truncate(now))

    def _is_empty_at(self, now_ns: int) -> bool:
        return self._last_write is None or now_ns - self._last_write > self._window_ns

    def record(self, now: float, value: float) -> None:
        """Add ``value`` to the slot of ``now``.

        Slots skipped since the last write are zeroed (a gap in the data is zeros); after a
        whole window without writes the ring restarts, so the average is again over a partial
        window. A value older than the last write by a window or more is dropped.
        """
        now_ns = _to_ns(now)
        g = self._granularity_ns
        bucket_time = now_ns // g * g
        write_idx = now_ns // g
        last = self._last_write
        if last != bucket_time:
            if last is not None and bucket_time + self._window_ns <= last:
                return  # older than the window that ends at the last write
            if self._first_write is None or self._first_write > bucket_time:
                self._first_write = bucket_time
            if last is None or bucket_time > last:
                n = len(self._buckets)
                if last is None or bucket_time - last >= self._window_ns:
                    # A whole window without writes: start over from this slot.
                    self._first_write = bucket_time
                    self._buckets = [0.0] * n
                    self._window_total = 0.0
                else:
                    # Zero the slots skipped since the last write, and this one.
                    for i in range(self._index(last) + 1, write_idx + 1):
                        idx = i % n
                        self._window_total -= self._buckets[idx]
                        self._buckets[idx] = 0.0
                self._last_write = bucket_time
            # Otherwise the slot is within the window behind the last write: just add to it.
        self._buckets[write_idx % len(self._buckets)] += value
        self._window_total += value

    def window_average(self, now: float) -> float:
        """The linear average over the valid slots of the window ending at ``now``.

        Trailing empty slots are left out, gaps inside the data count as zero, and a window
        with no data at all averages to 0 (see the module docstring for worked numbers).
        """
        last = self._last_write
        if last is None:
            return 0.0
        now_ns = self._truncate(now)
        gap = now_ns - last
        if gap <= 0:
            slots = min(self._valid_slots(last), len(self._buckets))
            return round_to_n_digits(PRECISION_DIGITS, self._window_total / slots)
        if gap < self._window_ns:
            # Slots after the last write hold stale data from a ring ago: take them out.
            st_idx, e_idx = self._index(last), self._index(now_ns)
            n = len(self._buckets)
            total = self._window_total
            for i in range(st_idx + 1, e_idx + 1):
                total -= self._buckets[i % n]
            slots = min(self._valid_slots(last), n - (e_idx - st_idx))
            return round_to_n_digits(PRECISION_DIGITS, total / slots)
        return 0.0

    def resize_window(self, now: float, window: float) -> None:
        """Change the window length, keeping the newest slots' data (Knative's ResizeWindow).

        Knative reads the wall clock here; this takes ``now``. If nothing was written in the
        old window before ``now``, the ring restarts empty. O(buckets); meant for rare calls.

        Raises:
            ValueError: window is not positive.
        """
        window_ns = _positive_ns("window", window)
        if window_ns == self._window_ns:
            return
        new_n = _bucket_count(window_ns, self._granularity_ns)
        new_buckets = [0.0] * new_n
        new_total = 0.0
        last = self._last_write
        if last is not None and self._truncate(now) - last <= self._window_ns:
            old_n = len(self._buckets)
            t_idx = self._index(last)
            # Copy the newest min(old, new) slots; a shrinking ring drops the oldest.
            for _ in range(min(new_n, old_n)):
                value = self._buckets[t_idx % old_n]
                new_buckets[t_idx % new_n] = value
                new_total += value
                t_idx -= 1
            # The earliest slot that may have held data.
            self._first_write = last - (old_n - 1) * self._granularity_ns
        else:
            self._first_write = None
        self._window_ns = window_ns
        self._buckets = new_buckets
        self._window_total = new_total

    def snapshot(self, now: float) -> list[tuple[float, float]]:
        """The (slot start time, sum) pairs of the window ending at ``now``, newest first.

        For tests and debugging: zeros are included, stale slots are not.
        """
        last = self._last_write
        if last is None:
            return []
        g = self._granularity_ns
        n = len(self._buckets)
        count = min(n, n - (self._truncate(now) - last) // g)
        si = self._index(last)
        return [((last - k * g) / _NS_PER_S, self._buckets[(si - k) % n]) for k in range(count)]


class WeightedFloat64Buckets(TimedFloat64Buckets):
    """Knative's WeightedFloat64Buckets: the same ring, averaged with exponential decay."""

    __slots__ = ("_smoothing_coeff",)

    def __init__(self, window: float, granularity: float) -> None:
        """Build an empty window; the decay multiplier follows from the bucket count."""
        super().__init__(window, granularity)
        self._smoothing_coeff = compute_smoothing_coeff(len(self._buckets))

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, smoothing_coeff={self._smoothing_coeff:.5f})"

    @property
    def smoothing_coeff(self) -> float:
        """The decay multiplier c: slot k back from the newest weighs c * (1 - c)**k."""
        return self._smoothing_coeff

    def window_average(self, now: float) -> float:
        """The exponentially weighted average of the window ending at ``now``.

        E.g. with slots [10, 10, 5, 5] (newest last) and c = 0.6 this is
        5*0.6 + 5*0.6*0.4 + 10*0.6*0.4**2 + 10*0.6*0.4**3 = 5.544, where the linear
        average is 7.5; reversed, [5, 5, 10, 10] gives 9.072.
        """
        now_ns = self._truncate(now)
        if self._is_empty_at(now_ns):
            return 0.0
        last = self._last_write
        assert last is not None  # not empty
        n = len(self._buckets)
        num_b = n
        coeff = self._smoothing_coeff
        multiplier = coeff
        if now_ns > last:
            # Empty trailing slots are zeros: skip their weights in one step.
            num_zeros = (now_ns - last) // self._granularity_ns
            multiplier *= math.pow(1 - coeff, num_zeros)
            num_b -= num_zeros
        start_idx = self._index(last) + n
        total = 0.0
        for i in range(num_b):
            total += self._buckets[(start_idx - i) % n] * multiplier
            multiplier *= 1 - coeff
        return total

    def resize_window(self, now: float, window: float) -> None:
        """Resize as the linear buckets do, and recompute the decay multiplier."""
        super().resize_window(now, window)
        self._smoothing_coeff = compute_smoothing_coeff(len(self._buckets))


class MaxWindow:
    """Knative's max.window: the maximum over the last ``size`` integer slots.

    Ascending minima, mirrored: a deque of (slot, value) with values strictly decreasing from
    the front. A new value evicts every older entry not above it (they can never be the
    maximum again), the front ages out after ``size`` slots, and the front is the maximum.
    E.g. size 5, values 5, 8, 5, 7 at slots 0..3 leave [(1, 8), (3, 7)]: maximum 8 until
    slot 6, then 7. Amortised O(1) per record; slots must not decrease.
    """

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        """Raises ValueError when size < 1."""
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._size = size
        self._entries: deque[tuple[int, int]] = deque()

    def __repr__(self) -> str:
        return f"MaxWindow(size={self._size}, entries={list(self._entries)})"

    def record(self, index: int, value: int) -> None:
        """Record ``value`` at slot ``index``; several values at one slot keep the largest."""
        entries = self._entries
        while entries and value >= entries[-1][1]:
            entries.pop()
        while entries and index - entries[0][0] >= self._size:
            entries.popleft()
        if entries and entries[-1][0] == index:
            # The same slot again with a smaller value: the slot keeps its maximum.
            value = max(value, entries.pop()[1])
        entries.append((index, value))

    def current(self) -> int:
        """The maximum over the window; 0 before anything was recorded."""
        return self._entries[0][1] if self._entries else 0


class TimeWindow:
    """Knative's max.TimeWindow: the maximum of the values recorded in the last ``duration``.

    Slots are ``granularity`` seconds, aligned as the buckets' are. The decider uses it with
    the scale-down delay and 2 s slots: a window of 300 s keeps 150 slots, so a value recorded
    at t=2 still counts at t=300 (slot 150 - slot 1 < 150) and is gone at t=302.
    """

    __slots__ = ("_granularity_ns", "_window")

    def __init__(self, duration: float, granularity: float) -> None:
        """Build an empty window of ``ceil(duration / granularity)`` slots.

        Raises:
            ValueError: duration or granularity is not positive.
        """
        self._granularity_ns = _positive_ns("granularity", granularity)
        self._window = MaxWindow(
            _bucket_count(_positive_ns("duration", duration), self._granularity_ns)
        )

    def __repr__(self) -> str:
        return f"TimeWindow(granularity={self._granularity_ns / _NS_PER_S}, {self._window!r})"

    def record(self, now: float, value: int) -> None:
        """Record ``value`` in the slot of ``now``; ``now`` must not go backwards."""
        self._window.record(_to_ns(now) // self._granularity_ns, value)

    def current(self) -> int:
        """The maximum observed over the last ``duration``; 0 before any record."""
        return self._window.current()
