"""The ingress's hop of a trace (issue 12 section 4), on loopback with real sockets.

Off (Knative's default), the client's ``traceparent`` passes to the next hop untouched and no
OpenTelemetry object exists. On, through ``config-observability`` as for the activator, the
ingress starts a span under the client's context and sends that span as the next hop's parent.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.ingress import OBSERVABILITY_CONFIGMAP
from shared.kube.fake import FakeCluster
from shared.kube.resources import Obj
from shared.observability import ObservabilityConfig
from shared.proxy.tracing import Tracing
from shared.tracing import setup_tracing

from .test_ingress_edge import edge, exchange, header_lines, request

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01".encode()


def observability(data: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": OBSERVABILITY_CONFIGMAP, "namespace": "knative-serving"},
            "data": data}  # fmt: skip


async def test_off_the_client_trace_context_passes_untouched() -> None:
    async with edge(FakeCluster()) as (port, ingress, pod):
        assert ingress.table.tracing is None
        await exchange(port, request(b"traceparent: " + TRACEPARENT, b"tracestate: a=1"))
        lines = header_lines(pod.heads[-1])
        assert b"traceparent: " + TRACEPARENT in lines
        assert b"tracestate: a=1" in lines


async def test_on_the_ingress_span_is_the_next_hop_parent() -> None:
    exporter = InMemorySpanExporter()
    cfg = ObservabilityConfig(tracing_protocol="stdout", tracing_sampling_rate=1.0)
    tracer = setup_tracing("ingress", cfg, exporter=exporter)
    assert tracer is not None
    async with edge(FakeCluster()) as (port, ingress, pod):
        ingress.table.tracing = Tracing(tracer)
        answer = await exchange(port, request(b"TraceParent: " + TRACEPARENT))
        assert answer.startswith(b"HTTP/1.1 200"), answer
        (span,) = exporter.get_finished_spans()
        ctx = span.get_span_context()
        assert span.name == "kn.ingress.proxy"
        assert span.parent is not None and f"{span.parent.span_id:016x}" == CLIENT_SPAN
        assert f"{ctx.trace_id:032x}" == CLIENT_TRACE
        assert span.attributes is not None
        assert span.attributes["http.response.status_code"] == 200
        sent = [line for line in header_lines(pod.heads[-1]) if b"traceparent" in line.lower()]
        assert sent == [b"traceparent: 00-%b-%016x-01" % (CLIENT_TRACE.encode(), ctx.span_id)]


async def test_config_observability_switches_tracing_and_keeps_the_last_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    async with edge(cluster) as (_port, ingress, _pod):
        table = ingress.table
        on = {"tracing-protocol": "http/protobuf",
              "tracing-endpoint": "http://127.0.0.1:4318/v1/traces",
              "tracing-sampling-rate": "0.5"}  # fmt: skip
        cluster.put(observability(on))
        cluster.flush()
        first = table.tracing
        assert first is not None
        cluster.put(observability({**on, "tracing-sampling-rate": "lots"}))
        with caplog.at_level(logging.ERROR, "knpy.ingress"):
            cluster.flush()
        assert table.tracing is first
        assert "tracing-sampling-rate" in caplog.text
        cluster.put(observability({}))
        cluster.flush()
        assert table.tracing is None
