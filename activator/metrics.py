"""The activator's Prometheus metrics (ACTIVATOR_METRICS_PORT, 9090).

Names are Knative's activator OpenTelemetry instruments as its Prometheus exporter renders
them (pkg/activator/handler/metrics.go: kn.revision.request.{concurrency,queued,active}; the
otelhttp server duration), plus three knpy gauges the issue asks for:

  ========================================== ========= ========================================
  name                                       type      value
  ========================================== ========= ========================================
  http_server_request_duration_seconds       histogram per status (http_response_status_code)
  kn_revision_request_concurrency            gauge     requests held (queued + proxied)
  kn_revision_request_queued                 gauge     requests waiting for capacity
  kn_revision_request_active                 gauge     requests admitted to a pod
  knpy_activator_throttler_capacity          gauge     requests let through at once
                                                       (2147483647 = unlimited)
  knpy_activator_revision_pods               gauge     healthy pods of the revision
  knpy_activator_revision_assigned_pods      gauge     those this activator sends to
  ========================================== ========= ========================================

Labels: k8s_namespace_name, kn_revision_name. The gauges are read from the throttler at scrape
time (concurrency is its in_flight: admitted plus queued, the requests the activator holds),
so the hot path touches one histogram per request and nothing else here.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.metrics import FastRegistry, HistogramValue, render_text

__all__ = ["ActivatorMetrics", "RevisionMetrics"]

# Knative's latencyBounds (pkg/queue/request_metric.go), in seconds: the same buckets for
# the time a request spends in the activator, so the two can be compared.
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_LABELS = ("k8s_namespace_name", "kn_revision_name")


class RevisionMetrics:
    """One revision's series, with the children the hot path touches kept at hand."""

    __slots__ = ("_by_status", "_duration", "_labels")

    def __init__(self, metrics: ActivatorMetrics, labels: tuple[str, str]) -> None:
        self._labels = labels
        self._duration = metrics.duration
        self._by_status: dict[int, HistogramValue] = {}

    def request_finished(self, status: int, duration_s: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._duration.labels(*self._labels, str(status))
        child.observe(duration_s)


class ActivatorMetrics:
    def __init__(self) -> None:
        self.registry = FastRegistry()
        self.duration = self.registry.histogram(
            "http_server_request_duration_seconds",
            "Duration of requests through the activator, queueing included",
            LATENCY_BOUNDS_S,
            (*_LABELS, "http_response_status_code"),
        )
        self._read_at_scrape = {
            "concurrency": self.registry.gauge(
                "kn_revision_request_concurrency",
                "Concurrent requests that are routed to Activator",
                _LABELS,
            ),
            "queued": self.registry.gauge(
                "kn_revision_request_queued",
                "Number of requests currently queued in the activator waiting for capacity",
                _LABELS,
            ),
            "active": self.registry.gauge(
                "kn_revision_request_active",
                "Number of requests currently being proxied by the activator",
                _LABELS,
            ),
            "capacity": self.registry.gauge(
                "knpy_activator_throttler_capacity",
                "Requests this activator lets through to the revision at once",
                _LABELS,
            ),
            "pods": self.registry.gauge(
                "knpy_activator_revision_pods", "Healthy pods of the revision", _LABELS
            ),
            "assigned_pods": self.registry.gauge(
                "knpy_activator_revision_assigned_pods",
                "Healthy pods of the revision this activator sends requests to",
                _LABELS,
            ),
        }

    def revision(
        self, namespace: str, name: str, readers: dict[str, Callable[[], float]]
    ) -> RevisionMetrics:
        """The series of one revision; ``readers`` gives the scrape-time gauges by key."""
        labels = (namespace, name)
        for key, read in readers.items():
            self._read_at_scrape[key].labels(*labels).set_function(read)
        return RevisionMetrics(self, labels)

    def render(self) -> bytes:
        return render_text(self.registry)
