"""The local platform's API: Knative resources for people, the seams for the data plane.

Two halves on one aiohttp server (the routes and shapes are documented in API.md):

* ``/apis/v1/...``: apply, get and delete Knative resources; what the ``knpy`` commands use.
  Reads are Knative-shaped JSON with the live status filled in (replicas, URL, traffic, cold
  starts). The resource work itself is the ``Platform``'s (controlplane/serve.py); this module
  only speaks HTTP for it.
* ``/seams/v1/...``: ``PlatformSeams``, the platform's state of the DESIGN.md seams, served to
  ``shared.seams_http.HttpCluster`` in the autoscaler and activator processes: watches as
  newline-delimited JSON (a whole snapshot per line, at once and on each change, a blank line
  every 15 s when idle) and the autoscaler's decisions as POSTs.

A watch stream coalesces: if three changes happen while a slow client reads, it gets the last
snapshot, not three (level-based, as the seams promise).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

from aiohttp import web

from controlplane.ingress import ColdStarts
from shared.seams import (
    Endpoint,
    InMemoryCluster,
    Mode,
    RevisionKey,
    ScaleDecision,
    _Watchable,
)
from shared.seams_http import (
    ACTIVATORS_PATH,
    DECISIONS_PATH,
    ENDPOINTS_PATH,
    KEEPALIVE_S,
    REVISIONS_PATH,
    decision_from_json,
    endpoint_to_json,
    revision_to_json,
)

__all__ = ["DEFAULT_API_PORT", "ApiError", "Platform", "PlatformApi", "PlatformSeams"]

_log = logging.getLogger(__name__)

DEFAULT_API_PORT: Final = 9080
NDJSON: Final = "application/x-ndjson"
RESOURCE_KINDS: Final = ("services", "revisions", "routes")
# A body larger than this is not a Service YAML someone wrote.
MAX_APPLY_BYTES: Final = 4 * 1024 * 1024

T = TypeVar("T")
Json = dict[str, Any]


class PlatformSeams(InMemoryCluster):
    """The seams' state inside the platform: revisions, endpoints, activators, decisions.

    As ``InMemoryCluster``, plus: only the latest decision per revision is kept (the platform
    runs for days; the autoscaler decides every 2 s), each decision is handed to
    ``on_decision`` (the pod manager acts on it), and every revision's endpoints can be
    watched at once (what ``HttpCluster`` follows).
    """

    def __init__(self, on_decision: Callable[[ScaleDecision], None] | None = None) -> None:
        super().__init__()
        self.on_decision = on_decision
        self._latest: dict[RevisionKey, ScaleDecision] = {}
        self._all_endpoints: _Watchable[Mapping[RevisionKey, tuple[Endpoint, ...]]] = _Watchable(
            MappingProxyType({})
        )

    def __repr__(self) -> str:
        return f"<PlatformSeams revisions={len(self.watch_value())} decided={len(self._latest)}>"

    def watch_value(self) -> Mapping[RevisionKey, object]:
        return self._revisions.value

    def set_endpoints(self, key: RevisionKey, endpoints: tuple[Endpoint, ...]) -> None:
        super().set_endpoints(key, endpoints)
        everything = dict(self._all_endpoints.value)
        if endpoints:
            everything[key] = tuple(endpoints)
        else:
            everything.pop(key, None)
        self._all_endpoints.set(MappingProxyType(everything))

    def delete_revision(self, key: RevisionKey) -> None:
        super().delete_revision(key)
        self._latest.pop(key, None)
        self._endpoints.pop(key, None)

    def revision_keys(self) -> set[RevisionKey]:
        return set(self._revisions.value)

    def watch_all_endpoints(self) -> AsyncIterator[Mapping[RevisionKey, tuple[Endpoint, ...]]]:
        return self._all_endpoints.watch()

    async def apply(self, decision: ScaleDecision) -> None:
        self._latest[decision.key] = decision
        if self.on_decision is not None:
            self.on_decision(decision)

    def latest(self, key: RevisionKey) -> ScaleDecision | None:
        return self._latest.get(key)

    def mode_of(self, key: RevisionKey) -> Mode:
        """The revision's serve/proxy mode; proxy until the autoscaler says otherwise."""
        decision = self._latest.get(key)
        return decision.mode if decision is not None else Mode.PROXY


class ApiError(Exception):
    """A request the platform refuses: the HTTP status and Knative-style messages."""

    def __init__(self, status: int, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = messages


class Platform(Protocol):
    """What the resource half of the API asks of the platform (controlplane/serve.py)."""

    def apply(self, text: str) -> Json:
        """Apply YAML/JSON documents; the result lists what was created/configured/unchanged.

        Raises ApiError (400) with field-path messages, nothing applied.
        """
        ...

    def list_kind(self, kind: str, namespace: str | None) -> list[Json]: ...

    def get(self, kind: str, namespace: str, name: str) -> Json | None: ...

    def delete_service(self, namespace: str, name: str) -> bool: ...


class PlatformApi:
    """The aiohttp application of both halves; ``platform`` may be None (seams only)."""

    def __init__(
        self,
        seams: PlatformSeams,
        platform: Platform | None = None,
        *,
        cold_starts: ColdStarts | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.seams = seams
        self.platform = platform
        self.cold_starts = cold_starts
        self.keepalive_s = keepalive_s
        self._closing = asyncio.Event()
        self.app = web.Application(client_max_size=MAX_APPLY_BYTES)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.add_routes(
            [
                web.get(REVISIONS_PATH, self._revisions),
                web.get(ENDPOINTS_PATH, self._all_endpoints),
                web.get(ENDPOINTS_PATH + "/{namespace}/{name}", self._endpoints),
                web.get(ACTIVATORS_PATH, self._activators),
                web.post(DECISIONS_PATH, self._decision),
                web.post("/apis/v1/apply", self._apply),
                web.get("/apis/v1/{kind}", self._list),
                web.get("/apis/v1/{kind}/{namespace}", self._list),
                web.get("/apis/v1/{kind}/{namespace}/{name}", self._get),
                web.delete("/apis/v1/services/{namespace}/{name}", self._delete),
                web.get("/healthz", self._healthz),
                web.get("/metrics", self._metrics),
            ]
        )

    def __repr__(self) -> str:
        return f"<PlatformApi seams={self.seams!r} resources={self.platform is not None}>"

    async def _on_shutdown(self, app: web.Application) -> None:
        # Watch streams never end on their own; end them so the server can stop.
        self._closing.set()

    # -- the seams ----------------------------------------------------------------------------
    async def _revisions(self, request: web.Request) -> web.StreamResponse:
        return await self._watch(
            request,
            self.seams.watch_revisions(),
            lambda revs: {"revisions": [revision_to_json(s) for _, s in sorted(revs.items())]},
        )

    async def _all_endpoints(self, request: web.Request) -> web.StreamResponse:
        return await self._watch(
            request,
            self.seams.watch_all_endpoints(),
            lambda everything: {
                "revisions": [
                    {
                        "namespace": key.namespace,
                        "name": key.name,
                        "endpoints": [endpoint_to_json(e) for e in eps],
                    }
                    for key, eps in sorted(everything.items())
                ]
            },
        )

    async def _endpoints(self, request: web.Request) -> web.StreamResponse:
        key = RevisionKey(request.match_info["namespace"], request.match_info["name"])
        return await self._watch(
            request,
            self.seams.watch_endpoints(key),
            lambda eps: {
                "namespace": key.namespace,
                "name": key.name,
                "endpoints": [endpoint_to_json(e) for e in eps],
            },
        )

    async def _activators(self, request: web.Request) -> web.StreamResponse:
        return await self._watch(
            request, self.seams.watch_activators(), lambda a: {"activators": list(a)}
        )

    async def _decision(self, request: web.Request) -> web.Response:
        try:
            decision = decision_from_json(await request.json())
        except (ValueError, KeyError, TypeError) as err:
            return _error(400, [f"invalid decision: {err!r}"])
        if self.seams.get(decision.key) is None:
            return _error(404, [f"revision {decision.key} not found"])
        await self.seams.apply(decision)
        return web.json_response({"accepted": True})

    async def _watch(
        self, request: web.Request, watch: AsyncIterator[T], encode: Callable[[T], Json]
    ) -> web.StreamResponse:
        """One snapshot as JSON, or with ``?watch=true`` a stream of them (NDJSON)."""
        if request.query.get("watch", "").lower() not in ("true", "1"):
            first = await anext(watch)
            await _aclose(watch)
            return web.json_response(encode(first))
        resp = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        latest: list[T] = []
        changed = asyncio.Event()

        async def follow() -> None:
            async for value in watch:
                latest[:] = [value]
                changed.set()

        follower = asyncio.get_running_loop().create_task(follow())
        closing = asyncio.get_running_loop().create_task(self._closing.wait())
        try:
            while not self._closing.is_set():
                waiter = asyncio.ensure_future(changed.wait())
                done, _ = await asyncio.wait(
                    (waiter, closing), timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if closing in done:
                    break
                if waiter not in done:
                    await resp.write(b"\n")
                    continue
                changed.clear()
                line = json.dumps(encode(latest[0]), separators=(",", ":")).encode()
                await resp.write(line + b"\n")
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        finally:
            follower.cancel()
            closing.cancel()
        return resp

    # -- the resources ------------------------------------------------------------------------
    def _require_platform(self) -> Platform:
        if self.platform is None:
            raise ApiError(503, ["this API serves the seams only"])
        return self.platform

    async def _apply(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            return web.json_response(self._require_platform().apply(text))
        except ApiError as err:
            return _error(err.status, err.messages)

    async def _list(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in RESOURCE_KINDS:
            return _error(404, [f"unknown resource kind {kind!r}; one of {RESOURCE_KINDS}"])
        try:
            items = self._require_platform().list_kind(kind, request.match_info.get("namespace"))
        except ApiError as err:
            return _error(err.status, err.messages)
        return web.json_response({"apiVersion": "v1", "kind": "List", "items": items})

    async def _get(self, request: web.Request) -> web.Response:
        kind, namespace, name = (request.match_info[k] for k in ("kind", "namespace", "name"))
        if kind not in RESOURCE_KINDS:
            return _error(404, [f"unknown resource kind {kind!r}; one of {RESOURCE_KINDS}"])
        try:
            item = self._require_platform().get(kind, namespace, name)
        except ApiError as err:
            return _error(err.status, err.messages)
        if item is None:
            return _error(404, [f'{kind} "{name}" not found in namespace "{namespace}"'])
        return web.json_response(item)

    async def _delete(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            deleted = self._require_platform().delete_service(namespace, name)
        except ApiError as err:
            return _error(err.status, err.messages)
        if not deleted:
            return _error(404, [f'services "{name}" not found in namespace "{namespace}"'])
        return web.json_response({"deleted": f"service/{name}", "namespace": namespace})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render_cold_starts(self.cold_starts) if self.cold_starts is not None else ""
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


def render_cold_starts(cold: ColdStarts) -> str:
    """The cold starts as a Prometheus histogram, one series per revision.

    The ingress keeps the counters; this only formats them.
    """
    name = "knpy_cold_start_seconds"
    lines = [
        f"# HELP {name} First request of a revision at zero pods to its first response byte.",
        f"# TYPE {name} histogram",
    ]
    for key, series in sorted(cold.by_revision.items()):
        labels = f'namespace="{key.namespace}",revision="{key.name}"'
        for bound, count in zip(ColdStarts.BOUNDS_S, series.bucket_counts, strict=True):
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {series.count}')
        lines.append(f"{name}_sum{{{labels}}} {series.total_s}")
        lines.append(f"{name}_count{{{labels}}} {series.count}")
    return "\n".join(lines) + "\n"


def _error(status: int, messages: list[str]) -> web.Response:
    """Kubernetes' Status shape, with every field error as its own line in ``details``."""
    return web.json_response(
        {
            "kind": "Status",
            "status": "Failure",
            "code": status,
            "message": "\n".join(messages),
            "details": {"causes": [{"message": m} for m in messages]},
        },
        status=status,
    )


async def _aclose(it: AsyncIterator[T]) -> None:
    close: Callable[[], Awaitable[None]] | None = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def start_api(api: PlatformApi, host: str, port: int) -> web.AppRunner:
    """Serve the API on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(api.app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
