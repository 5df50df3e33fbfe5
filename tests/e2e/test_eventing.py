"""Eventing through a real ``knpy serve``: a Broker and two filtered Triggers whose
subscribers are Knative Services running ``knpy listen``; ``knpy send`` publishes; each
service prints exactly the events its trigger matches. A failing subscriber's events reach
the dead-letter sink with Knative's error extensions. Both scenarios share one platform (two
namespaces) to keep the test short."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .harness import EXAMPLES, Serve

BROKER_TRIGGERS = (EXAMPLES / "eventing" / "broker-triggers" / "broker.yaml").read_text()
DEAD_LETTER = (EXAMPLES / "eventing" / "dead-letter" / "dls.yaml").read_text()
WAIT_READY_S = 90.0  # four services and the broker's pod on a loaded machine


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or ())


async def _all_ready(serve: Serve, kind: str, names: set[str], namespace: str) -> bool:
    _, out, _ = await serve.knpy("get", kind, "-n", namespace, "-o", "json")
    items = json.loads(out)["items"]
    return {i["metadata"]["name"] for i in items if _ready(i)} >= names


async def _events(serve: Serve, service: str, namespace: str = "default") -> list[str]:
    """The ids of the events a display printed, in order."""
    _, out, _ = await serve.knpy("logs", service, "-n", namespace, check=False)
    return [line.split("id: ", 1)[1].strip() for line in out.splitlines()
            if line.startswith("  id: ")]


async def _log(serve: Serve, service: str, namespace: str) -> str:
    _, out, _ = await serve.knpy("logs", service, "-n", namespace, check=False)
    return out


async def test_triggers_filter_and_dead_letters(serve: Callable[..., Serve]) -> None:
    s = serve()
    dls = DEAD_LETTER.replace("namespace: default", "namespace: dls")
    await s.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: dls}\n")
    await s.apply(BROKER_TRIGGERS)
    await s.apply(dls)

    async def ready() -> bool:
        return (
            await _all_ready(s, "triggers", {"orders", "payments"}, "default")
            and await _all_ready(s, "triggers", {"orders"}, "dls")
            and await _all_ready(s, "services", {"orders-display", "payments-display"}, "default")
            and await _all_ready(s, "services", {"failing", "dead-letters"}, "dls")
        )

    await s.until(ready, "the brokers, triggers and services to be Ready", WAIT_READY_S)
    triggers = (await s.get("triggers"))["items"]
    by_name = {(t["metadata"]["namespace"], t["metadata"]["name"]): t for t in triggers}
    assert by_name[("default", "orders")]["status"]["subscriberUri"] == (
        f"http://orders-display.default.localhost:{s.port}")
    assert by_name[("dls", "orders")]["status"]["deadLetterSinkUri"] == (
        f"http://dead-letters.dls.localhost:{s.port}")

    sends = [
        ("o1", "order.created", "shop"),
        ("p1", "payment.received", "bank"),
        ("o2", "order.created", "shop"),
        ("x1", "payment.received", "elsewhere"),  # the CESQL part of `payments` refuses it
        ("x2", "order.cancelled", "shop"),  # no trigger
        ("p2", "payment.sent", "bank"),
    ]
    for event_id, type_, source in sends:
        _, out, _ = await s.knpy("send", "--to", "default", "--id", event_id, "--type", type_,
                                 "--source", source, "-d", '{"n": 1}')
        assert out.strip().endswith(": 202 Accepted"), out
    _, out, _ = await s.knpy("send", "--to", "default", "-n", "dls", "--id", "d1",
                             "--type", "order.created", "--mode", "structured", "-d", "{}")
    assert "202 Accepted" in out

    async def delivered() -> bool:
        return (
            len(await _events(s, "orders-display")) >= 2
            and len(await _events(s, "payments-display")) >= 2
            and "d1" in await _events(s, "dead-letters", "dls")
        )

    await s.until(delivered, "every delivery", 60.0)
    assert sorted(await _events(s, "orders-display")) == ["o1", "o2"]
    assert sorted(await _events(s, "payments-display")) == ["p1", "p2"]
    # retry: 2 -> three attempts at the failing subscriber, then the dead-letter sink once.
    assert await _events(s, "failing", "dls") == ["d1", "d1", "d1"]
    dead = await _log(s, "dead-letters", "dls")
    assert dead.count("cloudevents.Event") == 1
    assert "  knativeerrorcode: 500" in dead
    assert f"  knativeerrordest: http://failing.dls.localhost:{s.port}" in dead
    await s.stop()


REPLY_CHAIN = (EXAMPLES / "eventing" / "reply-chain" / "chain.yaml").read_text()
MORE = """
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick, namespace: default}
spec:
  schedule: "*/2 * * * * *"
  contentType: application/json
  data: '{"tick": true}'
  ceOverrides: {extensions: {team: demo}}
  sink:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: processed-display}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: ch, namespace: default}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: sub, namespace: default}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: ch}
  subscriber:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: processed-display}
---
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata: {name: heartbeat, namespace: default}
spec:
  template:
    spec:
      containers:
        - name: heartbeat
          image: knpy/heartbeat
          command: [python, examples/eventing/containersource/heartbeat.py]
  ceOverrides: {extensions: {team: beats}}
  sink:
    ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: processed-display}
"""


async def test_reply_chain_sources_and_channel(serve: Callable[..., Serve]) -> None:
    s = serve()
    await s.apply(REPLY_CHAIN)
    await s.apply(MORE)

    async def ready() -> bool:
        return (
            await _all_ready(s, "triggers", {"process-orders", "show-processed"}, "default")
            and await _all_ready(s, "services", {"processor", "processed-display"}, "default")
            and await _all_ready(s, "subscriptions", {"sub"}, "default")
            and await _all_ready(s, "pingsources", {"tick"}, "default")
            and await _all_ready(s, "containersources", {"heartbeat"}, "default")
        )

    await s.until(ready, "the triggers, services, subscription and ping source", WAIT_READY_S)
    _, out, _ = await s.knpy("send", "--to", "default", "--id", "o7", "--type", "order.created",
                             "--source", "shop", "-d", '{"order": 7}')
    assert "202 Accepted" in out
    channel = (await s.get("channels", "ch"))["status"]["address"]["url"]
    _, out, _ = await s.knpy("send", "--to", channel, "--id", "c1", "-d", "on the channel")
    assert "202 Accepted" in out

    async def seen() -> bool:
        text = await _log(s, "processed-display", "default")
        return ("type: order.processed" in text and "id: c1" in text
                and text.count("type: dev.knative.sources.ping") >= 2
                and "type: dev.knpy.samples.heartbeat" in text)

    await s.until(seen, "the reply, the channel's event, two pings and a heartbeat", 60.0)
    text = await _log(s, "processed-display", "default")
    events = text.split("☁️  cloudevents.Event")[1:]
    reply = next(e for e in events if "type: order.processed" in e)
    assert "  source: knpy/listen" in reply and '"order": 7' in reply
    assert "knativearrivaltime" in reply  # it went back through the broker
    pings = [e for e in events if "type: dev.knative.sources.ping" in e]
    assert all("  source: /apis/v1/namespaces/default/pingsources/tick" in p for p in pings)
    assert all("  team: demo" in p and '"tick": true' in p for p in pings)
    seconds = [int(line.split("time: ", 1)[1][17:19]) for p in pings
               for line in p.splitlines() if line.startswith("  time: ")]
    assert seconds and all(sec % 2 == 0 for sec in seconds), seconds
    beat = next(e for e in events if "type: dev.knpy.samples.heartbeat" in e)
    assert "  team: beats" in beat  # K_CE_OVERRIDES reached the container (and K_SINK)
    assert "  id: o7" in await _log(s, "processor", "default")
    await s.stop()
