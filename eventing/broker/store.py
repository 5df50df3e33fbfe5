"""The default broker backend: the event log in one SQLite database in WAL mode.

It implements ``eventing.broker.backend.EventLog`` (see there for the contract). Theory of
operation:

- **Group commit.** ``append`` only queues its rows and returns a future. One writer thread
  takes everything queued, inserts it and commits (``synchronous=FULL``: the WAL is fsynced,
  so an acknowledged event survives a SIGKILL and a power cut; ``NORMAL`` survives SIGKILL
  only), then resolves the futures. While it commits, the next batch gathers, so one fsync
  (4-10 ms here) covers every event that arrived meanwhile: throughput grows with load instead
  of being one fsync per event.
- **Sequence numbers** are assigned at queueing time from one counter, so they are known
  before the commit, increase in arrival order and are unique across brokers.
- **Cursors.** A trigger's progress is one number: every record up to it is finished. Acks
  that arrive out of order (deliveries run concurrently) wait in memory until the gap closes;
  the cursors are written with the next commit (or every ``CURSOR_FLUSH_S``). A crash
  therefore repeats at most the deliveries of the last fraction of a second and those in
  flight: those are the duplicates at-least-once allows.
- **A window.** A subscription hands out records at most ``MAX_SPAN`` past its cursor, so that
  one event retried for minutes cannot make the in-memory ack set (and the repeats after a
  crash) grow without bound; past it the trigger waits for that event.
- **The tail.** Recently appended records stay in memory per broker, so a trigger that keeps
  up reads nothing from disk; one that falls behind the tail (or after a restart) reads its
  records back from SQLite in a reader thread.
- **Cleaning.** Records every trigger of their broker has finished are deleted with the next
  commits (a broker without triggers keeps nothing).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import json
import sqlite3
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Final, Literal

from eventing.broker.backend import Headers, Record, StoreError, Subscription
from shared.cloudevent import Event, Form, compact_json

__all__ = ["DATABASE_NAME", "SqliteEventLog"]

DATABASE_NAME: Final = "eventing-broker.sqlite3"
# Records a subscription may hand out past its cursor (see "A window").
MAX_SPAN: Final = 10_000
# Cursors not carried by a commit are written this often.
CURSOR_FLUSH_S: Final = 0.2
# Records kept in memory per broker for the triggers that keep up.
TAIL_RECORDS: Final = 50_000


def _encode_headers(headers: Headers) -> str | None:
    if not headers:
        return None
    return json.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers])


def _decode_headers(text: str | None) -> Headers:
    if not text:
        return []
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in json.loads(text)]


class _Tail:
    """One broker's recent records in memory, in seq order."""

    __slots__ = ("recs", "seqs")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.recs: list[Record] = []

    def first(self) -> int | None:
        return self.seqs[0] if self.seqs else None

    def after(self, seq: int, limit: int, until: int) -> list[Record]:
        """Records with ``seq < s <= until``, at most ``limit``."""
        i = bisect.bisect_right(self.seqs, seq)
        j = bisect.bisect_right(self.seqs, until, lo=i)
        return self.recs[i : min(j, i + limit)]

    def trim(self, upto: int, cap: int) -> None:
        """Drop records up to ``upto`` (finished by all) and any beyond ``cap`` records."""
        i = max(bisect.bisect_right(self.seqs, upto), len(self.seqs) - cap)
        if i > 0:
            del self.seqs[:i]
            del self.recs[:i]


class _SqliteSubscription:
    """A trigger's queue over the log: its cursor, the records in flight past it, and how far
    it has read (``next``: the last seq handed out or skipped as another broker's)."""

    __slots__ = ("broker", "cursor", "flight", "log", "next", "trigger", "wake")

    def __init__(self, log: SqliteEventLog, trigger: str, broker: str, cursor: int) -> None:
        self.log = log
        self.trigger = trigger
        self.broker = broker
        self.cursor = cursor  # every record <= cursor is finished
        self.next = cursor
        # Handed out, not acked yet, in seq order (a dict keeps insertion order).
        self.flight: dict[int, None] = {}
        self.wake = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"<Subscription {self.trigger} of {self.broker} cursor={self.cursor} "
            f"read={self.next} in_flight={len(self.flight)}>"
        )

    async def next_batch(self, limit: int) -> list[Record]:
        while True:
            until = self.cursor + MAX_SPAN
            if self.next < until:
                batch = await self.log.read(self.broker, self.next, limit, until)
                if self.log.forgotten(self):
                    return []
                if batch:
                    for r in batch:
                        self.flight[r.seq] = None
                    self.next = batch[-1].seq
                    return batch
                # Nothing of ours up to the stored end: the cursor may step over the rest.
                self.next = max(self.next, min(self.log.committed, until))
                self._advance()
            self.wake.clear()
            await self.wake.wait()

    def ack(self, seq: int) -> None:
        if self.flight.pop(seq, 0) is None:
            self._advance()

    def _advance(self) -> None:
        flight = self.flight
        cursor = next(iter(flight)) - 1 if flight else self.next
        if cursor > self.cursor:
            self.cursor = cursor
            self.log.cursor_moved(self)
            self.wake.set()


class SqliteEventLog:
    """The default backend (module doc). ``path`` is the database file."""

    def __init__(
        self, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.last_seq = 0  # the last seq queued for storage
        self._committed = 0  # the last seq stored
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-writer")
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending: list[tuple[int, str, str, bytes | None, int, str | None]] = []
        self._waiters: list[tuple[asyncio.Future[None], str, list[Record]]] = []
        self._flushing = False
        self._tails: dict[str, _Tail] = {}
        self._subs: dict[str, _SqliteSubscription] = {}
        # Cursors as stored, by trigger: (broker, cursor). What changed waits in _dirty.
        self._cursors: dict[str, tuple[str, int]] = {}
        self._dirty: dict[str, tuple[str, int]] = {}
        self._forgotten: set[str] = set()
        self._cleaned: dict[str, int] = {}  # per broker: records up to it are deleted
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.appended = 0

    def __repr__(self) -> str:
        return (
            f"<SqliteEventLog {self.path.name} last={self.last_seq} committed={self._committed} "
            f"triggers={len(self._subs)} commits={self.commits}>"
        )

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._loop.run_in_executor(self._writer, self._open_writer)
        await self._loop.run_in_executor(self._reader, self._open_reader)
        self._ticker = self._loop.call_later(CURSOR_FLUSH_S, self._tick)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _open_writer(self) -> None:
        conn = self._wconn = self._connect()
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS events(
                seq INTEGER PRIMARY KEY, broker TEXT NOT NULL, attrs TEXT NOT NULL,
                data BLOB, form INTEGER NOT NULL, headers TEXT);
            CREATE INDEX IF NOT EXISTS events_by_broker ON events(broker, seq);
            CREATE TABLE IF NOT EXISTS cursors(
                trigger TEXT PRIMARY KEY, broker TEXT NOT NULL, done INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            """
        )
        last = conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        stored = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        self.last_seq = self._committed = max(last, stored[0] if stored else 0)
        for trigger, broker, done in conn.execute("SELECT trigger, broker, done FROM cursors"):
            self._cursors[trigger] = (broker, done)

    def _open_reader(self) -> None:
        self._rconn = self._connect()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        while self._flushing or self._pending or self._dirty:
            if not self._flushing:
                self._flush()
            await asyncio.sleep(0.005)
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
        self._writer.shutdown()
        self._reader.shutdown()

    # -- append -----------------------------------------------------------------------------
    def append(self, broker: str, records: Sequence[tuple[Event, Headers]]) -> Awaitable[None]:
        assert self._loop is not None, "open() first"
        fut: asyncio.Future[None] = self._loop.create_future()
        recs: list[Record] = []
        pending = self._pending
        for event, headers in records:
            self.last_seq += 1
            seq = self.last_seq
            pending.append(
                (
                    seq,
                    broker,
                    compact_json(event.attrs),
                    event.data,
                    int(event.form),
                    _encode_headers(headers),
                )
            )
            recs.append(Record(seq, event, headers))
        self._waiters.append((fut, broker, recs))
        if not self._flushing:
            self._flush()
        return fut

    def _flush(self) -> None:
        """Start one group commit of everything queued and the cursors that moved."""
        assert self._loop is not None
        rows, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        cursors, self._dirty = self._dirty, {}
        forgotten, self._forgotten = self._forgotten, set()
        deletes = self._cleanable()
        self._flushing = True
        last = self.last_seq
        job = self._loop.run_in_executor(
            self._writer, self._commit, rows, cursors, forgotten, deletes, last
        )
        job.add_done_callback(lambda f: self._committed_cb(f, waiters, last, rows))

    def _commit(
        self,
        rows: list[tuple[int, str, str, bytes | None, int, str | None]],
        cursors: dict[str, tuple[str, int]],
        forgotten: set[str],
        deletes: list[tuple[str, int]],
        last: int,
    ) -> None:
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            if rows:
                conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?)", rows)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (last,))
            if cursors:
                conn.executemany(
                    "INSERT OR REPLACE INTO cursors VALUES (?,?,?)",
                    [(t, b, c) for t, (b, c) in cursors.items()],
                )
            if forgotten:
                conn.executemany("DELETE FROM cursors WHERE trigger=?", [(t,) for t in forgotten])
            if deletes:
                conn.executemany("DELETE FROM events WHERE broker=? AND seq<=?", deletes)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _committed_cb(
        self,
        job: asyncio.Future[None],
        waiters: list[tuple[asyncio.Future[None], str, list[Record]]],
        last: int,
        rows: list[tuple[int, str, str, bytes | None, int, str | None]],
    ) -> None:
        self._flushing = False
        err = job.exception()
        if err is not None:
            failure = StoreError(f"the event log could not store the events: {err}")
            for fut, _, _ in waiters:
                if not fut.done():
                    fut.set_exception(failure)
            # Those seqs are lost; readers step over them (they are in no tail and no table).
        else:
            self.commits += 1
            self._committed = last
            self.appended += len(rows)
            woken: set[str] = set()
            for fut, broker, recs in waiters:
                tail = self._tails.get(broker)
                if tail is None:
                    tail = self._tails[broker] = _Tail()
                tail.seqs.extend(r.seq for r in recs)
                tail.recs.extend(recs)
                woken.add(broker)
                if not fut.done():
                    fut.set_result(None)
            for sub in self._subs.values():
                if sub.broker in woken:
                    sub.wake.set()
        if self._pending or self._dirty or self._forgotten:
            self._flush()

    def _cleanable(self) -> list[tuple[str, int]]:
        """(broker, seq): every record up to seq is finished by all the broker's triggers.

        Triggers that are stored but not subscribed yet (at start) count by their cursor."""
        low: dict[str, int] = {}
        for broker, cursor in self._cursors.values():
            low[broker] = min(low.get(broker, cursor), cursor)
        for sub in self._subs.values():
            low[sub.broker] = min(low.get(sub.broker, sub.cursor), sub.cursor)
        for broker, tail in self._tails.items():
            if broker not in low:  # no trigger at all: nothing will read it
                low[broker] = self._committed
            tail.trim(low[broker], TAIL_RECORDS)
        deletes = [(b, s) for b, s in low.items() if s > self._cleaned.get(b, 0)]
        self._cleaned.update(deletes)
        return deletes

    def _tick(self) -> None:
        assert self._loop is not None
        if (self._dirty or self._forgotten) and not self._flushing:
            self._flush()
        self._ticker = self._loop.call_later(CURSOR_FLUSH_S, self._tick)

    # -- subscriptions ----------------------------------------------------------------------
    def subscribe(self, trigger: str, broker: str) -> Subscription:
        sub = self._subs.get(trigger)
        if sub is not None and sub.broker == broker:
            return sub
        stored = self._cursors.get(trigger)
        if stored is not None and stored[0] == broker:
            cursor = stored[1]
        else:
            cursor = self.last_seq  # a new trigger sees what arrives from now on
            self._dirty[trigger] = (broker, cursor)
        self._cursors[trigger] = (broker, cursor)
        sub = _SqliteSubscription(self, trigger, broker, cursor)
        self._subs[trigger] = sub
        return sub

    def forget(self, trigger: str) -> None:
        sub = self._subs.pop(trigger, None)
        if sub is not None:
            sub.wake.set()
        self._cursors.pop(trigger, None)
        self._dirty.pop(trigger, None)
        self._forgotten.add(trigger)

    def triggers(self) -> set[str]:
        return set(self._cursors)

    def cursor_moved(self, sub: _SqliteSubscription) -> None:
        self._cursors[sub.trigger] = (sub.broker, sub.cursor)
        self._dirty[sub.trigger] = (sub.broker, sub.cursor)

    def forgotten(self, sub: _SqliteSubscription) -> bool:
        return self._subs.get(sub.trigger) is not sub

    @property
    def committed(self) -> int:
        """The last seq stored."""
        return self._committed

    async def read(self, broker: str, after: int, limit: int, until: int) -> list[Record]:
        """Up to ``limit`` of ``broker``'s records in ``(after, until]``, from the tail or,
        below it, from the database; they count as in flight for the calling subscription."""
        tail = self._tails.get(broker)
        first = tail.first() if tail is not None else None
        until = min(until, self._committed)
        if after >= until:
            return []
        if first is not None and after >= first - 1:
            assert tail is not None
            batch = tail.after(after, limit, until)
        else:
            stop = until if first is None else min(until, first - 1)
            assert self._loop is not None
            batch = await self._loop.run_in_executor(
                self._reader, self._select, broker, after, limit, stop
            )
            if not batch and first is not None and stop < until:
                batch = tail.after(stop, limit, until) if tail is not None else []
        return batch

    async def depths(self) -> dict[str, int]:
        """Per subscribed trigger: its broker's stored records it has not been handed yet
        (counted in the tail, or in the database when it is behind the tail) plus those in
        flight. Exact, as the log is: records acked past a gap are not counted."""
        out: dict[str, int] = {}
        behind: list[_SqliteSubscription] = []
        for uid, sub in self._subs.items():
            tail = self._tails.get(sub.broker)
            first = tail.first() if tail is not None else None
            if tail is None or first is None:
                # Nothing in memory: nothing stored since the start, or all of it read back.
                if sub.next >= self._committed:
                    out[uid] = len(sub.flight)
                else:
                    behind.append(sub)
            elif sub.next >= first - 1:
                out[uid] = len(tail.seqs) - bisect.bisect_right(tail.seqs, sub.next) + len(
                    sub.flight
                )
            else:
                behind.append(sub)
        if behind:
            assert self._loop is not None
            queries = [(s.broker, s.next, self._committed) for s in behind]
            counts = await self._loop.run_in_executor(self._reader, self._count, queries)
            for sub, n in zip(behind, counts, strict=True):
                out[sub.trigger] = n + len(sub.flight)
        return out

    def _count(self, queries: list[tuple[str, int, int]]) -> list[int]:
        conn = self._rconn
        assert conn is not None
        return [
            conn.execute(
                "SELECT count(*) FROM events WHERE broker=? AND seq>? AND seq<=?", q
            ).fetchone()[0]
            for q in queries
        ]

    def _select(self, broker: str, after: int, limit: int, until: int) -> list[Record]:
        conn = self._rconn
        assert conn is not None
        rows = conn.execute(
            "SELECT seq, attrs, data, form, headers FROM events "
            "WHERE broker=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (broker, after, until, limit),
        ).fetchall()
        return [
            Record(seq, Event(json.loads(attrs), data, Form(form)), _decode_headers(headers))
            for seq, attrs, data, form, headers in rows
        ]
