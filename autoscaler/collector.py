"""The metric collector: each revision's stats in its stable and panic windows.

Theory of operation (Knative's ``MetricCollector``, pkg/autoscaler/metrics/collector.go):
every Stat, whether scraped from the revision's pods or sent by an activator, is recorded
into four windows of the revision: concurrency and requests-per-second, each over the stable
window (60 s by default) and the panic window (6 s). The decider then reads the stable and
panic averages of the revision's scaling metric.

Nothing is counted twice. A request that came through the activator is in the activator's
Stat *and* in the pod's (as "proxied"), so the pod's proxied figures are subtracted before
recording: concurrency = average_concurrent_requests - average_proxied_concurrent_requests,
and likewise for the request count. The activator reports no proxied figures, so its Stat
is recorded whole. E.g. a pod reporting 10 concurrent of which 4 proxied, and an activator
reporting 4, record 6 + 4 = 10 in the same second's bucket.

No data is not zero. When nothing has been recorded for a whole stable window (every scrape
failed, or the pods are gone) the collector answers None and the decider keeps its previous
decision (Knative's ErrNoData). The exception is Knative's too: a revision whose pods are not
scraped at all (target burst capacity -1, the activator always in the path) reads its empty
windows as zero, because then the activator's silence is the only signal there is.

Pure: no asyncio, time passed in. The scrape loop that feeds it lives in the service.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from autoscaler import register
from autoscaler.aggregation import TimedFloat64Buckets, WeightedFloat64Buckets
from autoscaler.register import BUCKET_SIZE_S
from shared.seams import RevisionKey
from shared.stat_proto import StatData

__all__ = [
    "Aggregation",
    "MetricCollector",
    "MetricSpec",
    "WindowAverages",
]

class Aggregation(enum.Enum):
    """autoscaling.knative.dev/metric-aggregation-algorithm."""

    LINEAR = register.LINEAR
    WEIGHTED_EXPONENTIAL = register.WEIGHTED_EXPONENTIAL


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What Knative's Metric resource says about collecting for one revision."""

    stable_window_s: float
    panic_window_s: float
    aggregation: Aggregation = Aggregation.LINEAR
    scraped: bool = True  # False when TBC = -1: Knative leaves ScrapeTarget empty


class _Averager(Protocol):
    def record(self, now: float, value: float) -> None: ...

    def window_average(self, now: float) -> float: ...

    def is_empty(self, now: float) -> bool: ...

    def resize_window(self, now: float, window: float) -> None: ...


@dataclass(frozen=True, slots=True)
class WindowAverages:
    """The observed stable and panic values of one metric (Knative's StableAndPanic*)."""

    stable: float
    panic: float


class _Collection:
    """One revision's four windows and when they were last written."""

    __slots__ = ("concurrency", "concurrency_panic", "last_error", "rps", "rps_panic", "spec")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        bucket = (
            WeightedFloat64Buckets
            if spec.aggregation is Aggregation.WEIGHTED_EXPONENTIAL
            else TimedFloat64Buckets
        )
        stable, panic = spec.stable_window_s, spec.panic_window_s
        self.concurrency: _Averager = bucket(stable, BUCKET_SIZE_S)
        self.concurrency_panic: _Averager = bucket(panic, BUCKET_SIZE_S)
        self.rps: _Averager = bucket(stable, BUCKET_SIZE_S)
        self.rps_panic: _Averager = bucket(panic, BUCKET_SIZE_S)
        self.last_error: str | None = None

    def record(self, now: float, stat: StatData) -> None:
        concurrency = stat.average_concurrent_requests - stat.average_proxied_concurrent_requests
        self.concurrency.record(now, concurrency)
        self.concurrency_panic.record(now, concurrency)
        rps = stat.request_count - stat.proxied_request_count
        self.rps.record(now, rps)
        self.rps_panic.record(now, rps)

    def resize(self, now: float, spec: MetricSpec) -> None:
        """Knative's updateMetric: new window lengths, keeping the newest data."""
        self.spec = spec
        self.concurrency.resize_window(now, spec.stable_window_s)
        self.concurrency_panic.resize_window(now, spec.panic_window_s)
        self.rps.resize_window(now, spec.stable_window_s)
        self.rps_panic.resize_window(now, spec.panic_window_s)


class MetricCollector:
    """Every revision's windows, keyed by revision; single-threaded (one event loop)."""

    def __init__(self) -> None:
        self._collections: dict[RevisionKey, _Collection] = {}

    def __repr__(self) -> str:
        return f"<MetricCollector revisions={len(self._collections)}>"

    def __contains__(self, key: RevisionKey) -> bool:
        return key in self._collections

    def __len__(self) -> int:
        return len(self._collections)

    def create_or_update(self, key: RevisionKey, spec: MetricSpec, now: float) -> None:
        """Start collecting for a revision, or apply a changed spec.

        Changed windows are resized in place, as Knative does; a changed aggregation
        algorithm starts the windows afresh (the two keep different state).
        """
        current = self._collections.get(key)
        if current is None or current.spec.aggregation is not spec.aggregation:
            self._collections[key] = _Collection(spec)
        elif current.spec != spec:
            current.resize(now, spec)

    def delete(self, key: RevisionKey) -> None:
        self._collections.pop(key, None)

    def revisions(self) -> list[RevisionKey]:
        return list(self._collections)

    def spec(self, key: RevisionKey) -> MetricSpec | None:
        collection = self._collections.get(key)
        return None if collection is None else collection.spec

    def record(self, key: RevisionKey, now: float, stat: StatData) -> None:
        """Record a Stat at ``now``; a revision not collected for is ignored, as in Knative."""
        collection = self._collections.get(key)
        if collection is not None:
            collection.record(now, stat)

    def set_error(self, key: RevisionKey, error: str | None) -> bool:
        """Remember the last scrape error; True when it changed (Knative's updateLastError)."""
        collection = self._collections.get(key)
        if collection is None or collection.last_error == error:
            return False
        collection.last_error = error
        return True

    def last_error(self, key: RevisionKey) -> str | None:
        collection = self._collections.get(key)
        return None if collection is None else collection.last_error

    def stable_and_panic_concurrency(self, key: RevisionKey, now: float) -> WindowAverages | None:
        """Observed concurrency, or None: not collecting, or no data for a stable window."""
        collection = self._collections.get(key)
        if collection is None or not _readable(collection, collection.concurrency, now):
            return None
        return WindowAverages(
            collection.concurrency.window_average(now),
            collection.concurrency_panic.window_average(now),
        )

    def stable_and_panic_rps(self, key: RevisionKey, now: float) -> WindowAverages | None:
        """Observed requests per second, or None as for concurrency."""
        collection = self._collections.get(key)
        if collection is None or not _readable(collection, collection.rps, now):
            return None
        return WindowAverages(
            collection.rps.window_average(now), collection.rps_panic.window_average(now)
        )


def _readable(collection: _Collection, stable: _Averager, now: float) -> bool:
    """False for Knative's ErrNoData: a scraped revision with nothing in its stable window."""
    return not (collection.spec.scraped and stable.is_empty(now))
