"""A keyed work queue and the loop that drains it into a reconciler (client-go's workqueue).

Theory of operation
-------------------
Informer handlers only ``add`` a key (namespace, name); the reconciler reads everything else
from the informer caches, so an event is a hint and many events for one object are one run:

- A key waiting in the queue is not added twice (``dirty``). A key being reconciled is not
  handed to a second worker; if it is added meanwhile, it runs once more after ``done``, so a
  change that arrived during a run is never lost.
- A run that raises is retried after a per-key exponential backoff (5 ms, 10 ms, 20 ms ... at
  most 30 s; client-go's default rate limiter starts at 5 ms too). A Conflict (a stale
  resourceVersion) is the ordinary race with another writer and is retried at once on fresh
  cache data, still rate-limited by the same per-key counter, so a hot loop cannot form. A run
  that succeeds forgets the key's failures.

``WorkQueue`` is the pure bookkeeping; ``Controller`` is the asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from shared.kube.client import Conflict

from .meta import Key

__all__ = ["Controller", "WorkQueue"]

_log = logging.getLogger(__name__)


BACKOFF_BASE_S: Final = 0.005
BACKOFF_MAX_S: Final = 30.0


class WorkQueue:
    """Deduplicated keys, one worker per key at a time, per-key failure counts."""

    def __init__(self) -> None:
        self._queue: deque[Key] = deque()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._failures: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return (
            f"<WorkQueue queued={len(self._queue)} processing={len(self._processing)} "
            f"failing={len(self._failures)}>"
        )

    def add(self, key: Key) -> bool:
        """Mark ``key`` as needing a run; True if it became ready to pop."""
        if key in self._dirty:
            return False
        self._dirty.add(key)
        if key in self._processing:
            return False  # re-queued by done()
        self._queue.append(key)
        return True

    def pop(self) -> Key | None:
        if not self._queue:
            return None
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Key) -> bool:
        """The run of ``key`` ended; True if it was added meanwhile and is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            return True
        return False

    def failed(self, key: Key) -> float:
        """Count a failure of ``key``; the delay before its retry."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(BACKOFF_BASE_S * float(2.0**n), BACKOFF_MAX_S)

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)


Reconcile = Callable[[str, str], Awaitable[None]]


class Controller:
    """Runs ``reconcile(namespace, name)`` for queued keys on ``workers`` tasks."""

    def __init__(self, name: str, reconcile: Reconcile, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"{name}: workers must be at least 1, got {workers}")
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._queue = WorkQueue()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    def __repr__(self) -> str:
        return f"<Controller {self.name} {self._queue!r}>"

    def enqueue(self, namespace: str, name: str) -> None:
        if self._queue.add((namespace, name)):
            self._wakeup.set()

    def enqueue_after(self, key: Key, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            self.enqueue(*key)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self.name}-{i}"))

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _work(self) -> None:
        while True:
            key = self._queue.pop()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._reconcile(*key)
            except asyncio.CancelledError:
                raise
            except Conflict as e:
                delay = self._queue.failed(key)
                _log.debug("%s %s/%s: conflict, retrying: %s", self.name, *key, e)
                self.enqueue_after(key, delay)
            except Exception:
                delay = self._queue.failed(key)
                _log.exception("%s %s/%s: failed; retrying in %.3fs", self.name, *key, delay)
                self.enqueue_after(key, delay)
            else:
                self._queue.forget(key)
            finally:
                if self._queue.done(key):
                    self._wakeup.set()
