"""Kept-alive HTTP/1.1 connections to one upstream (the user container, or a pod).

Theory of operation: the request head (rewritten by the handler) and the body are written to the
upstream as they arrive. The response is *not* rebuilt: its bytes go to the client exactly as the
upstream sent them, and httptools parses them on the way only to find where the response ends
(so that the connection can be reused), its status, and whether it switched protocols. This is
what makes the proxy cheap: one parse and one write per chunk, no header re-serialisation.

A connection is reusable when the response ended cleanly, said keep-alive, and the whole request
body was sent. Idle connections are kept on a stack (the most recently used first, as it is the
least likely to have been closed by the app's idle timer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from shared.proxy.http1 import LAST_CHUNK, chunk

if TYPE_CHECKING:
    from shared.proxy.exchange import Exchange

# Called when a new connection to the upstream cannot be made, before any byte of the request
# was sent; returns True when it took the exchange over (the activator retries another pod),
# False for the default 502.
ConnectErrorHook = Callable[["UpstreamPool", "Exchange", OSError], bool]


class _HeadResponseDone(Exception):
    """Raised from the parser callback: a HEAD response has no body, whatever it declares."""


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "closed",
        "ex",
        "head_only",
        "keep_alive",
        "parser",
        "pool",
        "read_paused",
        "received",
        "request_sent",
        "response_done",
        "reused",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.closed = False
        self.reused = False
        self.received = False
        self.keep_alive = True
        self.head_only = False
        self.request_sent = False
        self.response_done = False
        self.tunnel = False
        self.read_paused = False

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.pool.host}:{self.pool.port} ex={self.ex!r}>"

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        self.ex = None
        if ex is None or ex.done:
            return
        ex.upstream = None
        conn = ex.conn
        if self.tunnel:
            conn.finish(ex, reusable=False)
        elif self.received:
            # A response without a length ends when the upstream closes (RFC 9112 section
            # 6.3 rule 8); httptools has no EOF call, so a response that said it would close
            # is taken as complete, and any other is truncated: the client must see a break.
            if not self.keep_alive and ex.first_byte_at:
                conn.finish(ex, reusable=False)
            else:
                conn.abort(ex)
        elif self.reused and ex.body_done and ex.request_bytes == 0 and not ex.upgrade:
            # The app closed an idle kept-alive connection as we reused it: nothing of the
            # request was consumed, so it is safe to send again on a new connection, as Go's
            # http.Transport does for requests without a body.
            self.pool.send(ex)
        else:
            conn.upstream_failed(ex, "upstream closed the connection")

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            # Bytes on an idle connection: the upstream is confused; do not reuse it.
            self.transport.close()
            return
        conn = ex.conn
        if self.tunnel:
            conn.write(ex, data)
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            conn.write(ex, data)
            self.tunnel = True
            conn.start_tunnel(ex, self)
            return
        except httptools.HttpParserError:
            # A HEAD response stops the parser on purpose once its head is complete; any
            # other parse error is a broken upstream.
            if not self.response_done:
                self.keep_alive = False
                if ex.first_byte_at:
                    conn.abort(ex)
                else:
                    conn.upstream_failed(ex, "upstream sent an invalid response")
                self.transport.abort()
                return
        conn.write(ex, data)
        if self.response_done:
            conn.finish(ex, reusable=True)

    def pause_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.conn.pause_reading_for_upstream()

    def resume_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.conn.resume_reading_for_upstream()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_headers_complete(self) -> None:
        ex = self.ex
        status = self.parser.get_status_code()
        if ex is not None and status >= 200:
            ex.status = status
            self.keep_alive = self.parser.should_keep_alive()
            if self.head_only:
                self.response_done = True
                raise _HeadResponseDone

    def on_message_complete(self) -> None:
        # Interim 1xx responses (100 Continue, 103 Early Hints) pass through; the exchange
        # ends with the final response.
        if self.parser.get_status_code() >= 200:
            self.response_done = True

    # -- used by the pool and the client connection ------------------------------------
    def attach(self, ex: Exchange, reused: bool) -> None:
        self.ex = ex
        self.reused = reused
        self.received = False
        self.response_done = False
        self.keep_alive = True
        self.head_only = ex.method == b"HEAD"
        ex.upstream = self
        write = self.transport.write
        write(ex.head)
        buf = ex.body_buf
        if buf:
            if ex.upgrade:
                # Bytes that followed an upgrade request belong to the new protocol; they
                # are held until the upstream agrees to switch.
                pass
            else:
                for data in buf:
                    write(chunk(data) if ex.chunked else data)
                buf.clear()
        if ex.body_done and ex.chunked:
            write(LAST_CHUNK)
        self.request_sent = ex.body_done
        ex.conn.upstream_attached(ex)

    def send_body(self, ex: Exchange, data: bytes) -> None:
        self.transport.write(chunk(data) if ex.chunked else data)

    def end_body(self, ex: Exchange) -> None:
        if ex.chunked:
            self.transport.write(LAST_CHUNK)
        self.request_sent = True

    def detach(self, reusable: bool) -> None:
        """The exchange is over: keep the connection for the next request, or close it."""
        self.ex = None
        if self.read_paused:
            self.read_paused = False
            if not self.closed:
                self.transport.resume_reading()
        # Only a connection whose response ended cleanly can carry another request: one cut
        # short (a timeout, the client gone) still has the rest of a response coming.
        if (
            reusable
            and self.response_done
            and self.keep_alive
            and self.request_sent
            and not self.closed
        ):
            if self.head_only:
                # The parser stopped in the middle of a message; start a fresh one.
                self.parser = httptools.HttpResponseParser(self)
            self.pool.release(self)
        else:
            self.closed = True
            self.transport.abort()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.closed:
                self.transport.resume_reading()


class UpstreamPool:
    """Kept-alive connections to one ``host:port``."""

    __slots__ = ("_connecting", "host", "idle", "loop", "max_idle", "on_connect_error", "port")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        max_idle: int = 1000,
        on_connect_error: ConnectErrorHook | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.on_connect_error = on_connect_error
        self.idle: list[UpstreamConnection] = []
        self._connecting: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<UpstreamPool {self.host}:{self.port} idle={len(self.idle)}>"

    def send(self, ex: Exchange) -> None:
        idle = self.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                up.attach(ex, reused=True)
                return
        ex.conn.waiting_for_upstream(ex)
        task = self.loop.create_task(self._connect(ex))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, ex: Exchange) -> None:
        try:
            _, up = await self.loop.create_connection(
                lambda: UpstreamConnection(self), self.host, self.port
            )
        except OSError as err:
            if ex.done:
                return
            hook = self.on_connect_error
            if hook is None or not hook(self, ex, err):
                ex.conn.upstream_failed(ex, f"error dialing upstream: {err.strerror or err}")
            return
        if ex.done:
            self.release(up)
            return
        up.attach(ex, reused=False)

    def release(self, up: UpstreamConnection) -> None:
        if len(self.idle) < self.max_idle:
            self.idle.append(up)
        else:
            up.closed = True
            up.transport.close()

    def close_idle(self) -> None:
        """Close the kept-alive idle connections; exchanges in flight are left to finish."""
        for up in self.idle:
            up.closed = True
            up.transport.close()
        self.idle.clear()

    def close(self) -> None:
        for up in self.idle:
            up.closed = True
            up.transport.close()
        self.idle.clear()
        for task in self._connecting:
            task.cancel()
