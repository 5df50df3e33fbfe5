"""A keyed work queue: client-go's rate-limited workqueue, as Knative's controllers use it.

Theory of operation. Event handlers only ``add`` a key ("ns/name"); workers take keys and run
the reconcile function, which reads the current state itself (level-based), so:

- a key is queued at most once however often it is added (dedupe);
- a key added while it is being processed is processed once more afterwards (dirty), never
  by two workers at once;
- a reconcile that raises is retried after an exponential backoff per key, 5 ms doubling up
  to ``max_backoff_s`` (client-go's ItemExponentialFailureRateLimiter, capped lower here since
  a decision is only good for seconds), and a success forgets the failures;
- ``add_after`` schedules a key (Knative's EnqueueAfter, e.g. the end of a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["WorkQueue"]

log = logging.getLogger(__name__)

BASE_BACKOFF_S = 0.005
MAX_BACKOFF_S = 10.0

Reconcile = Callable[[str], Awaitable[None]]


class WorkQueue:
    """Keys to reconcile; ``start`` runs ``workers`` workers until ``stop``."""

    def __init__(
        self,
        name: str,
        reconcile: Reconcile,
        workers: int = 2,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._max_backoff_s = max_backoff_s
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return (
            f"<WorkQueue {self.name} queued={len(self._queued)} "
            f"processing={len(self._processing)} retrying={len(self._failures)}>"
        )

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: str, delay_s: float) -> None:
        """Add the key in ``delay_s``; an earlier pending schedule for it wins."""
        if delay_s <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay_s
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until nothing is queued or processing (tests)."""
        async with asyncio.timeout(timeout_s):
            while self._queued or self._processing:
                await asyncio.sleep(0.001)

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                backoff = min(self._max_backoff_s, BASE_BACKOFF_S * 2 ** (failures - 1))
                log.warning(
                    "%s: reconcile %s failed (retry in %.3f s): %s", self.name, key, backoff, err
                )
                self.add_after(key, backoff)
            else:
                self._failures.pop(key, None)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
