"""Tests for activator.reporter: Knative's activator ConcurrencyReporter, by its own scenarios.

The scenarios are those of Knative's TestStats and TestConcurrencyReporterRun
(pkg/activator/handler/concurrency_reporter_test.go), with its times in seconds: a table of
request starts, ends and report ticks on a fake clock, and the stats the autoscaler receives,
the immediate cold-start stat included. The driver below does what ActivatorHandler does with
a revision's RevisionStats: keep the current one, and ask the reporter for a new one only when
the reporter has forgotten it (``removed``), which is what makes a request "the first".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from activator.cluster import RevisionKey
from activator.reporter import ConcurrencyReporter, RevisionStats, removed_stats
from shared.stat_proto import StatData, WireStat, decode_wire_stats

POD = "the-best-activator"
REV1 = RevisionKey("test", "rev1")
REV2 = RevisionKey("test", "rev2")
REV3 = RevisionKey("test", "rev3")


class MemorySink:
    """A StatSink that keeps every payload, decoded as the autoscaler would."""

    def __init__(self) -> None:
        self.payloads: list[list[WireStat]] = []

    def send(self, payload: bytes) -> None:
        self.payloads.append(decode_wire_stats(payload))

    def status(self) -> str | None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def stats(self) -> list[WireStat]:
        return [stat for payload in self.payloads for stat in payload]


@dataclass(frozen=True)
class Start:
    key: RevisionKey
    at: float
    id: int = 0


@dataclass(frozen=True)
class End:
    key: RevisionKey
    at: float
    id: int = 0


@dataclass(frozen=True)
class Tick:
    at: float


Op = Start | End | Tick


def stat(key: RevisionKey, concurrency: float, count: float) -> WireStat:
    return (
        key.namespace,
        key.name,
        StatData(pod_name=POD, average_concurrent_requests=concurrency, request_count=count),
    )


class HandlerDriver:
    """Requests in and out of a reporter as ActivatorHandler.handle/finished do them."""

    def __init__(self, reporter: ConcurrencyReporter) -> None:
        self.reporter = reporter
        self.current: dict[RevisionKey, RevisionStats] = {}
        self.held: dict[int, RevisionStats] = {}

    def start(self, key: RevisionKey, now: float, request_id: int = 0) -> None:
        stats = self.current.get(key) or removed_stats()
        if stats.removed:
            stats = self.current[key] = self.reporter.entry(key, now)
        stats.req_in(now)
        self.held[request_id] = stats

    def end(self, now: float, request_id: int = 0) -> None:
        self.held.pop(request_id).req_out(now)


def run(ops: list[Op]) -> list[WireStat]:
    sink = MemorySink()
    reporter = ConcurrencyReporter(POD, sink)
    driver = HandlerDriver(reporter)
    for op in ops:
        if isinstance(op, Start):
            driver.start(op.key, op.at, op.id)
        elif isinstance(op, End):
            driver.end(op.at, op.id)
        else:
            messages = reporter.report(op.at)
            if messages:
                sink.payloads.append(messages)
    return sink.stats


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        pytest.param(
            [Start(REV1, 0), Start(REV2, 0, id=1)],
            [stat(REV1, 1, 1), stat(REV2, 1, 1)],
            id="scale-from-zero-sends-stat",
        ),
        pytest.param(
            [Start(REV1, 0), End(REV1, 1), Start(REV1, 1), End(REV1, 2), Tick(2)],
            # 1 in flight for 2 s, 2 requests; less the 1 and 1 of the cold stat.
            [stat(REV1, 1, 1), stat(REV1, 0, 1)],
            id="in-n-out",
        ),
        pytest.param(
            [Start(REV1, 0), Start(REV1, 0, id=1), Tick(1), Tick(2)],
            [
                stat(REV1, 1, 1),
                stat(REV1, 1, 1),  # 2 in flight, less the cold stat's 1
                stat(REV1, 2, 0),  # next period: both still in flight, no new request
            ],
            id="scale-to-two",
        ),
        pytest.param(
            [Start(REV1, 0), End(REV1, 1), Tick(1), Tick(2), Start(REV1, 3)],
            [
                stat(REV1, 1, 1),  # cold
                stat(REV1, 0, 0),  # the cold stat's request, discounted; not forgotten yet
                stat(REV1, 0, 0),  # a whole period idle: reported, then forgotten
                stat(REV1, 1, 1),  # so the next request is a cold start again
            ],
            id="scale-from-zero-after-tick-sends-stat",
        ),
        pytest.param(
            [Start(REV1, 0), Start(REV2, 0, id=1), Start(REV3, 0, id=2), Tick(0)],
            [
                stat(REV1, 1, 1),
                stat(REV2, 1, 1),
                stat(REV3, 1, 1),
                stat(REV1, 0, 0),
                stat(REV2, 0, 0),
                stat(REV3, 0, 0),
            ],
            id="multiple-revisions-tick",
        ),
        pytest.param(
            [Start(REV1, 0, id=1), Start(REV1, 0, id=2), End(REV1, 1, id=2), End(REV1, 2, id=1)],
            [stat(REV1, 1, 1)],
            id="interleaved-requests-no-tick",
        ),
        pytest.param(
            [
                Start(REV1, 0, id=1),
                Start(REV1, 0, id=2),
                End(REV1, 1, id=2),
                End(REV1, 2, id=1),
                Tick(2),
            ],
            # 2 for 1 s then 1 for 1 s: 1.5 on average, less the cold 1.
            [stat(REV1, 1, 1), stat(REV1, 0.5, 1)],
            id="interleaved-requests",
        ),
        pytest.param(
            [Start(REV1, 0, id=1), Start(REV1, 0, id=2), Start(REV1, 0, id=3), Tick(1), Tick(2)],
            # Knative's TestConcurrencyReporterRun: 3 in flight, discounted by the cold stat.
            [stat(REV1, 1, 1), stat(REV1, 2, 2), stat(REV1, 3, 0)],
            id="run-three-in-flight",
        ),
        pytest.param(
            [Start(REV1, 0), Tick(0.5), End(REV1, 0.75), Tick(1.5)],
            # 0.5 s at 1: 1 - 1 = 0 (never negative). Then 1 for 0.25 s of 1 s: 0.25.
            [stat(REV1, 1, 1), stat(REV1, 0, 0), stat(REV1, 0.25, 0)],
            id="partial-concurrency-floors-at-zero",
        ),
        pytest.param(
            [Start(REV1, 0), Tick(1), End(REV1, 1.5), Tick(2), Tick(3), Tick(4)],
            # Idle for the whole of [2, 3]: reported once as 0, then no more messages.
            [stat(REV1, 1, 1), stat(REV1, 0, 0), stat(REV1, 0.5, 0), stat(REV1, 0, 0)],
            id="forgotten-after-an-idle-period",
        ),
    ],
)
def test_stats(ops: list[Op], expected: list[WireStat]) -> None:
    # Knative sorts both by revision name (its map iteration has no order); so do we.
    got = sorted(run(ops), key=lambda s: s[1])
    assert got == sorted(expected, key=lambda s: s[1])


def test_held_request_keeps_the_entry_through_an_idle_average() -> None:
    """A request still in flight at a tick keeps its revision tracked (Knative's refs)."""
    sink = MemorySink()
    reporter = ConcurrencyReporter(POD, sink)
    driver = HandlerDriver(reporter)
    driver.start(REV1, 0.0)
    reporter.report(0.0)  # no time elapsed: average 0, but a request is held
    assert REV1 in reporter.revisions
    driver.end(1.0)
    reporter.report(1.0)  # average 1 over the period: kept
    reporter.report(2.0)  # idle for a whole period: forgotten
    assert REV1 not in reporter.revisions
    assert driver.current[REV1].removed


def test_queued_requests_count_as_demand() -> None:
    """A revision at zero holds its requests: each counts from arrival, waiting included."""
    sink = MemorySink()
    reporter = ConcurrencyReporter(POD, sink)
    driver = HandlerDriver(reporter)
    for i in range(10):  # ten requests arrive in the first 100 ms and wait for a pod
        driver.start(REV1, i * 0.01, i)
    (message,) = reporter.report(1.0)
    # sum of (1 - 0.01 i) for i < 10 = 9.55, less the cold stat's 1.
    assert message[2].average_concurrent_requests == pytest.approx(8.55)
    assert message[2].request_count == 9
    (message,) = reporter.report(2.0)
    assert (message[2].average_concurrent_requests, message[2].request_count) == (10, 0)


def test_repr() -> None:
    reporter = ConcurrencyReporter(POD, MemorySink())
    reporter.entry(REV1, 0.0).req_in(0.0)
    assert repr(reporter) == "<ConcurrencyReporter the-best-activator revisions=1>"
    assert repr(reporter.revisions[REV1]) == "<RevisionStats test/rev1 in=1 removed=False>"


async def test_run_sends_one_message_per_period() -> None:
    """The asyncio shell: every period one WireStatMessages with every tracked revision."""
    sink = MemorySink()
    reporter = ConcurrencyReporter(POD, sink, period_s=0.02)
    driver = HandlerDriver(reporter)
    driver.start(REV1, time.monotonic())  # the reporter's clock
    driver.start(REV2, time.monotonic(), 1)
    reporter.start()
    try:
        async with asyncio.timeout(2):
            while len(sink.payloads) < 4:  # 2 cold stats, then 2 periodic reports
                await asyncio.sleep(0.005)
    finally:
        reporter.stop()
    cold, periodic = sink.payloads[:2], sink.payloads[2:4]
    assert [len(p) for p in cold] == [1, 1]
    assert all(sorted(name for _, name, _ in p) == ["rev1", "rev2"] for p in periodic)
    # One request held throughout by each: the second period reports exactly 1 for each.
    assert [s.average_concurrent_requests for _, _, s in periodic[1]] == [1.0, 1.0]
