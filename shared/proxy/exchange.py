"""One request and its response as it crosses the proxy.

An ``Exchange`` is the per-request record: it has ``__slots__`` and holds the parsed request head
(as the bytes httptools gave), the request body chunks that arrived while no upstream connection
was attached yet, the timeouts the handler chose, and what the response did. The client
connection (``ServerConnection``) and the upstream connection move it along; a component's
``RequestHandler`` decides what happens to it, through ``respond``, ``forward`` and ``wait``.

``Exchange`` is generic in its tag, the handler's own per-request state (an ``int`` of flags in
the queue-proxy): the client connection creates it with the tag its ``ProxyServer`` was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic

from shared.proxy.contract import Downstream, Pool, RequestHandler, TagT, Upstream

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["Exchange", "RequestHandler"]


class Exchange(Generic[TagT]):
    __slots__ = (
        "aborted",
        "body_buf",
        "body_done",
        "chunked",
        "conn",
        "deadline",
        "done",
        "first_byte_at",
        "head",
        "headers",
        "idle_timeout",
        "keep_alive",
        "last_write",
        "method",
        "request_bytes",
        "response_bytes",
        "span",
        "start_deadline",
        "started_at",
        "status",
        "tag",
        "target",
        "tunnel",
        "upgrade",
        "upstream",
        "version",
        "wait_span",
    )

    def __init__(self, conn: Downstream[TagT], tag: TagT) -> None:
        self.conn = conn
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.upgrade = False
        self.chunked = False
        # Request body bytes that arrived before an upstream connection was attached.
        self.body_buf: list[bytes] = []
        self.body_done = False
        self.request_bytes = 0
        self.head = b""
        self.upstream: Upstream[TagT] | None = None
        self.tunnel = False
        self.status = 0
        # time.monotonic() of the first response byte written; 0.0 until the response started.
        self.first_byte_at = 0.0
        self.response_bytes = 0
        self.done = False
        self.aborted = False
        # Timeouts, absolute on the time.monotonic() clock; 0.0 means none.
        self.started_at = 0.0
        self.deadline = 0.0
        self.start_deadline = 0.0
        self.idle_timeout = 0.0
        self.last_write = 0.0
        # The handler's own per-request state, and its tracing spans when tracing is on.
        self.tag = tag
        self.span: Span | None = None
        self.wait_span: Span | None = None

    def __repr__(self) -> str:
        state = "done" if self.done else ("forwarding" if self.upstream is not None else "pending")
        return (
            f"<Exchange {self.method.decode('latin-1')} {self.target.decode('latin-1')!r} "
            f"{state} status={self.status}>"
        )

    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header, by lower-case name; a linear scan, for rare lookups."""
        for name, value in self.headers:
            if len(name) == len(lname) and name.lower() == lname:
                return value
        return None

    def respond(self, data: bytes, *, status: int, keep_alive: bool = True) -> None:
        """Answer with a complete response the proxy built (probe, error)."""
        self.conn.respond(self, data, status, keep_alive)

    def forward(self, pool: Pool[TagT], head: bytes) -> None:
        """Send the request, with ``head`` as its rewritten head, to an upstream of ``pool``."""
        self.head = head
        pool.send(self)

    def wait(self) -> None:
        """The handler queued the request (a full breaker): read nothing more until it forwards.

        Knative's breaker blocks the handler's goroutine instead; here reading from the client
        is paused until ``forward`` or ``respond`` while the request's body is still to come, so
        a queued request holds one socket read. A request read whole is read on, so that the
        client's leaving ends it while it waits.
        """
        self.conn.wait(self)
