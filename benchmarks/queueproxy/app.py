"""The benchmark's user container: a tiny, fast HTTP/1.1 server, so that the app is never the
bottleneck when a proxy in front of it is measured.

Theory of operation: one `asyncio.Protocol` per connection with httptools' C parser on uvloop.
Every request, whatever its method, path or body, gets the same precomputed 200 response. Bytes
from one `data_received` may hold several pipelined requests; their responses are gathered and
written with one `transport.write`, in request order. A request that does not keep the connection
alive (HTTP/1.0 without keep-alive, `Connection: close`) closes the connection after its response.
A parse error answers 400 and closes. If the client stops reading, the write buffer grows past
the transport's high-water mark and we stop reading from it until it drains (`pause_writing`).

Run: python benchmarks/queueproxy/app.py --port 8080 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import uvloop

BODY = b"Hello, World!\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
RESPONSE_CLOSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class AppProtocol(asyncio.Protocol):
    """One connection: parse, answer each complete request, keep alive unless told otherwise."""

    __slots__ = ("_closing", "_out", "_parser", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._out: list[bytes] = []
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # no upgrades here
            # Bytes after a request that closes the connection are an error to the parser,
            # but not the client's: that request has its answer, the rest is dropped.
            if not self._closing:
                self._out.append(BAD_REQUEST)
                self._closing = True
        if self._out:
            transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
            self._out.clear()
        if self._closing:
            transport.close()

    # httptools callback: one full request (headers and body) has been parsed.
    def on_message_complete(self) -> None:
        if self._closing:
            return
        if self._parser.should_keep_alive():
            self._out.append(RESPONSE)
        else:
            self._out.append(RESPONSE_CLOSE)
            self._closing = True

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AppProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
