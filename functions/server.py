"""A minimal HTTP/1.1 server for one ASGI application: the function host's server.

Why not aiohttp's server (the host's first version bridged ASGI onto aiohttp's low-level
server): measured here as CPU time per request of the server process under wrk (the figure a
shared machine disturbs least), the http template took 53-57 us through aiohttp and 27-30 us
here, 36-44 us against 16-17 us without its per-request log line; func-python's Hypercorn
took 214 us. The proxy core's figures tell the same story (README: an aiohttp server reaches
about 14 % of nginx's throughput, a bare Protocol about 95 %).

Theory of operation (the shape of uvicorn's httptools protocol, kept to what a function
needs): one ``asyncio.Protocol`` per connection, httptools' C parser, uvloop underneath.

- A request is a ``Cycle``: its ASGI scope, its body as it arrives, its response as the app
  sends it. The app runs in a task per request; a connection runs one cycle at a time, and
  requests pipelined behind it wait, parsed, in ``pending`` (reading pauses meanwhile).
- Body in: chunks are queued for ``receive()``; past ``BODY_HIGH_WATER_BYTES`` buffered the
  connection stops reading until the app takes them (back-pressure to the client).
- Body out: the head is written with the first body message, so a response sent in one
  message gets a Content-Length; a streamed one without Content-Length is chunked (HTTP/1.1)
  or ends by closing (HTTP/1.0). ``send`` waits while the transport's buffer is over its
  high-water mark (a slow reader slows the app, never the heap). HEAD gets the head only.
- Keep-alive as httptools reads the request (HTTP/1.1 unless ``Connection: close``; HTTP/1.0
  only with ``keep-alive``). An app that fails before its response gets a 500; after it, the
  connection is closed, the only honest signal left; either way the connection is not kept.
  A request that does not parse gets 400, a head over ``MAX_HEAD_BYTES`` 431, and the
  connection is closed.
- Draining (``Server.drain``): stop accepting, mark every later response
  ``Connection: close``, wait up to the drain period for open connections to end, then close
  what is left. A keep-alive client then sees its connection closed after a response rather
  than under a request it has just sent.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, cast
from urllib.parse import unquote_to_bytes

import httptools

__all__ = ["BODY_HIGH_WATER_BYTES", "Server"]

log = logging.getLogger("functions.server")

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]

BODY_HIGH_WATER_BYTES: Final = 256 * 1024
# The request line and headers together, as Go's net/http DefaultMaxHeaderBytes (1 MiB) would
# be generous for a function; Node's 16 KiB is the common floor. Past it: 431 and close.
MAX_HEAD_BYTES: Final = 64 * 1024
_REASONS: Final = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_BAD_REQUEST: Final = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_TOO_LARGE: Final = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                     b"connection: close\r\n\r\n")  # fmt: skip
_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}


class _Clock:
    """The Date header, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


class Server:
    """Serves ``app`` on listening sockets until ``drain``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.connections: set[Connection] = set()
        self.draining = False
        self.clock = _Clock()
        self._listeners: list[asyncio.base_events.Server] = []

    def __repr__(self) -> str:
        return f"<Server connections={len(self.connections)} draining={self.draining}>"

    async def listen(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: Connection(self), sock=sock, backlog=1024)
        self._listeners.append(listener)

    async def drain(self, period_s: float) -> None:
        """Stop accepting; let open connections end within ``period_s``; close the rest."""
        for listener in self._listeners:
            listener.close()
        self.draining = True
        loop = asyncio.get_running_loop()
        end = loop.time() + period_s
        while self.connections and loop.time() < end:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()


class Cycle:
    """One request and its response (module doc)."""

    __slots__ = (
        "body",
        "body_done",
        "buffered",
        "chunked",
        "conn",
        "continue_sent",
        "ended",
        "expect_continue",
        "finished",
        "head_only",
        "head_written",
        "headers",
        "keep_alive",
        "more_sent",
        "scope",
        "started",
        "status",
        "waiter",
    )

    def __init__(self, conn: Connection, scope: MutableMapping[str, Any], keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.head_only = scope["method"] == "HEAD"
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.body_done = False
        self.more_sent = False  # the final http.request message went out
        self.expect_continue = False
        self.continue_sent = False
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.finished = False
        self.ended = False  # the connection is gone
        self.chunked = False
        self.head_written = False
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []

    def __repr__(self) -> str:
        return (
            f"<Cycle {self.scope['method']} {self.scope['path']} status={self.status} "
            f"started={self.started} finished={self.finished}>"
        )

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        await self.waiter

    async def receive(self) -> Message:
        if self.expect_continue and not self.continue_sent and not self.started:
            self.continue_sent = True
            self.conn.write(_CONTINUE)
        while not self.body and not self.body_done and not self.ended:
            await self._wait()
        if self.body:
            data = b"".join(self.body) if len(self.body) > 1 else self.body[0]
            self.body.clear()
            self.buffered = 0
            self.conn.body_taken()
            more = not self.body_done
            self.more_sent = not more
            return {"type": "http.request", "body": data, "more_body": more}
        if self.body_done and not self.more_sent and not self.ended:
            self.more_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while not self.ended and not self.finished:
            await self._wait()  # ASGI: after the body, receive() waits for the disconnect
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers") or ()]
            return
        if kind != "http.response.body":
            return
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            raise RuntimeError("http.response.body after the response ended")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        conn = self.conn
        if not self.ended:
            out = []
            if not self.head_written:
                out.append(self._head(body, more))
            if self.head_only:
                pass
            elif self.chunked:
                if body:
                    out.append(b"%x\r\n%s\r\n" % (len(body), body))
                if not more:
                    out.append(b"0\r\n\r\n")
            elif body:
                out.append(body)
            if out:
                conn.write(b"".join(out) if len(out) > 1 else out[0])
        if not more:
            self.finished = True
            self.wake()
        elif conn.write_paused and not self.ended:
            await conn.wait_writable()

    def _head(self, body: bytes, more: bool) -> bytes:
        """The status line and headers, framed (module doc)."""
        self.head_written = True
        status = self.status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        has_length = False
        for name, value in self.headers:
            if name == b"content-length":
                has_length = True
            elif name == b"transfer-encoding":
                continue  # framing is ours
            elif name == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            lines.append(b"%s: %s\r\n" % (name, value))
        no_body = status < 200 or status in (204, 304)
        if has_length or no_body:
            pass
        elif not more:
            lines.append(b"content-length: %d\r\n" % len(body))
        elif self.scope["http_version"] == "1.1":
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            self.keep_alive = False  # HTTP/1.0 without a length: the end is the close
        if self.conn.server.draining or not self.keep_alive:
            self.keep_alive = False
            lines.append(b"connection: close\r\n")
        lines.append(b"date: %s\r\n\r\n" % self.conn.server.clock.date())
        return b"".join(lines)


class Connection(asyncio.Protocol):
    """One client connection (module doc)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.active: Cycle | None = None  # the cycle whose app runs
        self.parsing: Cycle | None = None  # the cycle whose request is being parsed
        self.pending: collections.deque[Cycle] = collections.deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.write_paused = False
        self.read_paused = False
        self.writable: asyncio.Future[None] | None = None
        self.closing = False

    def __repr__(self) -> str:
        return f"<Connection {self.client} active={self.active!r} pending={len(self.pending)}>"

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if peer else None
        self.local = (str(sock[0]), int(sock[1])) if sock else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True
        self.server.connections.discard(self)
        for cycle in (self.active, *self.pending):
            if cycle is not None:
                cycle.ended = True
                cycle.wake()
        self.pending.clear()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrades (WebSocket, h2c) here: the request is answered, then we close.
            if self.parsing is not None:
                self.parsing.keep_alive = False
            self.closing = True
        except httptools.HttpParserError as err:
            self.closing = True
            if self.active is None and self.transport is not None:
                too_large = isinstance(err.__context__, _HeadTooLarge)
                self.transport.write(_TOO_LARGE if too_large else _BAD_REQUEST)
                self.transport.close()
        except _HeadTooLarge:
            self.closing = True
            if self.active is None and self.transport is not None:
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    async def wait_writable(self) -> None:
        self.writable = self.loop.create_future()
        await self.writable

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self._count(len(name) + len(value))

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        parser = self.parser
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        if b"%" in raw_path:
            path = unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")
        else:
            path = raw_path.decode("utf-8", "surrogateescape")
        scope: MutableMapping[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": self.local,
        }
        cycle = Cycle(self, scope, parser.should_keep_alive())
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                cycle.expect_continue = True
        self.parsing = cycle
        if self.active is None:
            self._run(cycle)
        else:
            self.pending.append(cycle)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.ended or cycle.finished:
            return  # answered already: the rest of its body is read and dropped
        cycle.body.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > BODY_HIGH_WATER_BYTES:
            self._pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is not None:
            cycle.body_done = True
            cycle.wake()

    # -- cycles
    def _run(self, cycle: Cycle) -> None:
        self.active = cycle
        task = self.loop.create_task(self._cycle(cycle))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _cycle(self, cycle: Cycle) -> None:
        try:
            await self.server.app(cycle.scope, cycle.receive, cycle.send)
        except Exception:
            log.exception("the application failed on %s %s", cycle.scope["method"],
                          cycle.scope["path"])  # fmt: skip
            cycle.keep_alive = False  # what state the application is in is unknown
            if not cycle.started:
                await _plain(cycle, 500, b"Internal Server Error")
        else:
            if not cycle.started:
                await _plain(cycle, 500, b"the application sent no response")
            elif not cycle.finished:
                cycle.keep_alive = False  # the response has no end: close
        finally:
            self._done(cycle)

    def _done(self, cycle: Cycle) -> None:
        self.active = None
        if self.transport is None:
            return
        if not cycle.keep_alive or not cycle.finished or self.closing:
            self.transport.close()
            return
        if self.pending:
            self._run(self.pending.popleft())
        if not self.pending:
            self._resume_reading()

    def body_taken(self) -> None:
        if not self.pending:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the request head passed MAX_HEAD_BYTES."""


async def _plain(cycle: Cycle, status: int, text: bytes) -> None:
    await cycle.send({"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await cycle.send({"type": "http.response.body", "body": text})
