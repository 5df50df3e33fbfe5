"""The autoscaler's Prometheus metrics, per revision, under Knative's names.

Knative exports these through OpenTelemetry (pkg/autoscaler/scaling/metrics.go for the
decider's, pkg/reconciler/autoscaling/kpa/metrics.go for the pod counts); its Prometheus
exporter writes ``kn.revision.pods.desired`` as ``kn_revision_pods_desired``, which is the
name used here, with the same revision attributes as labels (k8s_namespace_name,
kn_service_name, kn_configuration_name, kn_revision_name):

    kn_revision_pods_desired          pods the decider wants
    kn_revision_pods_requested        pods asked of the platform (after bounds, scale to zero)
    kn_revision_pods_actual           ready pods now (see below)
    kn_revision_capacity_excess       excess burst capacity
    kn_revision_panic_mode            1 while the decider panics
    kn_revision_concurrency_stable / _panic / _target
    kn_revision_rps_stable / _panic / _target

Knative names the ready-pod gauge ``kn.revision.pods.count``. Rendered as
``kn_revision_pods_count`` it is a gauge with a histogram's ``_count`` suffix, which
``promtool check metrics`` refuses; so it is ``kn_revision_pods_actual`` here, after Knative's
OpenCensus-era ``actual_pods`` and the "Actual Pods" of its Scaling Debugging dashboard.

Knative exports only its scaling metric's three; both are exported here, because both are
collected (the target of the metric not scaled on is absent). A figure with no data (the
collector's "no data") is left out rather than shown as 0.

The table is rebuilt from the last tick of each revision at scrape time, so a deleted
revision's series vanish with it (Knative made its instruments asynchronous for the same
reason) and a tick costs one dict store.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.multiscaler import Tick
from autoscaler.register import RPS
from shared.metrics import FastRegistry
from shared.seams import RevisionKey

__all__ = ["AutoscalerMetrics", "RevisionLabels"]

LABELS = ("k8s_namespace_name", "kn_service_name", "kn_configuration_name", "kn_revision_name")
RevisionLabels = tuple[str, str, str, str]

# (name, help): the gauges read from a Tick, in exposition order.
_GAUGES = (
    ("kn_revision_pods_desired", "Number of pods the autoscaler wants to allocate"),
    ("kn_revision_pods_requested", "Number of pods autoscaler requested from the platform"),
    ("kn_revision_pods_actual", "Number of pods that are allocated currently"),
    ("kn_revision_capacity_excess", "Excess burst capacity observed over the stable window"),
    ("kn_revision_panic_mode", "If greater than 0 the autoscaler is in panic mode"),
    (
        "kn_revision_concurrency_stable",
        "Average of request count per observed pod over the stable window",
    ),
    (
        "kn_revision_concurrency_panic",
        "Average of request count per observed pod over the panic window",
    ),
    ("kn_revision_concurrency_target", "The desired concurrent requests for each pod"),
    (
        "kn_revision_rps_stable",
        "Average of requests-per-second per observed pod over the stable window",
    ),
    (
        "kn_revision_rps_panic",
        "Average of requests-per-second per observed pod over the panic window",
    ),
    ("kn_revision_rps_target", "The desired requests-per-second for each pod"),
)


def _values(tick: Tick, rps_metric: bool) -> tuple[float | None, ...]:
    c, r = tick.concurrency, tick.rps
    return (
        tick.desired_pods,
        tick.requested_pods,
        tick.actual_pods,
        tick.decision.excess_burst_capacity,
        1.0 if tick.in_panic else 0.0,
        None if c is None else c.stable,
        None if c is None else c.panic,
        None if rps_metric else tick.target,
        None if r is None else r.stable,
        None if r is None else r.panic,
        tick.target if rps_metric else None,
    )


class AutoscalerMetrics(Collector):
    """Per-revision gauges from the latest tick, plus process-wide counters."""

    def __init__(self) -> None:
        self._rows: dict[RevisionKey, tuple[RevisionLabels, tuple[float | None, ...]]] = {}
        self.registry = FastRegistry()
        self.scrapes = self.registry.counter(
            "kn_autoscaler_scrapes", "Revision scrapes, by result", ["result"]
        )
        self.scrape_ok = self.scrapes.labels("success")
        self.scrape_failed = self.scrapes.labels("error")
        self.stat_messages = self.registry.counter(
            "kn_autoscaler_stat_messages", "Stat messages received from activators"
        ).labels()
        self.scrape_duration = self.registry.histogram(
            "kn_autoscaler_scrape_duration_seconds",
            "The duration of scraping a revision",
            # Knative's latencyBounds for kn.autoscaler.scrape.duration.
            (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10),
        ).labels()

    def __repr__(self) -> str:
        return f"<AutoscalerMetrics revisions={len(self._rows)}>"

    def record(self, labels: RevisionLabels, tick: Tick, scaling_metric: str) -> None:
        self._rows[tick.decision.key] = (labels, _values(tick, scaling_metric == RPS))

    def remove(self, key: RevisionKey) -> None:
        self._rows.pop(key, None)

    def collect(self) -> Iterable[Metric]:
        families = [GaugeMetricFamily(name, doc, labels=LABELS) for name, doc in _GAUGES]
        for labels, values in self._rows.values():
            for family, value in zip(families, values, strict=True):
                if value is not None:
                    family.add_metric(labels, value)
        return [*families, *self.registry.collect()]
