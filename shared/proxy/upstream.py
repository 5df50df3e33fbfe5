"""Kept-alive HTTP/1.1 connections to one upstream (the user container, or a pod).

Theory of operation: the request head (rewritten by the handler) and the body are written to the
upstream as they arrive. The response is *not* rebuilt: its bytes go to the client exactly as the
upstream sent them, and httptools parses them on the way only to find where the response ends
(so that the connection can be reused), its status, and whether it switched protocols. This is
what makes the proxy cheap: one parse and one write per chunk, no header re-serialisation.

A connection is reusable when the response ended cleanly, said keep-alive, and the whole request
body was sent (``lifecycle.decide``, asked by the client connection when the exchange ends).
Idle connections are kept on a stack (the most recently used first, as it is the least likely to
have been closed by the app's idle timer). The connection's lifecycle is
``lifecycle.UpstreamState``; the client side is reached only through the ``Downstream`` protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias, cast

import httptools

from shared.proxy.contract import Connector, Pool, TagT, Upstream
from shared.proxy.http1 import LAST_CHUNK, chunk
from shared.proxy.lifecycle import End, Next, UpstreamState, decide

if TYPE_CHECKING:
    from shared.proxy.exchange import Exchange

# Called when a new connection to the upstream cannot be made, before any byte of the request
# was sent; returns True when it took the exchange over (the activator retries another pod),
# False for the default 502.
ConnectErrorHook: TypeAlias = Callable[["UpstreamPool[TagT]", "Exchange[TagT]", OSError], bool]

_IDLE: Final = UpstreamState.IDLE
_WAITING: Final = UpstreamState.WAITING
_RECEIVING: Final = UpstreamState.RECEIVING
_DONE: Final = UpstreamState.DONE
_TUNNEL: Final = UpstreamState.TUNNEL
_CLOSED: Final = UpstreamState.CLOSED


class _HeadResponseDone(Exception):
    """Raised from the parser callback: a HEAD response has no body, whatever it declares."""


class UpstreamConnection(asyncio.Protocol, Upstream[TagT]):
    """One connection to the upstream; implements ``shared.proxy.contract.Upstream``."""

    __slots__ = (
        "ex",
        "head_only",
        "keep_alive",
        "parser",
        "pool",
        "read_paused",
        "request_sent",
        "reused",
        "state",
        "transport",
    )

    transport: asyncio.Transport  # set by connection_made, before the pool hands it out

    def __init__(self, pool: UpstreamPool[TagT]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange[TagT] | None = None
        self.state = _IDLE
        # Facts about the exchange on the connection, for lifecycle.decide.
        self.reused = False
        self.keep_alive = True
        self.request_sent = False
        self.head_only = False  # a HEAD request: the response has no body, whatever it says
        self.read_paused = False

    def __repr__(self) -> str:
        return (
            f"<UpstreamConnection {self.pool.host}:{self.pool.port} {self.state.value} "
            f"ex={self.ex!r}>"
        )

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        self.state = _CLOSED
        ex = self.ex
        self.ex = None
        if ex is None or ex.done:
            return
        ex.upstream = None
        decision = decide(
            End.UPSTREAM_CLOSED,
            state,
            self.keep_alive,
            self.request_sent,
            self.reused,
            ex.body_done,
            ex.request_bytes,
            ex.upgrade,
            ex.keep_alive,
            ex.first_byte_at,
        )
        action = decision.next
        conn = ex.conn
        if action is Next.RETRY:
            self.pool.send(ex)
        elif action is Next.FINISH:
            conn.finish(ex, reusable=False)
        elif action is Next.ABORT:
            conn.abort(ex)
        else:
            conn.upstream_failed(ex, "upstream closed the connection")

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            # Bytes on an idle connection: the upstream is confused; do not reuse it.
            self.state = _CLOSED
            self.transport.close()
            return
        conn = ex.conn
        state = self.state
        if state is _TUNNEL:
            conn.write(ex, data)
            return
        if state is _WAITING:
            self.state = _RECEIVING
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            conn.write(ex, data)
            self.state = _TUNNEL
            conn.start_tunnel(ex, self)
            return
        except httptools.HttpParserError:
            # A HEAD response stops the parser on purpose once its head is complete; any
            # other parse error is a broken upstream.
            if self.state is not _DONE:
                self.keep_alive = False
                if ex.first_byte_at:
                    conn.abort(ex)
                else:
                    conn.upstream_failed(ex, "upstream sent an invalid response")
                self.state = _CLOSED
                self.transport.abort()
                return
        conn.write(ex, data)
        if self.state is _DONE:
            conn.finish(ex, True)  # reusable

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
                self.state = _DONE
                raise _HeadResponseDone

    def on_message_complete(self) -> None:
        # Interim 1xx responses (100 Continue, 103 Early Hints) pass through; the exchange
        # ends with the final response, whose head set ex.status (it is 0 until then).
        # (A HEAD response is DONE at its head and never gets here.)
        ex = self.ex
        if ex is not None and ex.status:
            self.state = _DONE

    # -- used by the pool and the client connection ------------------------------------
    def attach(self, ex: Exchange[TagT], reused: bool) -> None:
        self.ex = ex
        self.state = _WAITING
        self.reused = reused
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

    def send_body(self, ex: Exchange[TagT], data: bytes) -> None:
        self.transport.write(chunk(data) if ex.chunked else data)

    def end_body(self, ex: Exchange[TagT]) -> None:
        if ex.chunked:
            self.transport.write(LAST_CHUNK)
        self.request_sent = True

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    def detach(self, reuse: bool) -> None:
        """The exchange is over: back to the pool (``reuse``, from lifecycle.decide) or close."""
        self.ex = None
        closed = self.state is _CLOSED
        if self.read_paused:
            self.read_paused = False
            if not closed:
                self.transport.resume_reading()
        if reuse and not closed:
            if self.head_only:
                # The parser stopped in the middle of a message; start a fresh one.
                self.parser = httptools.HttpResponseParser(self)
            self.state = _IDLE
            # pool.release, inlined: this runs once per request.
            idle = self.pool.idle
            if len(idle) < self.pool.max_idle:
                idle.append(self)
            else:
                self.close()
        else:
            self.state = _CLOSED
            self.transport.abort()

    def close(self) -> None:
        """Close an idle connection (the pool's)."""
        self.state = _CLOSED
        self.transport.close()

    def pause_reading(self) -> None:
        if not self.read_paused and self.state is not _CLOSED:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if self.state is not _CLOSED:
                self.transport.resume_reading()


class UpstreamPool(Pool[TagT]):
    """Kept-alive connections to one ``host:port``; implements ``contract.Pool``.

    ``connect`` opens a connection (``loop.create_connection`` unless given: the in-memory
    network of ``shared.proxy.memory`` in unit tests).
    """

    __slots__ = (
        "_connect_fn",
        "_connecting",
        "host",
        "idle",
        "loop",
        "max_idle",
        "on_connect_error",
        "port",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        max_idle: int = 1000,
        on_connect_error: ConnectErrorHook[TagT] | None = None,
        connect: Connector | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.on_connect_error = on_connect_error
        self._connect_fn: Connector = connect if connect is not None else loop.create_connection
        self.idle: list[UpstreamConnection[TagT]] = []
        self._connecting: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<UpstreamPool {self.host}:{self.port} idle={len(self.idle)}>"

    def send(self, ex: Exchange[TagT]) -> None:
        idle = self.idle
        while idle:
            up = idle.pop()
            if up.state is _IDLE:
                up.attach(ex, True)  # reused
                return
        ex.conn.waiting_for_upstream(ex)
        task = self.loop.create_task(self._connect(ex))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, ex: Exchange[TagT]) -> None:
        up: UpstreamConnection[TagT] = UpstreamConnection(self)
        try:
            await self._connect_fn(lambda: up, self.host, self.port)
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

    def release(self, up: UpstreamConnection[TagT]) -> None:
        if len(self.idle) < self.max_idle:
            self.idle.append(up)
        else:
            up.close()

    def close_idle(self) -> None:
        """Close the kept-alive idle connections; exchanges in flight are left to finish."""
        for up in self.idle:
            up.close()
        self.idle.clear()

    def close(self) -> None:
        self.close_idle()
        for task in self._connecting:
            task.cancel()
