"""The client side of the proxy: one ``ServerConnection`` per accepted connection.

Theory of operation: httptools parses the client's bytes and calls back per request. Once a
request head is parsed, the connection's ``RequestHandler`` decides (answer it, reject it, queue
it, forward it). One exchange per connection is served at a time; a pipelined request that
arrives meanwhile waits in ``pipeline`` with the connection's reading paused, so a client can
never make us buffer more than one socket read.

Flow control, both ways: when the upstream cannot take the request body as fast as the client
sends it (``pause_writing`` on the upstream transport), the client is paused, and when the client
cannot take the response as fast as the upstream sends it, the upstream is paused. Nothing is
buffered beyond the transports' high-water marks, so a 1 GiB body never sits in memory.

Timeouts are checked by one sweep every ``TICK_S`` over the exchanges in flight rather than by a
timer per request: a timer per request costs more than the request itself at 20k req/s, and
Knative's timeouts are whole seconds. ``ProxyServer.sweep(now)`` is that check, with the clock
passed in.

The listener's own limits (``ConnectionLimits``) guard the process rather than a request: a
request head must arrive whole within ``header_timeout_s`` (slowloris), a kept-alive connection
with no request in it is closed after ``idle_timeout_s``, and past ``max_connections`` (never
above what the fd limit allows, ``fd_connection_cap``) a new connection is answered 503 and
closed, so that one listener's flood cannot take the fds the process's other listeners need.
They are checked by ``ProxyServer.sweep_connections(now)``, every ``CONNECTION_SWEEP_TICKS``:
a connection only stores when its wait began (``since``), one attribute per request.

The connection's lifecycle is ``shared.proxy.lifecycle.ServerState``; what an ending exchange
leaves behind (reuse the upstream, keep the client) is ``lifecycle.decide``. The upstream side is
reached only through the ``Upstream`` protocol (``shared.proxy.contract``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final, Generic, cast

import httptools

from shared.proxy.contract import Downstream, RequestHandler, TagT, Upstream
from shared.proxy.exchange import Exchange
from shared.proxy.http1 import error_body, simple_response
from shared.proxy.lifecycle import End, ServerState, decide

# The largest request head we parse. Go's net/http allows 1 MiB; h11 16 KiB, nginx 32 KiB. 64 KiB
# leaves room for large cookies and tokens while bounding what a slow client can make us hold.
MAX_HEAD_BYTES: Final = 64 * 1024

# How often timeouts are checked; Knative's timeouts are configured in whole seconds.
TICK_S: Final = 0.1
# The connections' own timeouts (header read, idle) are checked every 5 ticks, 0.5 s: they are
# seconds long, and the check walks every connection (10,000 in 2-5 ms).
CONNECTION_SWEEP_TICKS: Final = 5
# A connection shed over the cap keeps its socket this long at most after its 503, so that the
# client reads the answer before the close (closing with its request unread would send a reset,
# which can discard the 503 on the client's side). At most SHED_LINGER_MAX linger at a time;
# past that a shed connection is closed at once.
SHED_LINGER_S: Final = 1.0
SHED_LINGER_MAX: Final = 256

# Why reading from the client is paused (a bit each; reading resumes when none is left).
_PAUSE_PIPELINE: Final = 1
_PAUSE_WAIT: Final = 2
_PAUSE_UPSTREAM: Final = 4

_TIMEOUT_BODY: Final = error_body("request timeout")
_SHED_RESPONSE: Final = simple_response(
    503, error_body("too many connections"), keep_alive=False, headers=((b"Retry-After", b"1"),)
)
_HEADER_TIMEOUT: Final = simple_response(
    408, error_body("request header timeout"), keep_alive=False
)

# The states, as module globals: one dict lookup on the hot path instead of two.
_IDLE: Final = ServerState.IDLE
_ACTIVE: Final = ServerState.ACTIVE
_TUNNEL: Final = ServerState.TUNNEL
_CLOSED: Final = ServerState.CLOSED
_COMPLETE: Final = End.COMPLETE
_CUT: Final = End.CUT

# The headers llhttp reads keep-alive and upgrade from (see on_headers_complete).
_CONNECTION_NAMES: Final = frozenset({b"connection", b"proxy-connection"})


class _BadHead(Exception):
    """Raised from a parser callback: the head is refused with ``status`` (caught in
    ``data_received``, where httptools re-raises it as the context of its callback error)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def fd_connection_cap() -> int:
    """The most client connections one listener may hold under this process's fd limit.

    A client connection holds an upstream one only while a request on it is being proxied:
    idle keep-alive connections and the activator's queued requests (Knative's queue depth is
    10,000) hold none. So a listener may take all but a reserve for upstream connections and
    everything else (informers, pods' pipes, log files): a quarter of the limit, at most 4,096.
    With the soft limit at 20,000, 20,000 - 4,096 = 15,904; at 1,024, 1,024 - 256 = 768.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 1 << 20
    reserve = min(4096, soft // 4)
    return max(16, soft - reserve)


@dataclass(slots=True)
class ConnectionLimits:
    """One listener's limits on its client connections; 0 turns a timeout off.

    Read at each use, so its owner may change a field at run time (the ingress follows its
    ConfigMap); ``check`` says what is wrong with a value.

    Attributes:
        header_timeout_s: a request head must be read whole within this long of its first byte,
            of the connection's start, or of the end of the response before it (Go's
            ReadHeaderTimeout, Envoy's request_headers_timeout). Past it: 408 if part of a head
            came, else a plain close.
        idle_timeout_s: a kept-alive connection with no request in it is closed after this long
            (Go's IdleTimeout, Envoy's idle_timeout).
        max_connections: client connections at most; a new one past it gets a 503 with
            ``Connection: close``. 0 means ``fd_connection_cap()``, which also bounds any value.
    """

    header_timeout_s: float = 0.0
    idle_timeout_s: float = 0.0
    max_connections: int = 0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises ValueError naming the field with a bad value."""
        for name in ("header_timeout_s", "idle_timeout_s"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be 0 (none) or more, got {value!r}")
        if self.max_connections < 0:
            raise ValueError(
                f"max_connections must be 0 (from the fd limit) or more, got "
                f"{self.max_connections!r}"
            )


class ProxyServer(Generic[TagT]):
    """What the connections of one listening proxy share: the handler and the sweep.

    ``initial_tag`` is every new exchange's ``tag`` until the handler sets its own (``0`` for
    the queue-proxy's flags, None for a handler without tags). It is required rather than
    defaulted to None: mypyc cannot compile the overloads that would pair a default with the
    handler's tag type (the native build, setup.py).
    """

    def __init__(
        self,
        handler: RequestHandler[TagT],
        *,
        initial_tag: TagT,
        max_head_bytes: int = MAX_HEAD_BYTES,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.handler = handler
        self.initial_tag = initial_tag
        self.max_head_bytes = max_head_bytes
        self.limits = limits if limits is not None else ConnectionLimits()
        self.fd_cap = fd_connection_cap()
        self.connections: set[ServerConnection[TagT]] = set()
        self.live: set[Exchange[TagT]] = set()
        # Protocols made by the factory whose connection_made has not run yet: the loop makes
        # up to a backlog of them in one go. Reset each tick, when none can be left.
        self.accepting = 0
        self.shedding: dict[_Shed, float] = {}  # shed connections lingering, since when
        self.shed_count = 0
        self.now = monotonic()
        self._ticks = 0
        self._ticker: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (
            f"<ProxyServer connections={len(self.connections)} in_flight={len(self.live)} "
            f"shed={self.shed_count}>"
        )

    def __call__(self) -> asyncio.Protocol:
        """Protocol factory for ``loop.create_server``: past the cap, a connection is shed."""
        cap = self.limits.max_connections
        cap = min(cap, self.fd_cap) if cap else self.fd_cap
        if len(self.connections) + self.accepting >= cap:
            self.shed_count += 1
            return _Shed(self)
        self.accepting += 1
        return ServerConnection(self)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ticker = loop.call_later(TICK_S, self._tick, loop)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = monotonic()
        self.sweep(now)
        self.accepting = 0
        self._ticks += 1
        if self._ticks >= CONNECTION_SWEEP_TICKS:
            self._ticks = 0
            self.sweep_connections(now)
        self._ticker = loop.call_later(TICK_S, self._tick, loop)

    def sweep(self, now: float) -> None:
        """Time out the exchanges past a deadline at ``now`` (the ``time.monotonic`` clock).

        Knative's three timeouts: the whole request (``deadline``), the first response byte
        (``start_deadline``) and the gap between writes (``idle_timeout``). A tunnel has none.
        """
        self.now = now
        if self.live:
            for ex in list(self.live):
                if ex.tunnel or ex.done:
                    continue
                if (
                    (ex.deadline and now >= ex.deadline)
                    or (ex.start_deadline and not ex.first_byte_at and now >= ex.start_deadline)
                    or (ex.idle_timeout and now - ex.last_write >= ex.idle_timeout)
                ):
                    ex.conn.timeout(ex)

    def sweep_connections(self, now: float) -> None:
        """Close the connections past the header or idle timeout at ``now``, and the shed ones
        that lingered SHED_LINGER_S.

        Only a connection with no exchange handled (``IDLE``) waits on the client: while one is
        handled, the exchange's own timeouts apply. It waits for a head (the header timeout)
        from its start, from the end of a response, or, kept alive, from the first byte of
        the next request; before that byte it is idle (the idle timeout).
        """
        limits = self.limits
        header_s = limits.header_timeout_s
        idle_s = limits.idle_timeout_s
        if header_s or idle_s:
            for conn in list(self.connections):
                if conn.state is not _IDLE:
                    continue
                waited = now - conn.since
                if conn.parsing is not None or not conn.kept:
                    if header_s and waited >= header_s:
                        conn.header_timeout()
                elif idle_s and waited >= idle_s:
                    conn.close()
        if self.shedding:
            for shed, since in list(self.shedding.items()):
                if now - since < SHED_LINGER_S:
                    break  # in order of shedding
                shed.close()

    async def drain(self, timeout_s: float, check_s: float = 0.05) -> None:
        """After the listener closed: close connections as they become idle while exchanges
        are in flight, for at most ``timeout_s``; then stop the sweep and cut what is left."""
        deadline = monotonic() + timeout_s
        while self.live and monotonic() < deadline:
            self.close_idle()
            await asyncio.sleep(check_s)
        self.stop()
        self.abort_all()

    def close_idle(self) -> None:
        """Close every kept-alive connection that has no request in it (for a drain)."""
        for conn in list(self.connections):
            if conn.state is _IDLE and conn.parsing is None:
                conn.close()

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.close()
        for shed in list(self.shedding):
            shed.close()


class _Shed(asyncio.Protocol):
    """A connection past the cap: answered 503 with ``Connection: close``, never parsed.

    The answer goes out before the request is read; the write side is then closed (FIN after
    the 503), what the client sends is discarded, and the socket is closed when the client
    closes its side or after SHED_LINGER_S, whichever comes first.
    """

    __slots__ = ("server", "transport")

    transport: asyncio.Transport

    def __init__(self, server: ProxyServer[Any]) -> None:
        self.server = server

    def __repr__(self) -> str:
        return "<_Shed>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.transport.write(_SHED_RESPONSE)
        shedding = self.server.shedding
        if len(shedding) >= SHED_LINGER_MAX or not self.transport.can_write_eof():
            self.transport.close()
            return
        shedding[self] = self.server.now
        with contextlib.suppress(OSError, RuntimeError):
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read

    def eof_received(self) -> bool:
        return False  # the client read its answer and closed: close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.shedding.pop(self, None)

    def close(self) -> None:
        self.server.shedding.pop(self, None)
        self.transport.close()


class ServerConnection(asyncio.Protocol, Downstream[TagT]):
    """One client connection: parses requests, hands them to the handler, writes responses.

    Implements ``shared.proxy.contract.Downstream``. ``paused`` is the set of reasons reading
    from the client is paused (a bit each: a pipelined request waits, the handler queued the
    request or it waits for an upstream connection, the upstream pushes back); reading resumes
    when none is left.
    """

    __slots__ = (
        "active",
        "budgeted",
        "feed",
        "feeding",
        "get_method",
        "handler",
        "head_budget",
        "head_bytes",
        "hosts",
        "in_head",
        "initial_tag",
        "keeps_alive",
        "kept",
        "named_connection",
        "parser",
        "parsing",
        "paused",
        "pipeline",
        "read_fits",
        "remote",
        "send",
        "server",
        "since",
        "state",
        "transport",
        "transport_paused",
        "tunnel",
        "write_paused",
    )

    transport: asyncio.Transport  # set by connection_made, before any other call

    def __init__(self, server: ProxyServer[TagT]) -> None:
        self.server = server
        self.handler = server.handler
        self.initial_tag = server.initial_tag
        self.state = _IDLE
        self.parser = parser = httptools.HttpRequestParser(self)
        # Bound once: the native build calls these per request without a lookup by name.
        self.feed: Callable[[bytes], None] = parser.feed_data
        self.get_method: Callable[[], bytes] = parser.get_method
        self.keeps_alive: Callable[[], bool] = parser.should_keep_alive
        self.parsing: Exchange[TagT] | None = None
        self.active: Exchange[TagT] | None = None
        self.pipeline: deque[Exchange[TagT]] = deque()
        self.paused = 0
        # The transport's own state, which follows ``paused`` at the end of each read (see
        # _sync_reading), and whether a read is being parsed.
        self.transport_paused = False
        self.feeding = False
        self.write_paused = False
        self.in_head = False
        self.head_bytes = 0
        # The head's size limit: ``head_budget`` is what the head being parsed may still
        # take, counted per field only while ``budgeted``. A head that lies wholly in a read
        # no longer than the limit (``read_fits``) cannot exceed it, so its fields are not
        # counted (~600 instructions a header); one that does not end in the read it began
        # in is counted from then on (_head_continues).
        self.head_budget = 0
        self.budgeted = True
        self.read_fits = False
        self.hosts = 0
        self.named_connection = False
        self.remote = ""
        self.tunnel: Upstream[TagT] | None = None
        # When the connection began to wait on the client (its start, a response's end, a
        # head's first byte: ``server.now``), and whether a request of it was answered yet.
        self.since = server.now
        self.kept = False

    def __repr__(self) -> str:
        return f"<ServerConnection {self.remote} {self.state.value} active={self.active!r}>"

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast("asyncio.Transport", transport)
        self.send: Callable[[bytes], None] = self.transport.write
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if peer else ""
        server = self.server
        if server.accepting:
            server.accepting -= 1
        server.connections.add(self)
        self.since = server.now

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self.server.connections.discard(self)
        self.pipeline.clear()
        ex = self.active
        if ex is not None and not ex.done:
            ex.aborted = True
            self.finish(ex, reusable=False)

    def data_received(self, data: bytes) -> None:
        if self.state is _TUNNEL:
            tunnel = self.tunnel
            assert tunnel is not None
            tunnel.send_raw(data)
            return
        ex = self.active
        if ex is not None and ex.upgrade and ex.body_done:
            # Bytes after an upgrade request, before the upstream answered: keep them for the
            # tunnel (reading is paused meanwhile, so this is at most one read).
            ex.body_buf.append(data)
            self._pause(_PAUSE_WAIT)
            return
        # The head being read when this read came, if any (see _head_continues).
        growing = self.parsing if self.in_head else None
        self.read_fits = len(data) <= self.server.max_head_bytes
        self.feeding = True
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            ex = self.active if self.active is not None else self.parsing
            rest = data[upgrade.args[0] :]
            if ex is not None and rest:
                ex.body_buf.append(rest)
        except httptools.HttpParserCallbackError as err:
            bad = err.__context__
            if isinstance(bad, _BadHead):
                self._reject(bad.status, bad.reason)
            else:
                raise
        except httptools.HttpParserError as err:
            self._reject(400, f"malformed request: {err}")
        else:
            if self.in_head:
                self._head_continues(growing, len(data))
        # (A callback's own bug propagates past this; the loop then closes the transport.)
        self.feeding = False
        self._sync_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    # No on_message_begin: a request's first callback is on_url (a request line without a
    # target does not parse), which begins the exchange; one callback less per request.
    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        if ex is None:
            ex = self.parsing = Exchange(self, self.initial_tag)
            self.in_head = True
            self.head_bytes = 0
            self.head_budget = self.server.max_head_bytes - len(url)
            self.budgeted = not self.read_fits
            self.hosts = 0
            self.named_connection = False
            if self.state is _IDLE and self.kept:
                self.since = self.server.now  # a kept-alive connection's next head: not idle
        else:
            self.head_budget -= len(url)
        ex.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        ex.headers.append((name, value))
        size = len(name)
        if self.budgeted:
            self.head_budget -= size + len(value) + 4
            if self.head_budget < 0:
                raise _BadHead(431, "request header fields too large")
        if size == 4:
            # RFC 9112 section 3.2: a request with more than one Host is answered 400 (which
            # of them would route it, and which would the app see?).
            if name.lower() == b"host":
                self.hosts += 1
                if self.hosts > 1:
                    raise _BadHead(400, "more than one Host header")
        elif size == 17 and name.lower() == b"transfer-encoding":
            ex.chunked = True
        elif (size == 10 or size == 16) and name.lower() in _CONNECTION_NAMES:
            self.named_connection = True

    def on_headers_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        parser = self.parser
        self.in_head = False
        ex.method = self.get_method()
        ex.keep_alive = keep_alive = self.keeps_alive()
        # llhttp keeps a request alive unasked only from HTTP/1.1 on (the one such version it
        # accepts) and upgrades only what a Connection header asks for, or a CONNECT; so a
        # plain request skips both questions (the version costs a str.format each time).
        named = self.named_connection
        if named or not keep_alive:
            ex.version = parser.get_http_version()
        if (named or ex.method == b"CONNECT") and parser.should_upgrade():
            ex.upgrade = True
            ex.body_done = True
        state = self.state
        if state is _IDLE:
            self.active = ex
            self.state = _ACTIVE
            self.server.live.add(ex)
            self.handler.handle(ex)
        elif state is _ACTIVE:
            self.pipeline.append(ex)
            self._pause(_PAUSE_PIPELINE)
        else:
            # Closing (bad input, a response that closes): the rest of the read is dropped.
            self.parsing = None

    def on_body(self, data: bytes) -> None:
        ex = self.parsing
        if ex is None or ex.done:
            return
        ex.request_bytes += len(data)
        up = ex.upstream
        if up is not None:
            up.send_body(ex, data)
        else:
            ex.body_buf.append(data)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        if ex is None or ex.upgrade:
            return
        ex.body_done = True
        up = ex.upstream
        if up is not None and not ex.done:
            up.end_body(ex)
        elif ex is self.active and self.paused & _PAUSE_WAIT:
            # Queued, or waiting for a connection, with nothing left to hold back: read on, so
            # that a client that leaves is seen at once and its exchange ends (a queued one
            # frees its place, as a Knative request's cancelled context does). Paused and
            # resumed in one parse, the socket's polling never changes.
            self._resume(_PAUSE_WAIT)

    # -- Downstream: used by the exchange and the upstream side ---------------------------
    def respond(self, ex: Exchange[TagT], data: bytes, status: int, keep_alive: bool) -> None:
        if ex.done:
            return
        ex.status = status
        self.write(ex, data)
        ex.keep_alive = ex.keep_alive and keep_alive
        self.finish(ex, True)  # reusable

    def write(self, ex: Exchange[TagT], data: bytes) -> None:
        if not ex.first_byte_at:
            ex.first_byte_at = monotonic()
        ex.response_bytes += len(data)
        ex.last_write = self.server.now
        self.send(data)

    def waiting_for_upstream(self, ex: Exchange[TagT]) -> None:
        if not ex.body_done:
            self._pause(_PAUSE_WAIT)

    def wait(self, ex: Exchange[TagT]) -> None:
        """The handler queued the request: stop reading its body until it may go (a request
        read whole is read on: ``on_message_complete``).

        Handlers call ``ex.wait()``; this name stays for the callers of ``ex.conn.wait(ex)``.
        """
        if not ex.body_done:
            self._pause(_PAUSE_WAIT)

    def upstream_attached(self, ex: Exchange[TagT]) -> None:
        if self.paused & _PAUSE_WAIT:
            self._resume(_PAUSE_WAIT)
        if self.write_paused and ex.upstream is not None:
            ex.upstream.pause_reading()

    def pause_reading_for_upstream(self) -> None:
        self._pause(_PAUSE_UPSTREAM)

    def resume_reading_for_upstream(self) -> None:
        self._resume(_PAUSE_UPSTREAM)

    def start_tunnel(self, ex: Exchange[TagT], up: Upstream[TagT]) -> None:
        """The upstream switched protocols (101): from now on bytes pass through untouched."""
        ex.tunnel = True
        self.tunnel = up
        self.state = _TUNNEL
        for data in ex.body_buf:
            up.send_raw(data)
        ex.body_buf.clear()
        self._resume(_PAUSE_WAIT)

    def upstream_failed(self, ex: Exchange[TagT], reason: str) -> None:
        if ex.first_byte_at:
            self.abort(ex)
        else:
            # As Go's ReverseProxy: 502 when the upstream cannot be reached or breaks.
            self.respond(ex, simple_response(502, error_body(reason), keep_alive=False), 502, False)

    def timeout(self, ex: Exchange[TagT]) -> None:
        if ex.first_byte_at:
            self.abort(ex)
        else:
            # Knative's timeout handler answers 504 with the body "request timeout".
            self.respond(ex, simple_response(504, _TIMEOUT_BODY, keep_alive=False), 504, False)

    def abort(self, ex: Exchange[TagT]) -> None:
        """The response cannot be completed: the client must see a broken connection."""
        ex.aborted = True
        self.finish(ex, reusable=False)
        self.transport.abort()

    def finish(self, ex: Exchange[TagT], reusable: bool) -> None:
        if ex.done:
            return
        ex.done = True
        self.server.live.discard(ex)
        up = ex.upstream
        if up is not None:
            ex.upstream = None
            decision = decide(
                _COMPLETE if reusable else _CUT,
                up.state,
                up.keep_alive,
                up.request_sent,
                up.reused,
                ex.body_done,
                ex.request_bytes,
                ex.upgrade,
                ex.keep_alive,
                ex.first_byte_at,
            )
            up.detach(decision.reuse_upstream)
        else:
            decision = decide(
                _COMPLETE if reusable else _CUT,
                None,
                False,
                False,
                False,
                ex.body_done,
                ex.request_bytes,
                ex.upgrade,
                ex.keep_alive,
                ex.first_byte_at,
            )
        self.tunnel = None
        if self.active is ex:
            self.active = None
            if self.state is _ACTIVE:
                self.state = _IDLE
                self.since = self.server.now
                self.kept = True
        if self.paused & (_PAUSE_WAIT | _PAUSE_UPSTREAM):
            self._resume(_PAUSE_WAIT | _PAUSE_UPSTREAM)
        try:
            self.handler.finished(ex)
        finally:
            if not decision.keep_client:
                self.close()
            elif self.pipeline:
                nxt = self.pipeline.popleft()
                if not self.pipeline:
                    self._resume(_PAUSE_PIPELINE)
                self.active = nxt
                self.state = _ACTIVE
                self.server.live.add(nxt)
                self.handler.handle(nxt)

    def close(self) -> None:
        self.state = _CLOSED
        self.transport.close()

    def header_timeout(self) -> None:
        """The sweep: no whole head within the header timeout. Part of one came: 408 (as
        nginx's client_header_timeout); nothing came: a plain close (as Go's server)."""
        if self.parsing is not None:
            self.transport.write(_HEADER_TIMEOUT)
        self.parsing = None
        self.close()

    # -- internals ---------------------------------------------------------------------
    def _head_continues(self, growing: Exchange[TagT] | None, read_bytes: int) -> None:
        """A read ended inside a head: hold the head to its size limit from here on."""
        ex = self.parsing
        assert ex is not None  # in_head: on_url began an exchange
        if not self.budgeted:
            # It began in this read, uncounted (read_fits): count the fields it has so far.
            self.budgeted = True
            self.head_budget -= sum(len(name) + len(value) + 4 for name, value in ex.headers)
        elif ex is growing:
            # It began before this read and took all of it (the field being read, which
            # on_header has not counted yet). Counted after the parse, as the read that ends a
            # head may carry a body, which is no head byte.
            self.head_bytes += read_bytes
        if self.head_budget < 0 or self.head_bytes > self.server.max_head_bytes:
            self._reject(431, "request header fields too large")

    def _reject(self, status: int, reason: str) -> None:
        """Bad input: answer once, then close; the rest of what the client sent is dropped.

        Bad input in the body of the request being handled (a malformed chunk size) ends that
        exchange with the answer, if none of its response was written yet; its upstream
        connection, which got part of a body, is closed. A bad head of a request pipelined
        behind a response in progress cannot be answered in turn: the connection closes.
        """
        data = simple_response(status, error_body(reason), keep_alive=False)
        ex = self.active
        if ex is None:
            self.transport.write(data)
        elif ex is self.parsing and not ex.first_byte_at and not ex.done:
            self.respond(ex, data, status, False)
        self.parsing = None
        self.close()

    def _pause(self, reason: int) -> None:
        self.paused |= reason
        if not self.feeding:
            self._sync_reading()

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.feeding:
                self._sync_reading()

    def _sync_reading(self) -> None:
        """Pause or resume the transport as ``paused`` says.

        Deferred to the end of a read while it is parsed: a request queued and then read
        whole in the same read is paused and resumed there, and libuv would still re-arm the
        socket's polling for it (an epoll_ctl per request with containerConcurrency set).
        """
        paused = bool(self.paused)
        if paused != self.transport_paused and not self.transport.is_closing():
            self.transport_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()
