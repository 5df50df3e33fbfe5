"""Watch streams over HTTP: the first lines, the subscription and the pump of one watch.

Theory of operation. ``open`` decides synchronously what a new watch starts with: ADDED for
every matching object (``resourceVersion`` absent or "0", or ``sendInitialEvents``), the
history's events after the given revision, or one ERROR 410 when that revision is no longer
kept; in the same call it subscribes the watcher to the hub, so no change falls between the
snapshot and the subscription. ``serve`` then streams chunked JSON lines: the pump writes the
watcher's queued lines, sends a BOOKMARK (``metadata.resourceVersion`` only, as client-go
expects) every ``bookmark_interval_s`` when idle and asked for, and ends at ``timeoutSeconds``,
when the client is gone (checked every 5 s while idle), when the server stops, or when the
watcher overflowed (its connection is then aborted, see watch.py).

With ``Accept: ...;as=Table`` (``kubectl get -w``), each event's object is a one-row Table.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane.kubeapi.errors import StatusError
from controlplane.kubeapi.registry import Kind
from controlplane.kubeapi.rest import Rest
from controlplane.kubeapi.selectors import FieldSelector, parse_field_selector
from controlplane.kubeapi.store import Event, EventType, Store
from controlplane.kubeapi.tables import table, wants_table
from controlplane.kubeapi.watch import Encoder, Watcher, WatchHub
from shared.kube.labels import Selector
from shared.kube.resources import Obj

__all__ = ["WatchStreams", "dumps", "flag"]

# While a watch is idle, check this often whether its client is still connected.
_LIVENESS_S = 5.0


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def flag(value: str | None) -> bool:
    """A boolean query parameter (``watch=1``, ``allowWatchBookmarks=true``)."""
    return (value or "").lower() in ("1", "true", "yes")


def _table_encoder(kind: Kind, include: str) -> Encoder:
    def encode(typ: EventType, obj: Obj, ev: Event) -> bytes:
        t = table(kind, [obj], obj["metadata"]["resourceVersion"], include)
        return dumps({"type": typ, "object": t}) + b"\n"

    return encode


def _aborter(request: web.Request) -> Callable[[], None]:
    def abort() -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    return abort


class WatchStreams:
    """Opens and pumps the server's watch streams."""

    def __init__(self, store: Store, rest: Rest, hub: WatchHub, bookmark_interval_s: float
                 ) -> None:
        self.store = store
        self.rest = rest
        self.hub = hub
        self.bookmark_interval_s = bookmark_interval_s
        self.stopping = False

    def open(
        self,
        request: web.Request,
        kind: Kind,
        namespace: str | None,
        labels: Selector,
        fields: FieldSelector,
    ) -> Watcher:
        """The watcher with its first lines, subscribed (see the module docstring)."""
        q = request.query
        encode = _table_encoder(kind, q.get("includeObject", "Metadata")) \
            if wants_table(request.headers.get("Accept", "")) else None
        ns = namespace if kind.resource.namespaced else None
        w = Watcher(kind.key, ns, labels, fields, encode)
        w.on_overflow = _aborter(request)
        # The first lines (a whole listing, a replay) do not count against the queue's bound,
        # which is for changes arriving faster than the client reads.
        bound, w.max_queue = w.max_queue, sys.maxsize
        rv_param = q.get("resourceVersion", "")
        if rv_param in ("", "0") or flag(q.get("sendInitialEvents")):
            for obj in self.rest.list(kind, ns, labels, fields)["items"]:
                w.push(w.encode("ADDED", obj, Event(0, "ADDED", kind.key, obj)))
            if flag(q.get("sendInitialEvents")) and flag(q.get("allowWatchBookmarks")):
                w.push(self.bookmark(kind, initial_end=True))
        else:
            try:
                rv = int(rv_param)
            except ValueError:
                raise StatusError.bad_request(f"invalid resourceVersion {rv_param!r}") from None
            events = self.store.since(rv)
            if events is None:
                status = StatusError(
                    410, f"too old resource version: {rv} ({self.store.compacted_rv + 1})",
                    "Expired",
                ).body
                w.push(dumps({"type": "ERROR", "object": status}) + b"\n")
                w.closed = True
            else:
                # The history holds every kind's events; a resumed watch replays its own.
                for ev in events:
                    if ev.key == kind.key:
                        w.offer(ev)
        w.max_queue = len(w.lines) + bound
        if not w.closed:
            self.hub.add(w)
        return w

    async def serve(
        self,
        request: web.Request,
        kind: Kind,
        namespace: str | None,
        labels: Selector,
        fields: FieldSelector,
        name: str | None = None,
    ) -> web.StreamResponse:
        q = request.query
        if name is not None:  # the legacy /watch/.../<name> path
            fields = parse_field_selector(
                ",".join(filter(None, [q.get("fieldSelector"), f"metadata.name={name}"]))
            )
        try:
            timeout_s = float(q["timeoutSeconds"]) if "timeoutSeconds" in q else None
        except ValueError:
            raise StatusError.bad_request("timeoutSeconds must be a number") from None
        w = self.open(request, kind, namespace, labels, fields)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await self._pump(request, resp, w, kind, flag(q.get("allowWatchBookmarks")),
                             timeout_s)
            return resp
        finally:
            self.hub.remove(w)

    def bookmark(self, kind: Kind, initial_end: bool = False) -> bytes:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": kind.resource.kind, "apiVersion": kind.resource.api_version,
               "metadata": meta}
        return dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    async def _pump(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        w: Watcher,
        kind: Kind,
        bookmarks: bool,
        timeout_s: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s is not None else None
        next_bookmark = loop.time() + self.bookmark_interval_s
        try:
            while True:
                while w.lines:
                    batch = b"".join(w.lines)
                    w.lines.clear()
                    await resp.write(batch)
                if w.closed or self.stopping:
                    return
                w.wake.clear()
                now = loop.time()
                wait = _LIVENESS_S
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                if wait > 0:
                    # A timer handle, not wait_for (which makes a task per event per watcher).
                    timer = loop.call_later(wait, w.wake.set)
                    try:
                        await w.wake.wait()
                    finally:
                        timer.cancel()
                now = loop.time()
                if deadline is not None and now >= deadline:
                    return
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                if bookmarks and now >= next_bookmark:
                    if not w.lines:
                        await resp.write(self.bookmark(kind))
                    next_bookmark = now + self.bookmark_interval_s
        except (ConnectionError, RuntimeError):
            return  # the client went away
