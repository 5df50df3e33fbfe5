"""Tests for activator.lb_policy, ported from Knative's lb_policy_test.go (TestRandomChoice2,
TestRandomChoice_TwoTrackersDistribution, TestFirstAvailable, TestRoundRobin).

A scenario is a script on one list of trackers and one PolicyState: Pick(prefix, want) runs
the policy on trackers[:prefix] and names the index it must choose (None: no pod free);
Release(i) gives back one slot on tracker i.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from activator.lb_policy import (
    LBPolicy,
    PodTracker,
    PolicyState,
    first_available,
    policy_for,
    power_of_two_choices,
    round_robin,
)
from shared.breaker import MAX_BREAKER_CAPACITY


def make_trackers(num: int, cc: int) -> list[PodTracker]:
    return [PodTracker(str(i), cc) for i in range(num)]


@dataclass(frozen=True)
class Pick:
    want: int | None
    prefix: int | None = None  # use only the first `prefix` trackers (the list shrank)


@dataclass(frozen=True)
class Release:
    index: int


Step = Pick | Release


def run(policy: LBPolicy, trackers: list[PodTracker], steps: list[Step]) -> None:
    state = PolicyState(random.Random(0))
    for i, step in enumerate(steps):
        match step:
            case Pick(want, prefix):
                got = policy(trackers[:prefix], state)
                got_index = None if got is None else trackers.index(got)
                assert got_index == want, f"step {i}: {step} chose {got!r}; {trackers}, {state}"
            case Release(index):
                trackers[index].release()


SCENARIOS = [
    pytest.param(
        first_available, 1, 1, [Pick(0), Pick(None)], id="first available, 1 tracker, 1 slot"
    ),
    pytest.param(
        first_available, 2, 1, [Pick(0), Pick(1)], id="first available, 2 trackers, 1 slot"
    ),
    pytest.param(
        first_available,
        2,
        3,
        [Pick(0), Pick(0), Pick(0), Pick(1), Release(0), Pick(0)],
        id="first available packs the first pod (clumping test)",
    ),
    pytest.param(
        round_robin,
        3,
        1,
        [
            Pick(0),
            Pick(1),
            # The shorter list makes the index wrap to 0, which is occupied: nothing.
            Pick(None, prefix=1),
            Pick(2),
            Pick(None),
            Release(2),
            Pick(2),
        ],
        id="round robin with cc=1",
    ),
    pytest.param(
        round_robin,
        3,
        2,
        [
            Pick(0),
            Pick(1),
            # The shorter list makes the index wrap to 0, which still has a slot.
            Pick(0, prefix=1),
            Pick(1),
            Pick(2),
            # Pods 0 and 1 are full, so 2 again.
            Pick(2),
        ],
        id="round robin with cc=2",
    ),
    pytest.param(
        round_robin,
        3,
        5,
        [Pick(0), Pick(1), Pick(2), Pick(0)],
        id="roundrobin test: all three used",
    ),
    pytest.param(round_robin, 0, 5, [Pick(None)], id="round robin, no trackers"),
    pytest.param(first_available, 0, 1, [Pick(None)], id="first available, no trackers"),
    pytest.param(power_of_two_choices, 0, 0, [Pick(None)], id="power of two, no trackers"),
]


@pytest.mark.parametrize(("policy", "num", "cc", "steps"), SCENARIOS)
def test_policy_scenarios(policy: LBPolicy, num: int, cc: int, steps: list[Step]) -> None:
    run(policy, make_trackers(num, cc), steps)


def test_random_choice2_1_tracker() -> None:
    trackers = make_trackers(1, 0)
    state = PolicyState(random.Random(1))
    assert power_of_two_choices(trackers, state) is trackers[0]
    assert trackers[0].weight == 1
    assert power_of_two_choices(trackers, state) is trackers[0]
    assert trackers[0].weight == 2
    trackers[0].release()
    assert trackers[0].weight == 1


@pytest.mark.parametrize(
    ("num", "seed"),
    [pytest.param(n, s, id=f"{n} trackers, seed {s}") for n in (2, 3) for s in range(20)],
)
def test_random_choice2_several_trackers(num: int, seed: int) -> None:
    trackers = make_trackers(num, 0)
    state = PolicyState(random.Random(seed))
    first = power_of_two_choices(trackers, state)
    assert first is not None and first.weight == 1
    # Must return a different one: every pair includes an idle pod, lighter than first.
    second = power_of_two_choices(trackers, state)
    assert second is not None and second is not first and second.weight == 1
    second.release()
    # The same one again (2 trackers) or the other unused one, never the busy first.
    third = power_of_two_choices(trackers, state)
    assert third is not None and third is not first and third.weight == 1
    if num == 2:
        assert third is second


def test_random_choice_two_trackers_distribution() -> None:
    trackers = make_trackers(2, 0)
    state = PolicyState(random.Random(42))
    counts: Counter[str] = Counter()
    for _ in range(100):
        pick = power_of_two_choices(trackers, state)
        assert pick is not None
        pick.release()
        counts[pick.address] += 1
    # Ties are coin flips: both get some (the chance that one gets none is 0.5**100).
    assert counts["0"] > 0 and counts["1"] > 0 and counts.total() == 100


def test_power_of_two_choices_never_picks_the_busiest_of_many() -> None:
    trackers = make_trackers(5, 0)
    for _ in range(10):
        trackers[4].reserve()
    state = PolicyState(random.Random(7))
    picks = [power_of_two_choices(trackers, state) for _ in range(4)]
    # Four idle-or-lightly-loaded pods are always in the pair ahead of the one with 10.
    assert trackers[4] not in picks
    assert sum(t.in_flight for t in trackers) == 14


def test_power_of_two_choices_is_deterministic_for_a_seed() -> None:
    def choices(seed: int) -> list[str]:
        trackers = make_trackers(10, 0)
        state = PolicyState(random.Random(seed))
        out = []
        for _ in range(50):
            pick = power_of_two_choices(trackers, state)
            assert pick is not None
            out.append(pick.address)
        return out

    assert choices(3) == choices(3)


@pytest.mark.parametrize(
    ("cc", "want"),
    [
        pytest.param(0, power_of_two_choices, id="cc 0: power of two choices"),
        pytest.param(1, first_available, id="cc 1: first available"),
        pytest.param(3, first_available, id="cc 3: first available"),
        pytest.param(4, round_robin, id="cc 4: round robin"),
        pytest.param(1000, round_robin, id="cc 1000: round robin"),
    ],
)
def test_policy_for(cc: int, want: LBPolicy) -> None:
    assert policy_for(cc) is want


def test_policy_for_rejects_negative_concurrency() -> None:
    with pytest.raises(ValueError, match="container concurrency"):
        policy_for(-1)


@pytest.mark.parametrize(
    ("cc", "reserved", "want_repr", "want_capacity", "want_free"),
    [
        pytest.param(2, 1, "<PodTracker 10.0.0.1:8012 in_flight=1/2>", 2, True, id="cc 2, one in"),
        pytest.param(2, 2, "<PodTracker 10.0.0.1:8012 in_flight=2/2>", 2, False, id="cc 2, full"),
        pytest.param(
            0,
            3,
            "<PodTracker 10.0.0.1:8012 in_flight=3/unlimited>",
            MAX_BREAKER_CAPACITY,
            True,
            id="cc 0, unlimited",
        ),
    ],
)
def test_pod_tracker_state(
    cc: int, reserved: int, want_repr: str, want_capacity: int, want_free: bool
) -> None:
    tracker = PodTracker("10.0.0.1:8012", cc)
    for _ in range(reserved):
        assert tracker.reserve()
    assert repr(tracker) == want_repr
    assert tracker.capacity == want_capacity
    assert tracker.has_free_slot is want_free
    assert tracker.reserve() is want_free


def test_pod_tracker_release_without_reserve() -> None:
    with pytest.raises(RuntimeError, match="release without reserve"):
        PodTracker("a", 1).release()


def test_pod_tracker_rejects_negative_concurrency() -> None:
    with pytest.raises(ValueError, match="container concurrency"):
        PodTracker("a", -1)
