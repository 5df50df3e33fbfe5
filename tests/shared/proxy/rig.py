"""A proxy core wired to the in-memory network: the test plays the client and the app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.proxy.exchange import Exchange
from shared.proxy.http1 import HOP_BY_HOP
from shared.proxy.memory import MemoryNetwork, MemoryTransport
from shared.proxy.server import ProxyServer, ServerConnection
from shared.proxy.upstream import UpstreamConnection, UpstreamPool

APP = ("10.0.0.9", 8080)


def pass_through_head(ex: Exchange[None]) -> bytes:
    """The request head as a minimal proxy rewrites it: hop-by-hop dropped, framing restated."""
    lines = [b"%b %b HTTP/%b\r\n" % (ex.method, ex.target, ex.version.encode())]
    lines += [b"%b: %b\r\n" % (n, v) for n, v in ex.headers if n.lower() not in HOP_BY_HOP]
    if ex.chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if ex.upgrade:
        lines.append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % (ex.header(b"upgrade") or b""))
    lines.append(b"\r\n")
    return b"".join(lines)


class Handler:
    """Forwards every request unless told to hold it; counts ``finished`` per exchange."""

    def __init__(self, pool: UpstreamPool[None]) -> None:
        self.pool = pool
        self.hold = False  # leave the exchange to the test (respond, wait, forward later)
        self.queue = False  # hold it, queued (ex.wait()) in handle as a full breaker does
        self.handled: list[Exchange[None]] = []
        self.finished_count: dict[int, int] = {}

    def handle(self, ex: Exchange[None]) -> None:
        self.handled.append(ex)
        if self.queue:
            ex.wait()
        elif not self.hold:
            ex.forward(self.pool, pass_through_head(ex))

    def finished(self, ex: Exchange[None]) -> None:
        self.finished_count[id(ex)] = self.finished_count.get(id(ex), 0) + 1

    def finished_once(self) -> bool:
        """Every handled exchange that is done was finished exactly once."""
        return all(
            self.finished_count.get(id(ex), 0) == (1 if ex.done else 0) for ex in self.handled
        )


@dataclass
class Rig:
    net: MemoryNetwork = field(default_factory=MemoryNetwork)
    client_high_water: int = 64 * 1024

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.pool: UpstreamPool[None] = UpstreamPool(loop, *APP, connect=self.net.connect)
        self.handler = Handler(self.pool)
        self.server: ProxyServer[None] = ProxyServer(self.handler, initial_tag=None)
        self.clients: list[MemoryTransport] = []

    def client(self) -> MemoryTransport:
        t = MemoryTransport(self.server(), high_water=self.client_high_water).open()
        self.clients.append(t)
        return t

    @staticmethod
    def conn(t: MemoryTransport) -> ServerConnection[None]:
        proto = t.protocol
        assert isinstance(proto, ServerConnection)
        return proto

    @staticmethod
    def up(t: MemoryTransport) -> UpstreamConnection[None]:
        proto = t.protocol
        assert isinstance(proto, UpstreamConnection)
        return proto

    async def app(self, index: int = -1) -> MemoryTransport:
        """The app's end of an upstream connection (the newest by default), once opened."""
        await settle()
        return self.net.opened[index]


async def settle(turns: int = 3) -> None:
    """Let the event loop run what was scheduled (connects, connection_lost)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body),
        b"".join(extra),
        body,
    )


def get(path: bytes = b"/", *extra: bytes) -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: x\r\n%b\r\n" % (path, b"".join(extra))
