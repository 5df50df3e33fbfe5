"""The dispatcher: every stored event to every matching trigger's subscriber, at least once.

Theory of operation. One ``TriggerWorker`` per trigger reads its own queue of the event log
(``EventLog.subscribe``), so a trigger only ever waits for its own subscriber: a slow or dead
subscriber fills its own trigger's slots (``concurrency`` deliveries at once) and no other's.
The filter runs once per event and trigger when the record is read; an event that does not
match is acked at once. Two triggers with the same subscriber get one delivery each.

One delivery (``deliver``), as Knative's filter handler and channel dispatcher do it together
(pkg/broker/filter/filter_handler.go, pkg/kncloudevents/event_dispatcher.go):

1. The event goes out without ``knativebrokerttl``, in the mode ``delivery.format`` asks for
   (``json``: structured, ``binary``) or else the one it came in, with the producer's
   allow-listed headers, ``Prefer: reply`` and ``Kn-Namespace: <trigger namespace>``.
2. A 2xx is success, anything else a failure. Failures in Knative's retry set (no answer,
   5xx, 404, 408, 409, 429) are retried, ``retry`` times at most, after the waits of
   ``eventing.delivery`` (``timeout`` bounds each attempt).
3. Success with a CloudEvent in the answer (binary or structured; any 2xx but 202, which the
   data-plane spec says is never a reply) is a reply: it takes the delivered event's TTL and
   is stored through the ingress, so it meets every trigger again and loses one TTL per hop.
   A reply that cannot be stored fails the attempt (500, retried), as the spec requires; one
   whose TTL is used up fails it with Knative's 400 (not retried), so a loop ends.
   A Subscription's trigger (``TriggerTarget.subscription``) delivers as Knative's channel
   dispatcher instead: its reply goes to ``reply_url`` with its own retries, or is dropped.
4. Success with a body that is not a CloudEvent: Knative calls it a failure (502) and retries
   it, so a function that answers ``200 OK`` gets every event eleven times and then a DLS.
   knpy keeps it a failure (502, so it is visible where Knative users look for it) but does
   not retry it: the subscriber has the event, and a retry only repeats its side effects.
5. After the last failure the original event (still without TTL) goes to the dead-letter sink
   with ``knativeerrordest`` (the URL that failed), ``knativeerrorcode`` (its status; 500 when
   it never answered) and ``knativeerrordata`` (base64 of its answer, at most 1,024
   characters), retried by the same policy. Without a sink, or when the sink fails too, the
   event is dropped and counted.

The event is acked in the log only when all of this is over, so a crash repeats it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from eventing.broker.backend import EventLog, Headers, Record, StoreError, Subscription
from eventing.broker.client import HttpClient, RequestFailed
from eventing.broker.ingress import MAX_BODY_BYTES, TtlExceeded, passthrough_headers
from eventing.broker.metrics import BrokerMetrics, TriggerSeries, TriggerStats, delivery_names
from eventing.broker.observability import delivery_span, end_span, link_reply
from eventing.delivery import DeliverySpec, is_success, should_retry
from shared.cloudevent import (
    STRUCTURED_TYPE,
    TTL,
    Event,
    EventError,
    Form,
    parse_message,
    to_binary,
    to_structured,
)
from shared.tracing import inject_headers

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer
    from opentelemetry.trace import Span

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT_S",
    "DEFAULT_CONCURRENCY",
    "Dispatcher",
    "Outcome",
    "TriggerTarget",
]

log = logging.getLogger(__name__)

# Deliveries in flight per trigger (retries waiting included).
DEFAULT_CONCURRENCY: Final = 100
# An attempt without a delivery.timeout ends after this long: Knative's fan-out gives a whole
# delivery 15 minutes; an attempt here gets 5, so a subscriber that never answers is retried.
DEFAULT_ATTEMPT_TIMEOUT_S: Final = 300.0
ERROR_DATA_MAX_CHARS: Final = 1024  # KnativeErrorDataExtensionMaxLength
# The largest answer read from a subscriber (a reply event): the ingress's own default limit.
MAX_RESPONSE_BYTES: Final = MAX_BODY_BYTES

Matcher = Callable[[Mapping[str, object]], bool]


@dataclass(frozen=True, slots=True)
class TriggerTarget:
    """What a trigger's deliveries need, resolved from the Trigger and its Broker."""

    uid: str
    namespace: str
    name: str
    broker: str  # namespace/name
    subscriber: str | None  # URL; None until the control plane resolved it
    dead_letter_sink: str | None
    delivery: DeliverySpec
    matches: Matcher
    broker_url: str  # knativeerrordest when a reply cannot be stored
    # A Subscription's backing trigger (controlplane/controllers/channel.py) delivers as
    # Knative's channel dispatcher does: the subscriber's reply goes to ``reply_url`` (its
    # spec.reply), or nowhere without one, and an answer that is not an event is a success.
    subscription: bool = False
    reply_url: str | None = None
    subscription_name: str = ""  # that Subscription's name (its metrics and spans say it)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: status None when nothing answered; ``error`` the reason text."""

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str = ""
    retriable: bool = True
    headers: tuple[tuple[bytes, bytes], ...] = ()
    reply_failed: bool = False  # the reply could not be stored: the broker is what failed


def _error_data(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")[:ERROR_DATA_MAX_CHARS]


class TriggerWorker:
    """One trigger: reads its queue, filters, delivers with up to ``concurrency`` at once."""

    def __init__(self, dispatcher: Dispatcher, target: TriggerTarget, sub: Subscription) -> None:
        self.dispatcher = dispatcher
        self.target = target
        self.sub = sub
        self.in_flight = 0
        self.delivered = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.filtered = 0
        metrics = dispatcher.metrics
        self.series: TriggerSeries | None = None
        if metrics is not None:
            scope, destination = delivery_names(
                target.namespace, target.name, target.subscription_name
            )
            self.series = metrics.trigger(target.broker, scope, destination)
            metrics.triggers[target.uid] = TriggerStats(target.broker, destination, self.stats)
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<TriggerWorker {self.target.key} in_flight={self.in_flight} "
            f"delivered={self.delivered} dead_lettered={self.dead_lettered} "
            f"dropped={self.dropped} filtered={self.filtered}>"
        )

    def stats(self) -> tuple[int, int, int, int, int]:
        """(in flight, delivered, dead-lettered, dropped, filtered), for the metrics."""
        return self.in_flight, self.delivered, self.dead_lettered, self.dropped, self.filtered

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"trigger {self.target.key}"
        )

    def stop(self) -> Awaitable[None]:
        """Cancel the worker and its deliveries now (unacked, they are repeated after a
        restart); the result completes once they have ended."""
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        return _ended(tasks)

    async def _run(self) -> None:
        limit = self.dispatcher.concurrency
        while True:
            while self.in_flight >= limit:
                self._room.clear()
                await self._room.wait()
            batch = await self.sub.next_batch(limit - self.in_flight)
            if not batch:
                return  # the queue was forgotten (the trigger is gone)
            picked = perf_counter()  # the process duration's start (Knative's: the request's)
            for rec in batch:
                target = self.target
                # The TTL is taken off once: the filter does not see it (Knative's filter
                # handler deletes it first), nor does the subscriber.
                ttl = rec.event.attrs.get(TTL)
                out = rec.event.copy(**{TTL: None}) if ttl is not None else rec.event
                if target.subscriber is None or not self._matches(target, out):
                    # Knative's filter answers 200 without sending when the filter fails; a
                    # trigger without a subscriber URI is not Ready and gets nothing.
                    self.filtered += 1
                    self.sub.ack(rec.seq)
                    continue
                self.in_flight += 1
                task = asyncio.get_running_loop().create_task(
                    self._deliver(target, rec, out, ttl, picked)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _matches(self, target: TriggerTarget, event: Event) -> bool:
        try:
            return target.matches(event.attrs)
        except Exception:  # a filter bug must not stop the trigger: the event does not pass
            log.exception("trigger %s: the filter failed", target.key)
            return False

    async def _deliver(
        self, target: TriggerTarget, rec: Record, out: Event, ttl: object, picked: float
    ) -> None:
        try:
            result = await self.dispatcher.deliver(
                target, rec, out, ttl, series=self.series, picked=picked
            )
            if result == "delivered":
                self.delivered += 1
            elif result == "dead-lettered":
                self.dead_lettered += 1
            else:
                self.dropped += 1
            self.sub.ack(rec.seq)
        finally:
            self.in_flight -= 1
            self._room.set()


async def _ended(tasks: list[asyncio.Task[None]]) -> None:
    if tasks:
        await asyncio.wait(tasks)


class Dispatcher:
    """The triggers' workers and the delivery itself (module doc).

    ``ingest(broker, events, headers)`` stores replies (``Ingress.ingest``); ``sleep`` and
    ``clock`` (wall clock, for Retry-After dates) are the seams a fake clock replaces.
    """

    def __init__(
        self,
        log_: EventLog,
        ingest: Callable[[str, list[Event], Headers], Awaitable[None]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.log = log_
        self.ingest = ingest
        self.concurrency = concurrency
        self.attempt_timeout_s = attempt_timeout_s
        self.sleep = sleep
        self.clock = clock
        self.workers: dict[str, TriggerWorker] = {}
        self.metrics = metrics
        self.tracer: Tracer | None = None  # None: tracing off (see Ingress.tracer)
        self._client: HttpClient | None = None

    def __repr__(self) -> str:
        return f"<Dispatcher triggers={len(self.workers)}>"

    async def start(self) -> None:
        self._client = HttpClient()

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        self.workers.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def set_triggers(self, targets: Mapping[str, TriggerTarget]) -> list[Awaitable[None]]:
        """Follow the triggers (by uid): start new workers, update changed ones, stop and
        forget deleted ones. Returns the stops to await."""
        stops: list[Awaitable[None]] = []
        for uid, worker in list(self.workers.items()):
            target = targets.get(uid)
            if target is None or target.broker != worker.target.broker:
                del self.workers[uid]
                stops.append(worker.stop())  # cancelled now, before its queue changes
                if self.metrics is not None:
                    self.metrics.triggers.pop(uid, None)
                    self.metrics.depths.pop(uid, None)
                if target is None:
                    self.log.forget(uid)
        for uid, target in targets.items():
            current = self.workers.get(uid)
            if current is None:
                fresh = TriggerWorker(self, target, self.log.subscribe(uid, target.broker))
                self.workers[uid] = fresh
                fresh.start()
            else:
                current.target = target
        return stops

    # -- one delivery ---------------------------------------------------------------------
    def deliver(
        self,
        target: TriggerTarget,
        rec: Record,
        out: Event,
        ttl: object,
        *,
        series: TriggerSeries | None = None,
        picked: float = 0.0,
    ) -> Coroutine[Any, Any, str]:
        """Deliver ``rec`` to ``target``'s subscriber, with retries, reply and dead-letter
        sink; the result is ``delivered``, ``dead-lettered`` or ``dropped``.

        ``out`` is ``rec.event`` without its TTL, ``ttl`` that TTL (None when it had none):
        the worker has both from filtering. ``series`` gets the trigger's metrics (the
        process duration counts from ``picked``, a ``perf_counter`` time). The delivery span
        (when tracing) starts here and ends with the coroutine.
        """
        span = None
        if self.tracer is not None:
            _, destination = delivery_names(
                target.namespace, target.name, target.subscription_name
            )
            span = delivery_span(self.tracer, destination, target.broker, out)
        return self._deliver(target, rec, out, ttl, series, picked, span)

    async def _deliver(
        self,
        target: TriggerTarget,
        rec: Record,
        out: Event,
        ttl: object,
        series: TriggerSeries | None,
        picked: float,
        span: Span | None,
    ) -> str:
        result, status = "cancelled", None
        try:
            event = rec.event
            traced = inject_headers(span) if span is not None else []
            headers = [
                *rec.headers,
                *traced,
                (b"Prefer", b"reply"),
                (b"Kn-Namespace", target.namespace.encode()),
            ]
            assert target.subscriber is not None
            spec = target.delivery
            dest = target.subscriber
            etype = out.attrs.get("type")
            event_type = etype if isinstance(etype, str) else ""
            if series is not None:
                series.processed(event_type, perf_counter() - picked)

            def send(url: str, ev: Event, hdrs: Headers) -> Awaitable[Outcome]:
                return self.send(url, ev, hdrs, spec, series, event_type, span)

            async def attempt() -> Outcome:
                outcome = await send(dest, out, headers)
                if is_success(outcome.status) and not target.subscription:
                    return await self._reply(target, outcome, ttl, span)
                return outcome

            outcome = await self.with_retries(spec, attempt)
            if is_success(outcome.status) and target.subscription:
                outcome = await self._forward_reply(target, outcome, ttl, send)
            status = outcome.status
            if is_success(status):
                result = "delivered"
                return result
            if outcome.reply_failed:
                dest = target.reply_url or target.broker_url
            if target.dead_letter_sink is None:
                log.warning(
                    "trigger %s: event %r dropped after %s (no dead-letter sink)",
                    target.key, event.attrs.get("id"), outcome.status or outcome.error,
                )
                result = "dropped"
                return result
            failed = out.copy(
                knativeerrordest=dest,
                knativeerrorcode=outcome.status or 500,
                knativeerrordata=_error_data(outcome.body) or None,
            )
            dls = target.dead_letter_sink
            # As Knative: the sink gets the extra headers and Kn-Namespace, not Prefer: reply.
            dls_headers = [*rec.headers, *traced, (b"Kn-Namespace", target.namespace.encode())]
            dls_outcome = await self.with_retries(spec, lambda: send(dls, failed, dls_headers))
            if is_success(dls_outcome.status):
                result = "dead-lettered"
                return result
            log.error(
                "trigger %s: event %r dropped: the subscriber (%s) and the dead-letter sink "
                "(%s) both failed", target.key, event.attrs.get("id"),
                outcome.status or outcome.error, dls_outcome.status or dls_outcome.error,
            )
            result = "dropped"
            return result
        finally:
            if span is not None:
                end_span(span, result, status)

    async def with_retries(
        self, spec: DeliverySpec, attempt: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        """Up to ``spec.attempts`` attempts, waiting ``spec.wait_s`` between them."""
        outcome = await attempt()
        for k in range(1, spec.attempts):
            if is_success(outcome.status):
                break
            if not (outcome.retriable and should_retry(outcome.status)):
                break
            await self.sleep(spec.wait_s(k, outcome.status, outcome.retry_after, self.clock()))
            outcome = await attempt()
        return outcome

    async def _reply(
        self, target: TriggerTarget, outcome: Outcome, ttl: object, span: Span | None = None
    ) -> Outcome:
        """A successful attempt's answer: nothing, a reply to store, or not an event."""
        headers = list(outcome.headers)
        if outcome.status == 202 or (not outcome.body and not _has_ce_header(headers)):
            return outcome
        try:
            replies = parse_message(headers, outcome.body)
        except EventError as err:
            return Outcome(
                502, outcome.body, error=f"the answer is not a CloudEvent: {err}",
                retriable=False,
            )
        for reply in replies:
            if ttl is not None:
                reply.attrs[TTL] = ttl
        if span is not None:
            link_reply(replies, span)
        try:
            await self.ingest(target.broker, replies, passthrough_headers(headers))
        except TtlExceeded as err:
            return Outcome(400, str(err).encode(), retriable=False, reply_failed=True)
        except StoreError as err:
            return Outcome(500, str(err).encode(), reply_failed=True)
        return outcome

    async def _forward_reply(
        self, target: TriggerTarget, outcome: Outcome, ttl: object,
        send: Callable[[str, Event, Headers], Awaitable[Outcome]],
    ) -> Outcome:
        """A Subscription's reply, as Knative's channel dispatcher (pkg/kncloudevents/
        event_dispatcher.go): none, no ``reply_url``, or an answer that is not an event: done;
        else the reply goes to ``reply_url`` with the delivery's own retries (the subscriber
        is not asked again), with the answer's allow-listed headers, ``Kn-Namespace`` and the
        delivered event's TTL (so a reply that comes back to its own channel ends at MAX_TTL).
        Its failure fails the delivery (the original event then goes to the dead-letter sink
        with the reply URL as ``knativeerrordest``)."""
        headers = list(outcome.headers)
        url = target.reply_url
        if url is None or outcome.status == 202 or (
            not outcome.body and not _has_ce_header(headers)
        ):
            return outcome
        try:
            replies = parse_message(headers, outcome.body)
        except EventError:
            return outcome  # "Response is a non event, discard it"
        out = [*passthrough_headers(headers), (b"Kn-Namespace", target.namespace.encode())]
        spec = target.delivery
        for reply in replies:
            if ttl is not None:
                reply.attrs[TTL] = ttl
            sent = await self.with_retries(spec, functools.partial(send, url, reply, out))
            if not is_success(sent.status):
                return Outcome(sent.status, sent.body, error=sent.error, retriable=False,
                               reply_failed=True)
        return outcome

    async def send(
        self,
        url: str,
        event: Event,
        headers: Headers,
        spec: DeliverySpec,
        series: TriggerSeries | None = None,
        event_type: str = "",
        span: Span | None = None,
    ) -> Outcome:
        """One POST of ``event`` to ``url``, in the mode ``spec.format`` asks for; ``series``
        and ``span`` (when given) record it (Knative's dispatch duration: one per request)."""
        client = self._client
        assert client is not None, "start() first"
        binary = spec.format == "binary" or (spec.format is None and event.form is Form.BINARY)
        out: Headers
        if binary:
            out, body = to_binary(event)
        else:
            out, body = [(b"content-type", STRUCTURED_TYPE)], to_structured(event)
        start = perf_counter()
        try:
            answer = await client.post(
                url, [*headers, *out], body,
                timeout_s=spec.timeout_s or self.attempt_timeout_s,
                max_body=MAX_RESPONSE_BYTES,
            )
        except RequestFailed as err:
            outcome = Outcome(None, f"dispatch error: {err}".encode(), error=str(err))
        else:
            retry_after = answer.header(b"retry-after")
            outcome = Outcome(
                answer.status, answer.body,
                retry_after.decode("latin-1") if retry_after is not None else None,
                headers=tuple(answer.headers),
            )
        if series is not None:
            series.dispatched(event_type, outcome.status, perf_counter() - start)
        if span is not None and not is_success(outcome.status) and span.is_recording():
            # A failed request is an event of the span (a success is the span's own status).
            span.add_event(
                "attempt failed",
                {"url.full": url, "http.response.status_code": outcome.status or 0},
            )
        return outcome


def _has_ce_header(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n.lower() == b"ce-specversion" for n, _ in headers)
