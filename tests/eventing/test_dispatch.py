"""The dispatcher over real HTTP: routing (one delivery per matching trigger), retries and the
backoff schedule under a fake clock, dead-letter sinks and their extensions, replies and the
loop that dies at the TTL, timeouts, and a slow subscriber that holds up no other trigger."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from pathlib import Path

import pytest

from eventing.delivery import CLUSTER_DEFAULT
from shared.kube.resources import TRIGGERS
from tests.eventing.harness import Answer, Broker, Received, broker_app, fail_first
from tests.eventing.test_ingress import FULL_EVENT, STRUCTURED


@pytest.fixture
async def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with broker_app(tmp_path) as b:
        yield b


def fake_clock(broker: Broker) -> list[float]:
    """Make the dispatcher's sleeps instant and record them."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    broker.app.dispatcher.sleep = sleep
    return waits


async def test_routing_table(broker: Broker) -> None:
    """Knative's addControlPlaneEventRouting rows, one broker: filters decide, and two
    triggers with the same subscriber get one delivery each."""
    sinks = {name: await broker.sink() for name in ("all", "mytype", "full", "twin", "none")}
    await broker.add_trigger("all", sinks["all"].url)
    await broker.add_trigger("mytype", sinks["mytype"].url, attributes={"type": "mytype"})
    full = {"type": "com.example.FullEvent"}
    await broker.add_trigger("full", sinks["full"].url, attributes=full)
    await broker.add_trigger("twin", sinks["full"].url, attributes=full)
    await broker.add_trigger(
        "cesql", sinks["twin"].url, filters=[{"cesql": "exint = 42 AND source LIKE 'http%'"}]
    )
    await broker.add_trigger("missing-ext", sinks["none"].url, attributes={"nosuchext": ""})
    assert (await broker.post(STRUCTURED, json.dumps(FULL_EVENT)))[0] == 202
    assert len(await sinks["all"].wait_for(1)) == 1
    assert len(await sinks["full"].wait_for(2)) == 2  # two triggers, one destination
    assert len(await sinks["twin"].wait_for(1)) == 1
    await sinks["all"].quiet(0.2)
    assert not sinks["mytype"].received
    assert not sinks["none"].received
    assert len(sinks["full"].received) == 2


async def test_subscriber_from_spec_when_status_lacks_it(broker: Broker) -> None:
    sink = await broker.sink()
    await broker.add_trigger("t", sink.url, in_status=False)
    assert await broker.send() == 202
    await sink.wait_for(1)


async def test_retries_then_success_with_linear_backoff(broker: Broker) -> None:
    sink = await broker.sink(fail_first(3, 503))
    await broker.add_trigger(
        "t", sink.url, delivery={"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.1S"}
    )
    assert await broker.send() == 202
    received = await sink.wait_for(4)
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    # 0.1 s, 0.2 s, 0.3 s (k * d); loopback and the loop add a little.
    for gap, want in zip(gaps, (0.1, 0.2, 0.3), strict=True):
        assert want - 0.01 <= gap < want + 0.25, gaps
    await sink.quiet(0.2)
    assert len(sink.received) == 4


async def test_cluster_default_schedule_to_the_millisecond(broker: Broker) -> None:
    """A broker without a delivery spec: config-br-defaults (10 retries, exponential PT0.2S)
    against a subscriber that always fails, on a fake clock."""
    waits = fake_clock(broker)
    sink = await broker.sink(fail_first(1000, 500))
    await broker.add_trigger("t", sink.url)
    assert await broker.send() == 202
    await sink.wait_for(11)
    await sink.quiet(0.2)
    assert len(sink.received) == CLUSTER_DEFAULT.attempts == 11
    assert [round(w * 1000) for w in waits] == [
        200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 102400
    ]


async def test_retry_after_honoured_up_to_retry_after_max(broker: Broker) -> None:
    waits = fake_clock(broker)
    sink = await broker.sink(fail_first(2, 429, **{"Retry-After": "120"}))
    await broker.add_trigger(
        "t", sink.url,
        delivery={"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.5S",
                  "retryAfterMax": "PT30S"},
    )
    assert await broker.send() == 202
    await sink.wait_for(3)
    assert waits == [30.0, 30.0]


async def test_trigger_delivery_replaces_broker_delivery(broker: Broker) -> None:
    """Scenario 10(b): broker retry 0; the trigger's retry 3 alone counts."""
    await broker.add_broker("b2", delivery={"retry": 0})
    fake_clock(broker)
    sink = await broker.sink(fail_first(3, 500))
    await broker.add_trigger("t", sink.url, broker="b2", delivery={"retry": 3})
    assert (await broker.post(_binary("x"), b"{}", path="/demo/b2"))[0] == 202
    await sink.wait_for(4)
    assert [r.headers.get("ce-id") for r in sink.received] == ["x"] * 4


def _binary(event_id: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/s", "ce-type": "t"}


@pytest.mark.parametrize(
    ("status", "body", "attempts"),
    [
        pytest.param(422, b"", 1, id="422-not-retried-no-data"),
        pytest.param(422, b'{ "message": "catastrophic failure" }', 1, id="422-with-data"),
        pytest.param(500, b"boom", 3, id="500-retried"),
        pytest.param(302, b"", 1, id="3xx-is-a-failure"),
    ],
)
async def test_dead_letter_extensions(
    broker: Broker, status: int, body: bytes, attempts: int
) -> None:
    fake_clock(broker)
    sink = await broker.sink(fail_first(100, status, body))
    dls = await broker.sink()
    await broker.add_trigger(
        "t", sink.url, delivery={"retry": 2, "deadLetterSink": {"uri": dls.url}}
    )
    assert (await broker.post({**_binary("d1"), "Knative-Keep": "k"}, b'{"a": 1}'))[0] == 202
    (dead,) = await dls.wait_for(1)
    await sink.quiet(0.2)
    assert len(sink.received) == attempts
    h = dead.headers
    assert h["ce-id"] == "d1"
    assert dead.body == b'{"a": 1}'
    assert h["ce-knativeerrordest"] == sink.url
    assert h["ce-knativeerrorcode"] == str(status)
    if body:
        assert base64.b64decode(h["ce-knativeerrordata"]) == body
    else:
        assert "ce-knativeerrordata" not in h
    assert "ce-knativebrokerttl" not in h
    assert h["Knative-Keep"] == "k"
    assert h["Kn-Namespace"] == "demo"
    assert "Prefer" not in h


async def test_error_data_truncated_to_1024(broker: Broker) -> None:
    sink = await broker.sink(fail_first(1, 400, b"e" * 5000))
    dls = await broker.sink()
    await broker.add_trigger("t", sink.url, delivery={"deadLetterSink": {"uri": dls.url}})
    assert await broker.send() == 202
    (dead,) = await dls.wait_for(1)
    assert len(dead.headers["ce-knativeerrordata"]) == 1024


async def test_unreachable_subscriber(broker: Broker) -> None:
    fake_clock(broker)
    dls = await broker.sink()
    gone = "http://127.0.0.1:9/nothing"  # discard port: refused
    await broker.add_trigger(
        "t", gone, delivery={"retry": 1, "deadLetterSink": {"uri": dls.url}}
    )
    assert await broker.send() == 202
    (dead,) = await dls.wait_for(1)
    assert dead.headers["ce-knativeerrordest"] == gone
    assert dead.headers["ce-knativeerrorcode"] == "500"
    assert b"dispatch error" in base64.b64decode(dead.headers["ce-knativeerrordata"])


async def test_subscriber_that_never_answers_times_out(broker: Broker) -> None:
    async def hang(_req: Received, _n: int) -> Answer:
        await asyncio.sleep(3600)
        return 200, {}, b""

    sink = await broker.sink(hang)
    dls = await broker.sink()
    await broker.add_trigger(
        "t", sink.url,
        delivery={"retry": 1, "timeout": "PT0.3S", "deadLetterSink": {"uri": dls.url}},
    )
    start = time.monotonic()
    assert await broker.send() == 202
    (dead,) = await dls.wait_for(1, timeout_s=5)
    assert 0.6 <= time.monotonic() - start < 3
    assert len(sink.received) == 2  # the first attempt and one retry, each cut at 0.3 s
    assert dead.headers["ce-knativeerrorcode"] == "500"


async def test_failing_dead_letter_sink_drops_and_goes_on(broker: Broker) -> None:
    fake_clock(broker)
    sink = await broker.sink(fail_first(1, 400))
    dls = await broker.sink(fail_first(100, 503))
    await broker.add_trigger(
        "t", sink.url, delivery={"retry": 2, "deadLetterSink": {"uri": dls.url}}
    )
    assert await broker.send("lost") == 202
    await dls.wait_for(3)  # the sink's policy retries the DLS too
    assert await broker.send("next") == 202
    await sink.wait_for(2)
    assert sink.received[1].headers["ce-id"] == "next"
    worker = next(iter(broker.app.dispatcher.workers.values()))
    await sink.quiet(0.2)
    assert (worker.dropped, worker.delivered) == (1, 1)


def _reply(type_: str) -> Answer:
    return 200, {"ce-specversion": "1.0", "ce-id": "r1", "ce-source": "/replier",
                 "ce-type": type_, "Content-Type": "application/json"}, b'{"reply": true}'


async def test_reply_reingested_and_routed(broker: Broker) -> None:
    """Scenario 8: t0 gets FullEvent and replies ReplyEvent; only t1 gets the reply."""
    t0 = await broker.sink(lambda r, n: _reply("com.example.ReplyEvent"))
    t1 = await broker.sink()
    await broker.add_trigger("t0", t0.url, attributes={"type": "com.example.FullEvent"})
    await broker.add_trigger("t1", t1.url, attributes={"type": "com.example.ReplyEvent"})
    assert (await broker.post(STRUCTURED, json.dumps(FULL_EVENT)))[0] == 202
    (reply,) = await t1.wait_for(1)
    await t1.quiet(0.2)
    assert [r.attr("type") for r in t0.received] == ["com.example.FullEvent"]
    assert reply.headers["ce-type"] == "com.example.ReplyEvent"
    assert reply.body == b'{"reply": true}'
    assert "ce-knativebrokerttl" not in reply.headers


async def test_reply_loop_dies_at_the_ttl(tmp_path: Path) -> None:
    async with broker_app(tmp_path, max_ttl=5) as broker:
        dls = await broker.sink()
        loop_sink = await broker.sink(lambda r, n: _reply("loop"))
        await broker.add_trigger(
            "loop", loop_sink.url, delivery={"deadLetterSink": {"uri": dls.url}}
        )
        assert await broker.send("start", type_="loop") == 202
        (dead,) = await dls.wait_for(1)
        await loop_sink.quiet(0.3)
        # TTL 5 at ingress, 4, 3, 2, 1 through four replies; the fifth reply would be 0.
        assert len(loop_sink.received) == 5
        assert dead.headers["ce-knativeerrorcode"] == "400"
        assert dead.headers["ce-knativeerrordest"].endswith("/demo/default")


async def test_non_event_2xx_body_is_a_502_not_retried(broker: Broker) -> None:
    sink = await broker.sink(lambda r, n: (200, {"Content-Type": "text/plain"}, b"OK"))
    dls = await broker.sink()
    await broker.add_trigger(
        "t", sink.url, delivery={"retry": 10, "deadLetterSink": {"uri": dls.url}}
    )
    assert await broker.send() == 202
    (dead,) = await dls.wait_for(1)
    assert len(sink.received) == 1
    assert dead.headers["ce-knativeerrorcode"] == "502"
    assert base64.b64decode(dead.headers["ce-knativeerrordata"]) == b"OK"


async def test_202_with_a_body_is_not_a_reply(broker: Broker) -> None:
    sink = await broker.sink(lambda r, n: (202, {}, b"accepted, thanks"))
    other = await broker.sink()
    await broker.add_trigger("t", sink.url, attributes={"type": "com.example.test"})
    await broker.add_trigger("all", other.url)
    assert await broker.send() == 202
    await sink.wait_for(1)
    await other.quiet(0.3)
    assert len(other.received) == 1
    worker = broker.app.dispatcher.workers
    assert sorted(w.delivered for w in worker.values()) == [1, 1]


async def test_slow_subscriber_holds_up_no_other_trigger(tmp_path: Path) -> None:
    async with broker_app(tmp_path, concurrency=2) as broker:
        async def slow(_req: Received, _n: int) -> Answer:
            await asyncio.sleep(1.0)
            return 200, {}, b""

        slow_sink = await broker.sink(slow)
        fast_sink = await broker.sink()
        await broker.add_trigger("slow", slow_sink.url)
        await broker.add_trigger("fast", fast_sink.url)
        start = time.monotonic()
        for i in range(20):
            assert await broker.send(f"e{i}") == 202
        await fast_sink.wait_for(20, timeout_s=5)
        assert time.monotonic() - start < 0.9
        # The slow trigger has only its two slots in flight.
        assert len(slow_sink.received) <= 2


async def test_trigger_moved_then_deleted(broker: Broker) -> None:
    sink = await broker.sink()
    uid = await broker.add_trigger("t", sink.url)
    assert await broker.send("a") == 202
    await sink.wait_for(1)
    await broker.add_broker("other")
    assert await broker.add_trigger("t", sink.url, broker="other") == uid
    assert await broker.send("not-for-t") == 202
    assert (await broker.post(_binary("b"), b"{}", path="/demo/other"))[0] == 202
    await sink.wait_for(2)
    await broker.cluster.delete(TRIGGERS, "demo", "t")
    await broker.settle()
    assert not broker.app.dispatcher.workers
    assert await broker.send("c") == 202  # the loop answers: nothing spins on the old queue
    await sink.quiet(0.2)
    assert [r.headers["ce-id"] for r in sink.received] == ["a", "b"]
    assert uid not in broker.app.log.triggers()
