"""The SQLite event log: cursors that survive a restart, acks out of order, new triggers at the
end, forgetting, cleaning, the window, brokers side by side, reads below the in-memory tail."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventing.broker import store
from eventing.broker.backend import Record, Subscription
from eventing.broker.store import SqliteEventLog
from shared.cloudevent import Event, Form


def event(n: int) -> Event:
    return Event({"specversion": "1.0", "id": str(n), "source": "/s", "type": "t"}, b"d",
                 Form.BINARY)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[SqliteEventLog]:
    lg = SqliteEventLog(tmp_path / "log.sqlite3", synchronous="NORMAL")
    await lg.open()
    yield lg
    await lg.close()


async def append(lg: SqliteEventLog, broker: str, *ns: int) -> None:
    await asyncio.gather(*(lg.append(broker, [(event(n), [(b"x-request-id", b"r")])]) for n in ns))


async def take(sub: Subscription, limit: int = 100, timeout_s: float = 2.0) -> list[Record]:
    return await asyncio.wait_for(sub.next_batch(limit), timeout_s)


def ids(batch: list[Record]) -> list[str]:
    return [str(r.event.attrs["id"]) for r in batch]


async def test_restart_resumes_at_the_cursor(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    lg = SqliteEventLog(path)
    await lg.open()
    sub = lg.subscribe("t1", "ns/b")
    await append(lg, "ns/b", *range(10))
    batch = await take(sub)
    assert ids(batch) == [str(n) for n in range(10)]
    for r in batch[:5]:
        sub.ack(r.seq)
    await lg.close()

    again = SqliteEventLog(path)
    await again.open()
    try:
        assert again.triggers() == {"t1"}
        rest = await take(again.subscribe("t1", "ns/b"))
        assert ids(rest) == ["5", "6", "7", "8", "9"]
        assert rest[0].headers == [(b"x-request-id", b"r")]
        assert rest[0].event == event(5)
    finally:
        await again.close()


async def test_acks_out_of_order_move_the_cursor_over_a_closed_gap(log: SqliteEventLog) -> None:
    sub = log.subscribe("t1", "ns/b")
    await append(log, "ns/b", 1, 2, 3)
    a, b, c = await take(sub)
    sub.ack(c.seq)
    assert sub.cursor == 0  # type: ignore[attr-defined]
    sub.ack(a.seq)
    assert sub.cursor == a.seq  # type: ignore[attr-defined]
    sub.ack(b.seq)
    assert sub.cursor == c.seq  # type: ignore[attr-defined]


async def test_a_new_trigger_starts_at_the_end(log: SqliteEventLog) -> None:
    await append(log, "ns/b", 1, 2)
    sub = log.subscribe("late", "ns/b")
    await append(log, "ns/b", 3)
    assert ids(await take(sub)) == ["3"]


async def test_brokers_side_by_side(log: SqliteEventLog) -> None:
    a = log.subscribe("ta", "ns/a")
    b = log.subscribe("tb", "ns/b")
    for n in range(6):
        await append(log, "ns/a" if n % 2 else "ns/b", n)
    got_a = await take(a)
    assert ids(got_a) == ["1", "3", "5"]
    assert ids(await take(b)) == ["0", "2", "4"]
    for r in got_a:
        a.ack(r.seq)
    assert a.cursor == got_a[-1].seq  # type: ignore[attr-defined]


async def test_forget_and_clean(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    lg = SqliteEventLog(path)
    await lg.open()
    sub = lg.subscribe("t1", "ns/b")
    lg.subscribe("t2", "ns/b")
    await append(lg, "ns/b", 1, 2, 3)
    for r in await take(sub):
        sub.ack(r.seq)
    lg.forget("t2")
    await append(lg, "ns/b", 4)  # a commit carries the cursor, the forgetting and the cleaning
    await append(lg, "ns/b", 5)
    await lg.close()
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT trigger FROM cursors")] == ["t1"]
        # 1-3 finished by the only trigger left: cleaned; 4 and 5 wait for it.
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 2


async def test_a_broker_without_triggers_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    lg = SqliteEventLog(path)
    await lg.open()
    await append(lg, "ns/b", 1, 2)
    await append(lg, "ns/b", 3)
    await lg.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] <= 1
    again = SqliteEventLog(path)
    await again.open()
    sub = again.subscribe("t", "ns/b")
    await append(again, "ns/b", 4)
    assert ids(await take(sub)) == ["4"]  # seqs never go back, even after a cleaning
    await again.close()


async def test_the_window_holds_a_trigger_behind_its_oldest_unfinished(
    log: SqliteEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MAX_SPAN", 3)
    sub = log.subscribe("t1", "ns/b")
    await append(log, "ns/b", *range(6))
    first = await take(sub)
    assert ids(first) == ["0", "1", "2"]
    for r in first[1:]:
        sub.ack(r.seq)
    with pytest.raises(TimeoutError):
        await take(sub, timeout_s=0.2)
    sub.ack(first[0].seq)
    assert ids(await take(sub)) == ["3", "4", "5"]


async def test_reads_below_the_tail_come_from_the_database(
    log: SqliteEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "TAIL_RECORDS", 2)
    slow = log.subscribe("slow", "ns/b")
    for n in range(8):
        await append(log, "ns/b", n)  # each commit trims the tail to 2 records
    got: list[str] = []
    while len(got) < 8:
        batch = await take(slow, limit=3)
        got += ids(batch)
        for r in batch:
            slow.ack(r.seq)
    assert got == [str(n) for n in range(8)]
