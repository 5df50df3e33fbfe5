"""The broker under test, its subscribers and its producers, all on 127.0.0.1.

``broker_app`` runs a real ``BrokerApp`` (ingress, dispatcher, SQLite log in a temporary state
dir) in the test's loop, reading Brokers and Triggers from a FakeCluster; ``Sink`` is a real
HTTP subscriber (aiohttp) whose answers a test scripts; ``post`` is a producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from eventing.broker.app import BrokerApp
from eventing.broker.config import BrokerConfig
from shared.kube.fake import FakeCluster
from shared.kube.resources import BROKERS, TRIGGERS, Obj
from shared.ports import LOOPBACK, free_port

NS = "demo"


@dataclass
class Received:
    """One request a sink got."""

    headers: CIMultiDictProxy[str]
    body: bytes
    at: float  # time.monotonic()

    def attr(self, name: str) -> object:
        """A CloudEvent attribute, whichever mode it came in."""
        if self.headers.get("Content-Type", "").startswith("application/cloudevents+json"):
            return json.loads(self.body).get(name)
        if name == "datacontenttype":
            return self.headers.get("Content-Type")
        return self.headers.get(f"ce-{name}")

    @property
    def structured(self) -> Obj:
        doc = json.loads(self.body)
        assert isinstance(doc, dict)
        return doc


# What a sink answers: (status, headers, body); an awaitable may take its time.
Answer = tuple[int, Mapping[str, str], bytes]
Behaviour = Callable[[Received, int], Any]  # (request, its 0-based number) -> Answer


def ok(_req: Received, _n: int) -> Answer:
    return 200, {}, b""


def fail_first(n: int, status: int = 500, body: bytes = b"", **headers: str) -> Behaviour:
    def answer(_req: Received, i: int) -> Answer:
        return (status, headers, body) if i < n else (200, {}, b"")

    return answer


class Sink:
    """A subscriber (or dead-letter sink) on loopback that records every request."""

    def __init__(self, behaviour: Behaviour = ok) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    async def start(self) -> Sink:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        req = Received(request.headers, await request.read(), time.monotonic())
        n = len(self.received)
        self.received.append(req)
        self._changed.set()
        answer = self.behaviour(req, n)
        if asyncio.iscoroutine(answer):
            answer = await answer
        status, headers, body = answer
        return web.Response(status=status, headers=dict(headers), body=body)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """At least ``count`` requests (fails the test after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.received)} requests, expected {count}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.received

    async def wait_for_ids(
        self, want: set[str], timeout_s: float = 20.0
    ) -> tuple[list[str], set[str], int]:
        """Wait until every ``ce-id`` in ``want`` arrived, at most ``timeout_s``: the crash
        tests' loss and duplicate count. Returns the ids received (in order, repeats
        included), those of ``want`` missing, and how many deliveries were repeats."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if want <= {str(r.headers.get("ce-id")) for r in self.received}:
                break
            await asyncio.sleep(0.1)
        ids = [str(r.headers.get("ce-id")) for r in self.received]
        duplicates = sum(c - 1 for c in Counter(ids).values())
        return ids, want - set(ids), duplicates

    async def quiet(self, seconds: float = 0.3) -> list[Received]:
        """What arrived once nothing more came for ``seconds``."""
        await quiet(self, seconds=seconds)
        return self.received


async def quiet(*sinks: Sink, seconds: float = 0.3, timeout_s: float = 20.0) -> None:
    """Until none of ``sinks`` received anything for ``seconds``: what had to come has come.
    Fails the test when they still receive after ``timeout_s`` (a delivery loop), rather than
    waiting for ever."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = sum(len(s.received) for s in sinks)
        await asyncio.sleep(seconds)
        if sum(len(s.received) for s in sinks) == before:
            return
        if time.monotonic() > deadline:
            total = sum(len(s.received) for s in sinks)
            raise AssertionError(f"still receiving after {timeout_s} s ({total} requests)")


@dataclass
class Broker:
    """The running data plane and the cluster it reads."""

    app: BrokerApp
    cluster: FakeCluster
    session: aiohttp.ClientSession
    sinks: list[Sink] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.app.port}"

    def url(self, broker: str = "default", namespace: str = NS) -> str:
        return f"{self.base}/{namespace}/{broker}"

    async def sink(self, behaviour: Behaviour = ok) -> Sink:
        s = await Sink(behaviour).start()
        self.sinks.append(s)
        return s

    async def add_broker(
        self, name: str = "default", delivery: Obj | None = None, **annotations: str
    ) -> None:
        obj: Obj = {
            "metadata": {"name": name, "namespace": NS, "annotations": annotations},
            "spec": {} if delivery is None else {"delivery": delivery},
        }
        self.cluster.put(obj, BROKERS)
        await self.settle()

    async def add_trigger(
        self,
        name: str,
        subscriber: str,
        *,
        broker: str = "default",
        attributes: Mapping[str, str] | None = None,
        filters: list[Obj] | None = None,
        delivery: Obj | None = None,
        in_status: bool = True,
    ) -> str:
        """A Trigger with its subscriber URL resolved in status (as the control plane writes
        it) or, ``in_status=False``, only as ``spec.subscriber.uri``; returns its uid."""
        spec: Obj = {"broker": broker, "subscriber": {"uri": subscriber}}
        if attributes is not None:
            spec["filter"] = {"attributes": dict(attributes)}
        if filters is not None:
            spec["filters"] = filters
        if delivery is not None:
            spec["delivery"] = delivery
        obj: Obj = {"metadata": {"name": name, "namespace": NS}, "spec": spec}
        if in_status:
            obj["status"] = {"subscriberUri": subscriber}
        stored = self.cluster.put(obj, TRIGGERS)
        await self.settle()
        return str(stored["metadata"]["uid"])

    async def settle(self) -> None:
        await self.cluster.settle()
        await asyncio.sleep(0)  # the app's change handler runs call_soon

    async def post(
        self, headers: Mapping[str, str], body: bytes | str = b"", path: str | None = None,
        method: str = "POST",
    ) -> tuple[int, bytes, Mapping[str, str]]:
        data = body.encode() if isinstance(body, str) else body
        payload: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 1 << 20 else data
        async with self.session.request(
            method, self.base + path if path is not None else self.url(), headers=headers,
            data=payload,
        ) as resp:
            return resp.status, await resp.read(), resp.headers

    async def send(self, event_id: str = "1", type_: str = "com.example.test", **extra: str) -> int:
        """A binary-mode event with the given id and extensions; returns the status."""
        headers = {
            "ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/test", "ce-type": type_,
            "content-type": "application/json", **{f"ce-{k}": v for k, v in extra.items()},
        }
        status, _, _ = await self.post(headers, b'{"n": 1}')
        return status


def config(state_dir: Path, **overrides: Any) -> BrokerConfig:
    cfg = BrokerConfig(state_dir=state_dir, bind_host=LOOPBACK, ingress_port=free_port())
    return replace(cfg, **overrides)


@contextlib.asynccontextmanager
async def broker_app(state_dir: Path, **overrides: Any) -> AsyncIterator[Broker]:
    """A BrokerApp over a FakeCluster with the broker ``demo/default`` in it."""
    cluster = FakeCluster()
    app = BrokerApp(config(state_dir, **overrides), cluster)
    await cluster.start()
    await app.start()
    session = aiohttp.ClientSession()
    b = Broker(app, cluster, session)
    try:
        await b.add_broker()
        yield b
    finally:
        await session.close()
        await app.stop()
        for s in b.sinks:
            await s.stop()


async def delete_rabbitmq_names(
    url: str, prefix: str, brokers: list[str], triggers: list[tuple[str, str]]
) -> None:
    """Delete what a test run declared on RabbitMQ: each (trigger uid, broker)'s queue and each
    broker's exchange with its dead-letter pair. RabbitMQ keeps durable names after the
    processes stop (that is its point), and AMQP cannot list by prefix, so by name."""
    import aio_pika

    from eventing.broker.rabbitmq import broker_exchange, trigger_queue

    conn = await aio_pika.connect(url, timeout=5)
    try:
        channel = await conn.channel()
        for uid, broker in triggers:
            await channel.queue_delete(trigger_queue(uid, broker, prefix))
        for broker in brokers:
            name = broker_exchange(broker, prefix)
            await channel.queue_delete(f"{name}.dlq")
            await channel.exchange_delete(f"{name}.dlx")
            await channel.exchange_delete(name)
    finally:
        await conn.close()
