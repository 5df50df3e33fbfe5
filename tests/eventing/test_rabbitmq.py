"""The ``RabbitMQBroker`` class on the real RabbitMQ at 127.0.0.1:5672 (started before every
session and CI run; unreachable is a failure, not a skip).

The behaviour tests of the default class (test_ingress, test_dispatch) run here again, with a
``broker`` fixture whose data plane stores in RabbitMQ and serves RabbitMQBroker brokers: the
same functions, imported, so both classes answer to one specification. Then what is RabbitMQ's
own: the exchange, queues and dead-lettering it declares, class selection, and split ingress
and dispatcher processes with a dispatcher SIGKILLed mid-stream (every acknowledged event is
delivered after the restart). Every test names its exchanges and queues with a random prefix
and deletes them at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from eventing.broker.app import BrokerApp
from eventing.broker.backend import StoreError
from eventing.broker.config import RABBITMQ_DEFAULT_URL
from eventing.broker.rabbitmq import (
    RabbitMQEventLog,
    _encode,
    broker_exchange,
    trigger_queue,
)
from shared.cloudevent import Event, Form
from shared.kube.fake import FakeCluster
from shared.kube.resources import (
    BROKER_CLASS_ANNOTATION,
    BROKERS,
    DEFAULT_BROKER_CLASS,
    NAMESPACES,
    RABBITMQ_BROKER_CLASS,
    TRIGGERS,
    Obj,
)
from shared.ports import LOOPBACK, free_port
from tests.activator.integration.kube import kube_api
from tests.eventing import test_dispatch
from tests.eventing.harness import (
    NS,
    Answer,
    Broker,
    Received,
    Sink,
    config,
    delete_rabbitmq_names,
)
from tests.eventing.test_crash import BrokerProcess, produce
from tests.eventing.test_dispatch import (  # noqa: F401  (collected here, on RabbitMQ)
    test_202_with_a_body_is_not_a_reply,
    test_cluster_default_schedule_to_the_millisecond,
    test_dead_letter_extensions,
    test_failing_dead_letter_sink_drops_and_goes_on,
    test_non_event_2xx_body_is_a_502_not_retried,
    test_reply_reingested_and_routed,
    test_retries_then_success_with_linear_backoff,
    test_routing_table,
    test_subscriber_from_spec_when_status_lacks_it,
    test_trigger_delivery_replaces_broker_delivery,
    test_trigger_moved_then_deleted,
)
from tests.eventing.test_ingress import (  # noqa: F401  (collected here, on RabbitMQ)
    BINARY,
    test_batch_all_or_nothing,
    test_binary_delivered_unchanged_with_arrival_time,
    test_delivery_format,
    test_structured_delivered_structured,
)

URL = os.environ.get("RABBITMQ_URL", RABBITMQ_DEFAULT_URL)
CLASS = {BROKER_CLASS_ANNOTATION: RABBITMQ_BROKER_CLASS}


async def _require_rabbitmq() -> None:
    try:
        conn = await aio_pika.connect(URL, timeout=5)
    except Exception as err:
        pytest.fail(
            f"RabbitMQ is not reachable at {URL.rsplit('@', 1)[-1]} ({err!r}): these tests need "
            "the real one (CI and every session start it on 127.0.0.1:5672, guest/guest)",
            pytrace=False,
        )
    await conn.close()


async def _cleanup(prefix: str, brokers: list[str], triggers: list[str]) -> None:
    """Delete what a test declared: every trigger's queue on every broker, and the brokers."""
    pairs = [(uid, b) for uid in triggers for b in brokers]
    await delete_rabbitmq_names(URL, prefix, brokers, pairs)


def _names(app: BrokerApp) -> tuple[list[str], list[str]]:
    """The brokers and trigger uids the app's informers know."""
    brokers = [f"{b['metadata']['namespace']}/{b['metadata']['name']}" for b in
               app.cluster.brokers.list()]
    triggers = [str(t["metadata"]["uid"]) for t in app.cluster.triggers.list()]
    return brokers, triggers


class RabbitBroker(Broker):
    """The harness's Broker, its brokers of the RabbitMQBroker class unless told otherwise."""

    async def add_broker(
        self, name: str = "default", delivery: Obj | None = None, **annotations: str
    ) -> None:
        await super().add_broker(name, delivery, **{**CLASS, **annotations})


@contextlib.asynccontextmanager
async def rabbit_app(state_dir: Path, **overrides: Any) -> AsyncIterator[RabbitBroker]:
    """A BrokerApp on RabbitMQ (a random name prefix) serving RabbitMQBroker brokers."""
    await _require_rabbitmq()
    prefix = f"knpy-test-{secrets.token_hex(4)}."
    cfg = replace(
        config(state_dir, **overrides), backend="rabbitmq", rabbitmq_url=URL,
        rabbitmq_prefix=prefix, broker_class=RABBITMQ_BROKER_CLASS,
    )
    cluster = FakeCluster()
    app = BrokerApp(cfg, cluster)
    await cluster.start()
    await app.start()
    session = aiohttp.ClientSession()
    b = RabbitBroker(app, cluster, session)
    try:
        await b.add_broker()
        yield b
    finally:
        brokers, triggers = _names(app)
        triggers.extend(app.dispatcher.workers)
        await session.close()
        await app.stop()
        for s in b.sinks:
            await s.stop()
        await _cleanup(prefix, brokers, sorted(set(triggers)))


@pytest.fixture
async def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with rabbit_app(tmp_path) as b:
        yield b


@pytest.mark.parametrize(
    "original",
    [
        test_dispatch.test_reply_loop_dies_at_the_ttl,
        test_dispatch.test_slow_subscriber_holds_up_no_other_trigger,
    ],
    ids=lambda f: f.__name__,
)
async def test_dispatch_with_its_own_app(
    original: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatch tests that start their own app (a TTL, a concurrency), on RabbitMQ (with
    ``concurrency=2`` the trigger's prefetch is 2 too)."""
    monkeypatch.setattr(test_dispatch, "broker_app", rabbit_app)
    await original(tmp_path)


# -- RabbitMQ's own -------------------------------------------------------------------------
async def test_shapes_exchange_queue_and_dead_letter_queue(broker: Broker) -> None:
    """A durable exchange per broker, a durable quorum queue per trigger bound to it, and the
    broker's DLX/DLQ taking a message no dispatcher can decode."""
    log = broker.app.log
    assert isinstance(log, RabbitMQEventLog)
    sink = await broker.sink()
    uid = await broker.add_trigger("t", sink.url)
    assert await broker.send("1") == 202
    await sink.wait_for(1)
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel()
        name = broker_exchange(f"{NS}/default", log.prefix)
        # passive declarations fail when the object is absent
        await ch.get_exchange(name, ensure=True)
        await ch.get_exchange(f"{name}.dlx", ensure=True)
        q = await ch.get_queue(trigger_queue(uid, f"{NS}/default", log.prefix), ensure=True)
        exchange = await ch.get_exchange(name)
        await exchange.publish(aio_pika.Message(b"\x00garbage"), routing_key="")
        dlq = await ch.get_queue(f"{name}.dlq", ensure=True)
        deadline = time.monotonic() + 5
        got = None
        while got is None and time.monotonic() < deadline:
            got = await dlq.get(fail=False, no_ack=True)
            await asyncio.sleep(0.05)
        assert got is not None and got.body == b"\x00garbage"
        assert q.name.startswith(log.prefix)
    finally:
        await conn.close()
    assert len(await sink.quiet(0.2)) == 1  # the garbage reached no subscriber


async def test_default_class_broker_is_not_served(broker: Broker) -> None:
    """A Broker without the annotation is the default class's; another class's is not ours."""
    broker.cluster.put({"metadata": {"name": "plain", "namespace": NS}, "spec": {}}, BROKERS)
    await broker.add_broker("mt", **{BROKER_CLASS_ANNOTATION: DEFAULT_BROKER_CLASS})
    await broker.settle()
    for name in ("plain", "mt"):
        status, _, _ = await broker.post(BINARY, b"{}", path=f"/{NS}/{name}")
        assert status == 404, name
    assert (await broker.post(BINARY, b"{}"))[0] == 202


async def test_acknowledged_survives_the_dispatcher_and_waits_in_the_queue(
    tmp_path: Path,
) -> None:
    """202 means RabbitMQ has it: events acknowledged while no dispatcher ran are delivered by
    a dispatcher started afterwards, from the trigger's queue."""
    await _require_rabbitmq()
    prefix = f"knpy-test-{secrets.token_hex(4)}."
    log = RabbitMQEventLog(URL, prefix=prefix)
    await log.open()
    uid = "trigger-1"
    try:
        sub = log.subscribe(uid, f"{NS}/default")
        first = asyncio.ensure_future(sub.next_batch(10))
        await log.append(f"{NS}/default", [(Event({"id": "e0"}, b"x", Form.BINARY), [])])
        assert [r.event.attrs["id"] for r in await first] == ["e0"]
        await log.close()  # unacked: back to the queue
        log = RabbitMQEventLog(URL, prefix=prefix)
        await log.open()
        events = [(Event({"id": f"e{i}"}, None, Form.STRUCTURED_NONE), []) for i in (1, 2)]
        await log.append(f"{NS}/default", events)  # one message, two records
        sub = log.subscribe(uid, f"{NS}/default")
        got: list[str] = []
        while len(got) < 3:
            for rec in await asyncio.wait_for(sub.next_batch(10), 10):
                got.append(str(rec.event.attrs["id"]))
                sub.ack(rec.seq)
        assert sorted(got) == ["e0", "e1", "e2"]
    finally:
        await log.close()
        await _cleanup(prefix, [f"{NS}/default"], [uid])


async def test_unreachable_rabbitmq_is_a_clear_error(tmp_path: Path) -> None:
    """The backend raises StoreError naming the server; the process exits 1 saying so."""
    port = free_port()
    log = RabbitMQEventLog(f"amqp://guest:guest@{LOOPBACK}:{port}/")
    with pytest.raises(StoreError, match=f"RabbitMQ at {LOOPBACK}:{port}"):
        await log.open()
    async with kube_api(tmp_path / "kube") as api:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventing.broker", "--backend", "rabbitmq",
            "--rabbitmq-url", f"amqp://guest:guest@{LOOPBACK}:{port}/",
            "--kubeconfig", str(api.kubeconfig),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, err
    assert f"broker: RabbitMQ at {LOOPBACK}:{port}".encode() in err


def test_encoding_round_trips() -> None:
    from eventing.broker.rabbitmq import _decode

    records = [
        (Event({"id": "a", "exint": 4}, b"\x00\xff", Form.BINARY), [(b"traceparent", b"00-x")]),
        (Event({"id": "b"}, None, Form.STRUCTURED_NONE), []),
        (Event({"id": "c"}, b"", Form.STRUCTURED_JSON), []),
    ]
    assert _decode(_encode(records)) == records
    with pytest.raises(ValueError):
        _decode(b"\x00\x00\x00\x05{}")


# -- split processes, a dispatcher SIGKILLed mid-stream ---------------------------------------
class Proc(BrokerProcess):
    """One ``python -m eventing.broker --backend rabbitmq --role ROLE`` (kill/wait inherited)."""

    def __init__(self, role: str, kubeconfig: Path, prefix: str, log: Path) -> None:
        super().__init__(kubeconfig, log.parent, log)
        self.role, self.prefix = role, prefix

    async def start(self) -> None:
        env = {
            **os.environ, "BROKER_BIND_HOST": LOOPBACK, "INGRESS_PORT": str(self.port),
            "BROKER_METRICS_PORT": str(self.metrics_port),
            "BROKER_TRIGGER_CONCURRENCY": "2", "BROKER_RABBITMQ_PREFIX": self.prefix,
        }
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eventing.broker", "--kubeconfig", str(self.kubeconfig),
                "--backend", "rabbitmq", "--rabbitmq-url", URL, "--role", self.role,
                env=env, stdout=out, stderr=out, start_new_session=True,
            )

    async def ready(self) -> None:
        """The ingress answers /healthz; a dispatcher has printed its start line."""
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.returncode is None, \
                    self.log.read_text()
                if self.role == "dispatcher":
                    if b"dispatcher only" in self.log.read_bytes():
                        return
                else:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with session.get(f"http://{LOOPBACK}:{self.port}/healthz") as r:
                            if r.status == 200:
                                return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.role} did not start:\n{self.log.read_text()}")


_PROBES = ("ready-probe-0", "ready-probe-1")


async def _until_delivered(sink: Sink, urls: list[str], timeout_s: float = 20.0) -> None:
    """Send a probe event through each ingress until it reaches ``sink``."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        for url, probe in zip(urls, _PROBES, strict=True):
            headers = {
                "ce-specversion": "1.0", "ce-id": probe, "ce-source": "/ready",
                "ce-type": "ready.probe", "content-type": "application/json",
            }
            while not any(r.headers.get("ce-id") == probe for r in sink.received):
                assert time.monotonic() < deadline, f"{probe} never reached the subscriber"
                async with session.post(url, data=b"{}", headers=headers) as r:
                    assert r.status == 202, r.status
                await asyncio.sleep(0.2)


async def test_dispatcher_sigkilled_mid_stream_loses_no_acknowledged_event(
    tmp_path: Path,
) -> None:
    """Two ingress replicas, two dispatcher replicas on one RabbitMQ; the dispatchers are
    SIGKILLed mid-stream, one restarts: every acknowledged event reaches the subscriber."""
    await _require_rabbitmq()
    slow = True

    async def answer(_req: Received, _n: int) -> Answer:
        if slow:
            await asyncio.sleep(0.02)
        return 200, {}, b""

    prefix = f"knpy-test-{secrets.token_hex(4)}."
    sink = await Sink(answer).start()
    procs: list[Proc] = []
    uid = ""
    try:
        async with kube_api(tmp_path / "kube") as api:
            kube = api.client
            await kube.create(NAMESPACES, "", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS},
            })
            await kube.create(BROKERS, NS, {
                "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                "metadata": {"name": "default", "namespace": NS, "annotations": CLASS},
                "spec": {},
            })
            trig = await kube.create(TRIGGERS, NS, {
                "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                "metadata": {"name": "all", "namespace": NS},
                "spec": {"broker": "default", "subscriber": {"uri": sink.url}},
            })
            uid = str(trig["metadata"]["uid"])
            logs = tmp_path / "broker.log"

            def proc(role: str) -> Proc:
                p = Proc(role, api.kubeconfig, prefix, logs)
                procs.append(p)
                return p

            ingresses = [proc("ingress"), proc("ingress")]
            dispatchers = [proc("dispatcher"), proc("dispatcher")]
            for p in procs:
                await p.start()
            for p in procs:
                await p.ready()
            # Ready as Knative's conformance tests take it (the Trigger delivers), not only the
            # processes up: a dispatcher prints its start line before it has declared and bound
            # the trigger's queue, and RabbitMQ drops what the ingress publishes to an exchange
            # with no queue bound yet (events sent before a trigger is ready are not its own).
            urls = [f"http://{LOOPBACK}:{i.port}/{NS}/default" for i in ingresses]
            await _until_delivered(sink, urls)
            acked: list[str] = []
            stop = asyncio.Event()
            producers = [
                asyncio.create_task(produce(
                    f"http://{LOOPBACK}:{ingresses[n % 2].port}/{NS}/default", acked, f"p{n}",
                    stop,
                ))
                for n in range(8)
            ]
            deadline = time.monotonic() + 20
            while len(acked) < 400 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert acked, f"nothing acknowledged:\n{logs.read_text()}"
            for d in dispatchers:
                d.kill()  # mid-stream: deliveries in flight, a backlog in the queue
            for d in dispatchers:
                await d.wait()
            stop.set()
            await asyncio.gather(*producers)
            delivered_before = len(
                {r.headers.get("ce-id") for r in sink.received} - {None, *_PROBES}
            )
            slow = False
            again = proc("dispatcher")
            await again.start()
            await again.ready()
            got_ids, missing, duplicates = await sink.wait_for_ids(set(acked))
            print(
                f"acknowledged {len(acked)}, delivered before the kill {delivered_before}, "
                f"after the restart {len(got_ids)} requests, duplicates {duplicates}"
            )
            assert not missing, f"{len(missing)} acknowledged lost: {sorted(missing)[:5]}"
            assert delivered_before < len(acked)  # a backlog of distinct events (repeats aside)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            await p.wait()
        await sink.stop()
        await _cleanup(prefix, [f"{NS}/default"], [uid] if uid else [])


async def test_group_publishing_resolves_each_append_once_stored() -> None:
    """Concurrent appends share messages (group publishing): each resolves, every event is
    handed out once and every message acked; a closed channel fails the append."""
    await _require_rabbitmq()
    prefix = f"knpy-test-{secrets.token_hex(4)}."
    broker, uid = f"{NS}/default", "trigger-g"
    log = RabbitMQEventLog(URL, prefix=prefix)
    await log.open()
    try:
        sub = log.subscribe(uid, broker)
        await sub.starting  # type: ignore[attr-defined]
        appends = [
            log.append(broker, [(Event({"id": f"g{i}"}, b"{}", Form.BINARY), [])])
            for i in range(300)
        ]
        await asyncio.gather(*appends)
        got: list[str] = []
        while len(got) < 300:
            for rec in await asyncio.wait_for(sub.next_batch(500), 10):
                got.append(str(rec.event.attrs["id"]))
                sub.ack(rec.seq)
        assert sorted(got) == sorted(f"g{i}" for i in range(300))
        assert len(sub._left) == 0  # type: ignore[attr-defined]
        assert log._pub is not None
        await log._pub.close()
        with pytest.raises(StoreError):
            await log.append(broker, [(Event({"id": "late"}, None, Form.BINARY), [])])
    finally:
        await log.close()
        await _cleanup(prefix, [broker], [uid])


def test_config_selects_the_backend_and_refuses_split_roles_on_sqlite() -> None:
    from eventing.broker.config import BrokerConfig
    from shared.envconfig import ConfigError

    cfg = BrokerConfig.from_env({"BROKER_BACKEND": "rabbitmq", "BROKER_ROLE": "dispatcher"})
    assert (cfg.backend, cfg.role, cfg.broker_class) == ("rabbitmq", "dispatcher",
                                                         RABBITMQ_BROKER_CLASS)
    assert BrokerConfig.from_env({}, "/tmp/x").broker_class == DEFAULT_BROKER_CLASS
    with pytest.raises(ConfigError, match="BROKER_ROLE"):
        BrokerConfig.from_env({"BROKER_ROLE": "ingress"}, "/tmp/x")
    with pytest.raises(ConfigError, match="BROKER_BACKEND"):
        BrokerConfig.from_env({"BROKER_BACKEND": "kafka"}, "/tmp/x")


def test_config_reads_the_url_from_rabbitmq_url_file(tmp_path: Path) -> None:
    """knpy serve hands the URL (its password) over in a 0600 file, not the Deployment's env."""
    from eventing.broker.config import BrokerConfig
    from shared.envconfig import ConfigError

    url_file = tmp_path / "rabbitmq-url"
    url_file.write_text("amqp://u:secret@127.0.0.1:5999/\n")
    env = {"BROKER_BACKEND": "rabbitmq", "RABBITMQ_URL_FILE": str(url_file),
           "RABBITMQ_URL": "amqp://other/"}
    assert BrokerConfig.from_env(env).rabbitmq_url == "amqp://u:secret@127.0.0.1:5999/"
    url_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"RABBITMQ_URL_FILE: .* is empty"):
        BrokerConfig.from_env(env)
    with pytest.raises(ConfigError, match=r"RABBITMQ_URL_FILE: cannot read .*missing"):
        BrokerConfig.from_env({**env, "RABBITMQ_URL_FILE": str(tmp_path / "missing")})
