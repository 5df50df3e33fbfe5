"""The stat server speaks Knative's activator protocol; the client here is ``websockets``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from autoscaler.statserver import FORWARD_PATH, StatServer
from shared.seams import RevisionKey
from shared.stat_proto import StatData, WireStatMessages, encode_wire_stats

pytestmark = pytest.mark.timeout(10)

STAT = StatData("activator-0", 3.0, 0.0, 5.0, 0.0, 0.0, 1_700_000_000)


class Running:
    """A StatServer on a free loopback port and what it handed on."""

    def __init__(self) -> None:
        self.server = StatServer(self.on_stat, self.on_forwarded)
        self.forwarded: list[RevisionKey] = []
        self.runner = web.AppRunner(self.server.app, access_log=None)
        self.got: list[tuple[RevisionKey, StatData]] = []
        self.arrived = asyncio.Event()
        self.url = self.http = ""

    def on_stat(self, key: RevisionKey, stat: StatData) -> None:
        self.got.append((key, stat))
        self.arrived.set()

    def on_forwarded(self, key: RevisionKey, stat: StatData) -> None:
        self.forwarded.append(key)
        self.on_stat(key, stat)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        port = self.runner.addresses[0][1]
        self.url, self.http = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    await r.start()
    yield r
    await r.runner.cleanup()


async def wait_for(r: Running, n: int) -> None:
    async with asyncio.timeout(3):
        while len(r.got) < n:
            r.arrived.clear()
            await r.arrived.wait()


async def test_binary_wire_stats_are_decoded_per_message(running: Running) -> None:
    async with connect(running.url) as ws:
        await ws.send(
            encode_wire_stats([("default", "a-00001", STAT), ("ns2", "b-00002", StatData("x"))])
        )
        await wait_for(running, 2)
    assert running.got == [
        (RevisionKey("default", "a-00001"), STAT),
        (RevisionKey("ns2", "b-00002"), StatData("x")),
    ]


async def test_any_path_upgrades(running: Running) -> None:
    async with connect(running.url + "/some/path") as ws:
        await ws.send(encode_wire_stats([("default", "a", STAT)]))
        await wait_for(running, 1)
    assert running.got == [(RevisionKey("default", "a"), STAT)]


async def test_bad_frames_are_dropped_and_the_connection_stays(running: Running) -> None:
    no_stat = WireStatMessages()
    msg = no_stat.messages.add()  # type: ignore[attr-defined]
    msg.namespace, msg.name = "default", "no-stat"
    async with connect(running.url) as ws:
        await ws.send(b"\xff\xff\xff")  # not protobuf
        await ws.send("text is not a stat")
        await ws.send(no_stat.SerializeToString())  # a message without a Stat: skipped
        await ws.send(encode_wire_stats([("default", "a", STAT)]))
        await wait_for(running, 1)
    assert running.got == [(RevisionKey("default", "a"), STAT)]
    assert running.server.frames_dropped == 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"K-Kubelet-Probe": "queue"}, 200, id="kubelet-header"),
        pytest.param({"User-Agent": "kube-probe/1.30"}, 200, id="kubelet-agent"),
        pytest.param({}, 400, id="plain-http-is-bad-request"),
    ],
)
async def test_plain_http(running: Running, headers: dict[str, str], status: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.http + "/", headers=headers) as resp,
    ):
        assert resp.status == status


async def test_shutdown_tells_clients_to_reconnect(running: Running) -> None:
    async with connect(running.url) as ws:
        await ws.send(encode_wire_stats([("default", "a", STAT)]))
        await wait_for(running, 1)
        await running.runner.shutdown()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 3)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012


async def test_pings_are_answered_promptly(running: Running) -> None:
    """Knative's activator pings every ~3 s and drops the connection without a pong in 10 s."""
    async with connect(running.url, ping_interval=None) as ws:
        for _ in range(3):
            pong = await ws.ping()
            async with asyncio.timeout(1):
                await pong


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        pytest.param("/", False, id="activator"),
        pytest.param(FORWARD_PATH, True, id="another-replica-forwarding"),
    ],
)
async def test_forwarded_stats_are_told_apart(running: Running, path: str, forwarded: bool) -> None:
    async with connect(running.url + path) as ws:
        await ws.send(encode_wire_stats([("default", "a-00001", STAT)]))
        await wait_for(running, 1)
    assert running.forwarded == ([RevisionKey("default", "a-00001")] if forwarded else [])


@pytest.mark.parametrize(
    ("host", "upgraded"),
    [
        pytest.param("autoscaler-bucket-00-of-02.knative-serving.svc", True, id="owned-bucket"),
        pytest.param("autoscaler-bucket-01-of-02.knative-serving.svc", False, id="other-bucket"),
        pytest.param("autoscaler.knative-serving.svc", True, id="the-autoscaler-service"),
    ],
)
async def test_bucket_hosts_only_reach_their_leader(host: str, upgraded: bool) -> None:
    """Knative's server refuses a bucket's Service name unless it leads that bucket."""
    server = StatServer(
        lambda _k, _s: None, owns_bucket=lambda b: b == "autoscaler-bucket-00-of-02"
    )
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            if upgraded:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/", headers={"Host": host}):
                    pass
            else:
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    async with session.ws_connect(
                        f"ws://127.0.0.1:{port}/", headers={"Host": host}
                    ):
                        pass
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://evil.example", id="cross-origin-page"),
        pytest.param("http://127.0.0.1", id="a-page-on-a-rebound-or-local-name"),
    ],
)
async def test_browser_handshakes_are_refused(running: Running, origin: str) -> None:
    # A page's WebSocket always carries Origin; none may feed Stats (issue 10).
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(running.url, origin=origin)
    assert refused.value.status == 403
    async with connect(running.url) as ws:  # an activator's handshake (no Origin) still works
        await ws.send(encode_wire_stats([("default", "a", STAT)]))
        await wait_for(running, 1)
    assert running.got == [(RevisionKey("default", "a"), STAT)]
