"""The keyed work queue: dedupe, one run per key at a time, backoff, conflict retries."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.controllers.workqueue import Controller, WorkQueue
from shared.kube.client import Conflict

A = ("ns", "a")
B = ("ns", "b")


def test_a_queued_key_is_added_once() -> None:
    q = WorkQueue()
    assert q.add(A) is True
    assert q.add(A) is False
    assert q.add(B) is True
    assert [q.pop(), q.pop(), q.pop()] == [A, B, None]


def test_a_key_added_while_it_runs_runs_again_after() -> None:
    q = WorkQueue()
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
    q = WorkQueue()
    got = [q.failed(A) for _ in range(failures)][-1]
    assert got == pytest.approx(delay)
    assert q.failed(B) == pytest.approx(0.005)  # per key
    q.forget(A)
    assert q.failed(A) == pytest.approx(0.005)


async def test_controller_retries_conflicts_and_errors_until_success() -> None:
    runs: list[str] = []
    outcomes: list[Exception | None] = [Conflict(409, "Conflict", "stale"), RuntimeError("x"), None]

    async def reconcile(namespace: str, name: str) -> None:
        runs.append(name)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    c = Controller("test", reconcile)
    c.start()
    try:
        c.enqueue(*A)
        for _ in range(100):
            await asyncio.sleep(0.005)
            if not outcomes:
                break
        assert runs == ["a", "a", "a"]
        assert repr(c) == "<Controller test <WorkQueue queued=0 processing=0 failing=0>>"
    finally:
        await c.stop()


async def test_many_events_for_one_key_while_it_runs_make_one_more_run() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def reconcile(namespace: str, name: str) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    c = Controller("test", reconcile, workers=2)
    c.start()
    try:
        c.enqueue(*A)
        await started.wait()
        for _ in range(10):
            c.enqueue(*A)
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert runs == 2
    finally:
        await c.stop()
