"""Lock-free metric primitives for the hot path, exposed through prometheus_client at scrape.

Theory of operation: prometheus_client's Counter and Histogram take a lock on every
increment, which costs more than the rest of a proxied request's bookkeeping. Here a
metric's value is a plain attribute on a ``__slots__`` object: an increment is one
attribute update, a histogram observation is a scan of bounds computed once plus two
updates. Nothing is allocated per request: a labelled child is created the
first time its label values are seen and cached in a dict keyed by the label tuple;
callers on the hot path keep a reference to the child and skip even that lookup.

The work that prometheus_client does per increment happens here once per scrape instead:
``FastRegistry.collect()`` turns the plain numbers into Counter/Gauge/Histogram metric
families (cumulating histogram buckets), and ``render_text`` serialises them with
``prometheus_client.generate_latest``.

Single-threaded use only: every update and every scrape must run on the same asyncio
event loop thread. There is no lock, so a scrape from another thread could see a
histogram's sum and buckets from different moments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Generic, TypeVar

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "CounterValue",
    "FastCounter",
    "FastGauge",
    "FastHistogram",
    "FastRegistry",
    "GaugeValue",
    "HistogramValue",
    "render_text",
]

LabelValues = tuple[str, ...]


class CounterValue:
    """One counter series. Hot path: ``child.value += 1`` or ``child.inc()``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def __repr__(self) -> str:
        return f"CounterValue({self.value!r})"


class GaugeValue:
    """One gauge series: a value set by the hot path, or a callable read at scrape."""

    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Reads ``function()`` at each scrape instead of ``value`` (e.g. a queue's length)."""
        self.function = function

    def get(self) -> float:
        return self.value if self.function is None else float(self.function())

    def __repr__(self) -> str:
        return f"GaugeValue({self.get()!r})"


class HistogramValue:
    """One histogram series: per-bucket (non-cumulative) counts, cumulated at scrape."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        # One slot per finite bound plus the +Inf bucket.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "le" (inclusive upper bounds), so the first bound >= value,
        # scanned from the smallest, where most latencies fall; compiled, a step compares two C
        # doubles (bisect_left compared Python floats: ~410 instructions an observation here).
        i = 0
        for bound in self._bounds:
            if value <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def __repr__(self) -> str:
        return f"HistogramValue(count={self.count}, sum={self.sum!r})"


_Child = TypeVar("_Child", CounterValue, GaugeValue, HistogramValue)


class _Family(Generic[_Child]):
    """A named metric with label names and its children, one per label-value tuple."""

    __slots__ = ("_children", "documentation", "labelnames", "name")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        if not name:
            raise ValueError("metric name must not be empty")
        self.name = name
        self.documentation = documentation
        self.labelnames: LabelValues = tuple(labelnames)
        self._children: dict[LabelValues, _Child] = {}

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: str) -> _Child:
        """The child for these label values, created once and cached; keep it on hot paths."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(
                    f"{self.name}: got {len(values)} label values for labels {self.labelnames}"
                )
            child = self._children[values] = self._new_child()
        return child

    def items(self) -> Iterator[tuple[LabelValues, _Child]]:
        return iter(self._children.items())

    def to_metric(self) -> Metric:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, labels={self.labelnames}, "
            f"children={len(self._children)})"
        )


class FastCounter(_Family[CounterValue]):
    """A monotonic counter; exposed as ``<name>_total`` like prometheus_client does."""

    __slots__ = ()

    def _new_child(self) -> CounterValue:
        return CounterValue()

    def to_metric(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.items():
            family.add_metric(values, child.value)
        return family


class FastGauge(_Family[GaugeValue]):
    """A gauge whose children hold a value or a callable read at scrape."""

    __slots__ = ()

    def _new_child(self) -> GaugeValue:
        return GaugeValue()

    def to_metric(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.items():
            family.add_metric(values, child.get())
        return family


class FastHistogram(_Family[HistogramValue]):
    """A histogram with fixed bounds; ``observe`` is a scan and two attribute updates."""

    __slots__ = ("_le", "bounds")

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Iterable[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if not bounds or any(lo >= hi for lo, hi in pairwise(bounds)):
            raise ValueError(f"{name}: buckets must be non-empty and strictly increasing")
        self.bounds = bounds
        # "le" label values, formatted once as Go would (and as prometheus_client does).
        self._le = (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]

    def _new_child(self) -> HistogramValue:
        return HistogramValue(self.bounds)

    def to_metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self._le, child.counts, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(values, buckets, child.sum)
        return family


Family = FastCounter | FastGauge | FastHistogram


class FastRegistry(Collector):
    """A prometheus_client Collector over fast metrics; pass it to ``render_text``."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def register(self, family: Family) -> None:
        if family.name in self._families:
            raise ValueError(f"metric {family.name!r} is already registered")
        self._families[family.name] = family

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> FastCounter:
        metric = FastCounter(name, documentation, labelnames)
        self.register(metric)
        return metric

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> FastGauge:
        metric = FastGauge(name, documentation, labelnames)
        self.register(metric)
        return metric

    def histogram(
        self,
        name: str,
        documentation: str,
        buckets: Iterable[float],
        labelnames: Sequence[str] = (),
    ) -> FastHistogram:
        metric = FastHistogram(name, documentation, buckets, labelnames)
        self.register(metric)
        return metric

    def collect(self) -> Iterable[Metric]:
        return [family.to_metric() for family in self._families.values()]

    def __repr__(self) -> str:
        return f"FastRegistry({sorted(self._families)})"


def render_text(registry: Collector) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of everything ``registry`` collects."""
    return generate_latest(registry)
