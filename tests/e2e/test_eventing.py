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
