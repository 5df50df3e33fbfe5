"""The proxy core at the edge (issue 10): what a hostile client can send, and the listener's own
limits (header and idle timeouts, the connection cap), in memory with a fake clock.

Each test here failed on the core before: ``Connection: Host`` deleted the Host line, two Host
headers were accepted (the last one routed), a malformed chunk size closed the connection with
no answer, and there was no header or idle timeout and no connection cap.
"""

from __future__ import annotations

import asyncio
import resource

import pytest

from shared.proxy.exchange import Exchange
from shared.proxy.head import connection_tokens, drop_listed
from shared.proxy.lifecycle import ServerState
from shared.proxy.memory import MemoryTransport
from shared.proxy.server import (
    SHED_LINGER_S,
    ConnectionLimits,
    ProxyServer,
    ServerConnection,
    fd_connection_cap,
)

from .rig import Rig, get, ok, settle

T0 = 1000.0  # the fake clock's start


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        pytest.param(b"Host", [], id="Host"),
        pytest.param(b"close, content-length", [b"close"], id="Content-Length"),
        pytest.param(b"Transfer-Encoding ,X-Secret", [b"x-secret"], id="Transfer-Encoding"),
        pytest.param(b"HOST, Keep-Alive", [b"keep-alive"], id="any case"),
    ],
)
def test_connection_cannot_name_end_to_end_fields(value: bytes, tokens: list[bytes]) -> None:
    assert connection_tokens(value) == tokens


def test_connection_host_keeps_the_host_line() -> None:
    """What each component does with a client's ``Connection``: its Host line stays."""
    out = [b"GET / HTTP/1.1\r\n", b"Host: a.example\r\n", b"Content-Length: 3\r\n", b"X: 1\r\n"]
    drop_listed(out, connection_tokens(b"Host, Content-Length, X"))
    assert out == [b"GET / HTTP/1.1\r\n", b"Host: a.example\r\n", b"Content-Length: 3\r\n"]


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two"),
        pytest.param(b"GET / HTTP/1.1\r\nhost: a\r\nX: 1\r\nHOST: a\r\n\r\n", id="cased, apart"),
        pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", id="HTTP/1.0, same value"),
    ],
)
async def test_several_host_headers_are_400(head: bytes) -> None:
    rig = Rig()
    client = rig.client()
    client.feed(head)
    out = client.take()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert out.endswith(b"more than one Host header\n") and b"Connection: close" in out
    assert client.closing and not rig.handler.handled


async def test_one_host_header_per_request_on_a_kept_connection() -> None:
    """The count is per request: a kept-alive connection's second request is not refused."""
    rig = Rig()
    client = rig.client()
    client.feed(get(b"/1"))
    app = await rig.app()
    app.take()
    app.feed(ok())
    client.feed(get(b"/2"))
    app.take()
    app.feed(ok())
    assert client.take() == ok() + ok() and not client.closing


_CHUNKED = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"


async def test_malformed_chunk_size_is_400_and_the_upstream_is_dropped() -> None:
    rig = Rig()
    client = rig.client()
    client.feed(_CHUNKED)
    app = await rig.app()
    assert app.take().endswith(b"\r\n\r\n5\r\nhello\r\n")  # forwarded as it came
    client.feed(b"zz\r\nmore\r\n")
    out = client.take()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert b"chunk size" in out and b"Connection: close" in out
    assert client.closing
    await settle()
    # The app got half a body: its connection can carry nothing more.
    assert app.lost and not rig.pool.idle
    ex = rig.handler.handled[0]
    assert ex.status == 400 and rig.handler.finished_once()


async def test_malformed_chunk_of_a_held_request_is_400() -> None:
    """The handler had not forwarded it yet (queued): the same 400, and finished once."""
    rig = Rig()
    rig.handler.hold = True
    client = rig.client()
    client.feed(_CHUNKED + b"-1\r\n")
    assert client.take().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert rig.handler.handled[0].done and rig.handler.finished_once()
    assert not rig.net.opened


async def test_malformed_chunk_after_the_response_began_cuts_the_connection() -> None:
    """A status line is out already: a 400 now would corrupt the response; the client sees the
    connection break instead."""
    rig = Rig()
    client = rig.client()
    client.feed(_CHUNKED)
    app = await rig.app()
    app.take()
    app.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    client.feed(b"xyz\r\n")
    assert client.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    assert client.closing and rig.handler.finished_once()


def _limited(rig: Rig, **limits: float) -> ProxyServer[None]:
    server = rig.server
    server.limits = ConnectionLimits(**limits)  # type: ignore[arg-type]
    server.sweep(T0)  # the fake clock: connections read ``now`` from the last sweep
    return server


async def test_header_timeout_closes_slow_and_silent_clients_only() -> None:
    rig = Rig()
    server = _limited(rig, header_timeout_s=10.0, idle_timeout_s=60.0)
    silent = rig.client()
    slow = rig.client()
    slow.feed(b"GET / HTTP/1.1\r\nHo")
    busy = rig.client()
    busy.feed(get())  # handled: the exchange's own timeouts apply, not the connection's
    await rig.app()
    server.sweep(T0 + 9.9)
    server.sweep_connections(T0 + 9.9)
    assert not (silent.closing or slow.closing or busy.closing)
    slow.feed(b"st: x\r\nX: ")  # a byte now and then does not reset the clock
    server.sweep_connections(T0 + 10.0)
    assert silent.closing and silent.take() == b""  # nothing came: a plain close
    out = slow.take()
    assert slow.closing and out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), out
    assert not busy.closing and rig.conn(busy).state is ServerState.ACTIVE
    await settle()
    assert len(server.connections) == 1


async def test_idle_timeout_then_header_timeout_on_a_kept_connection() -> None:
    rig = Rig()
    server = _limited(rig, header_timeout_s=10.0, idle_timeout_s=60.0)
    client = rig.client()
    client.feed(get())
    app = await rig.app()
    app.take()
    server.sweep(T0 + 30.0)  # the response ends at T0 + 30: idle from there
    app.feed(ok())
    assert client.take() == ok()
    server.sweep_connections(T0 + 89.0)  # 59 s idle: more than the header timeout, kept
    assert not client.closing
    server.sweep(T0 + 89.5)
    client.feed(b"GET /next HTTP/1.1\r\n")  # the next head's first byte: header clock from here
    server.sweep_connections(T0 + 95.0)
    assert not client.closing
    server.sweep_connections(T0 + 99.5)
    assert client.closing and client.take().startswith(b"HTTP/1.1 408 ")

    other = rig.client()
    other.feed(get())
    app.take()
    app.feed(ok())
    other.take()
    server.sweep_connections(T0 + 89.5 + 60.0)  # 60 s idle since its response
    assert other.closing and other.take() == b""


async def test_no_timeouts_by_default() -> None:
    rig = Rig()
    rig.server.sweep(T0)
    client = rig.client()
    client.feed(b"GET / HTTP/1.1\r\n")
    rig.server.sweep_connections(T0 + 3600.0)
    assert not client.closing


async def test_connections_past_the_cap_are_answered_503_and_closed() -> None:
    rig = Rig()
    server = _limited(rig, max_connections=2)
    first, second = rig.client(), rig.client()
    shed = MemoryTransport(server()).open()
    out = shed.buffer.decode()
    assert out.startswith("HTTP/1.1 503 Service Unavailable\r\n") and "Connection: close" in out
    assert "Retry-After: 1" in out and out.endswith("too many connections\n")
    assert shed.closing and not isinstance(shed.protocol, ServerConnection)
    assert server.shed_count == 1 and "shed=1" in repr(server)
    # The two served keep working; once one leaves, a new one is served again.
    first.feed(get())
    app = await rig.app()
    app.take()
    app.feed(ok())
    assert first.take() == ok()
    second.peer_close()
    await settle()
    third = rig.client()
    assert isinstance(third.protocol, ServerConnection) and not third.closing


async def test_the_cap_counts_connections_accepted_but_not_made_yet() -> None:
    """The loop makes up to a backlog of protocols before any connection_made runs."""
    rig = Rig()
    server = _limited(rig, max_connections=2)
    made = [server() for _ in range(3)]
    assert [isinstance(p, ServerConnection) for p in made] == [True, True, False]
    for proto in made[:2]:
        MemoryTransport(proto).open()
    assert server.accepting == 0 and len(server.connections) == 2


async def test_the_cap_never_exceeds_what_the_fd_limit_allows() -> None:
    rig = Rig()
    server = _limited(rig, max_connections=10**9)
    server.fd_cap = 1
    rig.client()
    assert not isinstance(server(), ServerConnection)


@pytest.mark.parametrize(
    ("soft", "cap"),
    [
        pytest.param(20_000, 15_904, id="20,000 fds"),
        pytest.param(1_024, 768, id="1,024 fds"),
        pytest.param(resource.RLIM_INFINITY, (1 << 20) - 4096, id="unlimited"),
        pytest.param(20, 16, id="tiny: at least 16"),
    ],
)
def test_fd_connection_cap(monkeypatch: pytest.MonkeyPatch, soft: int, cap: int) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))
    assert fd_connection_cap() == cap


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        pytest.param({"header_timeout_s": -1.0}, "header_timeout_s", id="negative header"),
        pytest.param({"idle_timeout_s": float("nan")}, "idle_timeout_s", id="NaN idle"),
        pytest.param({"max_connections": -5}, "max_connections", id="negative cap"),
    ],
)
def test_connection_limits_refuse_bad_values(limits: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionLimits(**limits)  # type: ignore[arg-type]


# -- on real sockets: what a client sees -----------------------------------------------------


class _Answer:
    """A handler that answers every request 200 by itself."""

    def handle(self, ex: Exchange[None]) -> None:
        ex.respond(ok(), status=200)

    def finished(self, ex: Exchange[None]) -> None:
        pass


async def test_a_shed_client_reads_its_503_whole_and_the_served_ones_go_on() -> None:
    """The 503 is written before the request is read; the client must still get it rather
    than a reset (the socket lingers until the client closes, at most SHED_LINGER_S)."""
    loop = asyncio.get_running_loop()
    proxy = ProxyServer(_Answer(), initial_tag=None, limits=ConnectionLimits(max_connections=3))
    proxy.start(loop)
    server = await loop.create_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get())
            answer = await asyncio.wait_for(reader.read(), 2)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            writer.close()
        reader, writer = held[0]
        writer.write(get())
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), 2)).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(b"/", b"Connection: close\r\n"))
        assert (await asyncio.wait_for(reader.read(), 2)).startswith(b"HTTP/1.1 200")
        writer.close()
        await asyncio.sleep(SHED_LINGER_S + 0.2)  # the sweep let go of every shed socket
        assert not proxy.shedding and proxy.shed_count == 20
    finally:
        proxy.stop()
        proxy.abort_all()
        server.close()
