"""The connections' lifecycle as named states, and the one rule for reuse, close and retry.

Theory of operation, after h11: each connection is in one named state; the transitions allowed
are data (``SERVER_TRANSITIONS``, ``UPSTREAM_TRANSITIONS``), asserted by the unit tests that
drive every edge, while the hot path assigns states directly (a checked transition per event
would cost more than the parse). What happens when an exchange ends is decided by one pure
function, ``decide``, from facts only (no I/O, no asyncio): whether the upstream connection goes
back to the pool, whether the client connection is kept, and whether the exchange finishes,
is aborted (the client sees a broken connection), answered 502, or sent again.

This module must not know about transports, parsers or handlers.

Client connection (``ServerConnection``)::

    IDLE --request head parsed--> ACTIVE --finished, kept--> IDLE (or ACTIVE: next pipelined)
    ACTIVE --101 from the upstream--> TUNNEL
    any --closed (by us, the client or bad input)--> CLOSED

Upstream connection (``UpstreamConnection``); the request is sent while the response arrives,
so the states follow the response, and ``request_sent`` says whether the body went out whole::

    IDLE --attach--> WAITING --first byte--> RECEIVING --final response complete--> DONE
    DONE --detach, reusable--> IDLE
    RECEIVING --101--> TUNNEL
    any --closed or detached unreusable--> CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class ServerState(enum.Enum):
    """The client connection's state."""

    IDLE = "idle"  # no exchange is being handled (between requests or reading a head)
    ACTIVE = "active"  # one exchange is handled: decided, queued or forwarded
    TUNNEL = "tunnel"  # the upstream switched protocols: bytes pass through untouched
    CLOSED = "closed"  # closing or closed; nothing more is read or handled


class UpstreamState(enum.Enum):
    """The upstream connection's state, following the response."""

    IDLE = "idle"  # in the pool (or just opened), no exchange on it
    WAITING = "waiting"  # the request is going out, no response byte yet
    RECEIVING = "receiving"  # response bytes arrived (interim 1xx, head or body)
    DONE = "done"  # the final response is complete
    TUNNEL = "tunnel"  # 101 Switching Protocols: bytes pass through untouched
    CLOSED = "closed"  # closing or closed; never reused


SERVER_TRANSITIONS: Final[dict[ServerState, frozenset[ServerState]]] = {
    ServerState.IDLE: frozenset({ServerState.ACTIVE, ServerState.CLOSED}),
    ServerState.ACTIVE: frozenset(
        {ServerState.IDLE, ServerState.ACTIVE, ServerState.TUNNEL, ServerState.CLOSED}
    ),
    ServerState.TUNNEL: frozenset({ServerState.CLOSED}),
    ServerState.CLOSED: frozenset(),
}

UPSTREAM_TRANSITIONS: Final[dict[UpstreamState, frozenset[UpstreamState]]] = {
    UpstreamState.IDLE: frozenset({UpstreamState.WAITING, UpstreamState.CLOSED}),
    UpstreamState.WAITING: frozenset({UpstreamState.RECEIVING, UpstreamState.CLOSED}),
    UpstreamState.RECEIVING: frozenset(
        {UpstreamState.DONE, UpstreamState.TUNNEL, UpstreamState.CLOSED}
    ),
    UpstreamState.DONE: frozenset({UpstreamState.IDLE, UpstreamState.CLOSED}),
    UpstreamState.TUNNEL: frozenset({UpstreamState.CLOSED}),
    UpstreamState.CLOSED: frozenset(),
}


class End(enum.Enum):
    """How an exchange came to its end."""

    COMPLETE = "complete"  # the response was written whole (the app's or the proxy's own)
    CUT = "cut"  # ended early: client gone, a timeout after the response began, a broken reply
    UPSTREAM_CLOSED = "upstream closed"  # the upstream closed while the exchange was on it


class Next(enum.Enum):
    """What happens to the exchange."""

    FINISH = "finish"  # it is over (finished() is called)
    ABORT = "abort"  # over, and the client must see a broken connection (response truncated)
    RETRY = "retry"  # send the request again on another connection
    FAIL = "fail"  # answer 502 (nothing was written to the client yet)


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``decide`` says; one of the constants below, so deciding allocates nothing."""

    next: Next
    reuse_upstream: bool  # the upstream connection goes back to the pool
    keep_client: bool  # the client connection reads its next request


FINISH_KEEP_BOTH: Final = Decision(Next.FINISH, reuse_upstream=True, keep_client=True)
FINISH_KEEP_CLIENT: Final = Decision(Next.FINISH, reuse_upstream=False, keep_client=True)
FINISH_KEEP_UPSTREAM: Final = Decision(Next.FINISH, reuse_upstream=True, keep_client=False)
FINISH_CLOSE_BOTH: Final = Decision(Next.FINISH, reuse_upstream=False, keep_client=False)
ABORT: Final = Decision(Next.ABORT, reuse_upstream=False, keep_client=False)
RETRY: Final = Decision(Next.RETRY, reuse_upstream=False, keep_client=True)
FAIL: Final = Decision(Next.FAIL, reuse_upstream=False, keep_client=False)


# Members as module globals: on Python 3.11 ``UpstreamState.DONE`` runs a descriptor written in
# Python (about 1,000 instructions), a global load does not; decide runs once per request.
_UPSTREAM_CLOSED: Final = End.UPSTREAM_CLOSED
_COMPLETE: Final = End.COMPLETE
_TUNNEL: Final = UpstreamState.TUNNEL
_RECEIVING: Final = UpstreamState.RECEIVING
_DONE: Final = UpstreamState.DONE


def decide(
    end: End,
    upstream: UpstreamState | None,
    upstream_keep_alive: bool,
    request_sent: bool,
    reused: bool,
    body_done: bool,
    body_bytes: int,
    upgrade: bool,
    client_keep_alive: bool,
    first_byte_at: float,
) -> Decision:
    """The reuse/close/retry rule for an exchange that ends.

    Args:
        end: how it ended.
        upstream: the state of its upstream connection; None when it had none (the proxy
            answered by itself, or the request was still queued).
        upstream_keep_alive: the upstream's response allows another request (no
            ``Connection: close``, HTTP/1.1).
        request_sent: the whole request (head and body) was written to the upstream.
        reused: the upstream connection had carried a request before this one.
        body_done: the client's request body was read to its end.
        body_bytes: request body bytes read from the client so far.
        upgrade: the request asked to switch protocols. (A tunnel ends only when a side
            closes or the exchange is cut, never COMPLETE, so it needs no flag of its own.)
        client_keep_alive: the client allows another request on its connection.
        first_byte_at: when the first response byte was written to the client; 0.0 if none
            was (the exchange's own field, passed as it is).

    Returns:
        One of the module's ``Decision`` constants.
    """
    if end is _UPSTREAM_CLOSED:
        if upstream is _TUNNEL:
            return FINISH_CLOSE_BOTH  # the end of a tunnel is the end of the connection
        if upstream is _RECEIVING or upstream is _DONE:
            # A response without a length ends when the upstream closes (RFC 9112 section
            # 6.3 rule 8). httptools has no EOF call, so a response that said it would close
            # is taken as complete, and any other is truncated: the client must see a break.
            if not upstream_keep_alive and first_byte_at:
                return FINISH_CLOSE_BOTH
            return ABORT
        if reused and body_done and body_bytes == 0 and not upgrade:
            # The app closed an idle kept-alive connection as we reused it: nothing of the
            # request was consumed, so it is safe to send again on a new connection, as Go's
            # http.Transport does for a request without a body (and only once: a new
            # connection is not ``reused``).
            return RETRY
        return FAIL
    # Only a connection whose response ended cleanly can carry another request: one cut short
    # (a timeout, the client gone) still has the rest of a response coming. A request whose
    # body was not read whole leaves the rest of it on both connections.
    complete = end is _COMPLETE and body_done
    reuse = complete and upstream is _DONE and upstream_keep_alive and request_sent
    if complete and client_keep_alive and not upgrade:
        return FINISH_KEEP_BOTH if reuse else FINISH_KEEP_CLIENT
    return FINISH_KEEP_UPSTREAM if reuse else FINISH_CLOSE_BOTH
