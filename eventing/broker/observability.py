"""The broker's traces: what is traced, how the trace goes from ingress to delivery through the
event's ``traceparent`` extension, and the ``config-observability`` ConfigMap that turns it on.

Settings, as the serving components take them (shared/observability.py, shared/tracing.py: one
set-up, not a second): OBSERVABILITY_CONFIG and OTEL_EXPORTER_OTLP_* in the environment until
``config-observability`` exists in the system namespace (knative-eventing); then its
``tracing-protocol``, ``tracing-endpoint`` and ``tracing-sampling-rate``, followed as they
change (a bad update is logged and the last good settings stay, as Knative's configmap
watcher does). Tracing off (``none``, the default) means no tracer: the hot path tests for None
and does nothing else.

Spans, named as Knative's handlers name theirs (pkg/tracing/attributes.go) with the attributes
of its labeler (pkg/observability/newcontext.go):

- **ingress** ``broker:<name>.<namespace>`` (kind SERVER), from the request to the answer
  (the event stored, or refused by the log). Its parent is the request's W3C ``traceparent``
  header, else the event's own ``traceparent`` extension (CloudEvents' distributed tracing
  extension), so a producer that only sets the extension is still joined. A sampled span is
  then written into the stored event's ``traceparent`` (and ``tracestate``) extension, as
  Knative's PopulateCEDistributedTracing writes the recording span into an event: the link
  is stored with the event, so it survives a restart and crosses from an ingress process to
  a dispatcher process on RabbitMQ.
- **delivery** ``trigger:<name>.<namespace>`` (kind CONSUMER), one per matching trigger and
  event, from the first attempt to the outcome (retries, reply and dead-letter sink included;
  each failed attempt is a span event with its status). Its parent is the event's ``traceparent``
  extension: the ingress span. The subscriber (and a dead-letter sink) gets the W3C
  ``traceparent`` header of the delivery span; the event's extension goes as it was stored.
  A reply without a ``traceparent`` extension of its own gets the delivery span's, so its
  deliveries join the same trace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.cloudevent import Event
from shared.envconfig import ConfigError
from shared.kube.informer import EventType, InformerFactory
from shared.kube.resources import CONFIGMAPS, Obj, key_of
from shared.observability import ObservabilityConfig, from_configmap
from shared.tracing import extract_context, inject_headers, setup_tracing, shutdown_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer

__all__ = [
    "OBSERVABILITY_CONFIGMAP",
    "SERVICE_NAME",
    "Tracing",
    "delivery_span",
    "ingress_span",
    "link_reply",
    "stamp",
]

log = logging.getLogger(__name__)

OBSERVABILITY_CONFIGMAP: Final = "config-observability"
SERVICE_NAME: Final = "eventing-broker"
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _extension(event: Event, name: str) -> bytes | None:
    value = event.attrs.get(name)
    return value.encode("latin-1") if isinstance(value, str) and value.isascii() else None


def _common(event: Event, destination: str) -> dict[str, str]:
    attrs = {
        "messaging.system": "knative",
        "messaging.operation.name": "send",
        "messaging.destination.name": destination,
    }
    for key, name in (("type", "cloudevents.type"), ("source", "cloudevents.source"),
                      ("specversion", "cloudevents.specversion"),
                      ("subject", "cloudevents.subject"),
                      ("datacontenttype", "cloudevents.datacontenttype"),
                      ("id", "cloudevents.id")):
        value = event.attrs.get(key)
        if isinstance(value, str):
            attrs[name] = value
    return attrs


def ingress_span(
    tracer: Tracer,
    namespace: str,
    name: str,
    headers: Sequence[tuple[bytes, bytes]],
    event: Event,
) -> trace.Span:
    """The ingress span of ``event`` (the first of a batch names it); the caller ends it."""
    parent = _header(headers, b"traceparent")
    if parent is not None:
        ctx = extract_context(parent, _header(headers, b"tracestate"))
    else:
        ctx = extract_context(_extension(event, TRACEPARENT), _extension(event, TRACESTATE))
    destination = f"broker:{name}.{namespace}"
    span = tracer.start_span(destination, context=ctx, kind=SpanKind.SERVER)
    if span.is_recording():  # as Knative, the event's attributes only on a sampled span
        attrs = _common(event, destination)
        attrs["kn.broker.name"] = name
        attrs["kn.broker.namespace"] = namespace
        span.set_attributes(attrs)
    return span


def stamp(events: Sequence[Event], span: trace.Span) -> None:
    """Write a sampled ``span`` into the events' ``traceparent`` (and ``tracestate``)
    extensions (module doc); an unsampled one leaves them as they came."""
    if not span.is_recording():
        return
    fields = {
        (TRACEPARENT if name == b"traceparent" else TRACESTATE): value.decode("latin-1")
        for name, value in inject_headers(span)
    }
    state = fields.get(TRACESTATE)
    for ev in events:
        ev.attrs[TRACEPARENT] = fields[TRACEPARENT]
        if state is None:
            ev.attrs.pop(TRACESTATE, None)
        else:
            ev.attrs[TRACESTATE] = state


def delivery_span(tracer: Tracer, destination: str, broker: str, event: Event) -> trace.Span:
    """The delivery span of ``event`` to ``destination`` (``trigger:<name>.<namespace>``, or
    ``subscription:...`` for a Channel's Subscription); the caller ends it."""
    ctx = extract_context(_extension(event, TRACEPARENT), _extension(event, TRACESTATE))
    span = tracer.start_span(destination, context=ctx, kind=SpanKind.CONSUMER)
    if span.is_recording():
        attrs = _common(event, destination)
        bns, _, bname = broker.partition("/")
        attrs["kn.broker.name"] = bname
        attrs["kn.broker.namespace"] = bns
        span.set_attributes(attrs)
    return span


def end_span(span: trace.Span, outcome: str, status: int | None) -> None:
    """Close a span with the outcome (``delivered``, ``202``...) and its HTTP status."""
    if span.is_recording():
        attrs: dict[str, str | int] = {"knpy.outcome": outcome}
        if status is not None:
            attrs["http.response.status_code"] = status
        span.set_attributes(attrs)
        if outcome not in ("delivered", "stored"):
            span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()


def link_reply(replies: Sequence[Event], span: trace.Span) -> None:
    """Replies without a ``traceparent`` extension join the delivery's trace (module doc)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return
    for name, value in inject_headers(span):
        if name != b"traceparent":
            continue
        for reply in replies:
            if TRACEPARENT not in reply.attrs:
                reply.attrs[TRACEPARENT] = value.decode("latin-1")


def _tracing_of(obs: ObservabilityConfig) -> tuple[str, str, float]:
    return obs.tracing_protocol, obs.tracing_endpoint, obs.tracing_sampling_rate


class Tracing:
    """The tracer of the moment: from the environment's settings, then from
    ``config-observability`` in ``namespace`` as it changes; ``on_change(tracer)`` hands it to
    the ingress and the dispatcher."""

    def __init__(
        self,
        informers: InformerFactory,
        namespace: str,
        env_config: ObservabilityConfig,
        on_change: Callable[[Tracer | None], None],
        *,
        name: str = OBSERVABILITY_CONFIGMAP,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.env_config = env_config
        self.config: ObservabilityConfig | None = None  # in force
        self.tracer: Tracer | None = None
        self._on_change = on_change
        self.informer = informers.informer(CONFIGMAPS, namespace=namespace)
        self._started = False

    def __repr__(self) -> str:
        cfg = self.config
        what = "off" if cfg is None or self.tracer is None else (
            f"{cfg.tracing_protocol} {cfg.tracing_endpoint} rate={cfg.tracing_sampling_rate:g}"
        )
        return f"<Tracing {self.namespace}/{self.name} {what}>"

    def start(self) -> None:
        """Apply the environment's settings, then follow the ConfigMap (the informer's
        handlers see what it listed first).

        Raises:
            ConfigError: the environment's settings cannot be set up (e.g. ``grpc``).
        """
        self._started = True
        self._apply(self.env_config)
        self.informer.add_handler(self._changed)

    def _changed(self, event: EventType, obj: Obj) -> None:
        namespace, name = key_of(obj)
        if namespace != self.namespace or name != self.name:
            return
        current = self.informer.get(namespace, name)
        data = current.get("data") if current is not None else None
        if current is None:
            cfg = self.env_config  # deleted: back to the environment's settings
        else:
            values = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            try:
                cfg = from_configmap(values)
            except ConfigError as err:
                log.error("broker: ignoring %s/%s: %s", namespace, name, err)
                return
        try:
            self._apply(cfg)
        except ConfigError as err:
            log.error("broker: ignoring %s/%s: %s", namespace, name, err)

    def _apply(self, cfg: ObservabilityConfig) -> None:
        old = self.config
        if old is not None and _tracing_of(old) == _tracing_of(cfg):
            return
        tracer = setup_tracing(SERVICE_NAME, cfg) if cfg.tracing_protocol != "none" else None
        previous, self.tracer, self.config = self.tracer, tracer, cfg
        self._on_change(tracer)
        if previous is not None:
            # Its last spans are flushed in a thread: an export can take the exporter's
            # timeout (10 s), and the loop must go on serving meanwhile.
            threading.Thread(
                target=shutdown_tracing, args=(previous,), name="tracer-shutdown", daemon=True
            ).start()

    async def stop(self) -> None:
        """Flush and stop the export, once, at shutdown (in a thread: the loop goes on)."""
        tracer, self.tracer = self.tracer, None
        if tracer is not None:
            self._on_change(None)
            await asyncio.to_thread(shutdown_tracing, tracer)
