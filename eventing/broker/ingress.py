"""The broker ingress: ``POST /<namespace>/<broker>`` stores an event and answers 202.

Knative's status table (pkg/broker/ingress/ingress_handler.go), in the order it checks:

    OPTIONS                      200, Allow, WebHook-Allowed-Origin: *, WebHook-Allowed-Rate: *
    not POST                     405 with Allow: POST, OPTIONS  (knpy: GET /healthz answers)
    POST /                       404
    a path not /<ns>/<broker>    400
    body over the limit          413  (knpy's limit; Knative has none, see MAX_BODY_BYTES)
    not a valid CloudEvent       400
    unknown broker               404
    knativebrokerttl used up     400
    the log cannot store it      500  (knpy; Knative's 500 is "the channel failed")
    stored                       202  only once the event log has it durably

Every accepted event gets ``knativearrivaltime`` (now, RFC 3339) and ``knativebrokerttl``:
255 (``MAX_TTL``) when absent, else one less (a value that is not an integer counts as
absent, as Knative's TTLDefaulter); at 0 it is refused, so a reply loop dies after 255 hops.
Only Knative's allow-listed headers (pkg/utils/headers.go: ``x-request-id``, ``retry-after``,
``knative-*``, ``x-b3-*``) are kept and passed on to subscribers; ``ce-`` headers are not, the
event carries them.

Batched mode (``application/cloudevents-batch+json``) is a knpy extension: Knative's ingress
answers it 400. Its events are validated first and stored together or not at all.

The HTTP side is a small ``asyncio.Protocol`` on httptools, as the proxy core is (its
measurement: aiohttp's server is several times slower per request); it never forwards a
request, so it keeps none of the proxy's upstream machinery. Answers go out in request order
(a pipelined request may be stored before the one ahead of it is).
"""

from __future__ import annotations

import asyncio
import datetime
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Final

import httptools

from eventing.broker.backend import EventLog, Headers, StoreError
from eventing.broker.metrics import BrokerMetrics
from eventing.broker.observability import end_span, ingress_span, stamp
from shared.cloudevent import ARRIVAL, MAX_TTL, TTL, Event, EventError, parse_message
from shared.proxy.http1 import error_body, simple_response

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer
    from opentelemetry.trace import Span

__all__ = [
    "MAX_BODY_BYTES",
    "Ingress",
    "IngressConnection",
    "TtlExceeded",
    "passthrough_headers",
]

# The largest request body (one event, or a batch) the ingress takes: 4 MiB. CloudEvents
# intermediaries must forward 64 KiB; Kafka's default message limit is 1 MiB, RabbitMQ's
# 16 MiB (128 MiB before 3.13). Past it: 413, without reading the body into memory.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# Requests of one connection answered out of order at most (pipelining); then reading pauses.
MAX_PENDING: Final = 16
# A refused body is read and dropped up to this much, so the client sees its 413, then closed.
DISCARD_LIMIT_BYTES: Final = 64 * 1024 * 1024

_ALLOW: Final = (b"Allow", b"POST, OPTIONS")
_ACCEPTED: Final = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
_OPTIONS: Final = simple_response(
    200,
    headers=(_ALLOW, (b"WebHook-Allowed-Origin", b"*"), (b"WebHook-Allowed-Rate", b"*")),
)
_METHOD: Final = simple_response(405, error_body("method not allowed"), headers=(_ALLOW,))
_ROOT: Final = simple_response(404, error_body("no broker: POST /<namespace>/<broker>"))
_READY: Final = simple_response(200, b"ok\n")
_NOT_READY: Final = simple_response(503, error_body("not ready"))
_PASS_NAMES: Final = frozenset({b"x-request-id", b"retry-after"})
_PASS_PREFIXES: Final = (b"knative-", b"x-b3-")

Respond = Callable[[bytes, bool], None]  # (response bytes, close the connection after)


class TtlExceeded(EventError):
    """``knativebrokerttl`` reached 0: a loop (Knative answers 400)."""


def passthrough_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The headers Knative passes on from a producer (or a reply) to subscribers."""
    kept = []
    for name, value in headers:
        lname = name.lower()
        if lname in _PASS_NAMES or lname.startswith(_PASS_PREFIXES):
            kept.append((name, value))
    return kept


def _now_rfc3339() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ttl_of(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


class Ingress:
    """The ingress policy, apart from HTTP: which request gets what, and the storing.

    ``broker_known(namespace, name)`` says whether this data plane serves that broker;
    ``ready()`` whether it serves at all (the readiness endpoint).
    """

    def __init__(
        self,
        log: EventLog,
        broker_known: Callable[[str, str], bool],
        *,
        max_ttl: int = MAX_TTL,
        max_body_bytes: int = MAX_BODY_BYTES,
        ready: Callable[[], bool] = lambda: True,
        now: Callable[[], str] = _now_rfc3339,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        if max_ttl < 1:
            raise ValueError(f"max_ttl must be at least 1, got {max_ttl}")
        self.log = log
        self.broker_known = broker_known
        self.max_ttl = max_ttl
        self.max_body_bytes = max_body_bytes
        self.ready = ready
        self.now = now
        self.accepted = 0
        self.refused = 0
        self.connections: set[IngressConnection] = set()
        self.metrics = metrics
        # None: tracing off, and the hot path does nothing for it (eventing/broker/
        # observability.py sets it as config-observability says).
        self.tracer: Tracer | None = None

    def __repr__(self) -> str:
        return f"<Ingress accepted={self.accepted} refused={self.refused}>"

    def ingest(self, broker: str, events: list[Event], headers: Headers) -> Awaitable[None]:
        """Stamp ``events`` (arrival time, TTL) and store them for ``broker`` (``ns/name``);
        the dispatcher re-ingests replies through here too.

        Raises:
            TtlExceeded: an event's TTL is used up (nothing is stored).
        """
        arrival = self.now()
        stamped = []
        for ev in events:
            raw = ev.attrs.get(TTL)
            ttl = _ttl_of(raw) if raw is not None else None
            ttl = self.max_ttl if ttl is None else max(0, ttl - 1)
            if ttl <= 0:
                raise TtlExceeded(f"{TTL} reached 0: dropping event {ev.attrs.get('id')!r}")
            attrs = ev.attrs
            attrs[TTL] = ttl
            attrs[ARRIVAL] = arrival
            stamped.append((ev, headers))
        return self.log.append(broker, stamped)

    def handle(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        respond: Respond,
    ) -> None:
        """Answer one request through ``respond``, now or once the event is stored."""
        if method == b"POST":
            self._post(target, headers, body, respond)
        elif method == b"OPTIONS":
            respond(_OPTIONS, False)
        elif method == b"GET" and target.split(b"?", 1)[0] in (b"/healthz", b"/readyz"):
            respond(_READY if self.ready() else _NOT_READY, False)
        else:
            self.refused += 1
            respond(_METHOD, False)

    def _post(
        self, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, respond: Respond
    ) -> None:
        path = target.split(b"?", 1)[0]
        if path == b"/":
            self._refuse(respond, _ROOT)
            return
        parts = path.rstrip(b"/").split(b"/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            self._refuse(respond, 400, "malformed path: POST /<namespace>/<broker>")
            return
        try:
            events = parse_message(headers, body)
        except EventError as err:
            self._refuse(respond, 400, f"invalid event: {err}")
            return
        if not events:
            self._refuse(respond, 400, "an empty batch")
            return
        namespace = parts[1].decode("latin-1")
        name = parts[2].decode("latin-1")
        if not self.broker_known(namespace, name):
            self._refuse(respond, 404, f'broker "{name}" not found in namespace "{namespace}"')
            return
        broker = f"{namespace}/{name}"
        span = None
        if self.tracer is not None:
            span = ingress_span(self.tracer, namespace, name, headers, events[0])
            stamp(events, span)
        start = perf_counter()
        try:
            stored = self.ingest(broker, events, passthrough_headers(headers))
        except TtlExceeded as err:
            if span is not None:
                end_span(span, "ttl exceeded", 400)
            self._refuse(respond, 400, str(err))
            return
        fut = asyncio.ensure_future(stored)
        fut.add_done_callback(lambda f: self._stored(f, respond, broker, events, start, span))

    def _stored(
        self,
        fut: asyncio.Future[None],
        respond: Respond,
        broker: str,
        events: list[Event],
        start: float,
        span: Span | None,
    ) -> None:
        err = None if fut.cancelled() else fut.exception()
        status = 500 if fut.cancelled() or err is not None else 202
        metrics = self.metrics
        if metrics is not None:
            # Knative's ingress records the time to hand the event on (to its channel; here
            # to the log), with the status that came back.
            seconds = perf_counter() - start
            series = metrics.ingress(broker)
            for ev in events:
                etype = ev.attrs.get("type")
                series.stored(etype if isinstance(etype, str) else "", status, seconds)
        if status == 500:
            reason = str(err) if isinstance(err, StoreError) else "the event log failed"
            if span is not None:
                end_span(span, reason, 500)
            self._refuse(respond, 500, reason)
            return
        if span is not None:
            end_span(span, "stored", 202)
        self.accepted += 1
        respond(_ACCEPTED, False)

    def _refuse(self, respond: Respond, status: int | bytes, reason: str = "") -> None:
        self.refused += 1
        data = status if isinstance(status, bytes) else simple_response(status, error_body(reason))
        respond(data, False)


class _Pending:
    __slots__ = ("close", "data")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False


class IngressConnection(asyncio.Protocol):
    """One client connection: httptools parses, ``Ingress.handle`` answers, answers leave in
    request order. A body past the limit is answered 413 and dropped as it arrives."""

    __slots__ = (
        "body",
        "body_bytes",
        "discarding",
        "headers",
        "ingress",
        "keep_alive",
        "parser",
        "paused",
        "pending",
        "target",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[_Pending] = deque()
        self.headers: list[tuple[bytes, bytes]] = []
        self.target = b""
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.discarding = 0  # bytes of a refused body dropped so far; -1: not discarding
        self.keep_alive = True
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ingress.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer_now(simple_response(400, error_body("upgrade not supported")), True)
        except httptools.HttpParserError as err:
            self._answer_now(simple_response(400, error_body(f"malformed request: {err}")), True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pending.clear()
        self.ingress.connections.discard(self)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = []
        self.target = b""
        self.body = []
        self.body_bytes = 0
        self.discarding = -1

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        limit = self.ingress.max_body_bytes
        expect = False
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False  # httptools refuses a bad Content-Length itself
                if too_big:
                    self._too_large()
                    return
            elif lname == b"expect" and value.lower() == b"100-continue":
                expect = True
        if expect:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, data: bytes) -> None:
        if self.discarding >= 0:
            self.discarding += len(data)
            if self.discarding > DISCARD_LIMIT_BYTES:
                self.transport.close()
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.ingress.max_body_bytes:
            self.body = []
            self._too_large()
            return
        self.body.append(data)

    def on_message_complete(self) -> None:
        if self.discarding >= 0:
            # The refused body is over: close once its 413 (queued behind earlier answers
            # perhaps) is written.
            self.discarding = -1
            if not self.pending:
                self.transport.close()
            return
        self.keep_alive = self.parser.should_keep_alive()
        slot = _Pending()
        self.pending.append(slot)
        if len(self.pending) >= MAX_PENDING and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = self.keep_alive
        self.ingress.handle(
            self.parser.get_method(),
            self.target,
            self.headers,
            body,
            lambda data, close: self._answer(slot, data, close or not keep_alive),
        )

    # -- answers ---------------------------------------------------------------------------
    def _too_large(self) -> None:
        limit = self.ingress.max_body_bytes
        self.discarding = 0
        self.ingress.refused += 1
        slot = _Pending()
        self.pending.append(slot)
        self._answer(
            slot,
            simple_response(
                413, error_body(f"the event is larger than the limit of {limit} bytes"),
                keep_alive=False,
            ),
            True,
        )

    def _answer_now(self, data: bytes, close: bool) -> None:
        slot = _Pending()
        self.pending.append(slot)
        self._answer(slot, data, close)

    def _answer(self, slot: _Pending, data: bytes, close: bool) -> None:
        if close and b"\r\nConnection: close\r\n" not in data[: data.find(b"\r\n\r\n") + 2]:
            head, sep, rest = data.partition(b"\r\n")
            data = head + sep + b"Connection: close\r\n" + rest
        slot.data = data
        slot.close = close
        pending = self.pending
        transport = self.transport
        while pending and pending[0].data is not None:
            done = pending.popleft()
            if transport.is_closing():
                pending.clear()
                return
            assert done.data is not None
            transport.write(done.data)
            if done.close:
                pending.clear()
                if self.discarding < 0:
                    transport.close()
                return
        if self.paused and len(pending) < MAX_PENDING // 2:
            self.paused = False
            transport.resume_reading()
