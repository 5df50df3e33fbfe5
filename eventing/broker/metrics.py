"""The broker's Prometheus metrics (BROKER_METRICS_PORT, 9092: Knative eventing's
DefaultMetricsPort, pkg/observability/config.go), in Knative eventing's vocabulary.

Matched against knative/eventing at knative-v1.22 (commit 8cf4c4b, after its move from
OpenCensus to OpenTelemetry, #8635): the ingress handler (pkg/broker/ingress/ingress_handler.go)
records ``kn.eventing.dispatch.duration``, the filter handler (pkg/broker/filter/
filter_handler.go) ``kn.eventing.dispatch.duration`` and ``kn.eventing.process.duration``, all
in seconds with the buckets below, labelled from pkg/observability (newcontext.go, key.go).
Their Prometheus exporter writes the names with ``_`` for ``.`` and the unit as a suffix, which
is what this module serves:

  =========================================== ========= =========================================
  name                                        type      one observation per
  =========================================== ========= =========================================
  kn_eventing_dispatch_duration_seconds       histogram ingress (scope .../broker/ingress): an
                                                        event stored, or refused by the log (500)
                                                        filter (scope .../broker/filter): an
                                                        attempt to a subscriber or dead-letter sink
  kn_eventing_process_duration_seconds        histogram filter: a matching event, from the
                                                        dispatcher taking it off the trigger's queue
                                                        to its first attempt
  knpy_eventing_trigger_queue_depth           gauge     per trigger, read at scrape: events stored
                                                        and not finished with (see below)
  knpy_eventing_trigger_in_flight             gauge     per trigger: deliveries under way
  knpy_eventing_trigger_events_total          counter   per trigger and ``result``: delivered,
                                                        dead_lettered, dropped, filtered
  =========================================== ========= =========================================

Labels, as Knative's: ``otel_scope_name`` (``knative.dev/pkg/broker/ingress`` or ``.../filter``:
one process here plays both), ``kn_broker_namespace``, ``kn_broker_name``,
``messaging_destination_name`` (Knative's ``trigger:<name>.<namespace>`` for the filter; for the
ingress Knative puts its channel's URL there, knpy ``broker:<name>.<namespace>``, as its spans
are named; a Channel's Subscription gets the channel fanout's scope and
``subscription:<name>.<namespace>``), ``messaging_operation_name`` (``send``),
``messaging_system`` (``knative``), ``cloudevents_type`` and, on dispatch,
``http_response_status_code`` (500 when nothing answered, as Knative's dispatcher reports it).
So the event counts by trigger (or, on ingress, by broker) and response code are the
histogram's ``_count`` series, as in Knative since the move to OpenTelemetry (its OpenCensus
``event_count`` is gone). Knative records nothing at the ingress for a request refused before
dispatch (bad event, unknown broker, TTL used up); nor does knpy.

Knative has no queue-depth metric (its InMemoryChannel keeps no queue to measure), hence the
``knpy_`` names. The depth is the backend's: for the default class the trigger's records not
yet handed out plus those in flight (exact); for ``RabbitMQBroker`` the messages ready in the
trigger's queue on the server (a message carries one event, or several the ingress grouped
under load) plus the events this dispatcher holds. Every dispatcher replica of one trigger
reports the same server count, so aggregate that gauge with ``max``, not ``sum``.

Hot path: the children a trigger or a broker uses are cached by (event type, status); an
observation is a dict lookup and a bisect. The gauges and counters are read at scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.metrics import FastHistogram, FastRegistry, HistogramValue, render_text

__all__ = [
    "FANOUT_SCOPE",
    "FILTER_SCOPE",
    "INGRESS_SCOPE",
    "LATENCY_BOUNDS_S",
    "BrokerMetrics",
    "IngressSeries",
    "TriggerSeries",
    "broker_destination",
    "delivery_names",
    "subscription_destination",
    "trigger_destination",
]

# Knative's latencyBounds (ingress_handler.go, filter_handler.go), in seconds.
LATENCY_BOUNDS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5,
                           10)
INGRESS_SCOPE: Final = "knative.dev/pkg/broker/ingress"
FILTER_SCOPE: Final = "knative.dev/pkg/broker/filter"
# A Channel's Subscription (knpy: a trigger on the channel's backing broker) is dispatched by
# Knative's channel fanout handler (pkg/channel/fanout/fanout_event_handler.go).
FANOUT_SCOPE: Final = "knative.dev/eventing/pkg/channel/fanout"
# Knative's dispatchInfo.ResponseCode when the request failed without an answer.
NO_RESPONSE_STATUS: Final = 500
_COMMON: Final = (
    "otel_scope_name",
    "kn_broker_namespace",
    "kn_broker_name",
    "messaging_destination_name",
    "messaging_operation_name",
    "messaging_system",
    "cloudevents_type",
)
_DISPATCH_LABELS: Final = (*_COMMON, "http_response_status_code")
_TRIGGER_LABELS: Final = ("kn_broker_namespace", "kn_broker_name", "messaging_destination_name")
RESULTS: Final = ("delivered", "dead_lettered", "dropped", "filtered")


def broker_destination(namespace: str, name: str) -> str:
    """Knative's BrokerMessagingDestination (pkg/tracing/attributes.go)."""
    return f"broker:{name}.{namespace}"


def trigger_destination(namespace: str, name: str) -> str:
    """Knative's TriggerMessagingDestination (pkg/tracing/attributes.go)."""
    return f"trigger:{name}.{namespace}"


def subscription_destination(namespace: str, name: str) -> str:
    """Knative's SubscriptionMessagingDestination (pkg/tracing/attributes.go)."""
    return f"subscription:{name}.{namespace}"


def delivery_names(namespace: str, name: str, subscription: str = "") -> tuple[str, str]:
    """(scope, destination) of a trigger's deliveries: the broker filter's for a trigger,
    the channel fanout's for a Subscription's backing trigger (``subscription`` its name)."""
    if subscription:
        return FANOUT_SCOPE, subscription_destination(namespace, subscription)
    return FILTER_SCOPE, trigger_destination(namespace, name)


class _Series:
    """The histogram children of one destination, cached by (event type, status)."""

    __slots__ = ("_children", "_family", "_labels")

    def __init__(self, family: FastHistogram, labels: tuple[str, ...]) -> None:
        self._family = family
        self._labels = labels
        self._children: dict[tuple[str, int], HistogramValue] = {}

    def child(self, event_type: str, status: int) -> HistogramValue:
        key = (event_type, status)
        found = self._children.get(key)
        if found is None:
            values = (*self._labels, event_type) if status < 0 else (
                *self._labels, event_type, str(status)
            )
            found = self._children[key] = self._family.labels(*values)
        return found


class IngressSeries:
    """One broker's ingress series: ``stored(type, status, seconds)``."""

    __slots__ = ("_dispatch",)

    def __init__(self, metrics: BrokerMetrics, namespace: str, name: str) -> None:
        labels = (INGRESS_SCOPE, namespace, name, broker_destination(namespace, name), "send",
                  "knative")
        self._dispatch = _Series(metrics.dispatch, labels)

    def stored(self, event_type: str, status: int, seconds: float) -> None:
        self._dispatch.child(event_type, status).observe(seconds)


class TriggerSeries:
    """One trigger's filter series: ``dispatched`` per attempt, ``processed`` per event."""

    __slots__ = ("_dispatch", "_process")

    def __init__(self, metrics: BrokerMetrics, broker: str, scope: str, destination: str) -> None:
        bns, _, bname = broker.partition("/")
        labels = (scope, bns, bname, destination, "send", "knative")
        self._dispatch = _Series(metrics.dispatch, labels)
        self._process = _Series(metrics.process, labels)

    def dispatched(self, event_type: str, status: int | None, seconds: float) -> None:
        code = NO_RESPONSE_STATUS if status is None else status
        self._dispatch.child(event_type, code).observe(seconds)

    def processed(self, event_type: str, seconds: float) -> None:
        self._process.child(event_type, -1).observe(seconds)


class TriggerStats:
    """What a trigger reports at scrape (the dispatcher's TriggerWorker provides it)."""

    __slots__ = ("broker", "destination", "read")

    def __init__(
        self, broker: str, destination: str, read: Callable[[], tuple[int, int, int, int, int]]
    ) -> None:
        self.broker = broker
        self.destination = destination
        # () -> (in flight, delivered, dead-lettered, dropped, filtered)
        self.read = read


class _TriggerCollector(Collector):
    """The per-trigger gauges and counters, read from the workers at scrape."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "knpy_eventing_trigger_queue_depth",
            "Events stored for the trigger and not finished with (waiting or in flight)",
            labels=_TRIGGER_LABELS,
        )
        flight = GaugeMetricFamily(
            "knpy_eventing_trigger_in_flight", "Deliveries to the trigger under way",
            labels=_TRIGGER_LABELS,
        )
        events = CounterMetricFamily(
            "knpy_eventing_trigger_events",
            "Events the trigger finished with, by result",
            labels=(*_TRIGGER_LABELS, "result"),
        )
        depths = self._metrics.depths
        for uid, stats in self._metrics.triggers.items():
            ns, _, name = stats.broker.partition("/")
            labels = [ns, name, stats.destination]
            in_flight, *done = stats.read()
            flight.add_metric(labels, in_flight)
            for result, count in zip(RESULTS, done, strict=True):
                events.add_metric([*labels, result], count)
            if uid in depths:
                depth.add_metric(labels, depths[uid])
        return [depth, flight, events]


class BrokerMetrics:
    """Every series of one broker process, and the Prometheus text of them."""

    def __init__(self) -> None:
        self.registry = FastRegistry()
        self.dispatch = self.registry.histogram(
            "kn_eventing_dispatch_duration_seconds",
            "The duration to dispatch the event",
            LATENCY_BOUNDS_S,
            _DISPATCH_LABELS,
        )
        self.process = self.registry.histogram(
            "kn_eventing_process_duration_seconds",
            "The duration of processing an event before dispatching it",
            LATENCY_BOUNDS_S,
            _COMMON,
        )
        self._ingress: dict[str, IngressSeries] = {}
        # Trigger uid -> its scrape-time figures; uid -> queue depth, refreshed before a scrape.
        self.triggers: dict[str, TriggerStats] = {}
        self.depths: dict[str, int] = {}
        self._collectors: list[Collector] = [self.registry, _TriggerCollector(self)]

    def __repr__(self) -> str:
        return f"<BrokerMetrics brokers={len(self._ingress)} triggers={len(self.triggers)}>"

    def ingress(self, broker: str) -> IngressSeries:
        """The series of ``broker`` (``namespace/name``), created once."""
        found = self._ingress.get(broker)
        if found is None:
            ns, _, name = broker.partition("/")
            found = self._ingress[broker] = IngressSeries(self, ns, name)
        return found

    def trigger(self, broker: str, scope: str, destination: str) -> TriggerSeries:
        """A trigger's series (``delivery_names`` gives the scope and the destination)."""
        return TriggerSeries(self, broker, scope, destination)

    def render(self) -> bytes:
        return render_text(_Both(self._collectors))


class _Both(Collector):
    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for c in self._collectors:
            yield from c.collect()
