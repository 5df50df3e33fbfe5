"""One trace across the hops: ingress, activator, queue-proxy, app (issue 12 section 4).

Tracing is switched on the way a Knative operator does it: the ``config-observability``
ConfigMap (``tracing-protocol: http/protobuf``, ``tracing-endpoint``, ``tracing-sampling-rate``)
in ``knative-serving``, given to ``knpy serve -f``. The ingress and the activator follow it;
the queue-proxy gets it in ``OBSERVABILITY_CONFIG`` from the Deployment controller. The spans
arrive at an OTLP/HTTP endpoint this test serves itself on 127.0.0.1 and decodes with
opentelemetry-proto, as a Collector or Jaeger (port 4318) would.

Two requests, each one trace:

* at zero pods, through the activator: ingress -> activator (-> the throttler's wait) ->
  queue-proxy -> app, which receives the queue-proxy's span as its ``traceparent``;
* with the pod busy: a request sent straight to the queue-proxy holds the one slot
  (containerConcurrency 1), so the next one through the ingress and the activator
  (target-burst-capacity -1 keeps the activator in the path; max-scale 1) waits in the queue-proxy's
  breaker: ingress -> activator -> queue-proxy (-> the breaker's wait) -> app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shared.ports import free_port

from .harness import WAIT_S, Serve, hello_yaml

HOST = "hello.default.localhost"
REVISION = "hello-00001"
# The hold on the pod's one slot while the traced request waits in the breaker.
HOLD_MS = 3000


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (``POST /v1/traces``, protobuf) that keeps every span."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="OTLP/HTTP protobuf only")
        req = ExportTraceServiceRequest.FromString(await request.read())
        for rs in req.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            attrs.get("service.name", ""),
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def trace(self, trace_id: str) -> dict[str, Span]:
        """The spans of one trace by name (each hop names its span once per request)."""
        return {s.name: s for s in self.spans if s.trace_id == trace_id}


def _config(tmp: Path, endpoint: str) -> Path:
    path = tmp / "tracing.yaml"
    path.write_text(f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: config-observability, namespace: knative-serving}}
data:
  tracing-protocol: http/protobuf
  tracing-endpoint: {endpoint}
  tracing-sampling-rate: "1"
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: config-autoscaler, namespace: knative-serving}}
data: {{allow-zero-initial-scale: "true", stable-window: 6s, scale-to-zero-grace-period: 2s}}
""")
    return path


def _traceparent(headers: dict[str, str]) -> tuple[str, str]:
    """(trace id, parent span id) of the ``traceparent`` the app received."""
    value = {k.lower(): v for k, v in headers.items()}["traceparent"]
    version, trace_id, span_id, flags = value.split("-")
    # Sampled; the SDK may also set W3C level 2's "random" flag (0x02).
    assert version == "00" and int(flags, 16) & 1, value
    return trace_id, span_id


async def _headers_via_ingress(s: Serve) -> dict[str, str]:
    status, body = await s.request(HOST, "/headers")
    assert status == 200, body
    headers: dict[str, str] = json.loads(body)["headers"]
    return headers


async def _pod_port(s: Serve, variable: str) -> int:
    """A port of the revision's one pod from its containers' env (QUEUE_SERVING_PORT, PORT)."""
    (pod,) = await s.pods(REVISION)
    for c in pod["spec"]["containers"]:
        for e in c.get("env") or ():
            if e["name"] == variable:
                return int(e["value"])
    raise AssertionError(f"no {variable} in {pod['spec']}")


def _check_chain(
    spans: dict[str, Span], trace_id: str, app_parent: str, wait: tuple[str, str]
) -> None:
    """ingress -> activator -> queue-proxy -> app, and the wait under its hop."""
    ingress = spans["kn.ingress.proxy"]
    activator = spans["kn.activator.proxy"]
    queue = spans["kn.queueproxy.proxy"]
    assert (ingress.service, activator.service, queue.service) == (
        "ingress",
        "activator",
        "queue-proxy",
    )
    assert ingress.parent_id == "", ingress  # the client sent no trace context
    assert activator.parent_id == ingress.span_id
    assert queue.parent_id == activator.span_id
    assert app_parent == queue.span_id  # the app's traceparent names the queue-proxy's span
    wait_name, under = wait
    assert spans[wait_name].parent_id == spans[under].span_id
    assert all(span.trace_id == trace_id for span in spans.values())


async def _wait_spans(otlp: OtlpReceiver, trace_id: str, names: set[str]) -> dict[str, Span]:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not names <= set(otlp.trace(trace_id)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"spans of {trace_id}: {otlp.trace(trace_id)}, want {names}")
        await asyncio.sleep(0.2)
    return otlp.trace(trace_id)


@pytest.mark.timeout(120)
async def test_one_trace_from_the_ingress_to_the_app(
    serve: Callable[..., Serve], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenTelemetry's batch delay (5 s by default), in knpy serve's environment and so in its
    # pods' (the local kubelet passes it on): spans arrive within 0.2 s of their end.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    otlp = OtlpReceiver()
    await otlp.start()
    try:
        s = serve(_config(tmp_path, otlp.url))
        annotations = (
            "autoscaling.knative.dev/initial-scale: '0', "
            "autoscaling.knative.dev/target-burst-capacity: '-1', "
            "autoscaling.knative.dev/max-scale: '1'"
        )
        await s.apply(hello_yaml(annotations=annotations, cc=1))

        async def ready_at_zero() -> bool:
            status = (await s.revision(REVISION)).get("status", {})
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )
            return ready and status.get("mode") == "Proxy" and not await s.pods(REVISION)

        await s.until(ready_at_zero, "the revision to be Ready at zero pods")

        # 1. At zero: the request waits in the activator's throttler for the first pod.
        cold = _traceparent(await _headers_via_ingress(s))
        spans = await _wait_spans(
            otlp,
            cold[0],
            {"kn.ingress.proxy", "kn.activator.proxy", "kn.activator.throttler_try",
             "kn.queueproxy.proxy"},
        )  # fmt: skip
        _check_chain(spans, cold[0], cold[1], ("kn.activator.throttler_try", "kn.activator.proxy"))

        # 2. The pod's one slot held by a request sent straight to its queue-proxy: the next
        # one through the ingress and the activator waits in the queue-proxy's breaker.
        port = await _pod_port(s, "QUEUE_SERVING_PORT")
        app_port = await _pod_port(s, "PORT")
        hold = asyncio.create_task(
            s.client().get(f"http://127.0.0.1:{port}/sleep?ms={HOLD_MS}").__aenter__()
        )

        async def held_at_the_app() -> bool:  # the app's own count, asked past the breaker
            async with s.client().get(f"http://127.0.0.1:{app_port}/stats") as resp:
                return bool((await resp.json())["in_flight"] == 1)

        await s.until(held_at_the_app, "the held request to reach the app", HOLD_MS / 2000)
        busy = _traceparent(await _headers_via_ingress(s))
        held = await hold
        assert held.status == 200
        held.release()
        spans = await _wait_spans(
            otlp,
            busy[0],
            {"kn.ingress.proxy", "kn.activator.proxy", "kn.queueproxy.proxy",
             "kn.queueproxy.wait"},
        )  # fmt: skip
        _check_chain(spans, busy[0], busy[1], ("kn.queueproxy.wait", "kn.queueproxy.proxy"))
    finally:
        await otlp.stop()
