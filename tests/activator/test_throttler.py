"""Tests for activator.throttler, ported from Knative's throttler_test.go (TestThrottlerSuccesses,
TestThrottlerErrorOneTimesOut, TestMultipleActivators, TestActivatorsIndexUpdate,
TestPodAssignmentFinite, TestPodAssignmentInfinite) plus the issue's cases.

A scenario is a script on one RevisionThrottler. Requests are named w0, w1, ...; the runner
plays the shell: an admitted or woken request picks its pod at once (unless the step says
pick=False) and keeps it until its Release. Woken lists are (waiter, pod) in wake order.
After every step the runner checks the invariants: no pod over containerConcurrency, no one
queued while a slot is free, every reserved pod slot backed by a revision slot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from activator.lb_policy import PodTracker
from activator.throttler import BREAKER_QUEUE_DEPTH, RevisionThrottler
from shared.breaker import MAX_BREAKER_CAPACITY, Admission

ADMITTED, QUEUED, OVERFLOW = Admission.ADMITTED, Admission.QUEUED, Admission.OVERFLOW
Woken = list[tuple[str, str]]


@dataclass(frozen=True)
class Pods:
    addresses: list[str]
    woken: Woken = field(default_factory=list)


@dataclass(frozen=True)
class Activators:
    index: int
    count: int
    woken: Woken = field(default_factory=list)


@dataclass(frozen=True)
class Remove:
    address: str
    woken: Woken = field(default_factory=list)


@dataclass(frozen=True)
class Acquire:
    waiter: str
    want: Admission
    pod: str | None = None  # where an admitted request was placed


@dataclass(frozen=True)
class Release:
    waiter: str
    woken: Woken = field(default_factory=list)
    pick: bool = True  # False: leave the woken admitted but not yet picked


@dataclass(frozen=True)
class Cancel:
    waiter: str
    woken: Woken = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    capacity: int
    active: int
    queued: int
    assigned: list[str] | None = None


Step = Pods | Activators | Remove | Acquire | Release | Cancel | Check


class Shell:
    """Plays the asyncio shell around one throttler, synchronously."""

    def __init__(self, throttler: RevisionThrottler) -> None:
        self.throttler = throttler
        self.held: dict[str, PodTracker] = {}
        self.every_tracker: set[PodTracker] = set()

    def woken(self, waiters: list[object], pick: bool = True) -> Woken:
        out = []
        for waiter in waiters:
            assert isinstance(waiter, str)
            if not pick:
                out.append((waiter, "?"))
                continue
            tracker = self.throttler.pick(waiter)
            assert tracker is not None, f"woken {waiter} has no pod"
            self.held[waiter] = tracker
            out.append((waiter, tracker.address))
        return out

    def step(self, step: Step) -> None:
        t = self.throttler
        match step:
            case Pods(addresses, want):
                assert self.woken(t.update_pods(addresses)) == want
            case Activators(index, count, want):
                assert self.woken(t.update_activators(index, count)) == want
            case Remove(address, want):
                assert self.woken(t.remove_pod(address)) == want
            case Acquire(waiter, want, pod):
                assert t.try_acquire(waiter) is want
                if want is ADMITTED:
                    tracker = t.pick(waiter)
                    assert tracker is not None
                    self.held[waiter] = tracker
                    if pod is not None:
                        assert tracker.address == pod
            case Release(waiter, want, pick):
                got = self.woken(t.release(self.held.pop(waiter)), pick)
                assert got == (want if pick else [(w, "?") for w, _ in want])
            case Cancel(waiter, want):
                assert self.woken(t.cancel(waiter)) == want
            case Check(capacity, active, queued, assigned):
                assert (t.capacity, t.active, t.queued) == (capacity, active, queued)
                if assigned is not None:
                    assert [p.address for p in t.assigned_trackers] == assigned
        self.check_invariants()

    def check_invariants(self) -> None:
        t = self.throttler
        self.every_tracker.update(t.pod_trackers)
        self.every_tracker.update(self.held.values())
        cc = t.container_concurrency
        if cc > 0:
            assert all(p.in_flight <= cc for p in self.every_tracker), t
        assert t.queued == 0 or t.active >= t.capacity, t
        assert t.queued <= t.queue_depth, t
        assert sum(p.in_flight for p in self.every_tracker) == t.active, t


def run(throttler: RevisionThrottler, steps: list[Step]) -> None:
    shell = Shell(throttler)
    for i, step in enumerate(steps):
        try:
            shell.step(step)
        except AssertionError as e:
            raise AssertionError(f"step {i}: {step}; {throttler!r}") from e


P1, P2, P3 = "128.0.0.1:1234", "128.0.0.2:1234", "128.0.0.3:1234"
P23 = "128.0.0.23:1234"  # sorts before P2: "3" < ":"
MAX = MAX_BREAKER_CAPACITY

# (containerConcurrency, queue depth, steps)
SCENARIOS = [
    # -- Knative's TestThrottlerSuccesses (pod addressing; this activator alone) --
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [Pods([P1]), Pods([P1]), Activators(0, 1), Check(1, 0, 0), Acquire("w0", ADMITTED, P1)],
        id="single healthy podIP",
    ),
    pytest.param(
        0,
        BREAKER_QUEUE_DEPTH,
        [
            Pods(["128.0.0.2:1234", "128.0.0.32:1212"]),
            Pods([P1]),
            Activators(0, 1),
            Check(MAX, 0, 0, [P1]),
            Acquire("w0", ADMITTED, P1),
        ],
        id="single healthy podIP, infinite cc",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods([P3]),
            Pods([P1, P2]),
            Activators(0, 1),
            Check(2, 0, 0, [P1, P2]),
            Acquire("w0", ADMITTED, P1),
            Acquire("w1", ADMITTED, P2),
        ],
        id="spread podIP load",
    ),
    pytest.param(
        3,
        BREAKER_QUEUE_DEPTH,
        [
            Pods([P1, P2, "128.0.0.2:4236", "128.0.0.2:1233", "128.0.0.2:1230"]),
            Activators(0, 1),
            Check(15, 0, 0),
            Acquire("w0", ADMITTED, P1),
            Acquire("w1", ADMITTED, P1),
            Acquire("w2", ADMITTED, P1),
        ],
        id="clumping test",
    ),
    pytest.param(
        5,
        BREAKER_QUEUE_DEPTH,
        [
            Pods([P1, P2, "211.212.213.214"]),
            Activators(0, 1),
            Acquire("w0", ADMITTED, P1),
            Acquire("w1", ADMITTED, P2),
            Acquire("w2", ADMITTED, "211.212.213.214"),
        ],
        id="roundrobin test",
    ),
    # -- Knative's timeout and multi-activator tests --
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods([P1]),
            Acquire("w0", ADMITTED, P1),
            Acquire("w1", QUEUED),
            Cancel("w1"),  # its context timed out
            Check(1, 1, 0),
            Release("w0"),
            Check(1, 0, 0),
        ],
        id="TestThrottlerErrorOneTimesOut",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods([P1, P2, P23]),
            Activators(1, 2),
            Check(1, 0, 0, [P23]),
            Acquire("w0", ADMITTED, P23),
            Acquire("w1", QUEUED),
            Cancel("w1"),
            Check(1, 1, 0),
        ],
        id="TestMultipleActivators",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods([P1, P2, P23]),
            Activators(1, 2),
            Check(1, 0, 0, [P23]),
            Activators(0, 1),
            Check(3, 0, 0, [P1, P23, P2]),
        ],
        id="TestActivatorsIndexUpdate",
    ),
    pytest.param(
        42,
        BREAKER_QUEUE_DEPTH,
        [
            Activators(0, 4),
            Pods(["ip4", "ip3", "ip5", "ip2", "ip1", "ip0"]),
            Check(2 * 42, 0, 0, ["ip0", "ip4"]),
            Pods([]),  # scale to zero
            Check(0, 0, 0, []),
        ],
        id="TestPodAssignmentFinite",
    ),
    pytest.param(
        0,
        BREAKER_QUEUE_DEPTH,
        [
            Activators(0, 4),  # ignored for the split at cc 0: every pod is used
            Pods(["ip3", "ip2", "ip1"]),
            Check(MAX, 0, 0, ["ip1", "ip2", "ip3"]),
            Pods([]),
            Check(0, 0, 0, []),
        ],
        id="TestPodAssignmentInfinite",
    ),
    # -- the cases and the shell's races --
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Acquire("w0", QUEUED),
            Acquire("w1", QUEUED),
            Acquire("w2", QUEUED),
            Check(0, 0, 3),
            Pods(["a"], woken=[("w0", "a")]),
            Pods(["a", "b"], woken=[("w1", "b")]),
            Release("w0", woken=[("w2", "a")]),
            Check(2, 2, 0),
        ],
        id="cold start: released one by one as pods become ready",
    ),
    pytest.param(
        0,
        BREAKER_QUEUE_DEPTH,
        [
            Acquire("w0", QUEUED),
            Acquire("w1", QUEUED),
            Acquire("w2", QUEUED),
            Pods(["a"], woken=[("w0", "a"), ("w1", "a"), ("w2", "a")]),
            Check(MAX, 3, 0),
            Pods([]),
            Acquire("w3", QUEUED),
            Release("w0"),
            Check(0, 2, 1),
        ],
        id="cold start, cc 0: all released at once, queued again at zero",
    ),
    pytest.param(
        1,
        2,
        [
            Pods(["a"]),
            Acquire("w0", ADMITTED, "a"),
            Acquire("w1", QUEUED),
            Acquire("w2", QUEUED),
            Acquire("w3", OVERFLOW),
            Release("w0", woken=[("w1", "a")]),
            Acquire("w4", QUEUED),
            Acquire("w5", OVERFLOW),
            Check(1, 1, 2),
        ],
        id="queue overflow past the depth",
    ),
    pytest.param(
        0,
        1,
        [Acquire("w0", QUEUED), Acquire("w1", OVERFLOW), Check(0, 0, 1)],
        id="queue overflow, cc 0, no pods",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods(["a", "b"]),
            Acquire("w0", ADMITTED, "a"),
            Acquire("w1", ADMITTED, "b"),
            Acquire("w2", QUEUED),
            Remove("b"),  # b failed: its slot goes, w1 is still on it
            Check(1, 2, 1, ["a"]),
            Release("w1"),  # w1 failed as a 502; its revision slot comes back, none free
            Check(1, 1, 1),
            Release("w0", woken=[("w2", "a")]),
            Remove("b"),  # already gone: no-op
        ],
        id="pod killed under load",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods(["a"]),
            Acquire("w0", ADMITTED, "a"),
            Acquire("w1", QUEUED),
            Acquire("w2", QUEUED),
            Release("w0", woken=[("w1", "a")], pick=False),
            Cancel("w1", woken=[("w2", "a")]),  # timed out just as it was woken
            Cancel("w1"),  # twice: no-op
            Check(1, 1, 0),
        ],
        id="woken waiter times out before it picks",
    ),
    pytest.param(
        2,
        BREAKER_QUEUE_DEPTH,
        [
            Pods(["a", "b"]),
            Acquire("w0", ADMITTED, "a"),
            Acquire("w1", ADMITTED, "a"),
            Acquire("w2", ADMITTED, "b"),
            Acquire("w3", ADMITTED, "b"),
            Pods(["a"]),  # scale down: b leaves with two requests on it
            Acquire("w4", QUEUED),
            Check(2, 4, 1),
            Release("w2"),
            Release("w3"),
            Release("w0", woken=[("w4", "a")]),
        ],
        id="capacity below active evicts no one",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods(["a", "b", "c", "d"]),
            Acquire("w0", ADMITTED, "a"),
            Acquire("w1", ADMITTED, "b"),
            Acquire("w2", ADMITTED, "c"),
            Acquire("w3", ADMITTED, "d"),
            Activators(1, 2),  # a second activator takes a and b
            Check(2, 4, 0, ["c", "d"]),
            Acquire("w4", QUEUED),
            Release("w0"),
            # c is free, but w1 still holds a revision slot on b: capacity counts every
            # request this activator has out, on its share or not.
            Release("w2"),
            Check(2, 2, 1),
            Release("w1", woken=[("w4", "c")]),
        ],
        id="a second activator halves the share",
    ),
    pytest.param(
        1,
        BREAKER_QUEUE_DEPTH,
        [
            Pods(["a", "b"]),
            Activators(-1, 2),  # not among the activators yet: ignored
            Check(2, 0, 0, ["a", "b"]),
            Activators(1, 2),
            Check(1, 0, 0, ["b"]),
            Activators(-1, 3),
            Check(1, 0, 0, ["b"]),
        ],
        id="activator index -1 keeps the previous split",
    ),
]


@pytest.mark.parametrize(("cc", "queue_depth", "steps"), SCENARIOS)
def test_throttler_scenarios(cc: int, queue_depth: int, steps: list[Step]) -> None:
    run(RevisionThrottler("ns/rev", cc, queue_depth=queue_depth, rng=random.Random(0)), steps)


def test_capacity_split_across_2_activators() -> None:
    """The issue's case: 5 pods, containerConcurrency 1, 2 activators: 3 and 2."""
    pods = [f"10.0.0.{i}:8012" for i in (5, 3, 1, 4, 2)]
    seen: list[str] = []
    for index, want in [(0, 3), (1, 2)]:
        throttler = RevisionThrottler("ns/rev", 1)
        throttler.update_pods(pods)
        throttler.update_activators(index, 2)
        assert throttler.capacity == want
        for i in range(want):
            assert throttler.try_acquire(i) is ADMITTED
            tracker = throttler.pick(i)
            assert tracker is not None
            seen.append(tracker.address)
        assert throttler.try_acquire("one too many") is QUEUED
    assert sorted(seen) == sorted(pods)  # every pod used, none by both activators


@pytest.mark.parametrize(
    ("cc", "seed"),
    [pytest.param(cc, s, id=f"cc {cc}, seed {s}") for cc in (0, 1, 2, 4) for s in range(5)],
)
def test_random_walk_keeps_invariants(cc: int, seed: int) -> None:
    """Pods, activators, requests, timeouts and releases in random order; the runner's
    invariants hold after every step."""
    rng = random.Random(seed)
    throttler = RevisionThrottler("ns/rev", cc, queue_depth=8, rng=random.Random(seed))
    shell = Shell(throttler)
    queued: list[str] = []
    for n in range(600):
        roll = rng.random()
        if roll < 0.35:
            waiter = f"w{n}"
            admission = throttler.try_acquire(waiter)
            if admission is ADMITTED:
                tracker = throttler.pick(waiter)
                assert tracker is not None
                shell.held[waiter] = tracker
            elif admission is QUEUED:
                queued.append(waiter)
        elif roll < 0.65 and shell.held:
            waiter = rng.choice(sorted(shell.held))
            shell.woken(throttler.release(shell.held.pop(waiter)))
        elif roll < 0.75 and queued:
            shell.woken(throttler.cancel(queued.pop(rng.randrange(len(queued)))))
        elif roll < 0.9:
            pods = [p for p in "abcdef" if rng.random() < 0.5]
            shell.woken(throttler.update_pods(pods))
        elif roll < 0.95:
            count = rng.randint(1, 3)
            shell.woken(throttler.update_activators(rng.randrange(count), count))
        else:
            shell.woken(throttler.remove_pod(rng.choice("abcdef")))
        queued = [w for w in queued if w not in shell.held]
        shell.check_invariants()
    for waiter in list(shell.held):
        shell.woken(throttler.release(shell.held.pop(waiter)))
        shell.check_invariants()


def test_try_acquire_twice_before_pick() -> None:
    throttler = RevisionThrottler("ns/rev", 1)
    throttler.update_pods(["a"])
    assert throttler.try_acquire("w0") is ADMITTED
    with pytest.raises(ValueError, match="already admitted"):
        throttler.try_acquire("w0")


def test_pick_without_admission() -> None:
    throttler = RevisionThrottler("ns/rev", 1)
    assert throttler.try_acquire("w0") is QUEUED
    assert throttler.pick("w0") is None
    assert throttler.pick("never seen") is None


@pytest.mark.parametrize(
    ("cc", "queue_depth", "match"),
    [
        pytest.param(-1, 1, "container concurrency", id="negative cc"),
        pytest.param(1, 0, "queue depth", id="depth 0"),
    ],
)
def test_constructor_validates(cc: int, queue_depth: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RevisionThrottler("ns/rev", cc, queue_depth=queue_depth)


def test_update_activators_rejects_bad_index() -> None:
    with pytest.raises(ValueError, match="activator index"):
        RevisionThrottler("ns/rev", 1).update_activators(2, 2)


@pytest.mark.parametrize(
    ("cc", "want"),
    [
        pytest.param(
            1,
            "<RevisionThrottler ns/rev cc=1 first_available active=1/2 queued=0/10000 "
            "pods=2/3 activator=0/2>",
            id="cc 1",
        ),
        pytest.param(
            0,
            "<RevisionThrottler ns/rev cc=0 power_of_two_choices active=1/unlimited "
            "queued=0/10000 pods=3/3 activator=0/2>",
            id="cc 0",
        ),
    ],
)
def test_repr(cc: int, want: str) -> None:
    throttler = RevisionThrottler("ns/rev", cc)
    throttler.update_pods(["a", "b", "c"])
    throttler.update_activators(0, 2)
    assert throttler.try_acquire("w0") is ADMITTED
    assert repr(throttler) == want
    assert throttler.in_flight == 1
