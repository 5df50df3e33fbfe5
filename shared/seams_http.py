"""The seams over the local platform's HTTP API: ``HttpCluster`` and the wire format.

Theory of operation. The platform (controlplane/api.py) streams each watched value as
newline-delimited JSON: one whole snapshot per line, the current one at once and then one per
change, and a blank keep-alive line every 15 s. ``HttpCluster`` keeps one stream open for the
revisions, one for every revision's endpoints and one for the activators, and caches the last
snapshot of each, so ``get`` and ``endpoints`` answer synchronously, as an informer's lister
does. A stream that breaks or goes silent (no line for 3 keep-alive periods) is reopened with a
back-off (0.1 s doubling to 5 s, reset once a snapshot arrives); meanwhile the cache keeps the
last value, and the first snapshot after reconnecting replaces it whole, so nothing missed
during the outage survives. Decisions go out as one POST each; a failed POST is logged and
dropped, since the autoscaler publishes a fresh decision on its next tick anyway.

The JSON shapes (camelCase, as Knative's API) are defined here once and used by both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import aiohttp

from shared.seams import (
    Endpoint,
    Mode,
    RevisionKey,
    RevisionSpec,
    ScaleDecision,
    _Watchable,
)

__all__ = [
    "KEEPALIVE_S",
    "HttpCluster",
    "decision_from_json",
    "decision_to_json",
    "endpoint_from_json",
    "endpoint_to_json",
    "revision_from_json",
    "revision_to_json",
]

_log = logging.getLogger(__name__)

# The server writes a blank line this often on an idle stream; a client that hears nothing for
# three periods treats the connection as dead (a half-open TCP connection never errors).
KEEPALIVE_S: Final = 15.0
READ_TIMEOUT_S: Final = 3 * KEEPALIVE_S
BACKOFF_FIRST_S: Final = 0.1
BACKOFF_MAX_S: Final = 5.0
DECISION_TIMEOUT_S: Final = 5.0

REVISIONS_PATH: Final = "/seams/v1/revisions"
ENDPOINTS_PATH: Final = "/seams/v1/endpoints"
ACTIVATORS_PATH: Final = "/seams/v1/activators"
DECISIONS_PATH: Final = "/seams/v1/decisions"

Json = dict[str, Any]


# -- wire format ------------------------------------------------------------------------------
def revision_to_json(spec: RevisionSpec) -> Json:
    return {
        "namespace": spec.key.namespace,
        "name": spec.key.name,
        "containerConcurrency": spec.container_concurrency,
        "timeoutSeconds": spec.timeout_s,
        "responseStartTimeoutSeconds": spec.response_start_timeout_s,
        "idleTimeoutSeconds": spec.idle_timeout_s,
        "annotations": dict(spec.annotations),
        "service": spec.service,
        "configuration": spec.configuration,
        "reachable": spec.reachable,
    }


def revision_from_json(obj: Json) -> RevisionSpec:
    return RevisionSpec(
        key=RevisionKey(str(obj["namespace"]), str(obj["name"])),
        container_concurrency=int(obj.get("containerConcurrency", 0)),
        timeout_s=float(obj.get("timeoutSeconds", 300.0)),
        response_start_timeout_s=float(obj.get("responseStartTimeoutSeconds", 0.0)),
        idle_timeout_s=float(obj.get("idleTimeoutSeconds", 0.0)),
        annotations=MappingProxyType(
            {str(k): str(v) for k, v in (obj.get("annotations") or {}).items()}
        ),
        service=str(obj.get("service", "")),
        configuration=str(obj.get("configuration", "")),
        reachable=bool(obj.get("reachable", True)),
    )


def endpoint_to_json(ep: Endpoint) -> Json:
    return {
        "podName": ep.pod_name,
        "host": ep.host,
        "port": ep.port,
        "metricsPort": ep.metrics_port,
        "ready": ep.ready,
        "startedAt": ep.started_at,
    }


def endpoint_from_json(obj: Json) -> Endpoint:
    return Endpoint(
        pod_name=str(obj["podName"]),
        host=str(obj["host"]),
        port=int(obj["port"]),
        metrics_port=int(obj.get("metricsPort", 9090)),
        ready=bool(obj.get("ready", True)),
        started_at=float(obj.get("startedAt", 0.0)),
    )


def decision_to_json(decision: ScaleDecision) -> Json:
    return {
        "namespace": decision.key.namespace,
        "name": decision.key.name,
        "desiredScale": decision.desired_scale,
        "mode": decision.mode.value,
        "activators": decision.activators,
        "excessBurstCapacity": decision.excess_burst_capacity,
    }


def decision_from_json(obj: Json) -> ScaleDecision:
    """Raises KeyError, ValueError or TypeError on a malformed decision."""
    return ScaleDecision(
        key=RevisionKey(str(obj["namespace"]), str(obj["name"])),
        desired_scale=int(obj["desiredScale"]),
        mode=Mode(obj["mode"]),
        activators=int(obj.get("activators", 1)),
        excess_burst_capacity=float(obj.get("excessBurstCapacity", 0.0)),
    )


def _revisions_snapshot(obj: Json) -> Mapping[RevisionKey, RevisionSpec]:
    specs = (revision_from_json(item) for item in obj["revisions"])
    return MappingProxyType({spec.key: spec for spec in specs})


def _endpoints_snapshot(obj: Json) -> dict[RevisionKey, tuple[Endpoint, ...]]:
    return {
        RevisionKey(str(item["namespace"]), str(item["name"])): tuple(
            endpoint_from_json(ep) for ep in item["endpoints"]
        )
        for item in obj["revisions"]
    }


def _activators_snapshot(obj: Json) -> tuple[str, ...]:
    return tuple(str(a) for a in obj["activators"])


# -- the client ---------------------------------------------------------------------------------
class HttpCluster:
    """RevisionSource, EndpointsSource and Scaler of the local platform, over its API."""

    def __init__(self, base_url: str) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"platform URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._revisions: _Watchable[Mapping[RevisionKey, RevisionSpec]] = _Watchable(
            MappingProxyType({})
        )
        self._endpoints: dict[RevisionKey, _Watchable[tuple[Endpoint, ...]]] = {}
        self._activators: _Watchable[tuple[str, ...]] = _Watchable(())
        self._synced = {path: asyncio.Event() for path in self._streams()}
        self.reconnects = 0

    def __repr__(self) -> str:
        synced = all(e.is_set() for e in self._synced.values())
        return (
            f"<HttpCluster {self.base_url} revisions={len(self._revisions.value)} synced={synced}>"
        )

    async def start(self, sync_timeout_s: float = 5.0) -> bool:
        """Open the watch streams; wait up to ``sync_timeout_s`` for their first snapshots.

        Returns whether every cache is filled. Not filled is not fatal: the streams keep
        retrying and the caches fill when the platform answers.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_read=READ_TIMEOUT_S)
            )
            loop = asyncio.get_running_loop()
            for path, apply in self._streams().items():
                self._tasks.append(loop.create_task(self._stream(path, apply)))
        waits = [e.wait() for e in self._synced.values()]
        try:
            async with asyncio.timeout(sync_timeout_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- RevisionSource -------------------------------------------------------------------
    def get(self, key: RevisionKey) -> RevisionSpec | None:
        return self._revisions.value.get(key)

    def watch_revisions(self) -> AsyncIterator[Mapping[RevisionKey, RevisionSpec]]:
        return self._revisions.watch()

    # -- EndpointsSource ------------------------------------------------------------------
    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]:
        w = self._endpoints.get(key)
        return w.value if w is not None else ()

    def watch_endpoints(self, key: RevisionKey) -> AsyncIterator[tuple[Endpoint, ...]]:
        return self._watchable(key).watch()

    def watch_activators(self) -> AsyncIterator[tuple[str, ...]]:
        return self._activators.watch()

    # -- Scaler -----------------------------------------------------------------------------
    async def apply(self, decision: ScaleDecision) -> None:
        """POST the decision; a failure is logged, not raised (the next tick resends)."""
        if self._session is None:
            raise RuntimeError("HttpCluster.apply before start()")
        url = self.base_url + DECISIONS_PATH
        try:
            async with self._session.post(
                url,
                json=decision_to_json(decision),
                timeout=aiohttp.ClientTimeout(total=DECISION_TIMEOUT_S),
            ) as resp:
                if resp.status >= 300:
                    text = await resp.text()
                    _log.warning("decision for %s refused: %d %s", decision.key, resp.status, text)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            _log.warning("decision for %s not delivered: %r", decision.key, err)

    # -- streams ----------------------------------------------------------------------------
    def _streams(self) -> dict[str, Callable[[Json], None]]:
        return {
            REVISIONS_PATH: lambda obj: self._revisions.set(_revisions_snapshot(obj)),
            ENDPOINTS_PATH: self._set_endpoints,
            ACTIVATORS_PATH: lambda obj: self._activators.set(_activators_snapshot(obj)),
        }

    def _set_endpoints(self, obj: Json) -> None:
        snapshot = _endpoints_snapshot(obj)
        for key in snapshot.keys() | self._endpoints.keys():
            endpoints = snapshot.get(key, ())
            w = self._watchable(key)
            if w.value != endpoints:
                w.set(endpoints)

    def _watchable(self, key: RevisionKey) -> _Watchable[tuple[Endpoint, ...]]:
        w = self._endpoints.get(key)
        if w is None:
            w = self._endpoints[key] = _Watchable(())
        return w

    async def _stream(self, path: str, apply: Callable[[Json], None]) -> None:
        """Follow one watch for ever: reconnect with back-off, never raise."""
        assert self._session is not None
        url = f"{self.base_url}{path}?watch=true"
        backoff_s = BACKOFF_FIRST_S
        while True:
            try:
                async with self._session.get(url) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message=resp.reason or ""
                        )
                    async for line in resp.content:
                        if not line.strip():
                            continue  # keep-alive
                        apply(json.loads(line))
                        self._synced[path].set()
                        backoff_s = BACKOFF_FIRST_S
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a watch must outlive any one bad connection or line
                _log.info("watch %s broke (%r); retrying in %.1f s", path, err, backoff_s)
            self.reconnects += 1
            await asyncio.sleep(backoff_s)
            backoff_s = min(BACKOFF_MAX_S, backoff_s * 2)


@contextlib.asynccontextmanager
async def http_cluster(base_url: str, sync_timeout_s: float = 5.0) -> AsyncIterator[HttpCluster]:
    """An started ``HttpCluster``, closed on exit (for ``__main__`` wiring and tests)."""
    cluster = HttpCluster(base_url)
    await cluster.start(sync_timeout_s)
    try:
        yield cluster
    finally:
        await cluster.close()
