"""The ``RabbitMQBroker`` class's backend: the storage seam (eventing/broker/backend.py) on a
real RabbitMQ, through aio-pika.

What maps to what (the shapes of Knative's eventing-rabbitmq, as far as they fit a seam keyed
by ``namespace/broker`` and the trigger's uid; its names also carry the broker's uid, which the
seam does not have, so a broker deleted and re-created reuses its exchange):

    Broker ns/name        durable fanout exchange  <prefix>b.<ns>.<name>
    its dead letters      durable fanout exchange  <prefix>b.<ns>.<name>.dlx
                          and queue                <prefix>b.<ns>.<name>.dlq  (bound to it)
    Trigger (uid)         durable queue            <prefix>t.<ns>.<name>.<uid>, bound to the
                          broker's exchange, dead-lettering to the broker's .dlx
    append (the ingress)  one persistent message per call, published on a confirm channel:
                          it resolves when RabbitMQ confirmed it (so the 202 follows the
                          broker's fsync), and a nack or a lost connection is a StoreError
    next_batch / ack      basic.consume on the trigger's queue with prefetch = the dispatcher's
                          per-trigger concurrency; basic.ack once the delivery is finished
                          (delivered, dead-lettered to the DLS or dropped), so a dispatcher
                          killed mid-delivery has it redelivered: at least once
    forget                queue.delete of the trigger's queue (that this process consumed:
                          AMQP cannot list queues, see ``triggers``)

Filtering stays in the dispatcher, as eventing-rabbitmq's dispatcher does it (the filter
dialects and CESQL have no binding form). Retries, backoff and the delivery spec's dead-letter
sink are the dispatcher's, as with the default class. The broker's ``.dlx``/``.dlq`` receive
what cannot be handed out at all: a message that does not decode (rejected, not requeued), and
one redelivered more than ``delivery_limit`` times (quorum queues' ``x-delivery-limit``: a
message that crashes every dispatcher that takes it would otherwise loop forever). Knative's
eventing-rabbitmq uses quorum queues by default; so does this backend (``queue_type``).

Several ingress and dispatcher processes can share one RabbitMQ: every declaration is
idempotent, consumers of one trigger's queue compete (each message goes to one of them), and a
message in flight at a dispatcher that dies goes back to the queue for another.

A message holds whole ``append`` calls (a batch is stored whole or not at all, as the seam
requires): its body is the records framed by ``_encode``; its properties carry the first
event's id and type for someone reading the queue with RabbitMQ's own tools. Group
publishing, as the default class's group commit: at most ``MAX_PUBLISHES`` messages per broker
await RabbitMQ's confirm; the appends that arrive meanwhile go out together as the next
message, and each resolves with its confirm. Under load that makes one publish, one confirm,
one delivery and one ack carry many events (each AMQP message costs the client a few hundred
microseconds of CPU); a message is acked once every event in it is finished with, and a
redelivery repeats all of them (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Sequence
from typing import Any, Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pamqp.commands import Basic

from eventing.broker.backend import Headers, Record, StoreError, Subscription
from shared.cloudevent import Event, Form, compact_json

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_URL",
    "RabbitMQEventLog",
    "broker_exchange",
    "trigger_queue",
]

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
CONTENT_TYPE: Final = "application/vnd.knpy.records"
# A message redelivered this many times goes to the broker's dead-letter queue.
DEFAULT_DELIVERY_LIMIT: Final = 50
# Between unbinding a trigger's queue and deleting it: publishes already routed land first.
UNBIND_GRACE_S: Final = 0.1
# Group publishing: unconfirmed messages per broker, and the size that goes out regardless.
MAX_PUBLISHES: Final = 4
MAX_GROUP_BYTES: Final = 1 << 20
_LEN: Final = struct.Struct(">I")
_FORMS: Final = frozenset(int(f) for f in Form)


def broker_exchange(broker: str, prefix: str = "") -> str:
    """The exchange of ``broker`` (``namespace/name``)."""
    ns, _, name = broker.partition("/")
    return f"{prefix}b.{ns}.{name}"


def trigger_queue(trigger: str, broker: str, prefix: str = "") -> str:
    """The queue of the trigger with uid ``trigger`` on ``broker`` (a trigger moved to another
    broker gets a new queue: it starts at that broker's next event, as with the default
    class)."""
    ns, _, name = broker.partition("/")
    return f"{prefix}t.{ns}.{name}.{trigger}"


# -- the message body ---------------------------------------------------------------------
def _encode(records: Sequence[tuple[Event, Headers]]) -> bytes:
    """Each record: attrs JSON, headers JSON, form byte, data (absent: length 0xFFFFFFFF)."""
    out = bytearray()
    for event, headers in records:
        attrs = compact_json(event.attrs).encode()
        hdrs = json.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers])
        hb = hdrs.encode()
        out += _LEN.pack(len(attrs)) + attrs + _LEN.pack(len(hb)) + hb
        out.append(int(event.form))
        if event.data is None:
            out += _LEN.pack(0xFFFFFFFF)
        else:
            out += _LEN.pack(len(event.data)) + event.data
    return bytes(out)


def _decode(body: bytes) -> list[tuple[Event, Headers]]:
    """Raises ValueError (or a JSON/struct error, a ValueError too) on a body not ours."""
    out: list[tuple[Event, Headers]] = []
    view = memoryview(body)
    i = 0

    def chunk() -> bytes:
        nonlocal i
        (n,) = _LEN.unpack_from(view, i)
        i += 4
        if i + n > len(view):
            raise ValueError("truncated record")
        part = bytes(view[i : i + n])
        i += n
        return part

    while i < len(view):
        attrs = json.loads(chunk())
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in json.loads(chunk())]
        form = view[i]
        i += 1
        if form not in _FORMS or not isinstance(attrs, dict):
            raise ValueError("not a record")
        (n,) = _LEN.unpack_from(view, i)
        data = None if n == 0xFFFFFFFF else chunk()
        if data is None:
            i += 4
        out.append((Event(attrs, data, Form(form)), headers))
    if not out:
        raise ValueError("no record")
    return out


# -- one trigger's queue --------------------------------------------------------------------
class _RabbitSubscription:
    """A trigger's queue consumed on a channel of its own (its prefetch is its own)."""

    def __init__(self, log_: RabbitMQEventLog, trigger: str, broker: str) -> None:
        self._log = log_
        self.trigger = trigger
        self.broker = broker
        self._ready: list[Record] = []
        self._wakeup = asyncio.Event()
        self._seq = 0
        # seq -> (message, records of it still unacked)
        self._owner: dict[int, AbstractIncomingMessage] = {}
        self._left: dict[int, int] = {}  # id(message) -> records not yet acked
        self._acks: list[AbstractIncomingMessage] = []
        self._acking = False
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._started = False
        self.closed = False
        # Declared and bound from the start: the ingress of this process waits for it before
        # it publishes to the broker, so a trigger sees every event acknowledged after it was
        # added here (another process's ingress may be ahead: Knative's trigger is Ready only
        # once its queue is bound, the same window).
        self.starting: asyncio.Future[None] = asyncio.ensure_future(self.start())

    def __repr__(self) -> str:
        return (
            f"<RabbitSubscription {self.trigger} ready={len(self._ready)} "
            f"unacked={len(self._owner)} closed={self.closed}>"
        )

    async def _start(self) -> None:
        conn = await self._log.connection()
        await self._log.exchange(self.broker)  # declared once per process, shared
        channel = await conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._log.prefetch)
        exchange = await channel.get_exchange(
            broker_exchange(self.broker, self._log.prefix), ensure=False
        )
        args: dict[str, Any] = {
            "x-dead-letter-exchange": f"{broker_exchange(self.broker, self._log.prefix)}.dlx",
            "x-queue-type": self._log.queue_type,
        }
        if self._log.queue_type == "quorum":
            args["x-delivery-limit"] = self._log.delivery_limit
        queue = await channel.declare_queue(
            trigger_queue(self.trigger, self.broker, self._log.prefix),
            durable=True,
            arguments=args,
        )
        await queue.bind(exchange, routing_key="")
        self._channel, self._queue = channel, queue
        self._tag = await queue.consume(self._on_message, no_ack=False)

    async def start(self) -> None:
        """Declare and bind the queue and consume it; retried until it works or is closed."""
        while not self._started and not self.closed:
            try:
                await self._start()
                self._started = True
            except (TimeoutError, aiormq.exceptions.AMQPError, OSError) as err:
                # The worker must not die: RabbitMQ may be restarting. Try again shortly.
                log.error("trigger %s: cannot consume its queue (%s); retrying in 1 s",
                          self.trigger, err)
                await asyncio.sleep(1.0)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            records = _decode(message.body)
        except (ValueError, struct.error) as err:
            log.error("trigger %s: a message that is not an event, dead-lettered: %s",
                      self.trigger, err)
            await message.reject(requeue=False)
            return
        self._left[id(message)] = len(records)
        for event, headers in records:
            self._seq += 1
            self._owner[self._seq] = message
            self._ready.append(Record(self._seq, event, headers))
        self._wakeup.set()

    async def next_batch(self, limit: int) -> list[Record]:
        if not self.starting.done():
            await asyncio.shield(self.starting)
        while not self._ready:
            if self.closed:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        batch, self._ready = self._ready[:limit], self._ready[limit:]
        return batch

    @property
    def started(self) -> bool:
        """The queue is declared, bound and consumed."""
        return self._started and not self.closed

    def held(self) -> int:
        """Events of this queue in this process, waiting to be handed out or in flight (every
        record not acked yet is in ``_owner``, the waiting ones too)."""
        return len(self._owner)

    def ack(self, seq: int) -> None:
        message = self._owner.pop(seq, None)
        if message is None:
            return
        key = id(message)
        left = self._left.get(key, 1) - 1
        if left > 0:
            self._left[key] = left
            return
        self._left.pop(key, None)
        self._acks.append(message)
        if not self._acking:
            self._acking = True
            self._log.spawn(self._flush_acks())

    async def _flush_acks(self) -> None:
        """Send the acks gathered meanwhile, without waiting on the socket for each."""
        try:
            while self._acks:
                batch, self._acks = self._acks, []
                for message in batch:
                    tag = message.delivery_tag
                    try:
                        if tag is not None:
                            await message.channel.basic_ack(tag, wait=False)
                    except Exception as err:  # the channel is gone: redelivered (at least once)
                        log.warning("trigger %s: ack lost (%s); the event will be delivered "
                                    "again", self.trigger, err)
        finally:
            self._acking = False

    async def close(self, delete: bool) -> None:
        """Stop consuming (unacked messages go back to the queue); ``delete`` drops it."""
        self.closed = True
        self._wakeup.set()
        self.starting.cancel()
        channel, queue = self._channel, self._queue
        self._channel = self._queue = None
        if channel is None or queue is None:
            if delete:
                await self._log.delete_queue(self.trigger, self.broker)
            return
        with contextlib.suppress(Exception):
            if self._tag is not None:
                await queue.cancel(self._tag)
            if delete:
                # Unbound first: RabbitMQ 3.10 crashes a channel (and closes its connection,
                # 541) that publishes to a quorum queue while the queue is being deleted.
                await queue.unbind(broker_exchange(self.broker, self._log.prefix), "")
                await asyncio.sleep(UNBIND_GRACE_S)
                await queue.delete(if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):
            await channel.close()


class _Outbox:
    """One broker's appends waiting for a publish (group publishing)."""

    __slots__ = ("first", "in_flight", "parts", "size", "waiters")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.size = 0
        self.in_flight = 0
        self.first: dict[str, object] = {}


class RabbitMQEventLog:
    """``EventLog`` on RabbitMQ (module doc). ``prefix`` goes in front of every name (tests
    use a random one); ``prefetch`` is the unacked messages per trigger and dispatcher."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = "",
        prefetch: int = 100,
        queue_type: str = "quorum",
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    ) -> None:
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type must be quorum or classic, got {queue_type!r}")
        self.url = url
        self.prefix = prefix
        self.prefetch = prefetch
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        # Publishing and consuming on connections of their own: a channel error RabbitMQ
        # answers by closing a connection (541) then never takes the other side with it, and
        # an ingress-only process never opens the consuming one.
        self._pub_conn: AbstractRobustConnection | None = None
        self._conn: AbstractRobustConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._opened = False
        self._pub: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._declaring: dict[str, asyncio.Future[AbstractExchange]] = {}
        self._subs: dict[str, _RabbitSubscription] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unbound = 0  # subscriptions whose queue is not consumed yet
        self._outboxes: dict[str, _Outbox] = {}
        self._metrics_chan: AbstractChannel | None = None

    def __repr__(self) -> str:
        return f"<RabbitMQEventLog {self.url.rsplit('@', 1)[-1]} triggers={len(self._subs)}>"

    async def open(self) -> None:
        """Raises StoreError when RabbitMQ cannot be reached."""
        try:
            self._pub_conn = await aio_pika.connect_robust(self.url, timeout=10)
            self._pub = await self._pub_conn.channel(publisher_confirms=True)
            self._opened = True
        except (TimeoutError, aiormq.exceptions.AMQPError, OSError) as err:
            raise StoreError(f"RabbitMQ at {self.url.rsplit('@', 1)[-1]}: {err}") from err

    async def close(self) -> None:
        await asyncio.gather(*(s.close(delete=False) for s in self._subs.values()))
        self._subs.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._opened = False
        for conn in (self._conn, self._pub_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._conn = self._pub_conn = self._pub = self._metrics_chan = None
        self._exchanges.clear()

    async def connection(self) -> AbstractRobustConnection:
        """The consuming connection, opened on first use."""
        async with self._conn_lock:
            if not self._opened:
                raise StoreError("RabbitMQ: open() first")
            if self._conn is None:
                self._conn = await aio_pika.connect_robust(self.url, timeout=10)
            return self._conn

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def declare_broker(
        self, channel: AbstractChannel, broker: str
    ) -> tuple[AbstractExchange, AbstractExchange]:
        """The broker's exchange and its dead-letter exchange and queue (idempotent)."""
        name = broker_exchange(broker, self.prefix)
        dlx = await channel.declare_exchange(f"{name}.dlx", aio_pika.ExchangeType.FANOUT,
                                             durable=True)
        dlq = await channel.declare_queue(f"{name}.dlq", durable=True,
                                          arguments={"x-queue-type": self.queue_type})
        await dlq.bind(dlx, routing_key="")
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT,
                                                  durable=True)
        return exchange, dlx

    async def exchange(self, broker: str) -> AbstractExchange:
        ex = self._exchanges.get(broker)
        if ex is not None:
            return ex
        pending = self._declaring.get(broker)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[AbstractExchange] = asyncio.get_running_loop().create_future()
        self._declaring[broker] = fut
        try:
            if self._pub is None:
                raise StoreError("RabbitMQ: open() first")
            ex, _dlx = await self.declare_broker(self._pub, broker)
            self._exchanges[broker] = ex
            fut.set_result(ex)
            return ex
        except BaseException as err:
            fut.set_exception(err)
            fut.exception()  # retrieved: the waiters (if any) get it too
            raise
        finally:
            del self._declaring[broker]

    def append(self, broker: str, records: Sequence[tuple[Event, Headers]]) -> Awaitable[None]:
        """Group publishing (module doc): at most ``MAX_PUBLISHES`` messages unconfirmed per
        broker; what arrives meanwhile goes out as one message once one is confirmed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box = self._outboxes.get(broker)
        if box is None:
            box = self._outboxes[broker] = _Outbox()
        body = _encode(records)
        if not box.parts and records:
            box.first = records[0][0].attrs
        box.parts.append(body)
        box.size += len(body)
        box.waiters.append(fut)
        if box.in_flight < MAX_PUBLISHES or box.size >= MAX_GROUP_BYTES:
            self._send(broker, box)
        return fut

    def _send(self, broker: str, box: _Outbox) -> None:
        body, waiters, first = b"".join(box.parts), box.waiters, box.first
        box.parts, box.waiters, box.size, box.first = [], [], 0, {}
        box.in_flight += 1
        self.spawn(self._publish(broker, box, body, waiters, first))

    async def _publish(
        self,
        broker: str,
        box: _Outbox,
        body: bytes,
        waiters: list[asyncio.Future[None]],
        first: dict[str, object],
    ) -> None:
        try:
            await self._append(broker, body, first)
        except Exception as err:
            fail = err if isinstance(err, StoreError) else StoreError(f"RabbitMQ: {err!r}")
            for w in waiters:
                if not w.done():
                    w.set_exception(fail)
        else:
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        finally:
            box.in_flight -= 1
            if box.parts and box.in_flight < MAX_PUBLISHES:
                self._send(broker, box)

    async def _append(self, broker: str, body: bytes, first: dict[str, object]) -> None:
        starting = [
            s.starting for s in self._subs.values() if s.broker == broker and not s.starting.done()
        ] if self._unbound else []
        if starting:
            await asyncio.wait(starting, timeout=10)
        try:
            exchange = await self.exchange(broker)
            assert self._pub is not None
            # aiormq's publish, under aio-pika's Message: the same frames for a third of the
            # CPU (the ingress's cost per event).
            channel = await self._pub.get_underlay_channel()
            eid, etype = first.get("id"), first.get("type")
            confirm = await channel.basic_publish(
                body,
                exchange=exchange.name,
                routing_key="",
                properties=aiormq.spec.Basic.Properties(
                    content_type=CONTENT_TYPE,
                    delivery_mode=2,  # persistent
                    message_id=eid if isinstance(eid, str) else None,
                    message_type=etype if isinstance(etype, str) else None,
                ),
                mandatory=False,  # no trigger bound: accepted and dropped, as in Knative
            )
        except StoreError:
            raise
        except (TimeoutError, aiormq.exceptions.AMQPError, OSError, RuntimeError) as err:
            self._exchanges.pop(broker, None)  # re-declared next time (a deleted exchange)
            raise StoreError(f"RabbitMQ: not stored for {broker}: {err!r}") from err
        if not isinstance(confirm, Basic.Ack):
            raise StoreError(f"RabbitMQ: not confirmed for {broker}: {confirm!r}")

    def subscribe(self, trigger: str, broker: str) -> Subscription:
        old = self._subs.pop(trigger, None)
        if old is not None:  # moved to another broker: its old queue goes
            self.spawn(old.close(delete=old.broker != broker))
        sub = _RabbitSubscription(self, trigger, broker)
        self._subs[trigger] = sub
        self._unbound += 1
        sub.starting.add_done_callback(self._bound)
        return sub

    def _bound(self, _fut: asyncio.Future[None]) -> None:
        self._unbound -= 1

    def forget(self, trigger: str) -> None:
        sub = self._subs.pop(trigger, None)
        if sub is not None:
            self.spawn(sub.close(delete=True))

    async def delete_queue(self, trigger: str, broker: str) -> None:
        try:
            channel = await (await self.connection()).channel(publisher_confirms=False)
            try:
                await channel.queue_delete(trigger_queue(trigger, broker, self.prefix))
            finally:
                await channel.close()
        except Exception as err:
            log.warning("trigger %s: its queue could not be deleted: %s", trigger, err)

    async def depths(self) -> dict[str, int]:
        """Per subscribed trigger: the messages ready in its queue on the server (a passive
        queue.declare on a channel of the metrics' own, so that a failure closes no consumer's
        channel) plus the events this process holds (handed out or waiting to be)."""
        out: dict[str, int] = {}
        for uid, sub in list(self._subs.items()):
            held = sub.held()
            if not sub.started:
                continue
            try:
                # aiormq's declare: aio-pika's robust channel answers a passive declaration
                # of a queue it knows from its cache, with the count of that time.
                channel = await (await self._metrics_channel()).get_underlay_channel()
                ok = await channel.queue_declare(
                    trigger_queue(uid, sub.broker, self.prefix), passive=True
                )
                ready = ok.message_count or 0
            except (TimeoutError, aiormq.exceptions.AMQPError, OSError, StoreError) as err:
                log.warning("trigger %s: its queue depth is unknown: %s", uid, err)
                self._metrics_chan = None
                continue
            out[uid] = int(ready) + held
        return out

    async def _metrics_channel(self) -> AbstractChannel:
        channel = self._metrics_chan
        if channel is None or channel.is_closed:
            channel = self._metrics_chan = await (await self.connection()).channel(
                publisher_confirms=False
            )
        return channel

    def triggers(self) -> set[str]:
        """The triggers subscribed in this process: AMQP cannot list queues, so the queues of
        triggers deleted while every dispatcher was down stay (``forget`` drops one by uid)."""
        return set(self._subs)
