"""Tests for shared.breaker, adapted from Knative's pkg/queue/breaker_test.go scenarios.

Each scenario is a script of steps on one Breaker; a step names the call and what it must
return, so a failing row reads like the story it tells.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.breaker import MAX_BREAKER_CAPACITY, Admission, Breaker

ADMITTED, QUEUED, OVERFLOW = Admission.ADMITTED, Admission.QUEUED, Admission.OVERFLOW


@dataclass(frozen=True)
class Acquire:
    waiter: str
    want: Admission


@dataclass(frozen=True)
class Release:
    want: str | None


@dataclass(frozen=True)
class Cancel:
    waiter: str
    want: bool


@dataclass(frozen=True)
class Update:
    size: int
    want: list[str]


Step = Acquire | Release | Cancel | Update


def run(breaker: Breaker, steps: list[Step]) -> None:
    for i, step in enumerate(steps):
        got: object
        match step:
            case Acquire(waiter, want):
                got = breaker.try_acquire(waiter)
            case Release(want):
                got = breaker.release()
            case Cancel(waiter, want):
                got = breaker.cancel(waiter)
            case Update(size, want):
                got = breaker.update_concurrency(size)
        assert got == want, f"step {i}: {step} returned {got!r}; {breaker!r}"


# (queue_depth, max_concurrency, initial_capacity), steps, (active, queued, capacity) at the end
SCENARIOS = [
    pytest.param(
        (1, 1, 1),
        [
            Acquire("a", ADMITTED),
            Acquire("b", QUEUED),
            Acquire("c", OVERFLOW),
            Release("b"),
            Release(None),
        ],
        (0, 0, 1),
        id="overload",  # the third request of depth 1 + concurrency 1 is rejected
    ),
    pytest.param(
        (1, 1, 0),
        [Acquire("a", QUEUED), Acquire("b", QUEUED), Update(1, ["a"]), Release("b"), Release(None)],
        (0, 0, 1),
        id="queueing",  # requests wait at capacity 0 until it grows
    ),
    pytest.param(
        (1, 1, 1),
        [
            Acquire("a", ADMITTED),
            Acquire("b", QUEUED),
            Release("b"),
            Acquire("c", QUEUED),
            Release("c"),
            Acquire("d", QUEUED),
            Release("d"),
            Release(None),
        ],
        (0, 0, 1),
        id="no-overload",  # one out, one in: at the limit, no rejection
    ),
    pytest.param(
        (1, 1, 0),
        [
            Acquire("a", QUEUED),
            Cancel("a", True),
            Acquire("b", QUEUED),
            Cancel("b", True),
            Update(1, []),
            Acquire("c", ADMITTED),
            Acquire("d", QUEUED),
            Acquire("e", OVERFLOW),
            Cancel("e", False),
            Release("d"),
            Release(None),
        ],
        (0, 0, 1),
        id="cancel",  # a cancelled waiter frees its pending slot
    ),
    pytest.param(
        (1, 1, 0),
        [Update(1, []), Update(0, [])],
        (0, 0, 0),
        id="update-concurrency",  # capacity follows, both ways
    ),
    pytest.param(
        (10, 1, 1),
        [
            Acquire("a", ADMITTED),
            Acquire("b", QUEUED),
            Acquire("c", QUEUED),
            Acquire("d", QUEUED),
            Cancel("c", True),
            Release("b"),
            Release("d"),
            Release(None),
        ],
        (0, 0, 1),
        id="fifo-with-cancel",  # oldest first; a cancel from the middle keeps order
    ),
    pytest.param(
        (10, 5, 0),
        [
            Acquire("a", QUEUED),
            Acquire("b", QUEUED),
            Acquire("c", QUEUED),
            Update(2, ["a", "b"]),
            Update(5, ["c"]),
            Acquire("d", ADMITTED),
        ],
        (4, 0, 5),
        id="grow-admits-oldest",  # admits as many waiters as it adds
    ),
    pytest.param(
        (5, 3, 3),
        [
            Acquire("a", ADMITTED),
            Acquire("b", ADMITTED),
            Acquire("c", ADMITTED),
            Acquire("d", QUEUED),
            Update(1, []),
            Release(None),
            Release(None),
            Release("d"),
        ],
        (1, 0, 1),
        id="shrink-below-active",  # no one admitted until active < capacity
    ),
    pytest.param(
        (1, 1, 1),
        [
            Acquire("a", ADMITTED),
            Cancel("a", False),
            Acquire("b", QUEUED),
            Release("b"),
            Cancel("b", False),
        ],
        (1, 0, 1),
        id="cancel-after-admission",  # refused: the waiter owns a slot
    ),
    pytest.param(
        (2, 0, 0),
        [Acquire("a", QUEUED), Acquire("b", QUEUED), Acquire("c", OVERFLOW)],
        (0, 2, 0),
        id="max-concurrency-0",  # max concurrency 0: only the queue holds requests
    ),
    pytest.param(
        (1, 2, 2),
        [
            Acquire("a", ADMITTED),
            Update(1, []),
            Acquire("b", QUEUED),
            Update(3, ["b"]),
            Acquire("c", ADMITTED),
            Acquire("d", OVERFLOW),
        ],
        (3, 0, 3),
        id="capacity-above-max",  # allowed; pending slots stay depth + max
    ),
]


@pytest.mark.parametrize(("params", "steps", "want"), SCENARIOS)
def test_breaker_scenarios(
    params: tuple[int, int, int], steps: list[Step], want: tuple[int, int, int]
) -> None:
    breaker = Breaker(*params)
    run(breaker, steps)
    active, queued, capacity = want
    assert (breaker.active, breaker.queued, breaker.capacity) == (active, queued, capacity)
    assert breaker.in_flight == active + queued


@pytest.mark.parametrize(
    ("container_concurrency", "accepted"),
    [
        pytest.param(1, 11, id="cc=1"),
        pytest.param(2, 22, id="cc=2"),
        pytest.param(10, 110, id="cc=10"),
    ],
)
def test_overflow_at_queue_depth_plus_concurrency(
    container_concurrency: int, accepted: int
) -> None:
    # queue-proxy's buildBreaker: depth 10*CC, max and initial capacity CC.
    cc = container_concurrency
    breaker = Breaker(queue_depth=10 * cc, max_concurrency=cc, initial_capacity=cc)
    results = [breaker.try_acquire(i) for i in range(accepted + 1)]
    assert results == [ADMITTED] * cc + [QUEUED] * (accepted - cc) + [OVERFLOW]
    assert (breaker.in_flight, breaker.active, breaker.queued) == (accepted, cc, accepted - cc)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param((0, 1, 1), "queue depth must be greater than 0, got 0", id="queue-depth-0"),
        pytest.param((1, -1, 1), "max concurrency must be 0 or greater, got -1", id="max-negative"),
        pytest.param((1, 1, -1), "initial capacity .* got -1", id="initial-negative"),
        pytest.param((1, 5, 6), r"initial capacity .* \(5\), got 6", id="initial-above-max"),
    ],
)
def test_invalid_constructor(params: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Breaker(*params)


def test_update_concurrency_negative() -> None:
    with pytest.raises(ValueError, match="capacity must be 0 or greater, got -1"):
        Breaker(1, 1, 1).update_concurrency(-1)


def test_release_unpaired() -> None:
    breaker = Breaker(1, 1, 0)
    breaker.try_acquire("a")  # queued, not active: it holds nothing to release
    with pytest.raises(RuntimeError, match="release and acquire are not paired"):
        breaker.release()


def test_same_waiter_queued_twice() -> None:
    breaker = Breaker(5, 1, 0)
    breaker.try_acquire("a")
    with pytest.raises(ValueError, match="already queued"):
        breaker.try_acquire("a")
    assert breaker.queued == 1


def test_activator_sized_breaker() -> None:
    # The activator's revision breaker: depth 10000, max concurrency MaxBreakerCapacity.
    breaker = Breaker(10_000, MAX_BREAKER_CAPACITY, 0)
    assert breaker.try_acquire("a") is QUEUED
    assert breaker.update_concurrency(MAX_BREAKER_CAPACITY) == ["a"]


def test_repr() -> None:
    breaker = Breaker(queue_depth=20, max_concurrency=2, initial_capacity=2)
    for waiter in "abc":
        breaker.try_acquire(waiter)
    assert repr(breaker) == (
        "<Breaker active=2/2 queued=1 in_flight=3/22 (queue_depth=20, max_concurrency=2)>"
    )


def test_reserve_takes_a_free_slot_and_never_queues() -> None:
    breaker: Breaker[str] = Breaker(queue_depth=1, max_concurrency=2, initial_capacity=2)
    assert breaker.reserve() and breaker.reserve()
    assert not breaker.reserve()  # full: refused, not queued
    assert (breaker.active, breaker.queued) == (2, 0)
    assert breaker.release() is None
    assert breaker.reserve()
    breaker.update_concurrency(1)  # lowered below the active requests: nothing is free
    breaker.release()
    assert not breaker.reserve()
    breaker.release()
    assert breaker.reserve()


def test_reserve_never_takes_the_slot_a_queued_waiter_gets() -> None:
    breaker: Breaker[str] = Breaker(queue_depth=5, max_concurrency=1, initial_capacity=0)
    assert breaker.try_acquire("a") is QUEUED
    breaker.update_concurrency(0)
    assert not breaker.reserve()
    assert breaker.update_concurrency(1) == ["a"]
    assert not breaker.reserve()
