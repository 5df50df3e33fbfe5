"""The proxy core's contract: who calls whom, with exactly the methods each side uses.

Three parties move one request: the client connection (the *downstream*, ``ServerConnection``),
the connection to the app or a pod (the *upstream*, ``UpstreamConnection``, handed out by an
``UpstreamPool``), and a component's ``RequestHandler`` (the policy). They meet on the
``Exchange``. The handler only calls ``Exchange`` methods (``respond``, ``forward``, ``wait``);
the two connections call each other only through the ``Downstream`` and ``Upstream`` traits
below: each names exactly what one side may use of the other.

``Downstream``, ``Upstream`` and ``Pool`` are mypyc traits (``mypy_extensions.trait``), not
``typing.Protocol``s: their one implementation each inherits them, and the native build then
calls across them through a vtable instead of looking each method and attribute up by name
(8 % of the compiled queue-proxy's instructions per request, measured). In pure Python a trait
is an ordinary base class. ``RequestHandler`` stays a Protocol: handlers are written outside
the compiled core (tests, ``local.py``) and are matched by shape.

Everything is generic in ``TagT``, the type of the handler's own per-request state
(``Exchange.tag``): an ``int`` of flags for the queue-proxy, ``ActivatorRequest | None`` for
the activator, None for the local routes. There is no default: every handler states its tag
type (``RequestHandler[int]``, ``Exchange[int]``), so mypy checks what each puts in the tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from mypy_extensions import trait

if TYPE_CHECKING:
    from shared.proxy.exchange import Exchange
    from shared.proxy.lifecycle import UpstreamState

TagT = TypeVar("TagT")

# How an upstream pool opens a connection: ``loop.create_connection`` in production, an
# in-memory network (shared.proxy.memory) in unit tests. Called as
# ``connect(protocol_factory, host, port)``.
Connector = Callable[
    [Callable[[], asyncio.Protocol], str, int],
    Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]],
]


class RequestHandler(Protocol[TagT]):
    """A component's policy: what to do with each request the proxy parsed.

    ``handle`` is called once the request head is parsed and must, now or later, call exactly
    one of ``Exchange.respond`` or ``Exchange.forward`` (unless the exchange ends first: the
    client went away or a timeout fired). ``finished`` is called exactly once for every handled
    exchange, whatever the outcome, so that bookkeeping (breaker slots, stats) is released.
    """

    def handle(self, ex: Exchange[TagT]) -> None: ...

    def finished(self, ex: Exchange[TagT]) -> None: ...


@trait
class Downstream(Generic[TagT]):
    """The client connection, as the exchange and the upstream connection see it.

    Every method takes the exchange it is about; it is always the connection's active one (a
    handled exchange that is not done), so a call about an exchange that is done is a no-op.
    """

    __slots__ = ()

    remote: str  # the client's address, for X-Forwarded-For and the request log

    # -- from the exchange (the handler's calls) -------------------------------------------
    def respond(self, ex: Exchange[TagT], data: bytes, status: int, keep_alive: bool) -> None:
        """Write a complete response the proxy built and end the exchange."""
        ...

    def wait(self, ex: Exchange[TagT]) -> None:
        """The handler queued the exchange: stop reading the client until it is forwarded."""
        ...

    # -- from the upstream connection ------------------------------------------------------
    def waiting_for_upstream(self, ex: Exchange[TagT]) -> None:
        """No idle connection: one is being opened; pause the client if its body is pending."""
        ...

    def upstream_attached(self, ex: Exchange[TagT]) -> None:
        """The request head went out: resume reading the body, apply pending backpressure."""
        ...

    def write(self, ex: Exchange[TagT], data: bytes) -> None:
        """Response bytes, exactly as the upstream sent them."""
        ...

    def pause_reading_for_upstream(self) -> None:
        """The upstream cannot take the request body as fast as the client sends it."""
        ...

    def resume_reading_for_upstream(self) -> None: ...

    def start_tunnel(self, ex: Exchange[TagT], up: Upstream[TagT]) -> None:
        """The upstream switched protocols (101): pass bytes through both ways from now on."""
        ...

    def upstream_failed(self, ex: Exchange[TagT], reason: str) -> None:
        """The upstream broke: 502 if nothing was written yet, else a broken connection."""
        ...

    def finish(self, ex: Exchange[TagT], reusable: bool) -> None:
        """The exchange is over; ``reusable`` when its response ended cleanly."""
        ...

    def abort(self, ex: Exchange[TagT]) -> None:
        """The response cannot be completed: the client must see a broken connection."""
        ...

    # -- from the sweep --------------------------------------------------------------------
    def timeout(self, ex: Exchange[TagT]) -> None:
        """A deadline passed: 504 if nothing was written yet, else a broken connection."""
        ...


@trait
class Upstream(Generic[TagT]):
    """The connection to the app or pod, as the client connection sees it."""

    __slots__ = ()

    # The facts ``lifecycle.decide`` needs when the exchange ends.
    state: UpstreamState
    keep_alive: bool  # the response allows another request on this connection
    request_sent: bool  # the whole request, head and body, was written
    reused: bool  # the connection carried a request before this one

    def send_body(self, ex: Exchange[TagT], data: bytes) -> None:
        """A piece of the request body (re-framed as a chunk when the request is chunked)."""
        ...

    def end_body(self, ex: Exchange[TagT]) -> None:
        """The request body is complete."""
        ...

    def send_raw(self, data: bytes) -> None:
        """Bytes of a switched protocol (a tunnel), passed through untouched."""
        ...

    def detach(self, reuse: bool) -> None:
        """The exchange is over: back to the pool when ``reuse``, else close."""
        ...

    def pause_reading(self) -> None:
        """The client cannot take the response as fast as the upstream sends it."""
        ...

    def resume_reading(self) -> None: ...


@trait
class Pool(Generic[TagT]):
    """Where ``Exchange.forward`` sends a request: kept-alive connections to one upstream."""

    __slots__ = ()

    def send(self, ex: Exchange[TagT]) -> None: ...
