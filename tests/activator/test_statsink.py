"""Tests for activator.statsink: the WebSocket to the autoscaler, against a real server.

The autoscaler side is an aiohttp WebSocket server on 127.0.0.1 that decodes every binary
frame with ``shared.stat_proto.decode_wire_stats``, as Knative's autoscaler stat server does. What
must hold (Knative's durable sending connection, and the issue): the link comes back on its
own after the autoscaler goes away and returns, with a back-off rather than a busy loop;
``send`` never waits, whatever the link's state; and what waits for the link is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from activator.statsink import (
    BACKOFF_STEPS,
    INITIAL_BACKOFF_S,
    MAX_BUFFERED,
    WebSocketStatSink,
    backoff_delays,
)
from shared.stat_proto import StatData, WireStat, encode_wire_stats
from tests.activator.integration.harness import AutoscalerStandIn

pytestmark = pytest.mark.timeout(20)


def payload(i: int) -> bytes:
    stat = StatData(pod_name="activator", average_concurrent_requests=float(i), request_count=1)
    return encode_wire_stats([("default", f"rev-{i}", stat)])


def names(received: list[list[WireStat]]) -> list[str]:
    return [name for stats in received for _, name, _ in stats]


@contextlib.asynccontextmanager
async def running(url: str, reconnect_max_s: float = 0.2) -> AsyncIterator[WebSocketStatSink]:
    sink = WebSocketStatSink(url, reconnect_max_s=reconnect_max_s)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


async def test_sends_each_payload_as_one_binary_frame(standin: AutoscalerStandIn) -> None:
    async with running(standin.url) as sink:
        await standin.wait_for(lambda: sink.connected)
        assert sink.status() is None
        for i in range(5):
            sink.send(payload(i))
        await standin.wait_for(lambda: len(standin.received) == 5)
        assert names([r.stats for r in standin.received]) == [f"rev-{i}" for i in range(5)]
        first = standin.received[0].stats[0][2]
        assert first == StatData(
            pod_name="activator", average_concurrent_requests=0.0, request_count=1.0
        )
        assert sink.sent == 5
        assert repr(sink) == f"<WebSocketStatSink {standin.url} connected sent=5 buffered=0>"


async def test_reconnects_after_the_autoscaler_comes_back(standin: AutoscalerStandIn) -> None:
    async with running(standin.url) as sink:
        await standin.wait_for(lambda: sink.connected)
        sink.send(payload(0))
        await standin.wait_for(lambda: len(standin.received) == 1)

        await standin.stop()  # the autoscaler goes away (a restart, a new leader)
        await standin.wait_for(lambda: not sink.connected)
        assert sink.status() == f"not connected to the autoscaler at {standin.url}"
        sink.send(payload(1))  # e.g. a cold-start stat while the link is down
        sink.send(payload(2))

        await standin.start()  # back on the same address
        await standin.wait_for(lambda: sink.connected, timeout_s=5)
        await standin.wait_for(lambda: len(standin.received) == 3)
        # What waited for the link arrives, in order, once.
        assert names([r.stats for r in standin.received]) == ["rev-0", "rev-1", "rev-2"]
        assert standin.connections == 2
        assert sink.status() is None


async def test_send_never_blocks_and_the_buffer_is_bounded() -> None:
    with socket.socket() as s:  # a port nobody listens on: every dial is refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with running(f"ws://127.0.0.1:{dead}") as sink:
        payloads = [payload(i) for i in range(10_000)]
        started = time.perf_counter()
        for data in payloads:
            sink.send(data)
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, f"10,000 sends took {elapsed:.3f} s"
        assert len(sink._buffer) == MAX_BUFFERED
        assert sink.dropped == 10_000 - MAX_BUFFERED
        # The newest are kept: they carry the latest demand.
        assert list(sink._buffer) == payloads[-MAX_BUFFERED:]
        assert sink.status() is not None


async def test_backs_off_between_attempts() -> None:
    """An autoscaler that accepts and hangs up at once gets a few dials, not a storm."""
    attempts: list[float] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running(f"ws://127.0.0.1:{port}", reconnect_max_s=0.2):
            await asyncio.sleep(1.0)
    finally:
        server.close()
        await server.wait_closed()
    # aiohttp itself retries a GET once on a connection closed before the response: count
    # the connections within 50 ms of each other as one dial of ours.
    dials = [t for i, t in enumerate(attempts) if i == 0 or t - attempts[i - 1] > 0.05]
    # Waits of 0.1, 0.13, 0.169, then capped at 0.2 s, each with up to 50 % jitter: about 6
    # dials in 1 s; a busy loop would make thousands.
    assert 3 <= len(dials) <= 9, dials
    gaps = [b - a for a, b in itertools.pairwise(dials)]
    for i, gap in enumerate(gaps):
        step = INITIAL_BACKOFF_S * 1.3**i
        # The lower bound is the back-off; the upper allows a busy machine's scheduling delay
        # (a CI run with two workers saw one wake 0.63 s late). The schedule itself is checked
        # exactly in test_backoff_is_knatives, and the count above bounds the total.
        assert min(step, 0.2) * 0.9 <= gap <= min(step * 1.5, 0.2) + 0.8, (i, gaps)


def test_backoff_is_knatives() -> None:
    """knative.dev/pkg websocket: at once, then 100 ms x 1.3^k (+ up to 50 % jitter) for 19
    waits, then over again (its connect loop restarts ExponentialBackoff after 20 tries)."""
    delays = list(itertools.islice(backoff_delays(60.0, random.Random(7)), 2 * BACKOFF_STEPS))
    assert delays[0] == 0.0 and delays[BACKOFF_STEPS] == 0.0
    for k, d in enumerate(delays[1:BACKOFF_STEPS]):
        assert 0.1 * 1.3**k <= d <= 0.15 * 1.3**k, (k, d)
    assert delays[BACKOFF_STEPS + 1 :] == pytest.approx(delays[1:BACKOFF_STEPS], rel=0.5)
    capped = list(itertools.islice(backoff_delays(0.2, random.Random(7)), BACKOFF_STEPS))
    assert max(capped) == 0.2


async def test_close_while_disconnected_is_prompt() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    sink = WebSocketStatSink(f"ws://127.0.0.1:{dead}", reconnect_max_s=5.0)
    await sink.start()
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await sink.close()
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("answer_pings", "connections"),
    [
        pytest.param(True, 1, id="pongs keep the link up"),
        pytest.param(False, 2, id="no pong for the timeout: dropped and redialled"),
    ],
)
async def test_pings_the_autoscaler(answer_pings: bool, connections: int) -> None:
    """Knative's client pings 3 times per 10 s pong timeout and gives up a connection whose
    pongs stopped (a half-open link never errors); here the timeout is 0.6 s."""
    pings: list[float] = []
    dials = 0

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        nonlocal dials
        dials += 1
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.PING:
                pings.append(time.monotonic())
                if answer_pings:
                    await ws.pong(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", ws_handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sink = WebSocketStatSink(f"ws://127.0.0.1:{port}", reconnect_max_s=0.1, pong_timeout_s=0.6)
    await sink.start()
    try:
        await asyncio.sleep(1.0)  # one pong timeout and a half
    finally:
        await sink.close()
        await runner.cleanup()
    assert len(pings) >= 2, pings  # every 0.2 s
    assert dials == connections, (dials, pings)
