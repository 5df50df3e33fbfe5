"""Tests for activator.split, ported from Knative's throttler_test.go (TestPickIndices,
TestAssignSlice, TestThrottlerUpdateCapacity, TestThrottlerCalculateCapacity,
TestPodAssignmentFinite) plus the issue's two-activator case. TestInferIndex is in
test_cluster.py (activator_share)."""

from __future__ import annotations

import pytest

from activator.split import (
    assign_slice,
    pick_indices,
    revision_capacity,
    worker_part,
    worker_share,
)
from shared.breaker import MAX_BREAKER_CAPACITY as MAX


@pytest.mark.parametrize(
    ("pods", "activators", "index", "want"),
    [
        pytest.param(1, 1, 0, (0, 1, 0), id="1 pod, 1 activator"),
        pytest.param(1, 2, 0, (0, 1, 0), id="1 pod, 2 activators, this is 0"),
        pytest.param(1, 2, 1, (0, 1, 0), id="1 pod, 2 activators, this is 1"),
        pytest.param(2, 3, 1, (1, 2, 0), id="2 pods, 3 activators, this is 1"),
        pytest.param(2, 3, 2, (0, 1, 0), id="2 pods, 3 activators, this is 2"),
        pytest.param(3, 3, 2, (2, 3, 0), id="3 pods, 3 activators, this is 2"),
        pytest.param(10, 3, 0, (0, 3, 1), id="10 pods, 3 activators this is 0"),
        pytest.param(10, 3, 1, (3, 6, 1), id="10 pods, 3 activators this is 1"),
        pytest.param(10, 3, 2, (6, 9, 1), id="10 pods, 3 activators this is 2"),
        pytest.param(150, 5, 0, (0, 30, 0), id="150 pods, 5 activators this is 0"),
        pytest.param(150, 5, 1, (30, 60, 0), id="150 pods, 5 activators this is 1"),
        pytest.param(150, 5, 4, (120, 150, 0), id="150 pods, 5 activators this is 4"),
    ],
)
def test_pick_indices(pods: int, activators: int, index: int, want: tuple[int, int, int]) -> None:
    assert pick_indices(pods, index, activators) == want


THREE = ["1", "2", "3"]
SIX = ["ip4", "ip3", "ip5", "ip2", "ip1", "ip0"]
FIVE = ["10.0.0.5:8012", "10.0.0.1:8012", "10.0.0.4:8012", "10.0.0.2:8012", "10.0.0.3:8012"]


@pytest.mark.parametrize(
    ("pods", "index", "activators", "want"),
    [
        pytest.param([], 0, 1, [], id="notrackers"),
        pytest.param(THREE, 1, 1, THREE, id="idx=1, na=1"),
        pytest.param(THREE, -1, 1, THREE, id="idx=-1"),
        pytest.param(THREE, -1, 0, THREE, id="idx=-1, activators unknown"),
        pytest.param(THREE, 1, 3, ["2"], id="idx=1 na=3"),
        pytest.param(THREE[:1], 1, 3, ["1"], id="len=1"),
        pytest.param(THREE, 1, 2, ["2"], id="idx=1, breaker"),
        pytest.param(["3", "1", "2"], 0, 2, ["1", "3"], id="unsorted input is sorted first"),
        # TestPodAssignmentFinite: 6 = 4 * 1 + 2; index 0 and 1 take a leftover each.
        pytest.param(SIX, 0, 4, ["ip0", "ip4"], id="pod assignment finite, index 0"),
        pytest.param(SIX, 1, 4, ["ip1", "ip5"], id="pod assignment finite, index 1"),
        pytest.param(SIX, 3, 4, ["ip3"], id="pod assignment finite, index 3"),
        # The case: 5 pods, 2 activators -> 3 and 2, no pod shared.
        pytest.param(
            FIVE, 0, 2, ["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.5:8012"], id="5 pods, 2 acts, 0"
        ),
        pytest.param(FIVE, 1, 2, ["10.0.0.3:8012", "10.0.0.4:8012"], id="5 pods, 2 acts, 1"),
        # Fewer pods than activators: round robin, pods shared.
        pytest.param(["a", "b"], 2, 3, ["a"], id="2 pods, 3 activators, this is 2"),
    ],
)
def test_assign_slice(pods: list[str], index: int, activators: int, want: list[str]) -> None:
    assert assign_slice(pods, index, activators) == want


@pytest.mark.parametrize(
    ("pods", "activators"),
    [
        pytest.param(p, a, id=f"{p} pods, {a} activators")
        for p in range(0, 13)
        for a in (1, 2, 3, 5)
    ],
)
def test_assign_slice_covers_every_pod_once_when_enough_pods(pods: int, activators: int) -> None:
    addresses = [f"p{i:02d}" for i in range(pods)]
    shares = [assign_slice(addresses, i, activators) for i in range(activators)]
    flat = sorted(p for share in shares for p in share)
    if pods >= activators:
        assert flat == addresses
        sizes = [len(s) for s in shares]
        assert max(sizes) - min(sizes) <= 1
    else:
        assert set(flat) == set(addresses)
        assert all(len(s) == 1 for s in shares) or pods <= 1


@pytest.mark.parametrize(
    ("index", "activators"),
    [pytest.param(2, 2, id="index past the end"), pytest.param(-2, 2, id="negative, not -1")],
)
def test_assign_slice_rejects_bad_index(index: int, activators: int) -> None:
    with pytest.raises(ValueError, match="activator index"):
        assign_slice(THREE, index, activators)


# (cc, assigned pods, activators, ready pods) -> capacity. Names from Knative's
# TestThrottlerUpdateCapacity: "capacity" there is the backend count; rows without pod
# trackers exercise the shared-address (ClusterIP) branch; the infinite breaker's 1 is
# MAX_BREAKER_CAPACITY (MAX) here (see throttler.py).
@pytest.mark.parametrize(
    ("cc", "assigned", "activators", "ready", "want"),
    [
        pytest.param(10, 0, 0, 1, 1 * 10, id="capacity: 1, cc: 10"),
        pytest.param(10, 0, 0, 10, 10 * 10, id="capacity: 10, cc: 10"),
        pytest.param(10, 0, 0, 100, 100 * 10, id="capacity: 100, cc: 10"),
        pytest.param(10, 0, 5, 10, 10 * 10 // 5, id="numActivators: 5, capacity: 10, cc: 10"),
        pytest.param(10, 0, 200, 10, 1, id="numActivators: 200, capacity: 10, cc: 10"),
        pytest.param(10, 0, 200, 0, 0, id="numActivators: 200, capacity: 0, cc: 10"),
        pytest.param(0, 0, 0, 0, 0, id="newInfiniteBreaker, numActivators: 0, capacity: 0, cc: 0"),
        pytest.param(0, 0, 0, 1, MAX, id="newInfiniteBreaker, numActivators: 0, capacity: 1"),
        pytest.param(0, 0, 0, 10, MAX, id="newInfiniteBreaker, numActivators: 0, capacity: 10"),
        pytest.param(0, 0, 200, 0, 0, id="newInfiniteBreaker, numActivators: 200, capacity: 0"),
        pytest.param(0, 0, 200, 1, MAX, id="newInfiniteBreaker, numActivators: 200, capacity: 1"),
        pytest.param(10, 1, 1, 0, 10, id="numActivators: 1, capacity: 0, cc: 10, pods: 1"),
        pytest.param(10, 2, 1, -1, 20, id="2 backends. numActivators: 1, capacity: -1, cc: 10"),
        pytest.param(10, 1, 2, -1, 10, id="2 activators. numActivators: 2, capacity: -1, cc: 10"),
        pytest.param(10, 2, 2, -1, 20, id="numActivators: 2, index: 0, pods: 3, cc: 10"),
        pytest.param(10, 1, 2, -1, 10, id="numActivators: 2, index: 1, pods: 3, cc: 10"),
        pytest.param(1, 3, 2, 5, 3, id="numActivators: 2, index: 0, pods: 5, cc: 1"),
        pytest.param(1, 2, 2, 5, 2, id="numActivators: 2, index: 1, pods: 5, cc: 1"),
        pytest.param(0, 3, 2, 1, MAX, id="Infinite capacity with podIP trackers"),
        pytest.param(0, MAX + 5, 1, 1, MAX, id="over revisionMaxConcurrency"),
        pytest.param(2**20, 2**12, 1, 2**12, MAX, id="cc x pods clamped to the breaker limit"),
        pytest.param(42, 2, 4, 6, 2 * 42, id="pod assignment finite"),
        pytest.param(42, 0, 4, 0, 0, id="pod assignment finite, scaled to zero"),
    ],
)
def test_revision_capacity(cc: int, assigned: int, activators: int, ready: int, want: int) -> None:
    assert revision_capacity(cc, assigned, activators, ready) == want


def test_revision_capacity_rejects_negative_concurrency() -> None:
    with pytest.raises(ValueError, match="container concurrency"):
        revision_capacity(-1, 1, 1, 1)


def test_workers_are_activators_of_the_split() -> None:
    """activator i of A with W workers: activators i*W .. i*W+W-1 of A*W; each pod one's."""
    assert worker_share((1, 3), 0, 1) == (1, 3)
    assert worker_share((1, 3), 1, 2) == (3, 6)
    assert worker_share(None, 1, 2) == (1, 2)
    assert worker_share(None, 0, 1) is None
    pods = [f"10.0.0.{i}:8012" for i in range(4)]
    shares = [worker_share((0, 1), w, 2) for w in range(2)]
    assert shares == [(0, 2), (1, 2)]
    assert [assign_slice(pods, w, 2) for w in range(2)] == [pods[:2], pods[2:]]
    assert [worker_part(10, w, 3) for w in range(3)] == [4, 3, 3]
    assert [worker_part(1, w, 2) for w in range(2)] == [1, 1]
