"""The local platform's ingress: Knative's networking layer for one machine, following the API.

Theory of operation. Everything the ingress knows comes from informers, as a Knative ingress
(Kourier, net-istio) is programmed from the cluster:

* **Hosts** from each Route's ``status.traffic`` and ``status.url`` (``RoutingTable``): the
  route's host (``<service>.<namespace>.localhost``) splits by the percents, and each tag has
  its own host (``<tag>-<service>.<namespace>.localhost``) with all of its revision. One
  revision is drawn at random with those weights (E.g. 80/20: a draw in [0, 0.8) picks the
  first).
* **Backends** from each revision's *public* Endpoints ``<namespace>/<revision>``: the
  addresses under the port named ``http``, which Knative's ServerlessService controller fills
  with the activators in Proxy mode and with the revision's pods in Serve mode, exactly what
  kube-proxy would balance the public Service over. Requests go round robin over them with
  ``Knative-Serving-Revision`` and ``Knative-Serving-Namespace`` added, as Knative's ingress
  appends them on every route (the activator needs them; the queue-proxy ignores them).
* **Cold starts** from the *private* Endpoints (every pod of the revision, ready or not): a
  request that arrives while a revision has no pod at all starts one, and the time from its
  arrival to the first byte of its response is observed (``ColdStarts``). Only that first
  request counts; the others that arrive before a pod exists wait on the same cold start, and
  counting them too would turn one burst of 100 into, say, 9 "cold starts" of near-equal
  length. The figures (count, last, p50, p99) are written to the ConfigMap
  ``knative-serving/knpy-cold-starts``, one key ``<namespace>.<revision>`` each, for ``knpy get
  revisions``. Not on the Revision: Knative's revision reconciler copies a Revision's
  annotations into its pods' template, so an annotation there would roll the pods.

A revision with no backend yet (its public Endpoints not written, or empty while the SKS
switches) and a backend that refuses the connection both get a short wait and a new pick, for up
to RETRY_BUDGET_S: no byte of the request was sent, so it may be sent again (Knative's ingresses
retry on connect-failure the same way).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from shared.kube.client import ApiError, KubeClient, NotFound
from shared.kube.informer import EventType, Informer, InformerFactory
from shared.kube.resources import (
    CONFIGMAPS,
    ENDPOINTS,
    REVISION_LABEL,
    ROUTES,
    SERVICE_TYPE_LABEL,
    SERVICE_TYPE_PRIVATE,
    SERVICE_TYPE_PUBLIC,
    SYSTEM_NAMESPACE,
    Obj,
    key_of,
    labels_of,
)
from shared.proxy.exchange import Exchange
from shared.proxy.head import (
    DROP,
    PASS,
    HeaderKinds,
    connection_tokens,
    drop_listed,
    finish_head,
    request_line,
)
from shared.proxy.http1 import error_body, simple_response
from shared.proxy.upstream import UpstreamPool
from shared.seams import RevisionKey

_log = logging.getLogger("knpy.ingress")


@dataclass(frozen=True, slots=True)
class Target:
    key: RevisionKey
    percent: int


class Route:
    """The weighted targets of one host; ``pick`` is a bisect over cumulative weights."""

    __slots__ = ("_bounds", "targets")

    def __init__(self, targets: tuple[Target, ...]) -> None:
        live = tuple(t for t in targets if t.percent > 0)
        if not live:
            raise ValueError("a route needs at least one target with a percent above 0")
        self.targets = live
        total = sum(t.percent for t in live)
        acc = 0
        bounds = []
        for t in live:
            acc += t.percent
            bounds.append(acc / total)
        self._bounds = bounds

    def __repr__(self) -> str:
        return "<Route " + ", ".join(f"{t.key}={t.percent}%" for t in self.targets) + ">"

    def pick(self, draw: float) -> RevisionKey:
        """The target for a uniform ``draw`` in [0, 1)."""
        i = bisect.bisect_right(self._bounds, draw)
        return self.targets[min(i, len(self.targets) - 1)].key


@dataclass(slots=True)
class ColdStartSeries:
    """One revision's cold starts: cumulative histogram counts, and a window for quantiles."""

    bucket_counts: list[int]
    count: int = 0
    total_s: float = 0.0
    last_s: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=ColdStarts.RECENT))


class ColdStarts:
    """Cold start durations (first request at zero pods to its first response byte).

    Memory stays bounded however long the platform runs: the histogram is counters, and the
    median and p99 are taken over the last ``RECENT`` cold starts only.
    """

    BOUNDS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
    RECENT: Final = 1000

    def __init__(self) -> None:
        self.by_revision: dict[RevisionKey, ColdStartSeries] = {}

    def observe(self, key: RevisionKey, seconds: float) -> None:
        series = self.by_revision.get(key)
        if series is None:
            series = self.by_revision[key] = ColdStartSeries([0] * len(self.BOUNDS_S))
        for i, bound in enumerate(self.BOUNDS_S):
            if seconds <= bound:
                series.bucket_counts[i] += 1
        series.count += 1
        series.total_s += seconds
        series.last_s = seconds
        series.recent.append(seconds)

    def summary(self, key: RevisionKey) -> dict[str, float] | None:
        series = self.by_revision.get(key)
        if series is None:
            return None
        samples = sorted(series.recent)
        return {
            "count": float(series.count),
            "last_s": series.last_s,
            "p50_s": samples[len(samples) // 2],
            "p99_s": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        }


RETRY_INTERVAL_S: Final = 0.1
RETRY_BUDGET_S: Final = 10.0
# How often the cold-start figures are written to the API at most (one patch per revision).
COLD_STARTS_WRITE_S: Final = 0.5
COLD_STARTS_CONFIGMAP: Final = "knpy-cold-starts"
_HTTP_PORT_NAMES: Final = ("http", "http1")


class RoutingTable:
    """Hosts, backends and pod presence, kept from the informers' caches (level based).

    Handlers only mark what changed and rebuild that part from the cache, so a missed or
    coalesced event converges on the next one.
    """

    def __init__(self, domain: str = "localhost") -> None:
        self.domain = domain
        self.routes: dict[bytes, Route] = {}
        self.backends: dict[RevisionKey, tuple[tuple[str, int], ...]] = {}
        self.pods: dict[RevisionKey, int] = {}
        self._routes: Informer | None = None
        self._public: Informer | None = None
        self._private: Informer | None = None

    def __repr__(self) -> str:
        return f"<RoutingTable hosts={len(self.routes)} backends={len(self.backends)}>"

    def follow(self, factory: InformerFactory) -> None:
        """Feed the table from Routes and the revisions' public and private Endpoints."""
        self._routes = factory.informer(ROUTES)
        self._public = factory.informer(
            ENDPOINTS, label_selector=f"{SERVICE_TYPE_LABEL}={SERVICE_TYPE_PUBLIC}"
        )
        self._private = factory.informer(
            ENDPOINTS, label_selector=f"{SERVICE_TYPE_LABEL}={SERVICE_TYPE_PRIVATE}"
        )
        self._routes.add_handler(self._on_route)
        self._public.add_handler(self._on_public)
        self._private.add_handler(self._on_private)

    def _on_route(self, _event: EventType, _obj: Obj) -> None:
        assert self._routes is not None
        self.set_routes(route_hosts(self._routes.list(), self.domain))

    def set_routes(self, hosts: Mapping[str, tuple[Target, ...]]) -> None:
        """Replace the host table (host -> targets); hosts match case-insensitively."""
        table = {}
        for host, targets in hosts.items():
            try:
                table[host.lower().encode()] = Route(targets)
            except ValueError:
                continue  # every target at 0 %: nothing to serve on this host
        self.routes = table

    def _on_public(self, event: EventType, obj: Obj) -> None:
        key = _revision_key(obj)
        if event is EventType.DELETED:
            self.backends.pop(key, None)
        else:
            self.backends[key] = ready_addresses(obj)

    def _on_private(self, event: EventType, obj: Obj) -> None:
        key = _revision_key(obj)
        if event is EventType.DELETED:
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod_count(obj)


def _revision_key(endpoints: Obj) -> RevisionKey:
    """The revision an Endpoints object is for: Knative's revision label (the public one is
    also named after the revision)."""
    ns, name = key_of(endpoints)
    return RevisionKey(ns, labels_of(endpoints).get(REVISION_LABEL, name))


def ready_addresses(endpoints: Obj) -> tuple[tuple[str, int], ...]:
    """``ip:port`` of every ready address under the port named ``http`` (kube-proxy's view)."""
    out: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ports = [p for p in subset.get("ports") or [] if p.get("name") in _HTTP_PORT_NAMES]
        if not ports:
            continue
        port = int(ports[0]["port"])
        out += [(str(a["ip"]), port) for a in subset.get("addresses") or [] if a.get("ip")]
    return tuple(sorted(out))


def pod_count(endpoints: Obj) -> int:
    """Every pod behind an Endpoints object, ready or not."""
    return sum(
        len(subset.get("addresses") or []) + len(subset.get("notReadyAddresses") or [])
        for subset in endpoints.get("subsets") or []
    )


def route_hosts(routes: list[Obj], domain: str = "localhost") -> dict[str, tuple[Target, ...]]:
    """Host -> weighted revisions of every Route's ``status.traffic`` (Knative's ingress
    rules): the route's own host with the percents, and one host per tag with all of it."""
    hosts: dict[str, tuple[Target, ...]] = {}
    for route in routes:
        ns, name = key_of(route)
        status = route.get("status") or {}
        default_host = _host(status.get("url")) or f"{name}.{ns}.{domain}"
        main: list[Target] = []
        for t in status.get("traffic") or []:
            revision = t.get("revisionName")
            if not revision:
                continue
            key = RevisionKey(ns, str(revision))
            if t.get("percent"):
                main.append(Target(key, int(t["percent"])))
            tag = t.get("tag")
            if tag:
                host = _host(t.get("url")) or f"{tag}-{name}.{ns}.{domain}"
                hosts[host] = (Target(key, 100),)
        if main:
            hosts[default_host] = tuple(main)
    return hosts


def _host(url: object) -> str:
    if not isinstance(url, str) or "://" not in url:
        return ""
    return url.split("://", 1)[1].split("/", 1)[0]


# Exchange.tag for the ingress: the revision, for a cold start when it arrived, and retries.
@dataclass(slots=True)
class _Tag:
    key: RevisionKey
    cold_since: float
    lines: list[bytes]
    xff: bytes | None
    retries: int = 0


class Ingress:
    """A ``RequestHandler`` for ``shared.proxy.ProxyServer`` that routes by Host."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        table: RoutingTable,
        cold_starts: ColdStarts | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.table = table
        self.cold_starts = cold_starts if cold_starts is not None else ColdStarts()
        self._draw = (rng or random.Random()).random
        self._pools: dict[tuple[str, int], UpstreamPool] = {}
        self._next: dict[RevisionKey, int] = {}
        # Revisions whose cold start's first request is still in flight.
        self._cold: set[RevisionKey] = set()

    def __repr__(self) -> str:
        return f"<Ingress {self.table!r} pools={len(self._pools)}>"

    # -- RequestHandler ---------------------------------------------------------------------
    def handle(self, ex: Exchange) -> None:
        host, lines, xff = _scan(ex)
        name = host.rsplit(b":", 1)[0] if not host.endswith(b"]") else host
        route = self.table.routes.get(name.lower())
        if route is None:
            body = error_body(f"no route for host {host.decode('latin-1')!r}")
            ex.respond(simple_response(404, body), status=404)
            return
        key = route.pick(self._draw())
        now = time.monotonic()
        ex.started_at = now
        cold = not self.table.pods.get(key) and key not in self._cold
        if cold:
            self._cold.add(key)
        ex.tag = _Tag(key, now if cold else 0.0, lines, xff)
        self._send(ex)

    def _send(self, ex: Exchange) -> None:
        tag = ex.tag
        assert isinstance(tag, _Tag)
        backends = self.table.backends.get(tag.key)
        if not backends:
            if not self._later(ex):
                body = error_body(f"revision {tag.key} has no endpoints")
                ex.respond(simple_response(503, body), status=503)
            return
        i = self._next.get(tag.key, 0)
        self._next[tag.key] = i + 1
        backend = backends[i % len(backends)]
        head = ex.head if tag.retries else _finish(ex, list(tag.lines), tag.xff, tag.key)
        ex.forward(self._pool(backend), head)

    def finished(self, ex: Exchange) -> None:
        tag = ex.tag
        if isinstance(tag, _Tag) and tag.cold_since:
            self._cold.discard(tag.key)
            if ex.first_byte_at:
                self.cold_starts.observe(tag.key, ex.first_byte_at - tag.cold_since)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    # -- internals --------------------------------------------------------------------------
    def _pool(self, addr: tuple[str, int]) -> UpstreamPool:
        pool = self._pools.get(addr)
        if pool is None:
            pool = self._pools[addr] = UpstreamPool(
                self.loop, addr[0], addr[1], on_connect_error=self._connect_failed
            )
        return pool

    def _connect_failed(self, pool: UpstreamPool, ex: Exchange, err: OSError) -> bool:
        """Send the request again (see RETRY_BUDGET_S); False lets the proxy answer 502."""
        del pool, err
        return isinstance(ex.tag, _Tag) and not ex.done and self._later(ex)

    def _later(self, ex: Exchange) -> bool:
        tag = ex.tag
        assert isinstance(tag, _Tag)
        if tag.retries * RETRY_INTERVAL_S >= RETRY_BUDGET_S:
            return False
        if not tag.retries and not ex.head:
            ex.head = _finish(ex, list(tag.lines), tag.xff, tag.key)
        tag.retries += 1
        self.loop.call_later(RETRY_INTERVAL_S, self._retry, ex)
        return True

    def _retry(self, ex: Exchange) -> None:
        if not ex.done:
            self._send(ex)


class ColdStartWriter:
    """Writes each revision's cold-start figures to the ``knpy-cold-starts`` ConfigMap, at
    most every COLD_STARTS_WRITE_S, off the request path (one merge patch for all)."""

    def __init__(self, client: KubeClient, cold_starts: ColdStarts) -> None:
        self.client = client
        self.cold_starts = cold_starts
        self._written: dict[RevisionKey, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(COLD_STARTS_WRITE_S)
            data: dict[str, str] = {}
            counts: dict[RevisionKey, int] = {}
            for key, series in list(self.cold_starts.by_revision.items()):
                if self._written.get(key) == series.count:
                    continue
                figures = self.cold_starts.summary(key) or {}
                rounded = {k: round(v, 4) for k, v in figures.items()}
                data[f"{key.namespace}.{key.name}"] = json.dumps(rounded, sort_keys=True)
                counts[key] = series.count
            if not data:
                continue
            try:
                await self._write(data)
            except (ApiError, OSError) as err:
                _log.warning("cold starts not written: %s", err)
                continue
            self._written.update(counts)

    async def _write(self, data: dict[str, str]) -> None:
        try:
            await self.client.patch(
                CONFIGMAPS, SYSTEM_NAMESPACE, COLD_STARTS_CONFIGMAP, {"data": data}
            )
        except NotFound:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": COLD_STARTS_CONFIGMAP, "namespace": SYSTEM_NAMESPACE},
                "data": data,
            }
            await self.client.create(CONFIGMAPS, SYSTEM_NAMESPACE, body)


_HOST: Final = 2
_XFF: Final = 3
_XFP: Final = 4
_CONNECTION: Final = 5
_KINDS: Final = HeaderKinds(
    {
        b"host": _HOST,
        b"x-forwarded-for": _XFF,
        b"x-forwarded-proto": _XFP,
        b"connection": _CONNECTION,
    },
    # A client cannot route itself: the ingress alone names the revision for the activator.
    prefixes={b"knative-serving-": DROP},
)


def _scan(ex: Exchange) -> tuple[bytes, list[bytes], bytes | None]:
    """One pass over the client's headers: its Host, the lines to pass on, X-Forwarded-For."""
    spellings = _KINDS.spellings
    lines = [request_line(ex)]
    append = lines.append
    host = b""
    xff = None
    xfp = False
    drop: list[bytes] = []
    for name, value in ex.headers:
        kind = spellings.get(name)
        if kind is None:
            kind = _KINDS.learn(name)
        if kind == PASS:
            append(b"%b: %b\r\n" % (name, value))
        elif kind == _HOST:
            host = value
            append(b"%b: %b\r\n" % (name, value))
        elif kind == _XFF:
            xff = value if xff is None else xff + b", " + value
        elif kind == _XFP:
            xfp = True
            append(b"%b: %b\r\n" % (name, value))
        elif kind == _CONNECTION:
            drop.extend(connection_tokens(value))
    if drop:
        drop_listed(lines, drop)
    if not xfp:
        append(b"X-Forwarded-Proto: http\r\n")
    return host, lines, xff


def _finish(
    ex: Exchange, lines: list[bytes], xff: bytes | None, activator_for: RevisionKey | None = None
) -> bytes:
    """The head for the next hop; for the activator, naming the revision in
    Knative-Serving-Revision/-Namespace as Knative's ingress does for a revision whose public
    service is the activator. Trace context passes through: the ingress does not trace."""
    if activator_for is not None:
        lines.append(b"Knative-Serving-Revision: %b\r\n" % activator_for.name.encode())
        lines.append(b"Knative-Serving-Namespace: %b\r\n" % activator_for.namespace.encode())
    return finish_head(
        lines, ex, xff=xff, traceparent=None, tracestate=None, tracing=None, span_name=""
    )
