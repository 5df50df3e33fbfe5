from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from shared.envconfig import ConfigError
from shared.tracing import (
    extract_context,
    inject_headers,
    sampler_for,
    setup_tracing,
    shutdown_tracing,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Settings:
    tracing_protocol: Literal["none", "grpc", "http/protobuf", "stdout"] = "http/protobuf"
    tracing_endpoint: str = "http://127.0.0.1:1/v1/traces"
    tracing_sampling_rate: float = 1.0


def test_none_protocol_means_no_tracer() -> None:
    assert setup_tracing("queue-proxy", Settings(tracing_protocol="none")) is None
    shutdown_tracing(None)


@pytest.mark.parametrize(
    ("settings", "want"),
    [
        pytest.param(Settings(tracing_sampling_rate=1), "on", id="rate-1-always"),
        pytest.param(Settings(tracing_sampling_rate=0), "off", id="rate-0-never"),
        pytest.param(Settings(tracing_sampling_rate=0.5), "parent", id="ratio-parent-based"),
        pytest.param(
            Settings(tracing_protocol="stdout", tracing_endpoint="", tracing_sampling_rate=0),
            "on",
            id="stdout-always",
        ),
    ],
)
def test_sampler_matches_knative(settings: Settings, want: str) -> None:
    sampler = sampler_for(settings)
    if want == "on":
        assert sampler is ALWAYS_ON
    elif want == "off":
        assert sampler is ALWAYS_OFF
    else:
        assert isinstance(sampler, ParentBased)
        assert "TraceIdRatioBased{0.5}" in sampler.get_description()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        pytest.param(
            Settings(tracing_endpoint=""), "tracing-endpoint: must be set", id="no-endpoint"
        ),
        pytest.param(
            Settings(tracing_protocol="grpc"), "opentelemetry-exporter-otlp-proto-grpc", id="grpc"
        ),
    ],
)
def test_setup_errors_name_the_key(settings: Settings, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        setup_tracing("queue-proxy", settings)


@pytest.mark.parametrize(
    ("settings", "processor"),
    [
        pytest.param(Settings(), BatchSpanProcessor, id="otlp-http-batches"),
        pytest.param(
            Settings(tracing_protocol="stdout", tracing_endpoint=""),
            SimpleSpanProcessor,
            id="stdout-immediate",
        ),
    ],
)
def test_setup_builds_exporting_tracer(settings: Settings, processor: type) -> None:
    tracer = setup_tracing("queue-proxy", settings)
    assert tracer is not None
    assert tracer.resource.attributes["service.name"] == "queue-proxy"
    assert [type(p) for p in tracer.span_processor._span_processors] == [processor]
    shutdown_tracing(tracer)


def test_spans_link_to_the_incoming_parent_and_propagate_upstream() -> None:
    exporter = InMemorySpanExporter()
    tracer = setup_tracing("queue-proxy", Settings(), exporter=exporter)
    assert tracer is not None

    parent = extract_context(f"00-{TRACE_ID}-{PARENT_ID}-01".encode(), b"vendor=v1")
    with (
        tracer.start_as_current_span("queue_proxy", context=parent) as server,
        tracer.start_as_current_span("proxy_upstream") as client,
    ):
        headers = dict(inject_headers(client))

    assert headers[b"traceparent"] == (
        f"00-{TRACE_ID}-{client.get_span_context().span_id:016x}-01".encode()
    )
    assert headers[b"tracestate"] == b"vendor=v1"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans.keys() == {"queue_proxy", "proxy_upstream"}
    assert spans["queue_proxy"].parent is not None
    assert spans["queue_proxy"].parent.span_id == int(PARENT_ID, 16)
    assert spans["queue_proxy"].parent.is_remote
    assert spans["proxy_upstream"].parent is not None
    assert spans["proxy_upstream"].parent.span_id == server.get_span_context().span_id
    assert {s.context.trace_id for s in spans.values()} == {int(TRACE_ID, 16)}


def test_traceparent_round_trips() -> None:
    raw = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
    span = trace.NonRecordingSpan(
        trace.get_current_span(extract_context(raw, None)).get_span_context()
    )
    assert inject_headers(span) == [(b"traceparent", raw)]


def test_unsampled_parent_is_honoured_below_rate_one() -> None:
    exporter = InMemorySpanExporter()
    tracer = setup_tracing("queue-proxy", Settings(tracing_sampling_rate=0.5), exporter=exporter)
    assert tracer is not None
    parent = extract_context(f"00-{TRACE_ID}-{PARENT_ID}-00".encode(), None)
    with tracer.start_as_current_span("queue_proxy", context=parent) as span:
        assert not span.is_recording()
        assert inject_headers(span) == [
            (b"traceparent", f"00-{TRACE_ID}-{span.get_span_context().span_id:016x}-00".encode())
        ]
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param(b"", b"a=b", id="empty"),
        pytest.param(b"garbage", None, id="malformed"),
        pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01".encode(), None, id="zero-trace-id"),
        pytest.param(f"ff-{TRACE_ID}-{PARENT_ID}-01".encode(), None, id="version-ff"),
    ],
)
def test_invalid_traceparent_gives_a_root_context(
    traceparent: bytes | None, tracestate: bytes | None
) -> None:
    ctx = extract_context(traceparent, tracestate)
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert inject_headers(trace.get_current_span(ctx)) == []


def test_setup_takes_the_observability_config() -> None:
    from shared.observability import ObservabilityConfig

    assert setup_tracing("queue-proxy", ObservabilityConfig()) is None
    tracer = setup_tracing("queue-proxy", ObservabilityConfig(tracing_protocol="stdout"))
    assert tracer is not None
    shutdown_tracing(tracer)
