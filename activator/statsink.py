"""The activator's WebSocket to the autoscaler: Knative's durable sending connection.

Knative's activator opens ``ws://autoscaler...:8080`` with knative.dev/pkg
websocket.NewDurableSendingConnection and sends each second's WireStatMessages as one binary
message. That connection reconnects on its own with a back-off, and a send while it is down
fails instead of waiting: a request must never wait for the autoscaler. As that connection
does, this one pings the server three times per 10 s and gives the connection up when no
pong came for 10 s (a half-open TCP connection never errors otherwise); it reconnects at
once, then after 100 ms growing by 1.3 per attempt with up to 50 % jitter, starting over
after 20 attempts (knative.dev/pkg websocket: connectionBackoff, pongTimeout).

Here ``send`` only appends to a small bounded buffer and wakes the sender task, so the hot path
pays one deque append. While disconnected the buffer keeps the newest ``MAX_BUFFERED``
messages (Knative drops them all; keeping the last few means the cold-start stat of a request
that arrived during a reconnect still wakes the autoscaler when the link comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Iterator
from typing import Protocol

import aiohttp

__all__ = ["StatSink", "WebSocketStatSink"]

# Messages kept while the autoscaler is unreachable: a few seconds of reports.
MAX_BUFFERED = 16
# knative.dev/pkg websocket connectionBackoff: Duration 100 ms, Factor 1.3, Steps 20, Jitter 0.5.
INITIAL_BACKOFF_S = 0.1
BACKOFF_FACTOR = 1.3
BACKOFF_STEPS = 20
BACKOFF_JITTER = 0.5
# Its dialer's HandshakeTimeout: a dial that takes longer is as good as refused.
CONNECT_TIMEOUT_S = 3.0
# Its pongTimeout: the connection is dead when no pong arrived for this long; pings go out
# three times per period.
PONG_TIMEOUT_S = 10.0


def backoff_delays(max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """The waits before each reconnection attempt: 0 first, then the 19 growing steps of
    Knative's ExponentialBackoff (each capped at ``max_s``), then the same again."""
    rnd = rng or random.Random()
    while True:
        yield 0.0
        step = INITIAL_BACKOFF_S
        for _ in range(BACKOFF_STEPS - 1):
            yield min(step + rnd.random() * BACKOFF_JITTER * step, max_s)
            step *= BACKOFF_FACTOR


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

    def __init__(
        self, url: str, *, reconnect_max_s: float = 15.0, pong_timeout_s: float = PONG_TIMEOUT_S
    ) -> None:
        self.url = url
        self.reconnect_max_s = reconnect_max_s
        self.pong_timeout_s = pong_timeout_s
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
        for delay in backoff_delays(self.reconnect_max_s):
            if delay:
                await asyncio.sleep(delay)
            try:
                async with self._session.ws_connect(
                    self.url,
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                    autoping=False,  # pings and pongs are handled in _pump, as Knative's
                    autoclose=True,
                ) as ws:
                    self.connected = True
                    await self._pump(ws)
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            finally:
                self.connected = False

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what is buffered, as it comes, and ping, until the connection ends."""
        loop = asyncio.get_running_loop()
        reader = loop.create_task(ws.receive())
        pinger = loop.create_task(self._ping(ws))
        last_pong = time.monotonic()
        try:
            while not ws.closed:
                buffer = self._buffer
                while buffer:
                    await ws.send_bytes(buffer[0])
                    buffer.popleft()
                    self.sent += 1
                self._wakeup.clear()
                waker = loop.create_task(self._wakeup.wait())
                timeout = last_pong + self.pong_timeout_s - time.monotonic()
                done, _ = await asyncio.wait(
                    {reader, waker, pinger},
                    timeout=max(timeout, 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waker.cancel()
                if not done and time.monotonic() >= last_pong + self.pong_timeout_s:
                    return  # no pong for pongTimeout: a dead connection
                if pinger in done:
                    return  # a ping could not be written
                if reader in done:
                    msg = reader.result()
                    if msg.type is aiohttp.WSMsgType.PING:
                        await ws.pong(msg.data)
                    elif msg.type is aiohttp.WSMsgType.PONG:
                        last_pong = time.monotonic()
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        return
                    reader = loop.create_task(ws.receive())
        finally:
            reader.cancel()
            pinger.cancel()

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Knative's keep-alive: a ping three times per pong timeout; returns on a failed write."""
        with contextlib.suppress(aiohttp.ClientError, OSError, ConnectionError):
            while not ws.closed:
                await asyncio.sleep(self.pong_timeout_s / 3)
                await ws.ping()
