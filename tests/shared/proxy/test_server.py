"""The client side of the proxy core, driven through the in-memory network: no sockets.

Each test plays the client on a ``MemoryTransport`` and the app on the connections the pool
opened, and asserts what each end received, the connection states and the handler's
exactly-once ``finished``.
"""

from __future__ import annotations

import time

import pytest

from shared.proxy.lifecycle import ServerState, UpstreamState
from shared.proxy.memory import MemoryTransport
from shared.proxy.server import ProxyServer

from .rig import Rig, get, ok, settle


async def test_get_is_forwarded_and_both_connections_kept() -> None:
    rig = Rig()
    client = rig.client()
    conn = rig.conn(client)
    client.feed(get(b"/a"))
    assert conn.state is ServerState.ACTIVE
    app = await rig.app()
    assert app.take() == b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    app.feed(ok(b"hello"))
    assert client.take() == ok(b"hello")
    assert rig.conn(client).state is ServerState.IDLE and not client.closing
    assert rig.up(app).state is UpstreamState.IDLE and rig.pool.idle == [rig.up(app)]
    # The next request reuses the same upstream connection.
    client.feed(get(b"/b"))
    assert app.take().startswith(b"GET /b ")
    app.feed(ok())
    assert client.take() == ok()
    assert len(rig.net.opened) == 1
    assert rig.handler.finished_once() and len(rig.handler.handled) == 2
    assert repr(conn) == "<ServerConnection 192.0.2.1 idle active=None>"


async def test_pipelined_requests_are_answered_in_order() -> None:
    rig = Rig()
    client = rig.client()
    conn = rig.conn(client)
    client.feed(get(b"/1") + get(b"/2") + get(b"/3", b"Connection: close\r\n"))
    # One exchange at a time; the others wait with reading paused.
    assert len(rig.handler.handled) == 1 and len(conn.pipeline) == 2 and not client.reading
    app = await rig.app()
    for i in (1, 2, 3):
        assert app.take().startswith(b"GET /%d " % i)
        app.feed(ok(b"r%d" % i))
    out = client.take()
    assert out == ok(b"r1") + ok(b"r2") + ok(b"r3")
    assert client.closing and conn.state is ServerState.CLOSED  # the last said close
    assert len(rig.net.opened) == 1 and rig.handler.finished_once()


@pytest.mark.parametrize(
    ("request_head", "client_closed"),
    [
        pytest.param(get(), False, id="HTTP/1.1 keeps the connection"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", True, id="HTTP/1.0 closes after the response"),
        pytest.param(get(b"/", b"Connection: close\r\n"), True, id="Connection: close"),
    ],
)
async def test_client_keep_alive(request_head: bytes, client_closed: bool) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(request_head)
    app = await rig.app()
    app.take()
    app.feed(ok())
    assert client.take() == ok()
    assert client.closing is client_closed
    # The app's connection goes back to the pool whatever the client does.
    assert rig.pool.idle == [rig.up(app)]


@pytest.mark.parametrize(
    ("request_head", "version", "keep_alive", "upgrade"),
    [
        pytest.param(get(), "1.1", True, False, id="plain 1.1"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", "1.0", False, False, id="plain 1.0"),
        # The case the server's shortcut must not miss: kept alive, yet not 1.1.
        pytest.param(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "1.0", True, False, id="1.0 kept"
        ),
        pytest.param(
            b"GET / HTTP/1.0\r\nCONNECTION: Keep-Alive\r\n\r\n", "1.0", True, False, id="capitals"
        ),
        pytest.param(b"GET / HTTP/2.0\r\n\r\n", "2.0", False, False, id="2.0 as text"),
        pytest.param(get(b"/", b"Connection: close\r\n"), "1.1", False, False, id="1.1 close"),
        pytest.param(
            get(b"/", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"), "1.1", True, True,
            id="upgrade",
        ),
        pytest.param(get(b"/", b"Upgrade: websocket\r\n"), "1.1", True, False, id="unasked"),
        pytest.param(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "1.1", True,
            True, id="CONNECT",
        ),
    ],
)
async def test_version_keep_alive_and_upgrade_as_llhttp_parsed_them(
    request_head: bytes, version: str, keep_alive: bool, upgrade: bool
) -> None:
    rig = Rig()
    rig.handler.hold = True
    rig.client().feed(request_head)
    (ex,) = rig.handler.handled
    assert (ex.version, ex.keep_alive, ex.upgrade) == (version, keep_alive, upgrade)


async def test_chunked_body_is_reframed_before_and_after_the_upstream_attaches() -> None:
    rig = Rig()
    client = rig.client()
    head = b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    client.feed(head + b"3\r\nabc\r\n")  # arrives before the connection is open: buffered
    assert not client.reading  # the body waits for the upstream connection
    app = await rig.app()
    assert client.reading
    client.feed(b"2\r\nde\r\n0\r\n\r\n")
    sent = app.take()
    assert sent.endswith(b"\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), sent
    assert b"Transfer-Encoding: chunked" in sent
    app.feed(ok())
    assert client.take() == ok()
    ex = rig.handler.handled[0]
    assert ex.request_bytes == 5 and ex.body_done


async def test_content_length_body_streams_through() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
    app = await rig.app()
    client.feed(b"def")
    assert app.take().endswith(b"\r\n\r\nabcdef")
    app.feed(ok())
    assert client.take() == ok() and rig.pool.idle == [rig.up(app)]


async def test_a_head_in_two_reads_then_a_large_body_is_no_oversized_head() -> None:
    """The read that ends a head may carry a body larger than the head limit: those bytes
    are body, not head (a valid upload answered 431 before)."""
    rig = Rig()
    client = rig.client()
    body = b"x" * 100_000
    client.feed(b"POST /upload HTTP/1.1\r\nHost: x\r\n")
    client.feed(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    app = await rig.app()
    assert app.take().endswith(b"\r\n\r\n" + body)
    app.feed(ok())
    assert client.take() == ok() and not client.closing


@pytest.mark.parametrize(
    ("reads", "status"),
    [
        pytest.param([b"GARBAGE\r\n\r\n"], b"400", id="malformed request line"),
        pytest.param([b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"], b"400", id="header without colon"),
        pytest.param(
            [b"GET / HTTP/1.1\r\nX: ", b"a" * 70_000], b"431", id="head reads past the limit"
        ),
        pytest.param(
            [
                b"GET / HTTP/1.1\r\nX-Many: " + b"b" * 40_000,
                b"\r\nX-More: " + b"c" * 30_000 + b"\r\n\r\n",
            ],
            b"431",
            id="parsed headers past the limit",
        ),
        pytest.param(
            [b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"],
            b"431",
            id="a whole head past the limit in one read",
        ),
        pytest.param(
            [
                b"GET / HTTP/1.1\r\nX-A: " + b"a" * 40_000 + b"\r\nX-B: " + b"b" * 10_000 + b"\r\n",
                b"X-C: " + b"c" * 20_000 + b"\r\n\r\n",
            ],
            b"431",
            id="whole fields of a head's first read count once it goes on",
        ),
    ],
)
async def test_bad_input_is_answered_then_closed(reads: list[bytes], status: bytes) -> None:
    rig = Rig()
    client = rig.client()
    conn = rig.conn(client)
    for data in reads:
        client.feed(data)
    assert client.take().startswith(b"HTTP/1.1 " + status)
    assert client.closing and conn.state is ServerState.CLOSED
    assert rig.handler.handled == []
    await settle()
    assert client.lost and conn not in rig.server.connections


@pytest.mark.parametrize(
    ("keep_alive", "closed"),
    [pytest.param(True, False, id="kept"), pytest.param(False, True, id="closed by the handler")],
)
async def test_handler_answers_by_itself(keep_alive: bool, closed: bool) -> None:
    rig = Rig()
    rig.handler.hold = True
    client = rig.client()
    client.feed(get())
    ex = rig.handler.handled[0]
    assert repr(ex) == "<Exchange GET '/' pending status=0>"
    ex.respond(b"HTTP/1.1 204 No Content\r\n\r\n", status=204, keep_alive=keep_alive)
    ex.respond(b"twice", status=500)  # no-op: the exchange is done
    assert client.take() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert client.closing is closed and ex.status == 204 and ex.done
    assert repr(ex) == "<Exchange GET '/' done status=204>"
    assert rig.net.opened == [] and rig.handler.finished_once()


async def test_a_queued_request_stops_reading_until_forwarded() -> None:
    rig = Rig()
    rig.handler.hold = True
    client = rig.client()
    client.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    ex = rig.handler.handled[0]
    ex.wait()
    assert not client.reading
    ex.forward(rig.pool, b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
    app = await rig.app()
    assert client.reading
    client.feed(b"cd")
    assert app.take() == b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"
    app.feed(ok())
    assert client.take() == ok()


async def test_the_legacy_conn_wait_still_pauses() -> None:
    rig = Rig()
    rig.handler.hold = True
    client = rig.client()
    client.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    ex = rig.handler.handled[0]
    rig.conn(client).wait(ex)
    assert not client.reading


async def test_a_queued_request_read_whole_is_read_on_and_ends_when_its_client_leaves() -> None:
    rig = Rig()
    rig.handler.queue = True
    client = rig.client()
    client.feed(get())  # queued in on_headers_complete, before on_message_complete
    ex = rig.handler.handled[0]
    # The GET's body is done: nothing to hold back, so the connection is read on, and the
    # pause of the wait and its resume within the read never reached the transport...
    assert ex.body_done and client.reading and client.reading_calls == 0
    ex.wait()  # (a wait after the body's end does not pause either)
    assert client.reading
    # ...and the client's leaving ends the waiting exchange at once.
    client.peer_close()
    await settle()
    assert ex.done and ex.aborted and rig.handler.finished_once()
    assert not rig.net.opened  # never forwarded


@pytest.mark.parametrize(
    "response_started",
    [pytest.param(False, id="before the response"), pytest.param(True, id="mid-response")],
)
async def test_client_gone_mid_exchange_finishes_once_and_drops_the_upstream(
    response_started: bool,
) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    app = await rig.app()
    up = rig.up(app)
    if response_started:
        app.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    client.peer_close()
    await settle()
    ex = rig.handler.handled[0]
    assert ex.aborted and ex.done and rig.handler.finished_once()
    assert app.aborted and up.state is UpstreamState.CLOSED and rig.pool.idle == []


async def test_backpressure_from_the_client_pauses_the_upstream() -> None:
    rig = Rig(client_high_water=1000)
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    app.take()
    app.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"x" * 1500)
    assert client.writing_paused and not app.reading  # the client is slow: stop the app
    client.take()
    assert app.reading
    app.feed(b"y" * 1500)
    assert client.take().endswith(b"y" * 1500) and rig.pool.idle == [rig.up(app)]


async def test_backpressure_from_the_upstream_pauses_the_client() -> None:
    rig = Rig()
    rig.net.high_water = 100
    client = rig.client()
    client.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n")
    app = await rig.app()
    client.feed(b"z" * 200)
    assert app.writing_paused and not client.reading  # the app is slow: stop the client
    app.take()
    assert client.reading
    client.feed(b"z" * 200)
    app.feed(ok())
    assert client.take() == ok()


async def test_backpressure_noted_before_the_upstream_attached_applies_on_attach() -> None:
    rig = Rig(client_high_water=10)
    rig.handler.hold = True
    client = rig.client()
    client.feed(get())
    ex = rig.handler.handled[0]
    client.write(b"x" * 20)  # the client's buffer is full before the upstream is there
    assert client.writing_paused
    ex.forward(rig.pool, b"GET / HTTP/1.1\r\n\r\n")
    app = await rig.app()
    assert not app.reading
    client.take()
    assert app.reading


@pytest.mark.parametrize(
    ("deadline_s", "start_s", "idle_s", "started", "after_s", "outcome"),
    [
        pytest.param(5.0, 0.0, 0.0, False, 4.9, "running", id="before the deadline"),
        pytest.param(5.0, 0.0, 0.0, False, 5.0, "504", id="deadline, nothing written: 504"),
        pytest.param(5.0, 0.0, 0.0, True, 5.0, "abort", id="deadline mid-response: abort"),
        pytest.param(0.0, 2.0, 0.0, False, 2.0, "504", id="response start timeout"),
        pytest.param(0.0, 2.0, 0.0, True, 2.0, "running", id="started: start timeout is met"),
        pytest.param(0.0, 0.0, 1.0, True, 1.0, "abort", id="idle timeout between writes"),
        pytest.param(0.0, 0.0, 1.0, False, 0.5, "running", id="not idle long enough"),
        pytest.param(0.0, 0.0, 0.0, False, 1e6, "running", id="no timeouts"),
    ],
)
async def test_timeouts_by_the_sweep_with_a_fake_clock(
    deadline_s: float, start_s: float, idle_s: float, started: bool, after_s: float, outcome: str
) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get())
    ex = rig.handler.handled[0]
    now = time.monotonic()
    ex.started_at = ex.last_write = rig.server.now = now
    ex.deadline = now + deadline_s if deadline_s else 0.0
    ex.start_deadline = now + start_s if start_s else 0.0
    ex.idle_timeout = idle_s
    app = await rig.app()
    if started:
        app.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
        client.take()
    rig.server.sweep(now + after_s)
    assert rig.server.now == now + after_s
    out = client.take()
    if outcome == "running":
        assert not ex.done and not client.closing and out == b""
    elif outcome == "504":
        assert out.startswith(b"HTTP/1.1 504 Gateway Timeout") and out.endswith(
            b"request timeout\n"
        )
        assert ex.done and ex.status == 504 and client.closing and not client.aborted
    else:
        assert ex.done and ex.aborted and client.aborted
    if outcome != "running":
        assert app.aborted and rig.handler.finished_once()


async def test_the_sweep_skips_tunnels_and_runs_on_the_loop() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get(b"/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
    ex = rig.handler.handled[0]
    ex.deadline = 1.0  # long past
    app = await rig.app()
    app.take()
    app.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    rig.server.sweep(time.monotonic())
    assert not ex.done
    import asyncio

    rig.server.start(asyncio.get_running_loop())
    assert "in_flight=1" in repr(rig.server)
    rig.server.stop()
    rig.server.stop()


async def test_upgrade_becomes_a_tunnel_both_ways() -> None:
    rig = Rig()
    client = rig.client()
    conn = rig.conn(client)
    client.feed(get(b"/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n") + b"early")
    ex = rig.handler.handled[0]
    assert ex.upgrade and ex.body_buf == [b"early"]
    client.feed(b"more")  # before the upstream answered: kept, reading paused
    assert not client.reading and ex.body_buf == [b"early", b"more"]
    app = await rig.app()
    head = app.take()
    assert head.startswith(b"GET /ws ") and b"Upgrade: websocket" in head
    assert not head.endswith(b"early")  # held until the app agrees to switch
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    app.feed(switch + b"hi")
    assert conn.state is ServerState.TUNNEL and rig.up(app).state is UpstreamState.TUNNEL
    assert client.take() == switch + b"hi" and app.take() == b"earlymore" and client.reading
    client.feed(b"ping")
    app.feed(b"pong")
    assert app.take() == b"ping" and client.take() == b"pong"
    app.peer_close()
    await settle()
    assert ex.done and client.closing and conn.state is ServerState.CLOSED
    assert rig.handler.finished_once()


async def test_upgrade_refused_by_the_app_closes_the_client() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(get(b"/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
    app = await rig.app()
    app.take()
    app.feed(ok(b"no"))
    assert client.take() == ok(b"no") and client.closing


async def test_drain_closes_idle_connections_only() -> None:
    rig = Rig()
    idle, busy = rig.client(), rig.client()
    busy.feed(get())
    rig.server.close_idle()
    assert idle.closing and not busy.closing
    rig.server.abort_all()
    assert busy.closing
    await settle()
    assert rig.server.connections == set() and rig.handler.finished_once()


async def test_each_exchange_starts_with_the_servers_initial_tag() -> None:
    rig = Rig()
    rig.handler.hold = True
    rig.client().feed(get())
    assert rig.handler.handled[0].tag is None
    tagged: ProxyServer[int] = ProxyServer(_IntHandler(), initial_tag=7)
    t = MemoryTransport(tagged()).open()
    t.feed(get())
    assert t.take().startswith(b"HTTP/1.1 200 OK")


class _IntHandler:
    def handle(self, ex: object) -> None:
        from shared.proxy.exchange import Exchange

        assert isinstance(ex, Exchange) and ex.tag == 7
        ex.respond(ok(), status=200)

    def finished(self, ex: object) -> None:
        pass
