"""OpenTelemetry tracing set-up, and W3C trace-context helpers for a raw-bytes proxy.

Set-up follows Knative's tracing provider (knative.dev/pkg/observability/tracing/provider.go,
vendored in knative/serving):

* protocol "none" => no provider at all: ``setup_tracing`` returns None and the proxy
  creates no spans (Knative installs a no-op provider; None lets our hot path skip even
  the call);
* sampler: "stdout" always samples; a rate >= 1 always samples; a rate <= 0 never does;
  otherwise ParentBased(TraceIdRatioBased(rate)), so a sampled caller stays sampled;
* export: OTLP over HTTP/protobuf to ``tracing_endpoint`` (the full URL, e.g.
  ``http://jaeger-collector.observability:4318/v1/traces``) through a batch processor; an
  endpoint given as "host:port" gets "https://" put in front, as Knative does;
* "grpc": knpy does not install the OTLP/gRPC exporter (it would pull in grpcio). If
  ``opentelemetry-exporter-otlp-proto-grpc`` happens to be importable it is used, otherwise
  set-up fails with a ConfigError naming the key: silently sending OTLP/HTTP to a gRPC
  collector port (4317) would only lose every span.

Knative also honours OTEL_EXPORTER_OTLP_* and OTEL_TRACES_SAMPLER* overrides; here nothing
below ``main`` reads the environment, so ``main`` must fold them into the config.

Propagation is W3C trace context (Knative's DefaultTextMapPropagator is TraceContext plus
Baggage; the proxy forwards the ``baggage`` header untouched, so only trace context needs
handling). The proxy hands raw header bytes to ``extract_context`` and writes the bytes
from ``inject_headers`` to the upstream request.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.envconfig import ConfigError
from shared.observability import TracingProtocol

__all__ = [
    "TracingSettings",
    "extract_context",
    "inject_headers",
    "sampler_for",
    "setup_tracing",
    "shutdown_tracing",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_GRPC_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


class TracingSettings(Protocol):
    """The tracing fields of shared.observability.ObservabilityConfig."""

    @property
    def tracing_protocol(self) -> TracingProtocol: ...
    @property
    def tracing_endpoint(self) -> str: ...
    @property
    def tracing_sampling_rate(self) -> float: ...


def sampler_for(cfg: TracingSettings) -> Sampler:
    """Knative's sampleFor: AlwaysSample for stdout and rate >= 1, NeverSample for <= 0."""
    rate = cfg.tracing_sampling_rate
    if cfg.tracing_protocol == "stdout" or rate >= 1.0:
        return ALWAYS_ON
    if rate <= 0.0:
        return ALWAYS_OFF
    return ParentBased(TraceIdRatioBased(rate))


def _endpoint_url(endpoint: str) -> str:
    # Knative's endpointFor: a "host:port" endpoint (an opaque URL to Go) means https.
    return endpoint if "://" in endpoint else "https://" + endpoint


def _exporter_for(cfg: TracingSettings) -> SpanExporter:
    protocol = cfg.tracing_protocol
    if protocol == "stdout":
        return ConsoleSpanExporter()
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigError("tracing-protocol", f"unsupported protocol {protocol!r}")
    if not cfg.tracing_endpoint:
        raise ConfigError("tracing-endpoint", f"must be set for protocol {protocol!r}")
    endpoint = _endpoint_url(cfg.tracing_endpoint)
    if protocol == "http/protobuf":
        return OTLPSpanExporter(endpoint=endpoint)
    try:
        grpc_exporter = importlib.import_module(_GRPC_EXPORTER_MODULE)
    except ImportError:
        raise ConfigError(
            "tracing-protocol",
            '"grpc" needs opentelemetry-exporter-otlp-proto-grpc, which knpy does not '
            'install; use "http/protobuf" (the collector\'s OTLP/HTTP port, usually 4318)',
        ) from None
    exporter: SpanExporter = grpc_exporter.OTLPSpanExporter(endpoint=endpoint)
    return exporter


def setup_tracing(
    service_name: str,
    cfg: TracingSettings,
    *,
    exporter: SpanExporter | None = None,
) -> Tracer | None:
    """A tracer for ``service_name``, or None when tracing is off.

    The provider is not installed globally: components pass the tracer to what needs it,
    so tests can build several side by side.

    Args:
        exporter: a test seam that replaces the protocol's exporter; its spans are exported
            synchronously as each ends.

    Raises:
        ConfigError: unknown protocol, missing endpoint, or "grpc" without its exporter.
    """
    if cfg.tracing_protocol == "none":
        return None
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif cfg.tracing_protocol == "stdout":
        # Debug output should appear as each span ends, not in batches.
        processor = SimpleSpanProcessor(_exporter_for(cfg))
    else:
        processor = BatchSpanProcessor(_exporter_for(cfg))
    provider = TracerProvider(
        sampler=sampler_for(cfg),
        resource=Resource.create({SERVICE_NAME: service_name}),
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("knpy." + service_name)
    assert isinstance(tracer, Tracer)
    return tracer


def shutdown_tracing(tracer: Tracer | None) -> None:
    """Flushes and stops the tracer's export (blocking: call it once, at shutdown)."""
    if tracer is not None:
        tracer.span_processor.shutdown()


def extract_context(traceparent: bytes | None, tracestate: bytes | None) -> Context:
    """The parent context carried by raw W3C headers; an empty Context if absent or invalid."""
    if not traceparent:
        return Context()
    carrier = {"traceparent": traceparent.decode("latin-1")}
    if tracestate:
        carrier["tracestate"] = tracestate.decode("latin-1")
    return _PROPAGATOR.extract(carrier, context=Context())


def inject_headers(span: trace.Span) -> list[tuple[bytes, bytes]]:
    """W3C ``traceparent`` (and ``tracestate``) naming ``span`` as the upstream's parent."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return []
    headers = [
        (
            b"traceparent",
            b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags),
        )
    ]
    if ctx.trace_state:
        headers.append((b"tracestate", ctx.trace_state.to_header().encode("latin-1")))
    return headers
