"""The object store: etcd's role, in memory with SQLite write-through.

Theory of operation. One global revision counter (etcd's revision) orders every change; an
object's ``metadata.resourceVersion`` is the revision of its last write, a list's is the
counter. Every change appends an ``Event`` to a bounded ring (the watch history, etcd's
compaction window): a watch from revision N replays the ring's events after N, and N older than
the ring's start is 410 Gone, so the client relists. Objects live in dicts indexed by kind,
namespace and name; each write goes to SQLite (WAL) in the same call, so a restart reloads the
objects and the counter. The history is not persisted: after a restart every older revision is
Gone, exactly as after an etcd compaction.

The store knows nothing of HTTP, admission or asyncio: the server decides what to write and
then fans the returned events out to its watchers.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.kube.resources import Obj

__all__ = ["Event", "EventType", "Store"]

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

# 10,000 events: about ten minutes of a busy knpy serve; older watchers relist.
DEFAULT_HISTORY_EVENTS = 10_000


@dataclass(slots=True)
class Event:
    """One change: its revision, the kind's store key, the new object and the previous one."""

    rv: int
    type: EventType
    key: str
    obj: Obj
    old: Obj | None = None
    _obj_json: bytes | None = field(default=None, repr=False)
    _line: bytes | None = field(default=None, repr=False)

    def obj_json(self) -> bytes:
        """The object's JSON, encoded once for the database and every watcher."""
        if self._obj_json is None:
            self._obj_json = json.dumps(self.obj, separators=(",", ":")).encode()
        return self._obj_json

    def line(self) -> bytes:
        """The watch line ``{"type","object"}\n``."""
        if self._line is None:
            self._line = b'{"type":"%s","object":%s}\n' % (self.type.encode(), self.obj_json())
        return self._line


def _owner_uids(obj: Obj | None) -> frozenset[str]:
    if obj is None:
        return frozenset()
    refs = obj["metadata"].get("ownerReferences") or ()
    return frozenset(str(r["uid"]) for r in refs if isinstance(r, dict) and r.get("uid"))


def _ns_name(obj: Obj) -> tuple[str, str]:
    m = obj["metadata"]
    return str(m.get("namespace") or ""), str(m["name"])


class Store:
    """Objects by kind key, namespace and name, one revision counter, a bounded history."""

    def __init__(self, path: Path | None, history_events: int = DEFAULT_HISTORY_EVENTS) -> None:
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {}
        # The garbage collector's graph: owner uid -> dependents (kind key, namespace, name).
        self._owned: dict[str, set[tuple[str, str, str]]] = {}
        self._uids: set[str] = set()  # every stored object's uid: is an owner still there?
        self._history: deque[Event] = deque(maxlen=max(1, history_events))
        self.rv = 0
        # Revisions <= compacted_rv are no longer in the history (Gone).
        self.compacted_rv = 0
        self.listeners: list[Callable[[Event], None]] = []
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._open(path)

    # -- persistence --------------------------------------------------------------------------
    def _open(self, path: Path) -> None:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, namespace TEXT NOT NULL, "
            "name TEXT NOT NULL, rv INTEGER NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (kind, namespace, name))"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        row = db.execute("SELECT v FROM meta WHERE k = 'rv'").fetchone()
        top = db.execute("SELECT MAX(rv) FROM objects").fetchone()
        self.rv = max(int(row[0]) if row else 0, int(top[0] or 0) if top else 0)
        for kind, ns, name, _rv, body in db.execute("SELECT * FROM objects"):
            obj = json.loads(body)
            self._objects.setdefault(kind, {}).setdefault(ns, {})[name] = obj
            self._index_owners(kind, ns, name, None, obj)
            self._uids.add(str(obj["metadata"].get("uid")))
        self.compacted_rv = self.rv
        self._db = db

    def _persist(self, ev: Event) -> None:
        """One autocommitted statement per write (WAL, synchronous=NORMAL: no fsync per
        commit). A put records its revision in its row; a delete records it in ``meta``
        first, so the counter reloads as the larger of the two and never goes back."""
        if self._db is None:
            return
        ns, name = _ns_name(ev.obj)
        db = self._db
        if ev.type == "DELETED":
            db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (str(ev.rv),))
            db.execute(
                "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (ev.key, ns, name),
            )
        else:
            db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                (ev.key, ns, name, ev.rv, ev.obj_json().decode()),
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (str(self.rv),))
            self._db.close()
            self._db = None

    # -- reads (callers must not mutate what they get) ---------------------------------------
    def get(self, key: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get(namespace, {}).get(name)

    def list(self, key: str, namespace: str | None = None) -> list[Obj]:
        by_ns = self._objects.get(key, {})
        if namespace is not None:
            return list(by_ns.get(namespace, {}).values())
        return [o for objs in by_ns.values() for o in objs.values()]

    def all_objects(self) -> Iterator[tuple[str, Obj]]:
        for key, by_ns in self._objects.items():
            for objs in by_ns.values():
                for o in objs.values():
                    yield key, o

    def has_uid(self, uid: str) -> bool:
        return uid in self._uids

    def owned_by(self, uid: str) -> builtins.list[tuple[str, str, str]]:
        """The (kind key, namespace, name) of the objects with an ownerReference to ``uid``."""
        return sorted(self._owned.get(uid, ()))

    def _index_owners(self, key: str, ns: str, name: str, old: Obj | None, new: Obj | None
                      ) -> None:
        before = _owner_uids(old)
        after = _owner_uids(new)
        if before == after:
            return
        ref = (key, ns, name)
        for uid in before - after:
            deps = self._owned.get(uid)
            if deps is not None:
                deps.discard(ref)
                if not deps:
                    del self._owned[uid]
        for uid in after - before:
            self._owned.setdefault(uid, set()).add(ref)

    def count(self) -> int:
        return sum(len(o) for by_ns in self._objects.values() for o in by_ns.values())

    # -- writes: each takes the object as it should be stored (metadata filled by the caller) -
    def put(self, key: str, obj: Obj) -> Event:
        """Create or replace the object; stamps the next resourceVersion on it."""
        ns, name = _ns_name(obj)
        objs = self._objects.setdefault(key, {}).setdefault(ns, {})
        old = objs.get(name)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        objs[name] = obj
        self._index_owners(key, ns, name, old, obj)
        self._uids.add(str(obj["metadata"].get("uid")))
        return self._emit(Event(self.rv, "MODIFIED" if old is not None else "ADDED", key, obj,
                                old))

    def remove(
        self, key: str, namespace: str, name: str, final: Obj | None = None
    ) -> Event | None:
        """Delete the object; the DELETED event carries it (or ``final``, its last state when
        the delete completes an update, as the removal of the last finalizer does) with a
        fresh resourceVersion."""
        objs = self._objects.get(key, {}).get(namespace)
        if objs is None or name not in objs:
            return None
        old = objs.pop(name)
        if not objs:
            del self._objects[key][namespace]
        self._index_owners(key, namespace, name, old, None)
        self._uids.discard(str(old["metadata"].get("uid")))
        self.rv += 1
        # Kubernetes' DELETED event carries the object at the deletion's revision.
        last = final if final is not None else old
        gone = {**last, "metadata": {**last["metadata"], "resourceVersion": str(self.rv)}}
        return self._emit(Event(self.rv, "DELETED", key, gone, old))

    def _emit(self, ev: Event) -> Event:
        self._persist(ev)
        if len(self._history) == self._history.maxlen:
            self.compacted_rv = self._history[0].rv
        self._history.append(ev)
        for listener in self.listeners:
            listener(ev)
        # The ring keeps the objects only (they share their untouched subtrees with the next
        # version); a replay after a reconnect encodes its lines again.
        ev._obj_json = ev._line = None
        return ev

    # -- history ------------------------------------------------------------------------------
    def since(self, rv: int) -> builtins.list[Event] | None:
        """Events after revision ``rv``, or None when they are no longer kept (410 Gone)."""
        if rv < self.compacted_rv:
            return None
        if rv >= self.rv:
            return []
        # The ring is ordered by revision; scan from the end, it is usually short.
        out: builtins.list[Event] = []
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            out.append(ev)
        out.reverse()
        return out
