"""A Subscription's backing Trigger delivers as Knative's channel dispatcher does
(pkg/kncloudevents/event_dispatcher.go): the subscriber's reply goes to ``spec.reply`` (the
annotation the Subscription controller writes) with the delivery's retries, or is dropped
without one; an answer that is not an event is a success; a reply that cannot be delivered
sends the original event to the dead-letter sink with the reply URL as ``knativeerrordest``.
Over real HTTP, with the data plane's own process objects (tests/eventing/harness.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shared.kube.resources import SUBSCRIPTION_LABEL, SUBSCRIPTION_REPLY_ANNOTATION, TRIGGERS
from tests.eventing.harness import NS, Answer, Broker, Received, Sink, broker_app, fail_first


@pytest.fixture
async def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with broker_app(tmp_path) as b:
        yield b


def _reply(_req: Received, _n: int) -> Answer:
    return 200, {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/sub",
                 "ce-type": "com.example.Reply", "Content-Type": "application/json",
                 "X-Request-Id": "from-the-subscriber"}, b'{"reply": true}'


async def subscription_trigger(broker: Broker, name: str, subscriber: Sink,
                               reply: str | None = None, delivery: Mapping[str, Any] | None = None
                               ) -> None:
    """The Trigger a Subscription makes (controlplane/controllers/channel.py)."""
    m: dict[str, Any] = {"name": f"{name}-kn-sub", "namespace": NS,
                         "labels": {SUBSCRIPTION_LABEL: name}}
    if reply is not None:
        m["annotations"] = {SUBSCRIPTION_REPLY_ANNOTATION: reply}
    spec: dict[str, Any] = {"broker": "default", "filter": {},
                            "subscriber": {"uri": subscriber.url}}
    if delivery is not None:
        spec["delivery"] = dict(delivery)
    broker.cluster.put({"metadata": m, "spec": spec, "status": {"subscriberUri": subscriber.url}},
                       TRIGGERS)
    await broker.settle()


async def test_the_reply_goes_to_spec_reply_not_back_onto_the_channel(broker: Broker) -> None:
    subscriber = await broker.sink(_reply)
    reply_sink, other = await broker.sink(), await broker.sink()
    await subscription_trigger(broker, "s", subscriber, reply=reply_sink.url)
    await subscription_trigger(broker, "other", other)  # another subscription of the channel
    assert await broker.send("e1", type_="com.example.Original") == 202
    (reply,) = await reply_sink.wait_for(1)
    await other.wait_for(1)
    await broker.settle()
    await reply_sink.quiet(0.3)
    assert reply.headers["ce-type"] == "com.example.Reply"
    assert reply.body == b'{"reply": true}'
    assert reply.headers["Kn-Namespace"] == NS
    assert reply.headers["X-Request-Id"] == "from-the-subscriber"  # Knative's allow-list
    # The delivered event's TTL goes with it (255 at the ingress), so a reply routed back
    # to its own channel ends at MAX_TTL.
    assert reply.headers["ce-knativebrokerttl"] == "255"
    assert len(subscriber.received) == 1
    assert [r.headers["ce-type"] for r in await other.quiet(0.3)] == ["com.example.Original"]


async def test_without_spec_reply_the_reply_is_dropped(broker: Broker) -> None:
    subscriber = await broker.sink(_reply)
    other = await broker.sink()
    await subscription_trigger(broker, "s", subscriber)
    await subscription_trigger(broker, "other", other)
    assert await broker.send("e1", type_="com.example.Original") == 202
    await subscriber.wait_for(1)
    await other.wait_for(1)
    await other.quiet(0.3)
    assert [r.headers["ce-type"] for r in other.received] == ["com.example.Original"]
    assert broker.app.dispatcher.workers[_uid(broker, "s-kn-sub")].delivered == 1


async def test_a_non_event_answer_is_a_success(broker: Broker) -> None:
    """Knative's channel dispatcher discards a 2xx answer that is not an event (the 502 of a
    trigger's non-event answer is the broker filter's rule, not the channel's)."""
    dls = await broker.sink()
    subscriber = await broker.sink(lambda r, n: (200, {"Content-Type": "text/plain"}, b"OK"))
    reply_sink = await broker.sink()
    await subscription_trigger(broker, "s", subscriber, reply=reply_sink.url,
                               delivery={"retry": 2, "deadLetterSink": {"uri": dls.url}})
    assert await broker.send("e1") == 202
    await subscriber.wait_for(1)
    await subscriber.quiet(0.3)
    assert len(subscriber.received) == 1
    assert dls.received == [] and reply_sink.received == []


async def test_a_failing_reply_is_retried_alone_then_the_original_is_dead_lettered(
    broker: Broker,
) -> None:
    dls = await broker.sink()
    subscriber = await broker.sink(_reply)
    reply_sink = await broker.sink(fail_first(99, 503, b"reply destination down"))
    delivery = {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.01S",
                "deadLetterSink": {"uri": dls.url}}
    await subscription_trigger(broker, "s", subscriber, reply=reply_sink.url, delivery=delivery)
    assert await broker.send("original", type_="com.example.Original") == 202
    (dead,) = await dls.wait_for(1)
    await reply_sink.quiet(0.3)
    assert len(subscriber.received) == 1  # the subscriber is not asked again
    assert len(reply_sink.received) == 3  # the reply: retry 2, three attempts
    assert dead.headers["ce-id"] == "original"
    assert dead.headers["ce-knativeerrordest"] == reply_sink.url
    assert dead.headers["ce-knativeerrorcode"] == "503"
    assert "ce-knativebrokerttl" not in dead.headers


def _uid(broker: Broker, name: str) -> str:
    obj = broker.cluster.peek(TRIGGERS, NS, name)
    assert obj is not None
    return str(obj["metadata"]["uid"])
