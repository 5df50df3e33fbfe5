"""The keyed work queue: dedupe, one run per key at a time, backoff, conflict retries, delayed
adds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from shared.kube.client import Conflict
from shared.kube.workqueue import KeyQueue, WorkQueue

pytestmark = pytest.mark.timeout(10)


class Recorder:
    """A reconcile that records each call, can block on a gate, and fails ``fail`` times."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, float]] = []
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.running: set[str] = set()
        self.overlapped = False

    async def __call__(self, key: str) -> None:
        if key in self.running:
            self.overlapped = True
        self.running.add(key)
        try:
            self.calls.append((key, asyncio.get_running_loop().time()))
            await self.gate.wait()
            if self.fail:
                self.fail -= 1
                raise RuntimeError("conflict")
        finally:
            self.running.discard(key)


@pytest.fixture
async def queue() -> AsyncIterator[Callable[[Recorder], WorkQueue[str]]]:
    made: list[WorkQueue[str]] = []

    def make(rec: Recorder) -> WorkQueue[str]:
        made.append(WorkQueue("test", rec, workers=2, max_backoff_s=0.05))
        return made[-1]

    yield make
    for q in made:
        await q.stop()


async def test_adds_before_processing_are_deduplicated(
    queue: Callable[[Recorder], WorkQueue[str]],
) -> None:
    rec = Recorder()
    q = queue(rec)
    for _ in range(5):
        q.add("default/a")
    q.add("default/b")
    await q.start()
    await q.drain()
    assert sorted(k for k, _ in rec.calls) == ["default/a", "default/b"]


async def test_add_while_processing_runs_once_more_never_concurrently(
    queue: Callable[[Recorder], WorkQueue[str]],
) -> None:
    rec = Recorder()
    rec.gate.clear()
    q = queue(rec)
    await q.start()
    q.add("default/a")
    await asyncio.sleep(0.01)
    q.add("default/a")  # dirty: runs again after, not beside, the first
    q.add("default/a")
    rec.gate.set()
    await q.drain()
    assert [k for k, _ in rec.calls] == ["default/a", "default/a"]
    assert not rec.overlapped


async def test_failure_retries_with_growing_backoff(
    queue: Callable[[Recorder], WorkQueue[str]],
) -> None:
    rec = Recorder(fail=3)
    q = queue(rec)
    await q.start()
    q.add("default/a")
    async with asyncio.timeout(2):
        while len(rec.calls) < 4:
            await asyncio.sleep(0.002)
    gaps = [b - a for (_, a), (_, b) in zip(rec.calls, rec.calls[1:], strict=False)]
    assert gaps[0] >= 0.004 and gaps[2] >= 0.019  # 5 ms, 10 ms, 20 ms
    await q.drain()
    assert len(rec.calls) == 4  # success forgets: no more retries


async def test_add_after_keeps_the_earliest(queue: Callable[[Recorder], WorkQueue[str]]) -> None:
    rec = Recorder()
    q = queue(rec)
    await q.start()
    q.add_after("default/a", 0.05)
    q.add_after("default/a", 5.0)  # later: the 50-ms schedule stands
    await asyncio.sleep(0.2)
    assert [k for k, _ in rec.calls] == ["default/a"]


# -- the pure bookkeeping and the loop with tuple keys, as Knative's controller uses them -----
A = ("ns", "a")
B = ("ns", "b")


def test_a_queued_key_is_added_once() -> None:
    q: KeyQueue[tuple[str, str]] = KeyQueue()
    assert q.add(A) is True
    assert q.add(A) is False
    assert q.add(B) is True
    assert [q.pop(), q.pop(), q.pop()] == [A, B, None]


def test_a_key_added_while_it_runs_runs_again_after() -> None:
    q: KeyQueue[tuple[str, str]] = KeyQueue()
    q.add(A)
    assert q.pop() == A
    assert q.add(A) is False  # not handed to a second worker
    assert q.pop() is None
    assert q.done(A) is True
    assert q.pop() == A
    assert q.done(A) is False


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        pytest.param(1, 0.005, id="first"),
        pytest.param(2, 0.01, id="second"),
        pytest.param(5, 0.08, id="fifth"),
        pytest.param(30, 30.0, id="capped"),
    ],
)
def test_backoff_doubles_per_key(failures: int, delay: float) -> None:
    q: KeyQueue[tuple[str, str]] = KeyQueue()
    got = [q.failed(A) for _ in range(failures)][-1]
    assert got == pytest.approx(delay)
    assert q.failed(B) == pytest.approx(0.005)  # per key
    q.forget(A)
    assert q.failed(A) == pytest.approx(0.005)


async def test_retries_conflicts_and_errors_until_success() -> None:
    runs: list[str] = []
    outcomes: list[Exception | None] = [Conflict(409, "Conflict", "stale"), RuntimeError("x"), None]

    async def reconcile(key: tuple[str, str]) -> None:
        runs.append(key[1])
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    c: WorkQueue[tuple[str, str]] = WorkQueue("test", reconcile, workers=1)
    await c.start()
    try:
        c.add(A)
        for _ in range(100):
            await asyncio.sleep(0.005)
            if not outcomes:
                break
        assert runs == ["a", "a", "a"]
        await c.drain()
        assert repr(c) == "<WorkQueue test queued=0 processing=0 failing=0>"
    finally:
        await c.stop()


async def test_many_events_for_one_key_while_it_runs_make_one_more_run() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def reconcile(key: tuple[str, str]) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    c: WorkQueue[tuple[str, str]] = WorkQueue("test", reconcile, workers=2)
    await c.start()
    try:
        c.add(A)
        await started.wait()
        for _ in range(10):
            c.add(A)
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert runs == 2
    finally:
        await c.stop()
