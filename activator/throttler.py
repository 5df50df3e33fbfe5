"""One revision's throttler bookkeeping: who may go now, who waits, and which pod each gets.

Theory of operation (Knative's revisionThrottler in pkg/activator/net/throttler.go, decided
here and done by the asyncio shell):

- Two levels of slots. The revision Breaker holds one slot per request let through, and
  queues the rest first come, first served; its capacity is revision_capacity() of the pods
  assigned to this activator (containerConcurrency x assigned pods; MAX_BREAKER_CAPACITY for
  containerConcurrency 0; 0 with no pod). Below it, each pod's PodTracker holds cc slots.
  E.g. cc 1, 5 pods, 2 activators: this activator, index 0, has pods 0, 1, 4 and capacity 3;
  the 4th concurrent request waits.
- A request is placed at the moment it is admitted. Whenever the revision Breaker admits a
  request (try_acquire, or a release or capacity change that wakes a waiter), the load
  balancing policy reserves it a pod slot in the same step, and pick(waiter) hands that pod
  over. Knative chooses the pod later and, when a capacity drop got in between, puts the
  request back in the queue; deciding both at once removes that race, and it cannot fail:
  every reserved pod slot belongs to a request holding a revision slot, so while
  active < capacity = cc x assigned pods, some assigned pod has a free slot.
- Knative's Breaker never refuses here (its pending slots are queue depth + MaxInt32), so
  the queue bound is checked here: when ``queue_depth`` requests are already waiting, the
  next one is refused at once (OVERFLOW, a 503). Knative's constant is 10,000.
- Pods come and go through update_pods (the ready set, Knative's handleUpdate) and
  remove_pod (a failed pod), the activator's place through update_activators (Knative's
  handlePubEpsUpdate). Each recomputes the assignment and the capacity and returns the
  waiters that capacity admitted. Lowering capacity never evicts anyone: requests already
  on a dropped pod finish (or fail) there, and release() still gives back their slots.

Every method only decides and returns what to wake: the shell resolves the waiters' futures,
and a woken waiter calls pick(waiter) for its pod. No asyncio, no clock.

Lifecycle of one request, for the shell::

    match throttler.try_acquire(fut):
        OVERFLOW -> 503
        QUEUED   -> await fut (revision timeout); on timeout wake(throttler.cancel(fut)) -> 504
        ADMITTED -> go on at once
    tracker = throttler.pick(fut)          # the pod reserved for this request
    ... proxy to tracker.address ...
    wake(throttler.release(tracker))       # exactly once, whatever the outcome
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from typing import Final, Generic, TypeVar

from activator.lb_policy import PodTracker, PolicyState, policy_for
from activator.split import assign_slice, revision_capacity
from shared.breaker import ADMITTED, MAX_BREAKER_CAPACITY, OVERFLOW, Admission, Breaker

__all__ = ["BREAKER_QUEUE_DEPTH", "RevisionThrottler"]

# The waiter: the token the shell wakes once admitted (the request's Exchange in the
# activator, a plain object in tests).
W = TypeVar("W", bound=Hashable)

# Knative's breakerQueueDepth: requests that may wait per revision before the next gets a 503.
BREAKER_QUEUE_DEPTH: Final = 10_000


class RevisionThrottler(Generic[W]):
    """Admission, queueing and pod placement for one revision on this activator.

    Args:
        revision: the revision's "namespace/name", for messages and repr only.
        container_concurrency: the revision's containerConcurrency; 0 means no per-pod limit.
        queue_depth: how many requests may wait; the next one is refused (OVERFLOW).
        rng: the random source of power_of_two_choices (cc 0); seed it in tests.

    Raises:
        ValueError: container_concurrency < 0 or queue_depth < 1.
    """

    __slots__ = (
        "_activator_index",
        "_assigned",
        "_breaker",
        "_cc",
        "_num_activators",
        "_placed",
        "_policy",
        "_queue_depth",
        "_state",
        "_trackers",
        "revision",
    )

    def __init__(
        self,
        revision: str,
        container_concurrency: int,
        *,
        queue_depth: int = BREAKER_QUEUE_DEPTH,
        rng: random.Random | None = None,
    ) -> None:
        if queue_depth < 1:
            raise ValueError(f"queue depth must be greater than 0, got {queue_depth}")
        self._policy = policy_for(container_concurrency)  # validates container_concurrency
        self.revision = revision
        self._cc = container_concurrency
        self._queue_depth = queue_depth
        self._state = PolicyState(rng)
        # Knative's revision breaker: no pods yet, so capacity 0 and everyone queues.
        self._breaker: Breaker[W] = Breaker(queue_depth, MAX_BREAKER_CAPACITY, 0)
        self._trackers: dict[str, PodTracker] = {}  # every ready pod, by address
        self._assigned: list[PodTracker] = []  # this activator's share, sorted by address
        self._activator_index = -1  # unknown: take every pod (Knative's start state)
        self._num_activators = 0
        self._placed: dict[W, PodTracker] = {}  # admitted, pod reserved, not yet picked

    # -- the request path ----------------------------------------------------------------

    def try_acquire(self, waiter: W) -> Admission:
        """Admit a new request now (its pod is reserved), queue it, or refuse it.

        ``waiter`` is any hashable token the shell can wake later (an asyncio future, say).
        After ADMITTED, or once woken, the shell calls pick(waiter).

        Raises:
            ValueError: ``waiter`` is already queued or admitted and not yet picked.
        """
        if waiter in self._placed:
            raise ValueError(f"waiter {waiter!r} is already admitted")
        if self._breaker.queued >= self._queue_depth:
            return OVERFLOW
        admission = self._breaker.try_acquire(waiter)
        if admission is ADMITTED:
            self._place(waiter)
        return admission

    def pick(self, waiter: W) -> PodTracker | None:
        """The pod reserved for an admitted ``waiter``; the request now owns one slot on it.

        Returns None when ``waiter`` holds no reservation: still queued, cancelled, never
        seen, or already picked. The caller must release(tracker) exactly once.
        """
        return self._placed.pop(waiter, None)

    def release(self, tracker: PodTracker) -> list[W]:
        """A picked request ended (success or failure); give back its pod and revision slots.

        Returns the waiter now admitted in its place, if any (at most one), with its pod
        already reserved: wake it. Works for pods already dropped, too.

        Raises:
            RuntimeError: no request is in flight on ``tracker``.
        """
        tracker.release()
        woken = self._breaker.release()
        if woken is None:
            return []
        self._place(woken)
        return [woken]

    def cancel(self, waiter: W) -> list[W]:
        """A request gave up (timeout, client gone) before it picked; it holds nothing after.

        A queued waiter leaves the queue. A waiter that was admitted but had not picked yet
        (woken just as it timed out) gives its reserved slots back, which can admit the next
        waiter: the returned ones must be woken. Unknown or already-picked waiters: no-op
        (a picked request uses release).
        """
        if self._breaker.cancel(waiter):
            return []
        tracker = self._placed.pop(waiter, None)
        if tracker is None:
            return []
        return self.release(tracker)

    # -- pods and activators -------------------------------------------------------------

    def update_pods(self, addresses: Iterable[str]) -> list[W]:
        """Set the revision's ready pods (Knative's handleUpdate); returns waiters admitted.

        Pods already known keep their tracker (and their requests in flight); pods not in
        ``addresses`` are dropped, their requests left to finish.
        """
        known = self._trackers
        self._trackers = {
            address: known.get(address) or PodTracker(address, self._cc) for address in addresses
        }
        return self._update_capacity()

    def remove_pod(self, address: str) -> list[W]:
        """Drop a pod that failed, and its slots; returns waiters admitted (a new split can
        give this activator more pods). Requests already on it are the caller's to end."""
        if self._trackers.pop(address, None) is None:
            return []
        return self._update_capacity()

    def update_activators(self, activator_index: int, num_activators: int) -> list[W]:
        """Set this activator's place among all (Knative's handlePubEpsUpdate); returns
        waiters admitted.

        An index of -1 (this activator is not among the activators yet) is ignored, as in
        Knative: the previous split stays, at first "every pod".

        Raises:
            ValueError: activator_index is not -1 and not in [0, num_activators).
        """
        if activator_index == -1:
            return []
        if not 0 <= activator_index < num_activators:
            raise ValueError(
                f"activator index {activator_index} is outside [0, {num_activators}) and not -1"
            )
        if (activator_index, num_activators) == (self._activator_index, self._num_activators):
            return []
        self._activator_index = activator_index
        self._num_activators = num_activators
        return self._update_capacity()

    def _update_capacity(self) -> list[W]:
        """Recompute this activator's pods and the revision capacity (Knative's updateCapacity).

        Pods are assigned before capacity grows, so every waiter it admits finds a pod.
        """
        if self._cc > 0:
            share = assign_slice(list(self._trackers), self._activator_index, self._num_activators)
        else:
            # No per-pod limit: every activator uses every pod (Knative does not slice at cc 0).
            share = sorted(self._trackers)
        self._assigned = [self._trackers[address] for address in share]
        capacity = revision_capacity(
            self._cc, len(self._assigned), self._num_activators, len(self._trackers)
        )
        admitted = self._breaker.update_concurrency(capacity)
        for waiter in admitted:
            self._place(waiter)
        return admitted

    def _place(self, waiter: W) -> None:
        """Reserve a pod slot for a waiter the revision breaker just admitted."""
        tracker = self._policy(self._assigned, self._state)
        if tracker is None:  # impossible while active < capacity; see the module docstring
            raise AssertionError(f"admitted {waiter!r} but no pod has a free slot: {self!r}")
        self._placed[waiter] = tracker

    # -- state, for metrics and tests ----------------------------------------------------

    @property
    def container_concurrency(self) -> int:
        return self._cc

    @property
    def queue_depth(self) -> int:
        return self._queue_depth

    @property
    def capacity(self) -> int:
        """Requests this activator lets through at once; MAX_BREAKER_CAPACITY is unlimited."""
        return self._breaker.capacity

    @property
    def active(self) -> int:
        """Requests admitted and not yet released (picked or about to pick)."""
        return self._breaker.active

    @property
    def queued(self) -> int:
        """Requests waiting for capacity."""
        return self._breaker.queued

    @property
    def in_flight(self) -> int:
        """Admitted plus waiting: the concurrency this activator reports for the revision."""
        return self._breaker.in_flight

    @property
    def pod_trackers(self) -> tuple[PodTracker, ...]:
        """Every ready pod of the revision, sorted by address."""
        return tuple(self._trackers[address] for address in sorted(self._trackers))

    @property
    def assigned_trackers(self) -> tuple[PodTracker, ...]:
        """The pods this activator sends to, sorted by address."""
        return tuple(self._assigned)

    @property
    def activator_index(self) -> int:
        return self._activator_index

    @property
    def num_activators(self) -> int:
        return self._num_activators

    def __repr__(self) -> str:
        capacity = "unlimited" if self.capacity == MAX_BREAKER_CAPACITY else str(self.capacity)
        return (
            f"<RevisionThrottler {self.revision} cc={self._cc} {self._policy.__name__} "
            f"active={self.active}/{capacity} queued={self.queued}/{self._queue_depth} "
            f"pods={len(self._assigned)}/{len(self._trackers)} "
            f"activator={self._activator_index}/{self._num_activators}>"
        )
