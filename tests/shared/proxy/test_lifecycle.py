"""The reuse/close/retry rule as a table, and the states a plain exchange walks through."""

from __future__ import annotations

from enum import Enum

import pytest

from shared.proxy.lifecycle import (
    ABORT,
    FAIL,
    FINISH_CLOSE_BOTH,
    FINISH_KEEP_BOTH,
    FINISH_KEEP_CLIENT,
    FINISH_KEEP_UPSTREAM,
    RETRY,
    SERVER_TRANSITIONS,
    UPSTREAM_TRANSITIONS,
    Decision,
    End,
    UpstreamState,
    decide,
)

from .rig import Rig, get, ok, settle

S = UpstreamState
C, X, U = End.COMPLETE, End.CUT, End.UPSTREAM_CLOSED

# The facts of a plain exchange that went well: the cases below change one or two of them.
PLAIN = {
    "upstream": S.DONE,
    "upstream_keep_alive": True,
    "request_sent": True,
    "reused": False,
    "body_done": True,
    "body_bytes": 0,
    "upgrade": False,
    "client_keep_alive": True,
    "first_byte_at": 12.5,
}


def case(end: End, want: Decision, id: str, **facts: object) -> object:
    return pytest.param(end, {**PLAIN, **facts}, want, id=id)


@pytest.mark.parametrize(
    ("end", "facts", "want"),
    [
        # The response ended cleanly.
        case(C, FINISH_KEEP_BOTH, "plain: both connections kept"),
        case(C, FINISH_KEEP_UPSTREAM, "client said close", client_keep_alive=False),
        case(C, FINISH_KEEP_CLIENT, "app said close", upstream_keep_alive=False),
        case(
            C,
            FINISH_CLOSE_BOTH,
            "both said close",
            upstream_keep_alive=False,
            client_keep_alive=False,
        ),
        case(C, FINISH_KEEP_CLIENT, "proxy answered, no upstream", upstream=None),
        case(
            C,
            FINISH_KEEP_CLIENT,
            "proxy answered while the app was still waiting",
            upstream=S.WAITING,
        ),
        case(C, FINISH_CLOSE_BOTH, "body not read whole: rest left on both", body_done=False),
        case(C, FINISH_KEEP_CLIENT, "request body not sent whole", request_sent=False),
        case(C, FINISH_KEEP_UPSTREAM, "upgrade refused: client closed", upgrade=True),
        case(
            C,
            FINISH_CLOSE_BOTH,
            "upstream already closed",
            upstream=S.CLOSED,
            client_keep_alive=False,
        ),
        # Cut short: the client went away, a timeout mid-response, an abort.
        case(X, FINISH_CLOSE_BOTH, "cut: nothing is reused"),
        case(
            X,
            FINISH_CLOSE_BOTH,
            "cut before the app answered",
            upstream=S.WAITING,
            first_byte_at=0.0,
        ),
        # The upstream closed while the exchange was on it.
        case(U, FINISH_CLOSE_BOTH, "end of a tunnel", upstream=S.TUNNEL, upgrade=True),
        case(
            U,
            FINISH_CLOSE_BOTH,
            "no length, said close: complete at EOF",
            upstream=S.RECEIVING,
            upstream_keep_alive=False,
        ),
        case(U, ABORT, "truncated response", upstream=S.RECEIVING),
        case(
            U,
            ABORT,
            "said close but nothing written yet",
            upstream=S.RECEIVING,
            upstream_keep_alive=False,
            first_byte_at=0.0,
        ),
        case(
            U,
            RETRY,
            "stale kept-alive connection, no body",
            upstream=S.WAITING,
            reused=True,
            first_byte_at=0.0,
        ),
        case(U, FAIL, "fresh connection closed: 502", upstream=S.WAITING, first_byte_at=0.0),
        case(
            U,
            FAIL,
            "stale, body partly read",
            upstream=S.WAITING,
            reused=True,
            body_done=False,
            body_bytes=10,
            first_byte_at=0.0,
        ),
        case(
            U,
            FAIL,
            "stale, body read whole but consumed",
            upstream=S.WAITING,
            reused=True,
            body_bytes=10,
            first_byte_at=0.0,
        ),
        case(
            U,
            FAIL,
            "stale, upgrade request",
            upstream=S.WAITING,
            reused=True,
            upgrade=True,
            first_byte_at=0.0,
        ),
    ],
)
def test_decide(end: End, facts: dict[str, object], want: Decision) -> None:
    assert decide(end, **facts) is want  # type: ignore[arg-type]


def test_decisions_are_constants() -> None:
    seen = {FINISH_KEEP_BOTH, FINISH_KEEP_CLIENT, FINISH_KEEP_UPSTREAM, FINISH_CLOSE_BOTH}
    assert len(seen | {ABORT, RETRY, FAIL}) == 7


@pytest.mark.parametrize(
    "table",
    [pytest.param(SERVER_TRANSITIONS, id="server"), pytest.param(UPSTREAM_TRANSITIONS, id="up")],
)
def test_tables_cover_every_state_and_closed_is_final(table: dict[Enum, frozenset[Enum]]) -> None:
    states = set(type(next(iter(table))))
    assert set(table) == states
    closed = type(next(iter(table)))["CLOSED"]
    assert table[closed] == frozenset()
    assert all(closed in nxt for state, nxt in table.items() if state is not closed)


async def test_a_plain_get_walks_the_tables(transitions: list[tuple[Enum, Enum]]) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    app.feed(ok())
    client.peer_close()
    await settle()
    assert [(o.value, n.value) for o, n in transitions if o is not n] == [
        ("idle", "active"),  # the client connection handles the request
        ("idle", "waiting"),  # the upstream connection is attached
        ("waiting", "receiving"),
        ("receiving", "done"),
        ("done", "idle"),  # back to the pool
        ("active", "idle"),  # the client connection waits for the next request
        ("idle", "closed"),  # the client went away
    ]
