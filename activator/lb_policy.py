"""Which pod an admitted request goes to: Knative's activator load-balancing policies.

Theory of operation (Knative's pkg/activator/net/lb_policy.go and newRevisionThrottler):

- Each pod this activator sends to has a PodTracker. With a containerConcurrency (cc) > 0
  the tracker owns a Breaker of capacity cc, and a policy may only choose a pod with a free
  slot; choosing *reserves* that slot (Knative's Reserve), and the caller gives it back with
  PodTracker.release when the request ends. With cc 0 the tracker has no breaker: any pod
  can take another request, and in_flight (Knative's weight) is only a load signal.
- cc 1..3: first_available. Scan the pods in address order, take the first with a free
  slot. With so few slots per pod, packing the first pods keeps the others free, and the
  autoscaler sees the load where it is.
- cc > 3: round_robin. Start one past the last pod chosen and take the next with a free
  slot; the start wraps to 0 when the pod list shrank. Knative keeps that index in the
  policy's closure; here it lives in PolicyState.
- cc 0: power_of_two_choices. Draw two different pods at random and take the one with fewer
  requests in flight; a tie is a coin flip. One pod: no draw. Two pods: both are the
  contestants, no draw but the tie's coin.

Policies are plain functions ``(trackers, state) -> PodTracker | None`` and draw only from
``state.rng``, so a test seeds it and gets the same choices every run. None means no pod
has a free slot (or there is no pod). Nothing here blocks, sleeps or reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Final

from shared.breaker import MAX_BREAKER_CAPACITY, Breaker

__all__ = [
    "FIRST_AVAILABLE_MAX_CONCURRENCY",
    "LBPolicy",
    "PodTracker",
    "PolicyState",
    "first_available",
    "policy_for",
    "power_of_two_choices",
    "round_robin",
]

# Largest containerConcurrency that still uses first_available (Knative's "cc <= 3").
FIRST_AVAILABLE_MAX_CONCURRENCY: Final = 3

# A pod breaker is only ever asked when it has a free slot, so it never queues; the Breaker
# still wants a queue depth of at least 1.
_POD_QUEUE_DEPTH: Final = 1


class PodTracker:
    """One pod as the activator sees it: its address, requests in flight, and free slots.

    Args:
        address: where to send requests (host:port of the pod's queue-proxy).
        container_concurrency: slots on this pod; 0 means no limit (no breaker).

    Raises:
        ValueError: container_concurrency < 0.
    """

    __slots__ = ("_breaker", "address", "in_flight")

    def __init__(self, address: str, container_concurrency: int) -> None:
        if container_concurrency < 0:
            raise ValueError(
                f"container concurrency must be 0 or greater, got {container_concurrency}"
            )
        self.address = address
        self.in_flight = 0
        # Only reserved, never queued (see reserve): the breaker holds no waiters.
        self._breaker: Breaker[PodTracker] | None = (
            Breaker(_POD_QUEUE_DEPTH, container_concurrency, container_concurrency)
            if container_concurrency > 0
            else None
        )

    @property
    def capacity(self) -> int:
        """Slots on this pod; MAX_BREAKER_CAPACITY when unlimited (cc 0)."""
        return MAX_BREAKER_CAPACITY if self._breaker is None else self._breaker.capacity

    @property
    def weight(self) -> int:
        """Knative's weight, the load signal power_of_two_choices compares: in_flight."""
        return self.in_flight

    @property
    def has_free_slot(self) -> bool:
        """Whether reserve() would succeed now."""
        return self._breaker is None or self._breaker.active < self._breaker.capacity

    def reserve(self) -> bool:
        """Take a slot for one request if one is free (Knative's Reserve); never queues."""
        breaker = self._breaker
        if breaker is not None and not breaker.reserve():
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        """Give back the slot a request reserved.

        Raises:
            RuntimeError: nothing is in flight on this pod.
        """
        if self.in_flight == 0:
            raise RuntimeError(f"release without reserve on pod {self.address}")
        self.in_flight -= 1
        if self._breaker is not None:
            self._breaker.release()  # never hands a slot on: no one queues on a pod breaker

    def __repr__(self) -> str:
        cap = "unlimited" if self._breaker is None else str(self._breaker.capacity)
        return f"<PodTracker {self.address} in_flight={self.in_flight}/{cap}>"


class PolicyState:
    """What a policy keeps between calls: the random source and the round-robin position."""

    __slots__ = ("next_index", "rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.next_index = 0  # round_robin starts its scan here

    def __repr__(self) -> str:
        return f"<PolicyState next_index={self.next_index}>"


LBPolicy = Callable[[Sequence[PodTracker], PolicyState], PodTracker | None]


def first_available(trackers: Sequence[PodTracker], state: PolicyState) -> PodTracker | None:
    """The first pod, in the given order, with a free slot; that slot is reserved."""
    for tracker in trackers:
        if tracker.reserve():
            return tracker
    return None


def round_robin(trackers: Sequence[PodTracker], state: PolicyState) -> PodTracker | None:
    """The next pod after the last one chosen with a free slot; that slot is reserved.

    E.g. pods a, b, c with cc 1, a and b busy, last choice b: the scan starts at c and takes
    it; the next scan starts at index 3, wraps to 0, and finds none free.
    """
    n = len(trackers)
    if state.next_index >= n:  # the list shrank (or we went past the end): start over
        state.next_index = 0
    start = state.next_index
    for i in range(n):
        p = (start + i) % n
        if trackers[p].reserve():
            state.next_index = p + 1
            return trackers[p]
    return None


def power_of_two_choices(trackers: Sequence[PodTracker], state: PolicyState) -> PodTracker | None:
    """The less loaded of two pods drawn at random (ties: a coin flip); for cc 0.

    The chosen pod's in_flight is increased; PodTracker.release decreases it.
    """
    n = len(trackers)
    if n == 0:
        return None
    if n == 1:
        pick = trackers[0]
    else:
        r1, r2 = 0, 1
        if n > 2:
            # Two different indices: draw the second from n - 1 values and skip over r1.
            r1, r2 = state.rng.randrange(n), state.rng.randrange(n - 1)
            if r2 >= r1:
                r2 += 1
        pick, alt = trackers[r1], trackers[r2]
        if pick.weight > alt.weight or (
            pick.weight == alt.weight and state.rng.getrandbits(1) == 0
        ):
            pick = alt
    pick.reserve()
    return pick


def policy_for(container_concurrency: int) -> LBPolicy:
    """Knative's choice of policy for a revision's containerConcurrency.

    Raises:
        ValueError: container_concurrency < 0.
    """
    if container_concurrency < 0:
        raise ValueError(f"container concurrency must be 0 or greater, got {container_concurrency}")
    if container_concurrency == 0:
        return power_of_two_choices
    if container_concurrency <= FIRST_AVAILABLE_MAX_CONCURRENCY:
        return first_available
    return round_robin
