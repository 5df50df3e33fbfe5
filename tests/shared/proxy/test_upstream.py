"""The upstream side of the proxy core through the in-memory network: no sockets.

The test plays the app on the connections the pool opened: HEAD, interim 1xx responses,
responses ended by close, truncated or invalid responses, a stale kept-alive connection retried
once, refused connections, and the pool's bookkeeping.
"""

from __future__ import annotations

import pytest

from shared.proxy.exchange import Exchange
from shared.proxy.lifecycle import ServerState, UpstreamState
from shared.proxy.upstream import UpstreamPool

from .rig import APP, Rig, get, ok, settle


async def test_head_response_with_a_length_ends_at_its_head() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
    app = await rig.app()
    up = rig.up(app)
    app.take()
    app.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
    assert client.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    assert rig.handler.handled[0].done and up.state is UpstreamState.IDLE
    # The same connection (with a fresh parser) carries the next request.
    client.feed(get(b"/next"))
    assert app.take().startswith(b"GET /next ")
    app.feed(ok(b"next"))
    assert client.take() == ok(b"next") and len(rig.net.opened) == 1


async def test_interim_1xx_responses_pass_through() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    app = await rig.app()
    up = rig.up(app)
    app.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert up.state is UpstreamState.RECEIVING and not rig.handler.handled[0].done
    client.feed(b"hi")
    app.feed(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + ok())
    assert client.take().endswith(ok()) and rig.handler.handled[0].status == 200
    assert rig.up(app).state is UpstreamState.IDLE


@pytest.mark.parametrize(
    ("response", "client_outcome"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it",
            "finished",
            id="no length, Connection: close: complete at EOF",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
            "aborted",
            id="shorter than its length: truncated",
        ),
        pytest.param(b"", "502", id="closed before any byte: 502"),
    ],
)
async def test_upstream_closes_mid_exchange(response: bytes, client_outcome: str) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    if response:
        app.feed(response)
    app.peer_close()
    await settle()
    ex = rig.handler.handled[0]
    out = client.take()
    assert ex.done and rig.handler.finished_once() and client.closing
    if client_outcome == "finished":
        assert out.endswith(b"all of it") and not ex.aborted and not client.aborted
    elif client_outcome == "aborted":
        assert ex.aborted and client.aborted
    else:
        assert out.startswith(b"HTTP/1.1 502 Bad Gateway") and b"upstream closed" in out
    assert rig.pool.idle == []


@pytest.mark.parametrize(
    ("second_request", "retried"),
    [
        pytest.param(get(b"/again"), True, id="no body: sent again on a new connection"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            False,
            id="with a body: 502",
        ),
    ],
)
async def test_stale_kept_alive_connection_is_retried_once(
    second_request: bytes, retried: bool
) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    first = await rig.app()
    first.take()
    first.feed(ok())
    client.take()
    client.feed(second_request)
    # The app's keep-alive timer fired as the proxy reused the connection: closed, no answer.
    assert first.take().startswith(second_request.split(b" ", 1)[0])
    first.peer_close()
    await settle()
    if retried:
        assert len(rig.net.opened) == 2
        second = rig.net.opened[1]
        assert second.take().startswith(b"GET /again ")
        second.feed(ok(b"fresh"))
        assert client.take() == ok(b"fresh") and not client.closing
        # Only once: the new connection is not a reused one, so closing it now is a 502.
        rig.pool.idle.clear()
        client.feed(get(b"/third"))
        third = await rig.app()
        assert len(rig.net.opened) == 3
        third.peer_close()
        await settle()
        assert client.take().startswith(b"HTTP/1.1 502")
    else:
        assert len(rig.net.opened) == 1
        assert client.take().startswith(b"HTTP/1.1 502") and client.closing


@pytest.mark.parametrize(
    ("chunks", "outcome"),
    [
        pytest.param([b"NOT HTTP\r\n\r\n"], "502", id="garbage before the head: 502"),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\n"],
            "aborted",
            id="broken body after the head: abort",
        ),
    ],
)
async def test_invalid_response(chunks: list[bytes], outcome: str) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    for data in chunks:
        app.feed(data)
    ex = rig.handler.handled[0]
    assert ex.done and app.aborted and rig.up(app).state is UpstreamState.CLOSED
    if outcome == "502":
        out = client.take()
        assert out.startswith(b"HTTP/1.1 502") and b"invalid response" in out
    else:
        assert ex.aborted and client.aborted


async def test_upstream_that_closes_after_its_response_is_not_pooled() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    app.feed(ok(b"x", b"Connection: close\r\n"))
    assert client.take() == ok(b"x", b"Connection: close\r\n") and not client.closing
    assert rig.pool.idle == [] and app.aborted


async def test_bytes_on_an_idle_connection_close_it() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    app.feed(ok())
    up = rig.up(app)
    app.feed(b"HTTP/1.1 200 OK\r\n")  # nobody asked
    assert app.closing and up.state is UpstreamState.CLOSED
    client.take()
    client.feed(get(b"/b"))  # the closed connection is skipped, a new one opened
    assert len((await rig.app(), rig.net.opened)[1]) == 2


@pytest.mark.parametrize(
    ("hook_result", "answered_502"),
    [
        pytest.param(None, True, id="no hook: 502"),
        pytest.param(False, True, id="hook declines: 502"),
        pytest.param(True, False, id="hook takes the exchange over"),
    ],
)
async def test_refused_connection(hook_result: bool | None, answered_502: bool) -> None:
    rig = Rig()
    rig.net.refuse.add(APP)
    seen: list[tuple[UpstreamPool[None], Exchange[None], OSError]] = []

    def hook(pool: UpstreamPool[None], ex: Exchange[None], err: OSError) -> bool:
        seen.append((pool, ex, err))
        return bool(hook_result)

    if hook_result is not None:
        rig.pool.on_connect_error = hook
    client = rig.client()
    client.feed(get())
    await settle()
    out = client.take()
    if answered_502:
        assert out.startswith(b"HTTP/1.1 502") and b"error dialing upstream" in out
    else:
        assert out == b"" and not rig.handler.handled[0].done
    assert len(seen) == (0 if hook_result is None else 1)


async def test_exchange_done_before_the_connection_opened() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    rig.handler.handled[0].respond(ok(b"early"), status=200)
    app = await rig.app()
    assert rig.pool.idle == [rig.up(app)] and app.take() == b""
    # A refused connect for an exchange that is already done is silent.
    rig.net.refuse.add(APP)
    rig.pool.idle.clear()
    client.feed(get())
    rig.handler.handled[1].respond(ok(b"early"), status=200)
    await settle()
    assert client.take() == ok(b"early") + ok(b"early")


async def test_pool_bookkeeping() -> None:
    rig = Rig()
    rig.pool.max_idle = 1
    a, b = rig.client(), rig.client()
    a.feed(get())
    b.feed(get())
    await settle()
    first, second = rig.net.opened
    first.feed(ok())
    second.feed(ok())
    assert rig.pool.idle == [rig.up(first)] and second.closing  # over max_idle: closed
    assert repr(rig.pool) == "<UpstreamPool 10.0.0.9:8080 idle=1>"
    assert repr(rig.up(first)) == "<UpstreamConnection 10.0.0.9:8080 idle ex=None>"
    rig.pool.close_idle()
    assert first.closing and rig.pool.idle == []
    # close() also cancels connections still being opened.
    a.feed(get())
    rig.pool.close()
    await settle()
    assert len(rig.net.opened) == 2


async def test_response_backpressure_paused_twice_resumes_once() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    up = rig.up(app)
    up.pause_reading()
    up.pause_reading()
    assert not app.reading
    up.resume_reading()
    up.resume_reading()
    assert app.reading
    up.pause_reading()
    app.feed(ok())  # the exchange ends while paused: the pooled connection reads again
    assert app.reading and rig.pool.idle == [up]
    assert rig.conn(client).state is ServerState.IDLE
