"""The broker ingress over real HTTP: Knative's status table, both content modes and both spec
versions, TTL, the header allow-list, the size limit and batches; and what the subscriber then
gets (the event unchanged but for knativearrivaltime, in the mode it came)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from eventing.broker.ingress import MAX_BODY_BYTES
from tests.eventing.harness import Broker, broker_app

BINARY = {
    "ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/src", "ce-type": "com.example.t",
    "content-type": "application/json",
}
FULL_EVENT = {
    "specversion": "1.0", "type": "com.example.FullEvent", "source": "http://example.com/source",
    "id": "full-event", "time": "2020-03-21T12:34:56.78Z", "dataschema": "http://example.com/schema",
    "subject": "topic", "datacontenttype": "text/json", "data": "hello", "exbool": True,
    "exint": 42, "exstring": "exstring",
}
THRIFT = "application/vnd.apache.thrift.binary"
STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.fixture
async def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with broker_app(tmp_path) as b:
        yield b


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        pytest.param("POST", None, BINARY, b"{}", 202, id="binary-202"),
        pytest.param("POST", None, {**BINARY, "content-type": "application/xml"}, b"<a/>", 202,
                     id="binary-xml"),
        pytest.param("POST", None, {**BINARY, "content-type": THRIFT}, b"\x00\x01", 202,
                     id="binary-thrift"),
        pytest.param("POST", None, STRUCTURED, json.dumps(FULL_EVENT), 202, id="structured-202"),
        pytest.param("POST", None, STRUCTURED, json.dumps({**FULL_EVENT, "specversion": "0.3"}),
                     202, id="structured-0.3"),
        pytest.param("POST", None, {**BINARY, "ce-specversion": "0.3"}, b"{}", 202,
                     id="binary-0.3"),
        pytest.param("POST", None, {**BINARY, "ce-specversion": "19.0"}, b"{}", 400,
                     id="unknown-specversion"),
        pytest.param("POST", None, {k: v for k, v in BINARY.items() if k != "ce-specversion"},
                     b"{}", 400, id="no-specversion"),
        pytest.param("POST", None, {k: v for k, v in BINARY.items() if k != "ce-id"}, b"{}", 400,
                     id="no-id"),
        pytest.param("POST", None, {**BINARY, "ce-source": ""}, b"{}", 400, id="empty-source"),
        pytest.param("POST", None, {**BINARY, "ce-time": "yesterday"}, b"{}", 400, id="bad-time"),
        pytest.param("POST", None, {**BINARY, "ce-Bad_Name": "x"}, b"{}", 400, id="bad-ext-name"),
        pytest.param("POST", None, STRUCTURED, b"{not json", 400, id="structured-not-json"),
        pytest.param("POST", None, STRUCTURED, b"[1]", 400, id="structured-not-object"),
        pytest.param("POST", None, {"content-type": "application/cloudevents+xml"}, b"<e/>", 400,
                     id="unknown-format"),
        pytest.param("POST", None, {"content-type": "text/plain"}, b"hello", 400,
                     id="not-an-event"),
        pytest.param("GET", None, BINARY, b"", 405, id="get-405"),
        pytest.param("PUT", None, BINARY, b"{}", 405, id="put-405"),
        pytest.param("POST", "/", BINARY, b"{}", 404, id="root-404"),
        pytest.param("POST", "/demo", BINARY, b"{}", 400, id="short-path-400"),
        pytest.param("POST", "/demo/default/extra", BINARY, b"{}", 400, id="long-path-400"),
        pytest.param("POST", "/demo/nope", BINARY, b"{}", 404, id="unknown-broker-404"),
        pytest.param("POST", "/other/default", BINARY, b"{}", 404, id="other-namespace-404"),
        pytest.param("POST", "/demo/default/", BINARY, b"{}", 202, id="trailing-slash"),
        pytest.param("POST", None, {**BINARY, "ce-knativebrokerttl": "1"}, b"{}", 400,
                     id="ttl-1-used-up"),
        pytest.param("POST", None, {**BINARY, "ce-knativebrokerttl": "0"}, b"{}", 400,
                     id="ttl-0"),
        pytest.param("POST", None, {**BINARY, "ce-knativebrokerttl": "2"}, b"{}", 202,
                     id="ttl-2-ok"),
    ],
)
async def test_status_table(
    broker: Broker, method: str, path: str | None, headers: dict[str, str], body: bytes | str,
    status: int,
) -> None:
    got, text, answer_headers = await broker.post(headers, body, path=path, method=method)
    assert got == status, text
    if status == 405:
        assert answer_headers["Allow"] == "POST, OPTIONS"
    if status >= 400:
        assert text  # a short reason


async def test_options_webhook_handshake(broker: Broker) -> None:
    status, _, headers = await broker.post(
        {"WebHook-Request-Origin": "eventemitter.example.com"}, method="OPTIONS"
    )
    assert status == 200
    assert headers["Allow"] == "POST, OPTIONS"
    assert headers["WebHook-Allowed-Origin"] == "*"
    assert headers["WebHook-Allowed-Rate"] == "*"


async def test_readiness(broker: Broker) -> None:
    status, body, _ = await broker.post({}, path="/healthz", method="GET")
    assert (status, body) == (200, b"ok\n")


async def test_broker_of_another_class_is_not_ours(broker: Broker) -> None:
    await broker.add_broker("rabbit", **{"eventing.knative.dev/broker.class": "RabbitMQBroker"})
    status, _, _ = await broker.post(BINARY, b"{}", path="/demo/rabbit")
    assert status == 404


async def test_413_beyond_the_limit_and_the_connection_survives_for_others(broker: Broker) -> None:
    big = b"x" * (10 * 1024 * 1024)
    status, text, _ = await broker.post(BINARY, big)
    assert status == 413
    assert str(MAX_BODY_BYTES).encode() in text
    # Just under the limit is stored.
    status, _, _ = await broker.post(BINARY, b"y" * (MAX_BODY_BYTES - 16))
    assert status == 202


async def test_binary_delivered_unchanged_with_arrival_time(broker: Broker) -> None:
    sink = await broker.sink()
    await broker.add_trigger("all", sink.url)
    headers = {
        **BINARY, "ce-subject": "caf%C3%A9 au lait", "ce-exint": "42",
        "X-Request-Id": "req-7", "Knative-Foo": "bar", "X-B3-TraceId": "abc",
        "Authorization": "Bearer secret", "Cookie": "c=1", "X-Other": "no",
    }
    assert (await broker.post(headers, b'{"hello": "world"}'))[0] == 202
    (got,) = await sink.wait_for(1)
    h = got.headers
    assert got.body == b'{"hello": "world"}'
    assert h["Content-Type"] == "application/json"
    for name in ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-exint"):
        assert h[name] == headers[name]
    # The same value, percent-encoded as the HTTP binding says (the space too).
    assert got.attr("subject") == "caf%C3%A9%20au%20lait"
    assert "ce-knativebrokerttl" not in h  # the broker's own, removed before delivery
    assert h["ce-knativearrivaltime"].endswith("Z")
    # Knative's allow-list passes; nothing else of the producer's does.
    assert (h["X-Request-Id"], h["Knative-Foo"], h["X-B3-TraceId"]) == ("req-7", "bar", "abc")
    for name in ("Authorization", "Cookie", "X-Other"):
        assert name not in h
    assert h["Prefer"] == "reply"
    assert h["Kn-Namespace"] == "demo"


async def test_structured_delivered_structured(broker: Broker) -> None:
    sink = await broker.sink()
    await broker.add_trigger("all", sink.url)
    event = {**FULL_EVENT, "datacontenttype": "application/json", "data": {"n": [1, 2.5, "é"]}}
    assert (await broker.post(STRUCTURED, json.dumps(event)))[0] == 202
    (got,) = await sink.wait_for(1)
    assert got.headers["Content-Type"].startswith("application/cloudevents+json")
    doc = got.structured
    assert doc.pop("knativearrivaltime")
    assert doc == event


@pytest.mark.parametrize(
    ("fmt", "structured"), [pytest.param("json", True, id="json"),
                            pytest.param("binary", False, id="binary")],
)
async def test_delivery_format(broker: Broker, fmt: str, structured: bool) -> None:
    sink = await broker.sink()
    await broker.add_trigger("t", sink.url, delivery={"format": fmt})
    assert (await broker.post(STRUCTURED, json.dumps(FULL_EVENT)))[0] == 202
    assert (await broker.post(BINARY, b'{"a": 1}'))[0] == 202
    received = await sink.wait_for(2)
    for got in received:
        is_structured = got.headers["Content-Type"].startswith("application/cloudevents")
        assert is_structured is structured
    by_id = {r.attr("id"): r for r in received}
    full = by_id["full-event"]
    assert full.attr("exint") in (42, "42")
    assert full.attr("subject") == "topic"
    if structured:
        assert by_id["b-1"].structured["data"] == {"a": 1}
    else:
        assert full.body == b'"hello"'  # text/json is JSON: the string, as JSON


async def test_ttl_stored_decremented_and_reattached(broker: Broker, tmp_path: Path) -> None:
    """knativebrokerttl: 255 when absent, one less when present; invisible to subscribers
    (checked above) but stored with the event."""
    records = []
    real_append = broker.app.log.append

    def spy(b, recs):  # type: ignore[no-untyped-def]
        records.extend(recs)
        return real_append(b, recs)

    broker.app.log.append = spy  # type: ignore[method-assign]
    assert (await broker.post(BINARY, b"{}"))[0] == 202
    assert (await broker.post({**BINARY, "ce-knativebrokerttl": "7"}, b"{}"))[0] == 202
    assert (await broker.post({**BINARY, "ce-knativebrokerttl": "abc"}, b"{}"))[0] == 202
    ttls = [ev.attrs["knativebrokerttl"] for ev, _ in records]
    assert ttls == [255, 6, 255]


async def test_batch_all_or_nothing(broker: Broker) -> None:
    sink = await broker.sink()
    await broker.add_trigger("all", sink.url)
    batch = [{**FULL_EVENT, "id": f"b{i}"} for i in range(3)]
    ctype = {"content-type": "application/cloudevents-batch+json"}
    assert (await broker.post(ctype, json.dumps(batch)))[0] == 202
    bad = [*batch, {"specversion": "1.0", "id": "x"}]
    assert (await broker.post(ctype, json.dumps(bad)))[0] == 400
    received = await sink.wait_for(3)
    await sink.quiet(0.2)
    assert sorted(str(r.attr("id")) for r in received) == ["b0", "b1", "b2"]


async def test_pipelined_requests_answered_in_order(broker: Broker) -> None:
    """Three requests in one write: three answers, in order, on one connection."""
    body = b"{}"
    one = (
        b"POST /demo/default HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: %b\r\n"
        b"ce-source: /s\r\nce-type: t\r\nContent-Length: 2\r\n\r\n" + body
    )
    bad = b"POST /demo/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.app.port)
    writer.write(one % b"p1" + bad + one % b"p2")
    await writer.drain()
    data = b""
    while data.count(b"HTTP/1.1 ") < 3:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk
        data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", data)
    assert statuses == [b"202", b"400", b"202"]
    writer.close()
    await writer.wait_closed()


async def test_413_for_a_chunked_body_past_the_limit(broker: Broker) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"z" * (1024 * 1024)

    async with broker.session.post(broker.url(), data=chunks(), headers=BINARY) as resp:
        assert resp.status == 413


async def test_413_before_the_body_with_expect_100_continue(broker: Broker) -> None:
    """The refusal comes from the head alone: the client need not send 10 MB to learn it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.app.port)
    writer.write(
        b"POST /demo/default HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: 1\r\n"
        b"ce-source: /s\r\nce-type: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 10485760\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in head
    writer.close()
    await writer.wait_closed()
