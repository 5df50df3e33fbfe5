"""The broker's metrics and traces (issue 13 section 3), on both classes.

Metrics: a real BrokerApp (the default class's SQLite log, or RabbitMQ) with its metrics
listener on a free port, scraped over HTTP and parsed with prometheus_client's parser, as
Prometheus would. Traces: ``config-observability`` in knative-eventing switches them on while
the broker runs, and the spans arrive over OTLP/HTTP at a receiver this test serves on
127.0.0.1 (the serving tracing test's way), decoded with opentelemetry-proto.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from eventing.broker.metrics import FANOUT_SCOPE, FILTER_SCOPE, INGRESS_SCOPE, LATENCY_BOUNDS_S
from eventing.broker.store import SqliteEventLog
from shared.cloudevent import Event, Form
from shared.kube.resources import CONFIGMAPS, SUBSCRIPTION_LABEL, TRIGGERS
from shared.ports import LOOPBACK, free_port
from tests.eventing.harness import NS, Answer, Broker, Received, broker_app, fail_first
from tests.eventing.test_rabbitmq import rabbit_app

APPS: dict[str, Callable[..., Any]] = {"sqlite": broker_app, "rabbitmq": rabbit_app}
DISPATCH = "kn_eventing_dispatch_duration_seconds"
PROCESS = "kn_eventing_process_duration_seconds"


# -- scraping ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scrape:
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(
            v for n, ls, v in self.samples
            if n == name and all(ls.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(ls.get(k) == want for k, want in labels.items())
            for n, ls, _ in self.samples
        )


async def scrape(b: Broker) -> Scrape:
    port = b.app.metrics_port
    assert port is not None
    async with b.session.get(f"http://{LOOPBACK}:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return Scrape([
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ])


async def until(b: Broker, check: Callable[[Scrape], bool], timeout_s: float = 10.0) -> Scrape:
    """Scrape until ``check`` holds (RabbitMQ's counts and acks trail the deliveries a bit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await scrape(b)
        if check(got):
            return got
        if time.monotonic() > deadline:
            return got  # the caller's assertions say what is wrong
        await asyncio.sleep(0.05)


def trigger(name: str) -> dict[str, str]:
    return {"messaging_destination_name": f"trigger:{name}.{NS}", "kn_broker_name": "default",
            "kn_broker_namespace": NS}


# -- metrics -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "rabbitmq"])
async def test_dispatch_and_process_durations_count_by_trigger_and_code(
    tmp_path: Path, backend: str
) -> None:
    async with APPS[backend](tmp_path, metrics_port=0) as b:
        fast = await b.sink()
        flaky = await b.sink(fail_first(1, 503))
        await b.add_trigger("fast", fast.url)
        await b.add_trigger("flaky", flaky.url, delivery={
            "retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.01S"})
        for i in range(5):
            assert await b.send(f"a{i}", type_="com.example.a") == 202
        assert await b.send("b0", type_="com.example.b") == 202
        await fast.wait_for(6)
        await flaky.wait_for(7)  # one 503, then the six events
        got = await until(b, lambda s: s.value(
            "knpy_eventing_trigger_events_total", result="delivered") == 12
            and s.value("knpy_eventing_trigger_queue_depth") == 0)

        # The ingress: one observation per stored event, by broker, type and code.
        ingress = {"otel_scope_name": INGRESS_SCOPE, "kn_broker_name": "default",
                   "kn_broker_namespace": NS, "messaging_destination_name": "broker:default.demo",
                   "messaging_operation_name": "send", "messaging_system": "knative"}
        assert got.value(f"{DISPATCH}_count", **ingress, cloudevents_type="com.example.a",
                         http_response_status_code="202") == 5
        assert got.value(f"{DISPATCH}_count", **ingress, cloudevents_type="com.example.b",
                         http_response_status_code="202") == 1
        # The filter: one per attempt, by trigger and the subscriber's code.
        filt = {"otel_scope_name": FILTER_SCOPE}
        assert got.value(f"{DISPATCH}_count", **filt, **trigger("fast"),
                         http_response_status_code="200", cloudevents_type="com.example.a") == 5
        assert got.value(f"{DISPATCH}_count", **filt, **trigger("flaky"),
                         http_response_status_code="503") == 1
        assert got.value(f"{DISPATCH}_count", **filt, **trigger("flaky"),
                         http_response_status_code="200") == 6
        assert got.value(f"{PROCESS}_count", **filt, **trigger("flaky")) == 6
        assert not got.has(PROCESS + "_count", http_response_status_code="200")  # no code
        # Knative's buckets, in seconds; the +Inf bucket is the count.
        les = [ls["le"] for n, ls, _ in got.samples if n == f"{DISPATCH}_bucket"
               and ls["messaging_destination_name"] == "trigger:fast.demo"
               and ls["cloudevents_type"] == "com.example.a"]
        assert les == [*(str(float(x)) for x in LATENCY_BOUNDS_S), "+Inf"]
        assert 0 < got.value(f"{DISPATCH}_sum", **trigger("fast")) < 5
        for name in ("fast", "flaky"):
            assert got.value("knpy_eventing_trigger_events_total", **trigger(name),
                             result="delivered") == 6
            assert got.value("knpy_eventing_trigger_queue_depth", **trigger(name)) == 0
            assert got.value("knpy_eventing_trigger_in_flight", **trigger(name)) == 0


@pytest.mark.parametrize("backend", ["sqlite", "rabbitmq"])
async def test_queue_depth_counts_waiting_and_in_flight_events(
    tmp_path: Path, backend: str
) -> None:
    """Six events to a subscriber that holds every request, two at a time: depth 6 (two in
    flight, four waiting: in the log, or ready in the RabbitMQ queue), then 0."""
    release = asyncio.Event()

    async def hold(_req: Received, _n: int) -> Answer:
        await release.wait()
        return 200, {}, b""

    async with APPS[backend](tmp_path, metrics_port=0, concurrency=2) as b:
        sink = await b.sink(hold)
        other = await b.sink()
        await b.add_trigger("slow", sink.url)
        await b.add_trigger("quick", other.url)
        for i in range(6):  # one at a time: each its own RabbitMQ message
            assert await b.send(str(i)) == 202
        await sink.wait_for(2)
        await other.wait_for(6)
        got = await until(b, lambda s: s.value("knpy_eventing_trigger_queue_depth",
                                               **trigger("slow")) == 6
                          and s.value("knpy_eventing_trigger_queue_depth",
                                      **trigger("quick")) == 0)
        assert got.value("knpy_eventing_trigger_queue_depth", **trigger("slow")) == 6
        assert got.value("knpy_eventing_trigger_in_flight", **trigger("slow")) == 2
        assert got.value("knpy_eventing_trigger_queue_depth", **trigger("quick")) == 0
        release.set()
        await sink.wait_for(6)
        got = await until(b, lambda s: s.value("knpy_eventing_trigger_queue_depth",
                                               **trigger("slow")) == 0)
        assert got.value("knpy_eventing_trigger_queue_depth", **trigger("slow")) == 0
        assert got.value("knpy_eventing_trigger_events_total", **trigger("slow"),
                         result="delivered") == 6


async def test_filtered_and_dropped_events_are_counted(tmp_path: Path) -> None:
    async with broker_app(tmp_path, metrics_port=0) as b:
        failing = await b.sink(fail_first(99, 400))  # 400 is not retried: dropped at once
        await b.add_trigger("picky", failing.url, attributes={"type": "wanted"})
        assert await b.send("1", type_="other") == 202
        assert await b.send("2", type_="wanted") == 202
        await failing.wait_for(1)
        got = await until(b, lambda s: s.value("knpy_eventing_trigger_events_total",
                                               result="dropped") == 1)
        counts = {r: got.value("knpy_eventing_trigger_events_total", **trigger("picky"),
                               result=r)
                  for r in ("delivered", "dead_lettered", "dropped", "filtered")}
        assert counts == {"delivered": 0, "dead_lettered": 0, "dropped": 1, "filtered": 1}
        assert got.value(f"{DISPATCH}_count", **trigger("picky"),
                         http_response_status_code="400") == 1
        # a request refused before storing is not an ingress observation (as Knative's)
        status, _, _ = await b.post({"content-type": "application/json"}, b"{}")
        assert status == 400
        after = await scrape(b)
        assert after.value(f"{DISPATCH}_count", otel_scope_name=INGRESS_SCOPE) == 2


async def test_a_channel_subscription_is_measured_as_knative_s_channel_fanout(
    tmp_path: Path,
) -> None:
    """A Subscription's backing trigger (labelled with the Subscription's name, as knpy
    serve's channel controller makes it) reports under the fanout's scope and the
    ``subscription:<name>.<namespace>`` destination."""
    async with broker_app(tmp_path, metrics_port=0) as b:
        sink = await b.sink()
        b.cluster.put({
            "metadata": {"name": "orders-kn-sub", "namespace": NS,
                         "labels": {SUBSCRIPTION_LABEL: "orders"}},
            "spec": {"broker": "default", "filter": {}, "subscriber": {"uri": sink.url}},
            "status": {"subscriberUri": sink.url},
        }, TRIGGERS)
        await b.settle()
        assert await b.send("1") == 202
        await sink.wait_for(1)
        dest = {"messaging_destination_name": f"subscription:orders.{NS}"}
        got = await until(b, lambda s: s.value("knpy_eventing_trigger_events_total", **dest,
                                               result="delivered") == 1)
        assert got.value(f"{DISPATCH}_count", otel_scope_name=FANOUT_SCOPE, **dest,
                         http_response_status_code="200") == 1
        assert got.value("knpy_eventing_trigger_events_total", **dest, result="delivered") == 1


def _event(n: int) -> tuple[Event, list[tuple[bytes, bytes]]]:
    attrs: dict[str, object] = {"specversion": "1.0", "id": str(n), "source": "/t", "type": "t"}
    return Event(attrs, b"{}", Form.BINARY), []


async def test_sqlite_depths_from_the_tail_and_after_a_restart_from_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite3"
    log = SqliteEventLog(path, synchronous="NORMAL")
    await log.open()
    try:
        sub = log.subscribe("t1", "ns/b")
        log.subscribe("t2", "ns/c")
        await asyncio.gather(*(log.append("ns/b", [_event(i)]) for i in range(5)))
        await log.append("ns/c", [_event(9), _event(10), _event(11)])
        assert await log.depths() == {"t1": 5, "t2": 3}
        batch = await asyncio.wait_for(sub.next_batch(2), 2)
        assert await log.depths() == {"t1": 5, "t2": 3}  # two in flight, three waiting
        sub.ack(batch[1].seq)  # out of order: the first is still in flight
        assert await log.depths() == {"t1": 4, "t2": 3}
        sub.ack(batch[0].seq)
        assert await log.depths() == {"t1": 3, "t2": 3}
    finally:
        await log.close()
    again = SqliteEventLog(path, synchronous="NORMAL")
    await again.open()
    try:
        again.subscribe("t1", "ns/b")
        again.subscribe("t2", "ns/c")
        assert await again.depths() == {"t1": 3, "t2": 3}  # nothing in memory: counted in SQL
    finally:
        await again.close()


async def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    async with broker_app(tmp_path, metrics_port=0) as b:
        taken = b.app.metrics_port
        assert taken is not None
        with pytest.raises(OSError, match="address already in use"):
            async with broker_app(tmp_path / "second", metrics_port=taken):
                pass


# -- traces --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attrs: dict[str, str]


class OtlpReceiver:
    """``POST /v1/traces`` (OTLP/HTTP protobuf) on loopback, keeping every span."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}/v1/traces"
        self.spans: list[Span] = []
        self.services: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest.FromString(await request.read())
        for rs in req.resource_spans:
            for a in rs.resource.attributes:
                if a.key == "service.name":
                    self.services.add(a.value.string_value)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: a.value.string_value for a in s.attributes}
                    self.spans.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(),
                                           s.parent_span_id.hex(), attrs))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.name == name and s.trace_id == trace_id]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def parse_traceparent(value: str) -> tuple[str, str]:
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16, value
    return trace_id, span_id


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
EXT_TRACE = "0af7651916cd43dd8448eb211c80319c"
EXT_SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize("backend", ["sqlite", "rabbitmq"])
async def test_spans_from_ingress_to_delivery_linked_by_the_traceparent_extension(
    tmp_path: Path, backend: str
) -> None:
    """Before config-observability: no tracing (no traceparent sent, the event untouched).
    Then the ConfigMap turns it on, and one trace runs producer -> ingress span -> delivery
    span -> subscriber, and on through a reply to the next trigger's delivery."""

    def reply(req: Received, _n: int) -> Answer:
        return 200, {"ce-specversion": "1.0", "ce-id": f"r-{req.attr('id')}", "ce-source": "/r",
                     "ce-type": "com.example.reply", "content-type": "text/plain"}, b"re"

    async with receiver() as otlp, APPS[backend](tmp_path) as b:
        replier = await b.sink(reply)
        after = await b.sink()
        await b.add_trigger("replier", replier.url, attributes={"type": "com.example.test"})
        await b.add_trigger("after", after.url, attributes={"type": "com.example.reply"})
        assert await b.send("off") == 202
        (first,) = await replier.wait_for(1)
        assert "traceparent" not in first.headers and "ce-traceparent" not in first.headers

        b.cluster.put({
            "metadata": {"name": "config-observability", "namespace": "knative-eventing"},
            "data": {"tracing-protocol": "http/protobuf", "tracing-endpoint": otlp.url,
                     "tracing-sampling-rate": "1"},
        }, CONFIGMAPS)
        await b.settle()
        assert b.app.ingress.tracer is not None and b.app.dispatcher.tracer is not None

        # 1. the producer's W3C header is the parent
        status, _, _ = await b.post({
            "ce-specversion": "1.0", "ce-id": "traced", "ce-source": "/t",
            "ce-type": "com.example.test", "content-type": "text/plain",
            "traceparent": f"00-{TRACE}-{PRODUCER_SPAN}-01"}, b"x")
        assert status == 202
        # 2. only the event's traceparent extension: still joined
        assert await b.send("ext", traceparent=f"00-{EXT_TRACE}-{EXT_SPAN}-01") == 202
        received = await replier.wait_for(3)
        replies = await after.wait_for(3)  # "off"'s reply too
        # the app has stopped: its spans are flushed

    by_id = {str(r.headers["ce-id"]): r for r in received}
    for event_id, trace_id, parent in (("traced", TRACE, PRODUCER_SPAN),
                                       ("ext", EXT_TRACE, EXT_SPAN)):
        (ingress,) = otlp.named("broker:default.demo", trace_id)
        assert ingress.parent_id == parent
        assert ingress.attrs["cloudevents.id"] == event_id
        assert ingress.attrs["kn.broker.name"] == "default"
        assert ingress.attrs["messaging.destination.name"] == "broker:default.demo"
        (delivery,) = otlp.named("trigger:replier.demo", trace_id)
        assert delivery.parent_id == ingress.span_id
        assert delivery.attrs["cloudevents.type"] == "com.example.test"
        got = by_id[event_id]
        # the subscriber's W3C header is the delivery span; the event carries the ingress's
        assert parse_traceparent(got.headers["traceparent"]) == (trace_id, delivery.span_id)
        assert parse_traceparent(got.headers["ce-traceparent"]) == (trace_id, ingress.span_id)
        # the reply joins the trace: its delivery's parent is the delivery that produced it
        (reply_delivery,) = otlp.named("trigger:after.demo", trace_id)
        assert reply_delivery.parent_id == delivery.span_id
        (r,) = [x for x in replies if x.headers["ce-id"] == f"r-{event_id}"]
        assert parse_traceparent(r.headers["traceparent"]) == (trace_id, reply_delivery.span_id)
    assert otlp.services == {"eventing-broker"}
    assert not [s for s in otlp.spans if s.attrs.get("cloudevents.id") == "off"]


async def test_environment_settings_trace_until_the_configmap_says_otherwise(
    tmp_path: Path,
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT-style settings (ObservabilityConfig.from_env) trace from
    the start; a config-observability with ``tracing-protocol: none`` stops it; deleting the
    ConfigMap brings the environment's back."""
    from shared.observability import ObservabilityConfig

    async with receiver() as otlp:
        env = ObservabilityConfig.from_env(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{otlp.port}"})
        async with broker_app(tmp_path, observability=env) as b:
            sink = await b.sink()
            await b.add_trigger("t", sink.url)
            assert await b.send("1") == 202
            (one,) = await sink.wait_for(1)
            assert "traceparent" in one.headers
            b.cluster.put({"metadata": {"name": "config-observability",
                                        "namespace": "knative-eventing"},
                           "data": {"tracing-protocol": "none"}}, CONFIGMAPS)
            await b.settle()
            assert b.app.ingress.tracer is None
            assert await b.send("2") == 202
            two = (await sink.wait_for(2))[1]
            assert "traceparent" not in two.headers
            await b.cluster.delete(CONFIGMAPS, "knative-eventing", "config-observability")
            await b.settle()
            assert b.app.ingress.tracer is not None
            # a bad update is ignored: the last good settings stay
            b.cluster.put({"metadata": {"name": "config-observability",
                                        "namespace": "knative-eventing"},
                           "data": {"tracing-protocol": "carrier-pigeon"}}, CONFIGMAPS)
            await b.settle()
            assert b.app.ingress.tracer is not None
            assert await b.send("3") == 202
            three = (await sink.wait_for(3))[2]
            assert "traceparent" in three.headers
    ids = {s.attrs.get("cloudevents.id") for s in otlp.spans}
    assert ids == {"1", "3"}


async def test_metrics_served_by_the_broker_process(tmp_path: Path) -> None:
    """``python -m eventing.broker`` serves /metrics on BROKER_METRICS_PORT."""
    from tests.activator.integration.kube import kube_api
    from tests.eventing.test_crash import BrokerProcess

    async with kube_api(tmp_path / "kube") as api:
        proc = BrokerProcess(api.kubeconfig, tmp_path / "state", tmp_path / "broker.log")
        await proc.start()
        url = f"http://{LOOPBACK}:{proc.metrics_port}/metrics"
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as r:
                assert r.status == 200
                text = await r.text()
            assert f"# TYPE {DISPATCH} histogram" in text
            assert "# TYPE knpy_eventing_trigger_queue_depth gauge" in text
        finally:
            proc.kill()
            await proc.wait()


async def test_unsampled_traces_leave_the_event_alone(tmp_path: Path) -> None:
    """Sampling rate 0 (Knative's default rate): no span is recorded or exported and the
    stored event keeps the extension it came with, but the subscriber still gets a W3C
    ``traceparent`` (flags 00, not sampled) to propagate."""
    from shared.observability import ObservabilityConfig

    async with receiver() as otlp:
        env = ObservabilityConfig(tracing_protocol="http/protobuf", tracing_endpoint=otlp.url,
                                  tracing_sampling_rate=0.0)
        async with broker_app(tmp_path, observability=env) as b:
            sink = await b.sink()
            await b.add_trigger("t", sink.url)
            assert b.app.ingress.tracer is not None
            assert await b.send("1", traceparent=f"00-{EXT_TRACE}-{EXT_SPAN}-01") == 202
            (got,) = await sink.wait_for(1)
    assert got.headers["ce-traceparent"] == f"00-{EXT_TRACE}-{EXT_SPAN}-01"
    assert got.headers["traceparent"].endswith("-00")
    assert otlp.spans == []
