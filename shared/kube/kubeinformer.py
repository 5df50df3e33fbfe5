"""Informers over the Kubernetes REST API: list, then watch, relist on 410, never give up.

Theory of operation (client-go's Reflector, which Knative's informers run on):

1. **List** the collection and keep the *list's* ``resourceVersion`` (never the newest object's:
   a list's items come in no rv order, kubernetes-client/python#819). Diff the list against the
   cache and call handlers for every difference (ADDED, MODIFIED by resourceVersion, DELETED
   with the last known state), so a consumer converges after anything it missed. ``synced``
   turns true after the first list.
2. **Watch** from that rv with ``allowWatchBookmarks=true`` and a server-side
   ``timeoutSeconds`` drawn from 5 to 10 min (client-go's ``minWatchTimeout * (1 + rand)``), so
   watches end and restart spread out. The stream is newline-delimited JSON, parsed here from
   raw chunks (no models, no line-length limit). Each event advances the rv; a BOOKMARK only
   advances the rv.
3. **When the stream ends**: a clean end (the server's timeout) or an idle client read timeout
   (half-open connections, kubernetes-client/python#1402) resumes the watch from the rv at once.
   A 410 Gone, as an ``ERROR`` event or as the HTTP status, means the rv has been compacted:
   relist (step 1). Anything else (a cut stream, ``aiohttp.ClientPayloadError``
   (kubernetes_asyncio#156), connection refused, a 5xx) resumes from the rv after a jittered
   exponential backoff, 0.2 s doubling to 30 s, reset once a watch is healthy (it made progress
   or stayed open ``healthy_s``). Unhealthy attempts always sleep, so nothing spins.
4. Errors are logged once per change of error (and once on recovery), not once per retry.

Handlers run synchronously on the loop after the cache has been updated; they must only
enqueue. An exception in a handler is logged and does not stop the informer.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from kubernetes_asyncio.client import ApiClient

from shared.kube.client import ApiError, Gone, error_for
from shared.kube.informer import EventType, Handler
from shared.kube.kubeclient import ApiTransport, status_error
from shared.kube.resources import Obj, Resource, key_of, meta

__all__ = ["Backoff", "InformerOptions", "KubeInformer", "KubeInformerFactory"]

_log = logging.getLogger(__name__)

# client-go's reflector: minWatchTimeout = 5 min, each watch asks for 5 to 10 min.
MIN_WATCH_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class InformerOptions:
    """Timing of list/watch; the defaults are client-go's, tests shrink them."""

    min_watch_timeout_s: float = MIN_WATCH_TIMEOUT_S
    # No byte for this long on an open watch: assume a half-open connection and resume.
    read_idle_timeout_s: float = 150.0
    connect_timeout_s: float = 10.0
    list_timeout_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    # A watch open this long (or one that advanced the rv) resets the backoff.
    healthy_s: float = 5.0


class Backoff:
    """Jittered exponential backoff (client-go's wait.Backoff with jitter): each ``next``
    doubles the base delay up to ``max_s`` and adds up to 50 % jitter, capped at ``max_s``."""

    __slots__ = ("_attempt", "_rand", "initial_s", "max_s")

    def __init__(
        self, initial_s: float, max_s: float, rand: Callable[[], float] = random.random
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff needs 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rand = rand
        self._attempt = 0

    def __repr__(self) -> str:
        return f"Backoff({self.initial_s}..{self.max_s}s, attempt={self._attempt})"

    def next(self) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(self._attempt, 30))
        self._attempt += 1
        return min(self.max_s, base * (1 + 0.5 * self._rand()))

    def reset(self) -> None:
        self._attempt = 0


class _WatchEnded(Exception):
    """The stream ended without an error (server timeout or idle read timeout)."""


class KubeInformer:
    """One resource/namespace/selector, listed and watched by a background task."""

    def __init__(
        self,
        transport: ApiTransport,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        options: InformerOptions | None = None,
    ) -> None:
        self._t = transport
        self._resource = resource
        self._namespace = namespace
        self._selector = label_selector or None
        self._opts = options or InformerOptions()
        self._cache: dict[tuple[str, str], Obj] = {}
        self._handlers: builtins.list[Handler] = []
        self._rv = ""
        self._synced = asyncio.Event()
        self._backoff = Backoff(self._opts.backoff_initial_s, self._opts.backoff_max_s)
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        # Counters for tests and debugging.
        self.lists = 0
        self.watches = 0

    def __repr__(self) -> str:
        return (
            f"KubeInformer({self._resource}, namespace={self._namespace!r}, "
            f"selector={self._selector!r}, synced={self.synced}, rv={self._rv!r}, "
            f"cached={len(self._cache)})"
        )

    # -- Informer --------------------------------------------------------------------------------

    @property
    def resource(self) -> Resource:
        return self._resource

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        """The rv the next watch resumes from."""
        return self._rv

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._cache.get((namespace, name))

    def list(self, namespace: str | None = None) -> builtins.list[Obj]:
        if namespace is None:
            return builtins.list(self._cache.values())
        return [o for (ns, _), o in self._cache.items() if ns == namespace]

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)
        for obj in builtins.list(self._cache.values()):
            self._call(handler, EventType.ADDED, obj)

    async def wait_synced(self) -> None:
        await self._synced.wait()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"informer {self._resource} {self._namespace or '*'}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # not ``await task``: that would raise our cancel

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        need_list = True
        while True:
            started = loop.time()
            progressed = False
            error: str | None = None
            try:
                if need_list:
                    await self._list()
                    need_list = False
                rv_before = self._rv
                try:
                    await self._watch()
                finally:
                    progressed = self._rv != rv_before
            except _WatchEnded:
                pass
            except Gone as e:
                need_list = True
                error = f"410 Gone: {e.message}"
            except ApiError as e:
                error = f"{e.status} {e.reason}: {e.message}"
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                error = f"{type(e).__name__}: {e}"
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never crash: log it and retry like any other failure
                _log.exception("informer %s: unexpected error", self._resource)
                error = f"{type(e).__name__}: {e}"
            healthy = progressed or loop.time() - started >= self._opts.healthy_s
            if healthy:
                self._backoff.reset()
            self._note(error)
            if error is not None or not healthy:
                await asyncio.sleep(self._backoff.next())

    def _note(self, error: str | None) -> None:
        """Log once per change of error, and once on recovery."""
        if error == self._last_error:
            return
        if error is None:
            _log.info("informer %s: watching again at rv %s", self._resource, self._rv)
        elif error.startswith("410"):
            _log.info("informer %s: %s; relisting", self._resource, error)
        else:
            _log.warning("informer %s: %s; retrying with backoff", self._resource, error)
        self._last_error = error

    def _query(self) -> builtins.list[tuple[str, str]]:
        return [("labelSelector", self._selector)] if self._selector else []

    async def _list(self) -> None:
        doc = await self._t.call(
            "GET",
            self._resource.path(self._namespace),
            query=self._query(),
            timeout_s=self._opts.list_timeout_s,
        )
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise ApiError(500, "InternalError", "the list has no items")
        self.lists += 1
        fresh = {key_of(o): o for o in doc["items"] if isinstance(o, dict)}
        old, self._cache = self._cache, fresh
        self._rv = str(meta(doc).get("resourceVersion") or "")
        self._synced.set()
        # Tell handlers every difference, after the cache holds the new state.
        for key, obj in old.items():
            if key not in fresh:
                self._dispatch(EventType.DELETED, obj)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._dispatch(EventType.ADDED, obj)
            elif meta(prev).get("resourceVersion") != meta(obj).get("resourceVersion"):
                self._dispatch(EventType.MODIFIED, obj)

    async def _watch(self) -> None:
        opts = self._opts
        timeout_s = int(opts.min_watch_timeout_s * (1 + random.random()))
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
            *self._query(),
        ]
        if self._rv:
            query.append(("resourceVersion", self._rv))
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=opts.connect_timeout_s,
            sock_connect=opts.connect_timeout_s,
            sock_read=opts.read_idle_timeout_s,
        )
        response = await self._t.open(
            "GET", self._resource.path(self._namespace), query, None, timeout=timeout
        )
        try:
            if response.status != 200:
                raise status_error(response.status, await response.read())
            self.watches += 1
            buf = b""
            while True:
                try:
                    chunk = await response.content.readany()
                except TimeoutError:
                    raise _WatchEnded from None  # idle: resume from the rv
                if not chunk:
                    if buf.strip():
                        self._line(buf)
                    raise _WatchEnded
                buf += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._line(line)
        finally:
            response.release()

    def _line(self, line: bytes) -> None:
        event = json.loads(line)
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {line[:200]!r}")
        if kind == "ERROR":
            code = obj.get("code")
            raise error_for(
                code if isinstance(code, int) else 500,
                str(obj.get("reason") or ""),
                str(obj.get("message") or ""),
            )
        rv = str(meta(obj).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            if rv:
                self._rv = rv
            return
        key = key_of(obj)
        if kind == "DELETED":
            self._cache.pop(key, None)
            if rv:
                self._rv = rv
            self._dispatch(EventType.DELETED, obj)  # the server sends the last state
            return
        if kind not in ("ADDED", "MODIFIED"):
            raise ValueError(f"unknown watch event type {kind!r}")
        existed = key in self._cache
        self._cache[key] = obj
        if rv:
            self._rv = rv
        self._dispatch(EventType.MODIFIED if existed else EventType.ADDED, obj)

    def _dispatch(self, event: EventType, obj: Obj) -> None:
        for h in builtins.list(self._handlers):
            self._call(h, event, obj)

    def _call(self, handler: Handler, event: EventType, obj: Obj) -> None:
        try:
            handler(event, obj)
        except Exception:
            _log.exception("informer %s: handler failed on %s", self._resource, event.value)


class KubeInformerFactory:
    """``InformerFactory`` on an ``ApiClient``: one shared informer per (resource, namespace,
    selector); informers made after ``start`` start at once."""

    def __init__(self, api: ApiClient, options: InformerOptions | None = None) -> None:
        self._t = ApiTransport(api)
        self._opts = options or InformerOptions()
        self._informers: dict[tuple[Resource, str | None, str | None], KubeInformer] = {}
        self._started = False

    def __repr__(self) -> str:
        return f"KubeInformerFactory(informers={len(self._informers)}, started={self._started})"

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> KubeInformer:
        key = (resource, namespace, label_selector or None)
        inf = self._informers.get(key)
        if inf is None:
            inf = KubeInformer(self._t, resource, namespace, key[2], self._opts)
            self._informers[key] = inf
            if self._started:
                inf.start()
        return inf

    async def start(self) -> None:
        self._started = True
        for inf in self._informers.values():
            inf.start()

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(inf.stop() for inf in self._informers.values()))

    async def wait_synced(self) -> None:
        """Every informer made so far has listed once."""
        await asyncio.gather(*(inf.wait_synced() for inf in self._informers.values()))
