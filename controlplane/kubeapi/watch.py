"""Fan-out of store events to watch streams.

Theory of operation. The store calls ``WatchHub.publish`` synchronously for each change; the
hub hands the event to each watcher of that kind, which filters it (namespace, label and field
selectors) and appends the encoded line to its own bounded queue, waking its stream. Nothing
here awaits, so a slow client never delays the writer or the other watchers: its queue grows
to ``max_queue`` lines and then the watcher is closed, and the client re-watches (from its last
resourceVersion, or relists on 410), as client-go's reflector does when kube-apiserver drops a
slow watcher. The lines are the store's once-encoded bytes, shared by every watcher.

Label selector watches see an object that stops matching as DELETED and one that starts
matching as ADDED, as kube-apiserver's watch cache reports them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from controlplane.kubeapi.selectors import FieldSelector
from controlplane.kubeapi.store import Event, EventType
from shared.kube.labels import Selector
from shared.kube.resources import Obj

__all__ = ["Encoder", "WatchHub", "Watcher"]

# 5,000 pending events: a watcher this far behind is closed and relists.
DEFAULT_MAX_QUEUE = 5_000

# (type, object, event) -> the line to send; the default reuses ``event.line()``.
Encoder = Callable[[EventType, Obj, Event], bytes]


def _default_encoder(typ: EventType, obj: Obj, ev: Event) -> bytes:
    if typ == ev.type and obj is ev.obj:
        return ev.line()
    return Event(ev.rv, typ, ev.key, obj).line()


class Watcher:
    """One watch stream's filter and its pending lines."""

    __slots__ = (
        "closed",
        "encode",
        "fields",
        "key",
        "labels",
        "lines",
        "max_queue",
        "namespace",
        "on_overflow",
        "overflowed",
        "wake",
    )

    def __init__(
        self,
        key: str,
        namespace: str | None,
        labels: Selector,
        fields: FieldSelector,
        encode: Encoder | None = None,
        max_queue: int | None = None,
    ) -> None:
        self.key = key
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.encode: Encoder = encode or _default_encoder
        self.max_queue = DEFAULT_MAX_QUEUE if max_queue is None else max_queue
        self.lines: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.overflowed = False
        # Called once on overflow: the server aborts the connection, since a client that
        # stopped reading would otherwise hold its stream (and the socket) open forever.
        self.on_overflow: Callable[[], None] | None = None

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def offer(self, ev: Event) -> None:
        """Queue the event if it concerns this watch; close the watch on overflow."""
        if self.closed:
            return
        now = self.matches(ev.obj)
        before = ev.type == "MODIFIED" and self.matches(ev.old)
        typ: EventType
        if ev.type == "MODIFIED":
            if now and before:
                typ = "MODIFIED"
            elif now:
                typ = "ADDED"
            elif before:
                typ = "DELETED"
            else:
                return
        elif now:
            typ = ev.type
        else:
            return
        self.push(self.encode(typ, ev.obj, ev))

    def push(self, line: bytes) -> None:
        if len(self.lines) >= self.max_queue:
            self.closed = True
            self.overflowed = True
            self.lines.clear()
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self.lines.append(line)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class WatchHub:
    """The watchers of each kind; ``publish`` is the store's listener."""

    def __init__(self) -> None:
        # dicts as ordered sets: fan-out order is subscription order.
        self._watchers: dict[str, dict[Watcher, None]] = {}

    def add(self, w: Watcher) -> None:
        self._watchers.setdefault(w.key, {})[w] = None

    def remove(self, w: Watcher) -> None:
        ws = self._watchers.get(w.key)
        if ws is not None:
            ws.pop(w, None)

    def watchers(self, key: str) -> list[Watcher]:
        """The open watchers of a kind, oldest first (for tests and metrics)."""
        return list(self._watchers.get(key, ()))

    def publish(self, ev: Event) -> None:
        for w in tuple(self._watchers.get(ev.key, ())):
            w.offer(ev)

    def close_all(self) -> None:
        for ws in self._watchers.values():
            for w in ws:
                w.close()

    def count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())
