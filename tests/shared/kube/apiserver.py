"""A small, fault-injecting Kubernetes API server for the client-layer tests (real HTTP).

Objects live in a ``FakeCluster``; this adds the REST paths, bearer-token auth, ``Status``
errors, list/watch with resourceVersion, bookmarks, history compaction (410), and faults a
test arms before the next watch: a stream cut after N events (the client sees
``aiohttp.ClientPayloadError``), 410 as an ``ERROR`` event or as the HTTP status, a
bookmark-only stream, and the whole API down (connections reset, port closed) until ``up()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.kube import resources as res_mod
from shared.kube.client import ApiError
from shared.kube.fake import FakeCluster
from shared.kube.informer import EventType
from shared.kube.labels import parse_selector
from shared.kube.resources import Obj, Resource, key_of, labels_of

RESOURCES = [r for r in (getattr(res_mod, n) for n in res_mod.__all__) if isinstance(r, Resource)]
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
}


@dataclass
class Event:
    resource: Resource
    rv: int
    type: str
    obj: Obj
    old: Obj | None  # the state before, so selector watches see objects enter and leave


def status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _status_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status(code, reason, message), status=code)


class FaultyApiServer:
    """Serve ``cluster`` on 127.0.0.1 (a free port); arm faults with the attributes below."""

    def __init__(self, token: str = "test-token", bookmark_interval_s: float = 0.2) -> None:
        self.cluster = FakeCluster()
        self.token = token
        self.bookmark_interval_s = bookmark_interval_s
        self.history: list[Event] = []
        self.compacted_rv = 0  # watches from an rv below this get 410
        # "cut:N", "gone-event", "gone-status", "bookmarks-only", "silent:SECONDS"
        self.watch_faults: deque[str] = deque()
        self.watch_requests: list[dict[str, str]] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content type)
        self.port = 0
        self._wakeup = asyncio.Event()
        self._state: dict[tuple[Resource, str, str], Obj] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        for r in RESOURCES:
            self.cluster.informer(r).add_handler(self._recorder(r))

    def _recorder(self, resource: Resource) -> Any:
        def record(event: EventType, obj: Obj) -> None:
            key = (resource, *key_of(obj))
            old = self._state.get(key)
            if event is EventType.DELETED:
                self._state.pop(key, None)
            else:
                self._state[key] = obj
            rv = int(obj["metadata"]["resourceVersion"])
            self.history.append(Event(resource, rv, event.value, obj, old))
            self._wakeup.set()
            self._wakeup = asyncio.Event()

        return record

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self.up()

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        server = self._site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Close the port and reset every open connection (watches included)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for t in list(self._transports):
            t.close()
        self._transports.clear()

    async def close(self) -> None:
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "t", "cluster": {"server": self.url}}],
                    "users": [{"name": "t", "user": {"token": self.token}}],
                    "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
                    "current-context": "t",
                }
            )
        )
        return path

    def compact(self) -> None:
        """Compact history: every watch from an rv older than now gets 410 Gone."""
        self.compacted_rv = self.cluster._rv

    # -- HTTP -------------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.transport is not None:
            self._transports.add(request.transport)
        self.requests.append((request.method, request.path, request.content_type))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status_response(401, "Unauthorized", "Unauthorized")
        resp: web.StreamResponse = await handler(request)
        return resp

    @staticmethod
    def _parse(path: str) -> tuple[Resource, str | None, str | None, str | None]:
        segs = path.strip("/").split("/")
        if segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        else:
            group, version, rest = segs[1], segs[2], segs[3:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        r = _BY_PATH[(group, version, rest[0])]
        return r, ns, (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            r, ns, name, sub = self._parse(request.path)
        except (KeyError, IndexError):
            return _status_response(404, "NotFound", f"the server could not find {request.path}")
        q = request.query
        c = self.cluster
        try:
            if request.method == "GET" and name is None:
                if q.get("watch") in ("true", "1"):
                    return await self._watch(request, r, ns)
                return web.json_response(await c.list(r, ns, q.get("labelSelector")))
            body: Any = await request.json() if request.can_read_body else None
            if request.method == "GET":
                assert name is not None
                obj = await c.get(r, ns or "", name)
                if obj is None:
                    return _status_response(404, "NotFound", f'{r} "{name}" not found')
                return web.json_response(obj)
            if request.method == "POST":
                return web.json_response(await c.create(r, ns or "", body), status=201)
            assert name is not None
            if request.method == "PUT":
                if sub == "status":
                    return web.json_response(await c.replace_status(r, ns or "", name, body))
                return web.json_response(await c.replace(r, ns or "", name, body))
            if request.method == "PATCH":
                ptype = PATCH_TYPES.get(request.content_type)
                if ptype is None:
                    return _status_response(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown "
                        f"format - accepted media types include: {', '.join(PATCH_TYPES)}",
                    )
                out = await c.patch(r, ns or "", name, body, ptype, sub)  # type: ignore[arg-type]
                return web.json_response(out)
            if request.method == "DELETE":
                if await c.get(r, ns or "", name) is None:
                    return _status_response(404, "NotFound", f'{r} "{name}" not found')
                await c.delete(r, ns or "", name)
                return web.json_response(status(200, "", "") | {"status": "Success"})
        except ApiError as e:
            return _status_response(e.status, e.reason, e.message)
        return _status_response(405, "MethodNotAllowed", request.method)

    @staticmethod
    def _seen_as(ev: Event, matches: Callable[[Obj], bool]) -> str | None:
        """The event a filtered watch sends, as kube-apiserver's watch cache does: an object
        that starts matching is ADDED, one that stops matching is DELETED."""
        was = ev.old is not None and matches(ev.old)
        now = ev.type != "DELETED" and matches(ev.obj)
        if ev.type == "DELETED":
            return "DELETED" if was or matches(ev.obj) else None
        if now:
            return "MODIFIED" if was else "ADDED"
        return "DELETED" if was else None

    def _line(self, kind: str, obj: Obj) -> bytes:
        return json.dumps({"type": kind, "object": obj}).encode() + b"\n"

    async def _watch(self, request: web.Request, r: Resource, ns: str | None) -> web.StreamResponse:
        try:
            return await self._stream(request, r, ns)
        except ConnectionResetError:  # the client went away (or down() reset it)
            return web.Response(status=499)

    async def _stream(
        self, request: web.Request, r: Resource, ns: str | None
    ) -> web.StreamResponse:
        q = request.query
        self.watch_requests.append(dict(q))
        fault = self.watch_faults.popleft() if self.watch_faults else ""
        if fault == "gone-status":
            return _status_response(410, "Expired", "too old resource version")
        selector = parse_selector(q.get("labelSelector"))
        from_rv = int(q.get("resourceVersion") or 0)
        timeout_s = float(q.get("timeoutSeconds") or 1800)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)

        def matches(obj: Obj) -> bool:
            if r.namespaced and ns is not None and key_of(obj)[0] != ns:
                return False
            return selector.matches(labels_of(obj))

        self.cluster.flush()  # history holds every event up to cluster._rv
        if fault == "gone-event" or (from_rv and from_rv < self.compacted_rv):
            await resp.write(
                self._line("ERROR", status(410, "Expired", "too old resource version"))
            )
            return resp
        if fault == "bookmarks-only":
            # A bookmark promises every event up to its rv was sent: only move past events
            # this watch would not have sent.
            skipped = any(
                ev.resource == r and ev.rv > from_rv and self._seen_as(ev, matches) is not None
                for ev in self.history
            )
            rv = {"resourceVersion": str(from_rv if skipped else self.cluster._rv)}
            for _ in range(3):
                await resp.write(self._line("BOOKMARK", {"kind": r.kind, "metadata": rv}))
            return resp
        if fault.startswith("silent:"):
            # A half-open connection: headers, then nothing at all (no bookmarks either).
            until = asyncio.get_running_loop().time() + float(fault.split(":")[1])
            while asyncio.get_running_loop().time() < until:
                if request.transport is None or request.transport.is_closing():
                    break  # the client gave up (its read timeout)
                await asyncio.sleep(0.05)
            return resp
        cut_after = int(fault.split(":")[1]) if fault.startswith("cut:") else -1
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pos = 0
        while loop.time() < deadline:
            while pos < len(self.history):
                ev = self.history[pos]
                pos += 1
                kind = self._seen_as(ev, matches)
                if ev.resource != r or ev.rv <= from_rv or kind is None:
                    continue
                if sent == cut_after:
                    assert request.transport is not None
                    request.transport.close()  # mid-stream: the chunked body never ends
                    return resp
                await resp.write(self._line(kind, ev.obj))
                sent += 1
            wakeup = self._wakeup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), self.bookmark_interval_s)
            self.cluster.flush()
            if pos >= len(self.history) and q.get("allowWatchBookmarks") == "true":
                rv = {"resourceVersion": str(self.cluster._rv)}
                await resp.write(self._line("BOOKMARK", {"kind": r.kind, "metadata": rv}))
        return resp
