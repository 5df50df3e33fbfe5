"""The activator's WebSocket to the autoscaler: Knative's durable sending connection.

Knative's activator opens ``ws://autoscaler...:8080`` with knative.dev/pkg
websocket.NewDurableSendingConnection and sends each second's WireStatMessages as one binary
message. That connection reconnects on its own with a back-off, and a send while it is down
fails instead of waiting: a request must never wait for the autoscaler.

Here ``send`` only appends to a small bounded buffer and wakes the sender task, so the hot path
pays one deque append. While disconnected the buffer keeps the newest ``MAX_BUFFERED``
messages (Knative drops them all; keeping the last few means the cold-start stat of a request
that arrived during a reconnect still wakes the autoscaler when the link comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol

import aiohttp

__all__ = ["StatSink", "WebSocketStatSink"]

# Messages kept while the autoscaler is unreachable: a few seconds of reports.
MAX_BUFFERED = 16
# Back-off between connection attempts: 100 ms doubling to reconnect_max_s (knative.dev/pkg
# websocket's ExponentialBackoff starts at 100 ms too).
INITIAL_BACKOFF_S = 0.1
# A dial that takes longer is as good as refused.
CONNECT_TIMEOUT_S = 2.0


class StatSink(Protocol):
    """Where the activator's stats go; tests may pass an in-memory one."""

    def send(self, payload: bytes) -> None:
        """Queue one WireStatMessages for sending; never blocks, never raises."""
        ...

    def status(self) -> str | None:
        """None when healthy, else why not (the activator's readiness uses it, as Knative)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class WebSocketStatSink:
    """Sends binary messages over a WebSocket that reconnects with back-off."""

    def __init__(self, url: str, *, reconnect_max_s: float = 5.0) -> None:
        self.url = url
        self.reconnect_max_s = reconnect_max_s
        self.connected = False
        self.sent = 0
        self.dropped = 0
        self._buffer: deque[bytes] = deque(maxlen=MAX_BUFFERED)
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        buffered = len(self._buffer)
        return f"<WebSocketStatSink {self.url} {state} sent={self.sent} buffered={buffered}>"

    def send(self, payload: bytes) -> None:
        if len(self._buffer) == MAX_BUFFERED:
            self.dropped += 1
        self._buffer.append(payload)
        self._wakeup.set()

    def status(self) -> str | None:
        return None if self.connected else f"not connected to the autoscaler at {self.url}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        assert self._session is not None
        backoff = INITIAL_BACKOFF_S
        while True:
            try:
                async with self._session.ws_connect(
                    self.url, timeout=aiohttp.ClientWSTimeout(ws_close=1.0), autoping=True
                ) as ws:
                    self.connected = True
                    backoff = INITIAL_BACKOFF_S
                    await self._pump(ws)
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what is buffered, as it comes, until the connection ends."""
        loop = asyncio.get_running_loop()
        # Reading is what notices a close or answers pings; the autoscaler sends nothing else.
        reader = loop.create_task(ws.receive())
        try:
            while not ws.closed:
                buffer = self._buffer
                while buffer:
                    await ws.send_bytes(buffer[0])
                    buffer.popleft()
                    self.sent += 1
                self._wakeup.clear()
                waker = loop.create_task(self._wakeup.wait())
                done, _ = await asyncio.wait({reader, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if reader in done:
                    msg = reader.result()
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        return
                    reader = loop.create_task(ws.receive())
        finally:
            reader.cancel()
