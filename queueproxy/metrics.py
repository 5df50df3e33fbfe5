"""The queue-proxy's Prometheus metrics: user-facing request metrics and the autoscaler Stat.

Two expositions, on two ports:

* ``UserMetrics`` (USER_METRICS_PORT, 9091): what Knative's queue-proxy records in
  pkg/queue/request_metric.go, named as Knative's OpenTelemetry Prometheus exporter renders
  them (UnderscoreEscapingWithSuffixes: dots become underscores, the unit "s" becomes
  ``_seconds``, the annotation unit "{request}" adds nothing). Knative puts the revision
  identity on the OTel resource (pkg/queue/sharedmain/otel.go); with no Prometheus operator
  to join ``target_info`` in the local platform, knpy puts it on every series instead, under
  the same attribute names.

  ========================================== ========= ========================================
  name                                       type      labels (beside the revision labels)
  ========================================== ========= ========================================
  kn_serving_invocation_duration_seconds     histogram http_response_status_code,
                                                       response_code_class ("2xx"...)
  kn_serving_queue_depth                     gauge     (none); only with a queue depth source
  http_server_active_requests                gauge     (none)
  ========================================== ========= ========================================

  Revision labels: k8s_namespace_name, kn_service_name, kn_configuration_name,
  kn_revision_name, k8s_pod_name. The request count is the histogram's ``_count`` series,
  as in Knative (no separate counter: one bookkeeping per request, not two). Buckets are
  Knative's latencyBounds (5 ms .. 10 s). ``response_code_class`` is the label Knative's
  OpenCensus-era queue-proxy had; it makes "error ratio" queries regex-free.
  ``http_server_active_requests`` is the OTel HTTP semantic-convention metric: Knative does
  not export an in-flight gauge from the queue-proxy.

* ``render_stat_prometheus`` (QUEUE_METRICS_PORT, 9090, when the scraper does not ask for
  protobuf): the figures of the protobuf Stat under the names of Knative's former
  PrometheusStatsReporter (pkg/queue/prometheus_stats_reporter.go, removed in #12961):

  ========================================== ===== ==========================================
  name                                       type  value
  ========================================== ===== ==========================================
  queue_requests_per_second                  gauge request_count / reporting period
  queue_proxied_operations_per_second        gauge proxied_request_count / reporting period
  queue_average_concurrent_requests          gauge avg_concurrency
  queue_average_proxied_concurrent_requests  gauge avg_proxied_concurrency
  process_uptime                             gauge seconds since the queue-proxy started
  ========================================== ===== ==========================================

  Labels: destination_namespace, destination_configuration, destination_revision,
  destination_pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Protocol

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from shared.metrics import FastRegistry, HistogramValue, render_text

__all__ = [
    "LATENCY_BOUNDS_S",
    "StatFigures",
    "UserMetrics",
    "render_stat_prometheus",
]

# Knative's latencyBounds in pkg/queue/request_metric.go, in seconds.
LATENCY_BOUNDS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10
)

_REVISION_LABELS: Final = (
    "k8s_namespace_name",
    "kn_service_name",
    "kn_configuration_name",
    "kn_revision_name",
    "k8s_pod_name",
)


class UserMetrics:
    """Request metrics of one revision's pod, updated from the proxy's hot path.

    ``in_flight`` reads the requests in flight at scrape time (the queue-proxy's
    ``RequestStats.concurrency``, which counts the same requests), so that the hot path does
    not keep a second count. The proxy calls ``request_finished`` once a request is answered
    (status 500 if the handler failed before a response, as Knative records a panic). Like
    Knative's appRequestMetricsHandler, neither counts probe requests (K-Network-Probe,
    kubelet probes).
    """

    __slots__ = ("_by_status", "_duration", "_in_flight", "_labels", "registry")

    def __init__(
        self,
        *,
        namespace: str,
        service: str,
        configuration: str,
        revision: str,
        pod: str,
        in_flight: Callable[[], float],
        queue_depth: Callable[[], float] | None = None,
    ) -> None:
        self.registry = FastRegistry()
        self._labels = (namespace, service, configuration, revision, pod)
        self._duration = self.registry.histogram(
            "kn_serving_invocation_duration_seconds",
            "The duration of task execution",
            LATENCY_BOUNDS_S,
            (*_REVISION_LABELS, "http_response_status_code", "response_code_class"),
        )
        # Status code -> histogram child: the hot path does one small-int dict lookup.
        self._by_status: dict[int, HistogramValue] = {}
        self._in_flight = self.registry.gauge(
            "http_server_active_requests",
            "Number of requests currently being handled by the queue-proxy",
            _REVISION_LABELS,
        ).labels(*self._labels)
        self._in_flight.set_function(in_flight)
        if queue_depth is not None:
            # Knative records breaker.InFlight() (only when containerConcurrency > 0);
            # here the same figure is read at scrape time instead of per request.
            self.registry.gauge(
                "kn_serving_queue_depth",
                "Number of current requests in the queue",
                _REVISION_LABELS,
            ).labels(*self._labels).set_function(queue_depth)

    def request_finished(self, status: int, duration_s: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._duration.labels(
                *self._labels, str(status), f"{status // 100}xx"
            )
        child.observe(duration_s)

    def render(self) -> bytes:
        """The Prometheus text exposition, for ``GET :USER_METRICS_PORT/metrics``."""
        return render_text(self.registry)

    def __repr__(self) -> str:
        return (
            f"UserMetrics(revision={self._labels[3]!r}, pod={self._labels[4]!r}, "
            f"in_flight={self._in_flight.get():g})"
        )


class StatFigures(Protocol):
    """The figures of shared.request_stats.StatReport that the Stat exposition needs."""

    @property
    def avg_concurrency(self) -> float: ...
    @property
    def avg_proxied_concurrency(self) -> float: ...
    @property
    def request_count(self) -> float: ...
    @property
    def proxied_request_count(self) -> float: ...


_STAT_LABELS: Final = (
    "destination_namespace",
    "destination_configuration",
    "destination_revision",
    "destination_pod",
)


class _Families:
    """A one-shot Collector over ready-made metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def render_stat_prometheus(
    report: StatFigures,
    uptime_s: float,
    *,
    namespace: str,
    configuration: str,
    revision: str,
    pod: str,
    reporting_period_s: float = 1.0,
) -> bytes:
    """One Stat report as Prometheus text, the way Knative's PrometheusStatsReporter served it.

    Counts become rates by dividing by the reporting period they were collected over (E.g.
    39 requests reported over 2 s => ``queue_requests_per_second`` 19.5); concurrencies are
    already averages and are passed through.

    Raises:
        ValueError: a label is empty or the period is not positive (Knative rejected empty
            labels in NewPrometheusStatsReporter).
    """
    labels = (namespace, configuration, revision, pod)
    for what, label in zip(("namespace", "config", "revision", "pod"), labels, strict=True):
        if not label:
            raise ValueError(f"{what} must not be empty")
    if reporting_period_s <= 0:
        raise ValueError(f"reporting period must be positive, got {reporting_period_s}")

    figures: tuple[tuple[str, str, float], ...] = (
        (
            "queue_requests_per_second",
            "Number of requests per second",
            report.request_count / reporting_period_s,
        ),
        (
            "queue_proxied_operations_per_second",
            "Number of proxied requests per second",
            report.proxied_request_count / reporting_period_s,
        ),
        (
            "queue_average_concurrent_requests",
            "Number of requests currently being handled by this pod",
            report.avg_concurrency,
        ),
        (
            "queue_average_proxied_concurrent_requests",
            "Number of proxied requests currently being handled by this pod",
            report.avg_proxied_concurrency,
        ),
        ("process_uptime", "The number of seconds that the process has been up", uptime_s),
    )
    families = []
    for name, documentation, value in figures:
        family = GaugeMetricFamily(name, documentation, labels=_STAT_LABELS)
        family.add_metric(labels, value)
        families.append(family)
    return render_text(_Families(families))
