"""The dispatcher's HTTP client: keep-alive HTTP/1.1 POSTs on asyncio Protocols and httptools.

Why not aiohttp's ClientSession: profiled under load (``benchmarks/eventing/run.py``, one
trigger), its request path was half of the broker process's CPU, more than the ingress and the
event log together; a delivery needs one POST with a known body and the whole answer, which
is all this client does. Redirects are not followed (a 3xx is a failed delivery), bodies are
not decompressed, no cookies.

Connections are pooled per (scheme, host, port) and reused when the answer allows it. A
request that fails on a reused connection before any byte of its answer came (the server
closed the idle connection just then) is sent once more on a new connection, as Go's
transport and aiohttp do. ``localhost`` and ``*.localhost`` are dialled at 127.0.0.1 (RFC 6761):
knpy serve names its routes so.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "HttpClient", "RequestFailed"]

Headers = list[tuple[bytes, bytes]]
# Requests in flight per host at most, so connections too (Go's MaxConnsPerHost): a hundred
# triggers of a hundred deliveries each to one subscriber would otherwise open 10,000
# connections at once, and the connect storm (SYN retries past the listen backlog) stalls the
# whole process. Past it requests wait their turn, within their timeout.
MAX_CONNS_PER_HOST: Final = 128
# Idle connections kept per host; past it a finished connection is closed.
MAX_IDLE_PER_HOST: Final = 128


class RequestFailed(Exception):
    """No answer: the connection could not be made, broke, or the timeout passed."""


class Answer:
    """A complete HTTP answer: status, headers as sent, body (cut at the client's limit)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Answer {self.status} {len(self.body)}B>"

    def header(self, lname: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lname:
                return value
        return None


class _Connection(asyncio.Protocol):
    """One connection: at most one request at a time."""

    __slots__ = (
        "body",
        "body_bytes",
        "closed",
        "got_bytes",
        "headers",
        "in_message",
        "keep_alive",
        "key",
        "max_body",
        "parser",
        "transport",
        "waiter",
    )

    transport: asyncio.Transport

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.max_body = 0
        self.got_bytes = False
        self.closed = False
        self.keep_alive = False
        self.in_message = False  # this request's answer has begun

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            reason = f"connection closed: {exc}" if exc else "connection closed by the server"
            waiter.set_exception(RequestFailed(reason))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(f"malformed answer: {err}")

    def eof_received(self) -> bool:
        # An answer without a length ends with the connection.
        if self.waiter is not None and not self.waiter.done() and self.in_message:
            self.closed = True
            self.on_message_complete()
        return False

    def send(self, data: bytes, max_body: int) -> asyncio.Future[Answer]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.headers = []
        self.body = []
        self.body_bytes = 0
        self.max_body = max_body
        self.got_bytes = False
        self.keep_alive = False
        self.in_message = False
        self.transport.write(data)
        return self.waiter

    def _fail(self, reason: str) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(RequestFailed(reason))
        self.transport.close()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, data: bytes) -> None:
        room = self.max_body - self.body_bytes
        if room > 0:
            self.body.append(data[:room])
        self.body_bytes += len(data)

    def on_message_complete(self) -> None:
        # httptools answers should_keep_alive() rightly only inside this callback.
        self.keep_alive = self.parser.should_keep_alive() and not self.closed
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(
                Answer(self.parser.get_status_code(), self.headers, b"".join(self.body))
            )


def _dial_host(host: str) -> str:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "127.0.0.1"
    return host


class HttpClient:
    """POSTs with pooled keep-alive connections (module doc)."""

    def __init__(
        self, *, dial: Callable[[str], str] = _dial_host, max_per_host: int = MAX_CONNS_PER_HOST
    ) -> None:
        self._dial = dial
        self.max_per_host = max_per_host
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        idle = sum(len(v) for v in self._idle.values())
        return f"<HttpClient idle={idle} busy={len(self._busy)}>"

    async def post(
        self, url: str, headers: Headers, body: bytes, *, timeout_s: float, max_body: int
    ) -> Answer:
        """POST ``body`` to ``url``; the answer's body is cut at ``max_body`` bytes.

        Raises:
            RequestFailed: no complete answer (connect error, broken connection, timeout).
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise RequestFailed(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
        netloc = host if default else f"{host}:{port}"
        if ":" in host and not default:
            netloc = f"[{host}]:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [
            b"POST %b HTTP/1.1\r\nHost: %b\r\nContent-Length: %d\r\n"
            % (target.encode("latin-1"), netloc.encode("idna"), len(body))
        ]
        head.extend(b"%b: %b\r\n" % (n, v) for n, v in headers)
        head.append(b"\r\n")
        data = b"".join(head) + body
        key = (scheme, host, port)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.max_per_host)
        try:
            async with asyncio.timeout(timeout_s), slots:
                conn, reused = await self._connection(key)
                try:
                    return await self._exchange(conn, data, max_body)
                except RequestFailed:
                    if not reused or conn.got_bytes:
                        raise
                # The idle connection was closed under us: once more on a new one.
                conn, _ = await self._connection(key, fresh=True)
                return await self._exchange(conn, data, max_body)
        except TimeoutError:
            raise RequestFailed(f"no answer within {timeout_s:g} s") from None
        except OSError as err:
            raise RequestFailed(f"cannot connect to {netloc}: {err}") from None

    async def _connection(
        self, key: tuple[str, str, int], fresh: bool = False
    ) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                self._busy.add(conn)
                return conn, True
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        ctx = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        _, proto = await loop.create_connection(
            lambda: _Connection(key), self._dial(host), port, ssl=ctx,
            server_hostname=host if ctx else None,
        )
        conn = proto
        self._busy.add(conn)
        return conn, False

    async def _exchange(self, conn: _Connection, data: bytes, max_body: int) -> Answer:
        try:
            answer = await conn.send(data, max_body)
        except BaseException:
            self._busy.discard(conn)
            conn.transport.close()
            raise
        self._busy.discard(conn)
        conn.waiter = None
        if conn.keep_alive and not conn.closed and conn.body_bytes <= max_body:
            idle = self._idle.setdefault(conn.key, [])
            if len(idle) < MAX_IDLE_PER_HOST:
                idle.append(conn)
                return answer
        conn.transport.close()
        return answer

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.transport.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.transport.close()
        self._busy.clear()
        await asyncio.sleep(0)
