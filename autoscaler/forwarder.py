"""Stat forwarding: a Stat for a revision of another replica's bucket goes to that replica.

Knative's pkg/autoscaler/statforwarder: activators send every Stat to whichever autoscaler
replica the ``autoscaler`` Service picked; a replica that does not lead the revision's bucket
sends the Stat on, as ``WireStatMessages`` over a WebSocket, to the bucket's leader. The
leader's address is its bucket EndpointSlice (bucket.py), read through an informer on the
system namespace. Stats queue per leader address and go out as one frame per batch; a
leader that cannot be reached within 500 ms (Knative's establishment timeout) costs the
queued Stats, which are a second's worth at most: the next second brings fresh ones.

``__call__`` is the engine's ``Forward``: True when the Stat was taken (forwarded or dropped
for want of a leader), False when this replica leads the bucket and records it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from autoscaler.bucket import BucketElector, owner_bucket, slice_address
from autoscaler.statserver import FORWARD_PATH
from shared.kube.informer import Informer
from shared.seams import RevisionKey
from shared.stat_proto import StatData, WireStat, encode_wire_stats

__all__ = ["StatForwarder"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 0.5
MAX_QUEUED = 10_000  # per leader; beyond this a stuck leader's Stats are dropped


class StatForwarder:
    """Forwards Stats of buckets led elsewhere; see the module docstring."""

    def __init__(
        self,
        elector: BucketElector,
        slices: Informer,
        session: aiohttp.ClientSession,
        own_address: str,
    ) -> None:
        self._elector = elector
        self._slices = slices
        self._session = session
        self._own = own_address
        self._queues: dict[str, asyncio.Queue[WireStat]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self.forwarded = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<StatForwarder forwarded={self.forwarded} dropped={self.dropped}>"

    def __call__(self, key: RevisionKey, stat: StatData) -> bool:
        bucket = owner_bucket(key, self._elector.buckets)
        if bucket in self._elector.leading:
            return False
        address = slice_address(self._slices.get(self._elector.namespace, bucket))
        if address is None or address == self._own:
            self.dropped += 1
            log.debug("%s: no leader for %s yet, dropping a stat", key, bucket)
            return True
        queue = self._queues.get(address)
        if queue is None:
            queue = self._queues[address] = asyncio.Queue(MAX_QUEUED)
            self._senders[address] = asyncio.create_task(self._send(address, queue))
        try:
            queue.put_nowait((key.namespace, key.name, stat))
        except asyncio.QueueFull:
            self.dropped += 1
        return True

    async def stop(self) -> None:
        for task in self._senders.values():
            task.cancel()
        for task in self._senders.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._senders.clear()
        self._queues.clear()

    async def _send(self, address: str, queue: asyncio.Queue[WireStat]) -> None:
        url = f"ws://{address}{FORWARD_PATH}"
        while True:
            batch = [await queue.get()]
            try:
                ws = await asyncio.wait_for(
                    self._session.ws_connect(url, heartbeat=5.0), CONNECT_TIMEOUT_S
                )
                async with ws:
                    while True:
                        while not queue.empty():
                            batch.append(queue.get_nowait())
                        await ws.send_bytes(encode_wire_stats(batch))
                        self.forwarded += len(batch)
                        batch = [await queue.get()]
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as err:
                self.dropped += len(batch) + queue.qsize()
                while not queue.empty():
                    queue.get_nowait()
                log.warning("forwarding stats to %s failed: %s", address, err)
