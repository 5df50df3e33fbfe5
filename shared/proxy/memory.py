"""An in-memory network for the proxy core's unit tests: fake transports, no sockets.

As httpcore's mock backend: the proxy's protocols (``ServerConnection``, ``UpstreamConnection``)
get a ``MemoryTransport`` instead of a socket's, and the test holds the other end of each
connection. It plays the client (``feed`` bytes in, ``take`` what the proxy wrote) and the app
(the same, on the connections the pool opened through ``MemoryNetwork.connect``). Flow control
is explicit: ``reading`` says whether the proxy paused the transport, and writes beyond
``high_water`` bytes not yet taken call the protocol's ``pause_writing`` until ``take`` drains
them, as a socket's send buffer does. Closing is as asyncio's: ``connection_lost`` follows on
the next turn of the event loop, never from inside ``close`` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# The default high-water mark of a write buffer: asyncio's selector transports use 64 KiB.
HIGH_WATER_BYTES = 64 * 1024


class MemoryTransport(asyncio.Transport):
    """The proxy's end of one in-memory connection; the test holds the other end."""

    def __init__(
        self,
        protocol: asyncio.Protocol,
        *,
        peer: tuple[str, int] = ("192.0.2.1", 40000),
        high_water: int = HIGH_WATER_BYTES,
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.peer = peer
        self.high_water = high_water
        self.buffer = bytearray()  # written by the proxy, not taken by the test yet
        self.reading = True
        self.reading_calls = 0  # pause_reading and resume_reading calls (each re-arms a poll)
        self.writing_paused = False
        self.closing = False
        self.aborted = False
        self.lost = False
        self.eof = False  # the test's end closed (peer_close): nothing more to feed

    def __repr__(self) -> str:
        state = "aborted" if self.aborted else ("closing" if self.closing else "open")
        reading = "reading" if self.reading else "paused"
        host, port = self.peer
        return f"<MemoryTransport {host}:{port} {state} {reading} buf={len(self.buffer)}>"

    # -- the test's end ----------------------------------------------------------------------
    def open(self) -> MemoryTransport:
        """Connect: the protocol's ``connection_made``."""
        self.protocol.connection_made(self)
        return self

    def feed(self, data: bytes) -> None:
        """Bytes from the test's end, delivered as one read.

        Delivered even while paused: a test may check what the proxy does with a read that was
        already in flight when it paused.
        """
        if self.lost:
            raise ConnectionError("feed on a connection that is lost")
        self.protocol.data_received(data)

    def take(self) -> bytes:
        """What the proxy wrote since the last take; frees the buffer (resume_writing)."""
        data = bytes(self.buffer)
        self.buffer.clear()
        if self.writing_paused and not self.lost:
            self.writing_paused = False
            self.protocol.resume_writing()
        return data

    def peer_close(self) -> None:
        """The test's end closes (the client went away, the app closed the connection)."""
        self.eof = True
        self._lose()

    # -- asyncio.Transport -------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return  # as asyncio: writes after close are dropped (it logs a warning)
        self.buffer += data
        if not self.writing_paused and len(self.buffer) > self.high_water:
            self.writing_paused = True
            self.protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def pause_reading(self) -> None:
        self.reading = False
        self.reading_calls += 1

    def resume_reading(self) -> None:
        self.reading = True
        self.reading_calls += 1

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    # -- internals -----------------------------------------------------------------------------
    def _lose(self) -> None:
        if self.closing:
            return
        self.closing = True
        asyncio.get_running_loop().call_soon(self._connection_lost)

    def _connection_lost(self) -> None:
        self.lost = True
        self.protocol.connection_lost(None)


class MemoryNetwork:
    """A ``contract.Connector`` for ``UpstreamPool(connect=...)``.

    Each connect is a new ``MemoryTransport``, kept in ``opened`` for the test to play the app.
    """

    def __init__(self, *, high_water: int = HIGH_WATER_BYTES) -> None:
        self.high_water = high_water
        self.opened: list[MemoryTransport] = []
        self.refuse: set[tuple[str, int]] = set()  # addresses that refuse connections
        self.attempts = 0

    def __repr__(self) -> str:
        return f"<MemoryNetwork opened={len(self.opened)} refuse={sorted(self.refuse)}>"

    async def connect(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        self.attempts += 1
        if (host, port) in self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        protocol = factory()
        transport = MemoryTransport(protocol, peer=(host, port), high_water=self.high_water)
        self.opened.append(transport.open())
        return transport, protocol
