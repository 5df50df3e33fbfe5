"""A keyed work queue and the loop that drains it into a reconciler (client-go's workqueue).

Theory of operation
-------------------
Informer handlers only ``add`` a key; the reconciler reads everything else from the informer
caches, so an event is a hint and many events for one object are one run:

- A key waiting in the queue is not added twice (dedupe). A key being reconciled is not
  handed to a second worker; if it is added meanwhile, it runs once more after the run, so a
  change that arrived during a run is never lost.
- A run that raises is retried after a per-key exponential backoff (5 ms, 10 ms, 20 ms ... up
  to ``max_backoff_s``; client-go's default rate limiter starts at 5 ms too). A Conflict (a
  stale resourceVersion) is the ordinary race with another writer: retried the same way on
  fresh cache data, only logged more quietly. A run that succeeds forgets the key's failures.
- ``add_after`` schedules a key (Knative's EnqueueAfter, e.g. the end of a grace period); an
  earlier pending schedule for the key wins.

``KeyQueue`` is the pure bookkeeping; ``WorkQueue`` is the asyncio loop around it. Knative's
controller (controlplane/controllers) and the autoscaler's PodAutoscaler reconciler share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

from shared.kube.client import Conflict

__all__ = ["KeyQueue", "WorkQueue"]

_log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 0.005
BACKOFF_MAX_S: Final = 30.0

K = TypeVar("K", bound=Hashable)


class KeyQueue(Generic[K]):
    """Deduplicated keys, one worker per key at a time, per-key failure counts."""

    def __init__(self, max_backoff_s: float = BACKOFF_MAX_S) -> None:
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._max_backoff_s = max_backoff_s

    def __len__(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return (
            f"queued={len(self._queue)} processing={len(self._processing)} "
            f"failing={len(self._failures)}"
        )

    @property
    def idle(self) -> bool:
        return not self._queue and not self._processing

    def add(self, key: K) -> bool:
        """Mark ``key`` as needing a run; True if it became ready to pop."""
        if key in self._dirty:
            return False
        self._dirty.add(key)
        if key in self._processing:
            return False  # re-queued by done()
        self._queue.append(key)
        return True

    def pop(self) -> K | None:
        if not self._queue:
            return None
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: K) -> bool:
        """The run of ``key`` ended; True if it was added meanwhile and is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            return True
        return False

    def failed(self, key: K) -> float:
        """Count a failure of ``key``; the delay before its retry."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(BACKOFF_BASE_S * float(2.0**n), self._max_backoff_s)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)


class WorkQueue(Generic[K]):
    """Runs ``reconcile(key)`` for queued keys on ``workers`` tasks, from ``start`` to ``stop``."""

    def __init__(
        self,
        name: str,
        reconcile: Callable[[K], Awaitable[None]],
        *,
        workers: int = 2,
        max_backoff_s: float = BACKOFF_MAX_S,
    ) -> None:
        if workers < 1:
            raise ValueError(f"{name}: workers must be at least 1, got {workers}")
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._keys: KeyQueue[K] = KeyQueue(max_backoff_s)
        self._wakeup = asyncio.Event()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"<WorkQueue {self.name} {self._keys!r}>"

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K) -> None:
        if self._keys.add(key):
            self._wakeup.set()

    def add_after(self, key: K, delay_s: float) -> None:
        """Add ``key`` in ``delay_s``; an earlier pending schedule for it wins."""
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

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self.name}-{i}"))

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
            while not self._keys.idle:
                await asyncio.sleep(0.001)

    async def _work(self) -> None:
        while True:
            key = self._keys.pop()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Conflict as err:
                delay = self._keys.failed(key)
                _log.debug("%s %s: conflict, retrying: %s", self.name, key, err)
                self.add_after(key, delay)
            except Exception:
                delay = self._keys.failed(key)
                _log.exception("%s %s: failed; retrying in %.3fs", self.name, key, delay)
                self.add_after(key, delay)
            else:
                self._keys.forget(key)
            finally:
                if self._keys.done(key):
                    self._wakeup.set()
