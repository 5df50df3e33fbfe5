"""The keyed work queue: dedupe, one worker per key, retry with backoff, delayed adds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from autoscaler.workqueue import WorkQueue

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
async def queue() -> AsyncIterator[Callable[[Recorder], WorkQueue]]:
    made: list[WorkQueue] = []

    def make(rec: Recorder) -> WorkQueue:
        made.append(WorkQueue("test", rec, workers=2, max_backoff_s=0.05))
        return made[-1]

    yield make
    for q in made:
        await q.stop()


async def test_adds_before_processing_are_deduplicated(
    queue: Callable[[Recorder], WorkQueue],
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
    queue: Callable[[Recorder], WorkQueue],
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
    queue: Callable[[Recorder], WorkQueue],
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


async def test_add_after_keeps_the_earliest(queue: Callable[[Recorder], WorkQueue]) -> None:
    rec = Recorder()
    q = queue(rec)
    await q.start()
    q.add_after("default/a", 0.05)
    q.add_after("default/a", 5.0)  # later: the 50-ms schedule stands
    await asyncio.sleep(0.2)
    assert [k for k, _ in rec.calls] == ["default/a"]
