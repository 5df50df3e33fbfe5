"""The Breaker's bookkeeping: a concurrency limit with a bounded FIFO queue in front of it.

Theory of operation (Knative's pkg/queue/breaker.go, decided here and done elsewhere):

- A request first takes a *pending* slot. There are ``queue_depth + max_concurrency`` of
  them (Knative's totalSlots); when all are taken the request is rejected at once
  (ErrRequestQueueFull, a 503). E.g. queue-proxy with containerConcurrency=2 builds its
  breaker with queue depth 10*2 = 20 (buildBreaker in pkg/queue/sharedmain/main.go), so the
  23rd concurrent request is rejected.
- A pending request then needs one of ``capacity`` *active* slots (Knative's semaphore).
  Capacity starts at ``initial_capacity`` and moves with update_concurrency: the activator
  grows it as pods become ready; queue-proxy keeps it at containerConcurrency.
- Waiters are served first come, first served. Knative's semaphore wakes any goroutine; a
  FIFO is the fair version of that and what a reader of a queue expects.

This module only decides. ``try_acquire`` says whether the caller may go now, has been
queued, or must be rejected; ``release``/``update_concurrency`` return the waiters that are
now admitted, and the asyncio shell wakes them (e.g. sets their futures). It never imports
asyncio, so every case is a table row with no event loop.

Invariant, after every method: ``active >= capacity`` or no one is queued, i.e. a waiter is
never left in the queue while a slot is free.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final, Generic

from typing_extensions import TypeVar

__all__ = ["MAX_BREAKER_CAPACITY", "Admission", "Breaker"]

# The waiter: whatever the shell wakes when a slot frees (the request's Exchange in the
# queue-proxy and the activator, a future elsewhere). Unparameterised ``Breaker`` is
# ``Breaker[object]``, as before it was generic.
W = TypeVar("W", bound=Hashable, default=object)

# Knative's MaxBreakerCapacity (math.MaxInt32): the activator's per-revision breaker uses it
# as its max concurrency, i.e. "unbounded, as far as the breaker is concerned".
MAX_BREAKER_CAPACITY: Final = 2**31 - 1


class Admission(enum.Enum):
    """What try_acquire decided for a request."""

    ADMITTED = "admitted"  # took an active slot: proxy it now, release() when done
    QUEUED = "queued"  # waiting in FIFO order: wait to be returned by release/update
    OVERFLOW = "overflow"  # every pending slot is taken: reject (Knative's 503)



# The members as module globals, for the hot paths: on Python 3.11 ``Admission.ADMITTED`` runs
# enum's member descriptor (about 150 ns), a global load about 10 ns.
ADMITTED: Final = Admission.ADMITTED
QUEUED: Final = Admission.QUEUED
OVERFLOW: Final = Admission.OVERFLOW

class Breaker(Generic[W]):
    """Knative's Breaker as pure state: pending slots, a resizable semaphore, a FIFO queue."""

    __slots__ = ("_active", "_capacity", "_max_concurrency", "_queue_depth", "_total", "_waiters")

    def __init__(self, queue_depth: int, max_concurrency: int, initial_capacity: int) -> None:
        """Validate as Knative's NewBreaker does.

        Raises:
            ValueError: queue_depth < 1, max_concurrency < 0, or initial_capacity outside
                [0, max_concurrency].
        """
        if queue_depth <= 0:
            raise ValueError(f"queue depth must be greater than 0, got {queue_depth}")
        if max_concurrency < 0:
            raise ValueError(f"max concurrency must be 0 or greater, got {max_concurrency}")
        if not 0 <= initial_capacity <= max_concurrency:
            raise ValueError(
                "initial capacity must be between 0 and max concurrency "
                f"({max_concurrency}), got {initial_capacity}"
            )
        self._queue_depth = queue_depth
        self._max_concurrency = max_concurrency
        self._total = queue_depth + max_concurrency  # Knative's totalSlots
        self._capacity = initial_capacity
        self._active = 0
        # Insertion-ordered set with O(1) popitem(last=False) and O(1) delete: FIFO + cancel.
        self._waiters: OrderedDict[W, None] = OrderedDict()

    def try_acquire(self, waiter: W) -> Admission:
        """Take a slot for a new request, or queue ``waiter``, or refuse.

        ``waiter`` is any hashable token the shell can wake later (an asyncio future, say);
        it is stored only when the result is QUEUED.

        Raises:
            ValueError: ``waiter`` is already queued (it would be counted twice).
        """
        waiters = self._waiters
        if self._active + len(waiters) >= self._total:
            return OVERFLOW
        if self._active < self._capacity and not waiters:
            self._active += 1
            return ADMITTED
        if waiter in waiters:
            raise ValueError(f"waiter {waiter!r} is already queued")
        waiters[waiter] = None
        return QUEUED

    def reserve(self) -> bool:
        """Take an active slot if one is free now, never queueing (Knative's Breaker.Reserve,
        which the activator's pod trackers use); False leaves the breaker as it was."""
        active = self._active
        if active < self._capacity and not self._waiters and active < self._total:
            self._active = active + 1
            return True
        return False

    def release(self) -> W | None:
        """A request that held an active slot finished; hand the slot to the oldest waiter.

        Returns the waiter that now holds the slot (it must be woken, and must itself call
        release when done), or None. As in Knative's semaphore.release, no one is admitted
        while capacity was lowered below the number of active requests.

        Raises:
            RuntimeError: no request is active (release without a matching admission).
        """
        if self._active == 0:
            raise RuntimeError("release and acquire are not paired")
        self._active -= 1
        if self._waiters and self._active < self._capacity:
            self._active += 1
            return self._waiters.popitem(last=False)[0]
        return None

    def cancel(self, waiter: W) -> bool:
        """A queued waiter gave up (timeout, client gone) and frees its pending slot.

        Returns False when ``waiter`` was not queued: it was already admitted by release or
        update_concurrency (a race the shell must handle by calling release itself), or
        was never queued.
        """
        try:
            del self._waiters[waiter]
        except KeyError:
            return False
        return True

    def update_concurrency(self, size: int) -> list[W]:
        """Set the active capacity (Knative's UpdateConcurrency); return waiters now admitted.

        Lowering capacity never evicts active requests: they finish, and no one is admitted
        until active drops below the new capacity. Like Knative, the size is not capped at
        max_concurrency; pending slots stay queue_depth + max_concurrency either way.

        Raises:
            ValueError: size < 0.
        """
        if size < 0:
            raise ValueError(f"capacity must be 0 or greater, got {size}")
        self._capacity = size
        admitted: list[W] = []
        waiters = self._waiters
        while waiters and self._active < size:
            self._active += 1
            admitted.append(waiters.popitem(last=False)[0])
        return admitted

    @property
    def in_flight(self) -> int:
        """Requests holding a pending slot: active plus queued (Knative's InFlight)."""
        return self._active + len(self._waiters)

    @property
    def active(self) -> int:
        """Requests holding an active slot, i.e. in the app (or about to be)."""
        return self._active

    @property
    def queued(self) -> int:
        """Requests waiting for an active slot."""
        return len(self._waiters)

    @property
    def capacity(self) -> int:
        """Active slots currently allowed (Knative's Capacity)."""
        return self._capacity

    def __repr__(self) -> str:
        return (
            f"<Breaker active={self._active}/{self._capacity} queued={len(self._waiters)} "
            f"in_flight={self.in_flight}/{self._total} "
            f"(queue_depth={self._queue_depth}, max_concurrency={self._max_concurrency})>"
        )
