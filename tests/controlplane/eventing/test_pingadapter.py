"""The in-process PingSource adapter: a fake clock drives the schedule, a real HTTP sink on
127.0.0.1 receives each tick's CloudEvent in binary mode."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from controlplane.controllers.sources import PingJob
from controlplane.pingadapter import PingAdapter


class FakeClock:
    """Time that moves only when the adapter sleeps."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]], list[int]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    answers: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((request.headers.copy(), await request.read()))  # type: ignore[arg-type]
        return web.Response(status=answers.pop(0) if answers else 202)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/", received, answers
    finally:
        await runner.cleanup()


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


START = dt.datetime(2026, 3, 28, 23, 58, 30, tzinfo=dt.UTC).timestamp()


async def test_events_on_each_tick_with_the_sources_attributes(sink: tuple) -> None:  # type: ignore[type-arg]
    url, received, answers = sink
    clock = FakeClock(START)
    adapter = PingAdapter(clock=clock, sleep=clock.sleep)
    job = PingJob(schedule="* * * * *", timezone="", sink=url,
                  source="/apis/v1/namespaces/default/pingsources/p", data=b'{"n": 1}',
                  content_type="application/json", extensions=(("team", "a"),))
    adapter.set(("default", "p"), job)
    try:
        # The sink records a request before the adapter has its answer and counts it as sent.
        await wait_for(lambda: len(received) >= 3 and adapter.sent >= 3)
    finally:
        await adapter.close()
    assert clock.sleeps[:3] == [30.0, 60.0, 60.0]  # to 23:59:00, then on each minute
    times = [h["Ce-Time"] for h, _ in received[:3]]
    assert times == ["2026-03-28T23:59:00Z", "2026-03-29T00:00:00Z", "2026-03-29T00:01:00Z"]
    headers, body = received[0]
    assert body == b'{"n": 1}'
    assert headers["Ce-Specversion"] == "1.0"
    assert headers["Ce-Type"] == "dev.knative.sources.ping"
    assert headers["Ce-Source"] == "/apis/v1/namespaces/default/pingsources/p"
    assert headers["Content-Type"] == "application/json"
    assert headers["Ce-Team"] == "a"
    assert len({h["Ce-Id"] for h, _ in received}) == len(received), "a fresh id per event"
    assert adapter.sent >= 3
    assert answers == []


async def test_a_failed_send_keeps_the_schedule_and_a_changed_job_replaces_it(
    sink: tuple,  # type: ignore[type-arg]
) -> None:
    url, received, answers = sink
    answers += [500]
    clock = FakeClock(START)
    adapter = PingAdapter(clock=clock, sleep=clock.sleep)
    job = PingJob(schedule="0 9 * * *", timezone="Europe/Paris", sink=url,
                  source="/s", data=b"x", content_type="")
    adapter.set(("default", "p"), job)
    try:
        await wait_for(lambda: len(received) >= 2 and adapter.sent >= 1)
        # 09:00 in Paris: 08:00 UTC before the DST change of 2026-03-29, 07:00 UTC after.
        assert [h["Ce-Time"] for h, _ in received[:2]] == [
            "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"]
        assert 1 <= adapter.sent <= len(received) - 1  # the first answered 500, not counted
        adapter.set(("default", "p"), job)  # the same job: the task is kept
        assert list(adapter.jobs()) == [("default", "p")]
        adapter.set(("default", "p"), None)
        assert adapter.jobs() == {}
    finally:
        await adapter.close()
