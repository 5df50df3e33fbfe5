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

The edge. The ingress is the one door from outside, so what the hops behind it trust must not
come from a client:

* **Internal headers** are removed: ``K-Proxy-Request`` (the queue-proxy would count the
  request as the activator's, blinding the autoscaler), ``K-Network-Probe``/``-Hash`` and
  ``K-Kubelet-Probe`` (probe answers instead of the app), ``K-Original-Host`` (the Host the app
  sees), every ``K-Network-*`` and ``Knative-Serving-*`` (the revision is the ingress's to
  name). Kourier (net-kourier) sets ``Knative-Serving-Revision``/``-Namespace`` with Envoy's
  OVERWRITE_IF_EXISTS_OR_ADD and leaves the ``K-`` headers alone, because in a cluster the
  queue-proxy is not reachable from outside but through it; here the same holds only if the
  ingress strips them, so it does.
* **A probe's user agent** from outside (``kube-probe/``, ``Knative-Activator-Probe``,
  ``Knative-Autoscaling-Probe``, the prefixes the queue-proxy and activator answer as probes)
  is kept for the app but demoted: ``User-Agent: kube-probe/1.30`` reaches the app as
  ``User-Agent: external (kube-probe/1.30)``, a product with the original as its comment
  (RFC 9110 section 10.1.5), so no hop behind takes it for a probe and the app's logs still
  show what came. Removing it instead would lose that.
* **Forwarding headers** follow Envoy's rule, as Kourier configures it (``trusted-hops-count``
  in ``config-kourier``, Envoy's ``xff_num_trusted_hops``, default 0): with no trusted hop, the
  client's ``Forwarded``, ``X-Forwarded-*`` and ``X-Real-IP`` are removed and the ingress sets
  ``X-Forwarded-For`` (the peer), ``X-Forwarded-Proto`` (``http``) and ``X-Forwarded-Host``
  (the Host); the queue-proxy builds ``Forwarded`` from them. With N > 0 trusted hops, the
  peer is a proxy the operator trusts: its headers pass, the missing ones are set as above,
  and the peer is appended to its ``X-Forwarded-For``, whose N-th address from the right (as
  received) is the client.
* **Connection limits** (``shared.proxy.server.ConnectionLimits``): a request head within
  ``request-headers-timeout`` (default 10 s), a kept-alive connection idle for at most
  ``idle-timeout`` (default 120 s), and at most ``max-connections`` (default from the fd
  limit) before new connections are answered 503, all keys of ``config-kourier`` too (see
  ``EdgeConfig``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Final

from shared.gosyntax import parse_seconds
from shared.kube.client import ApiError, KubeClient, NotFound
from shared.kube.informer import EventType, Informer, InformerFactory
from shared.kube.resources import (
    BROKER_INGRESS_HOST,
    CONFIGMAPS,
    ENDPOINTS,
    EVENTING_NAMESPACE,
    RABBITMQ_BROKER_INGRESS_HOST,
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
from shared.observability import ObservabilityConfig, from_configmap
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
from shared.proxy.server import ConnectionLimits
from shared.proxy.tracing import Tracing
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
# Statuses with which the activator or a proxy says no pod answered: a request at zero pods that
# ends with one did not wait for a pod, and is no cold start (issue 10: crashing pods counted).
_NO_POD_ANSWERED: Final = frozenset({502, 503, 504})

# The ingress's ConfigMap, as Kourier's (net-kourier config/200-config.yaml) in the system
# namespace.
EDGE_CONFIGMAP: Final = "config-kourier"
# Tracing follows the serving components' ConfigMap rather than Kourier's own keys: one switch
# for every hop of the local platform (see ``RoutingTable.set_observability``).
OBSERVABILITY_CONFIGMAP: Final = "config-observability"
# A request head arrives within this long. Clients on loopback or a LAN send one in well under
# 100 ms; 10 s leaves room for a 64 KiB head (MAX_HEAD_BYTES) at 56 kbit/s, and makes 500
# slowloris connections live 10 s instead of for ever.
HEADER_TIMEOUT_S: Final = 10.0
# A kept-alive client connection with no request in it is closed after this. Longer than the
# idle timeouts of the common clients' pools (aiohttp 15 s, Go's and so k6's 90 s), so that the
# client closes first and never reuses a connection the ingress is closing. nginx: 75 s.
IDLE_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """The ingress's settings from ``config-kourier`` (each key's default when absent).

    ``trusted-hops-count`` is Kourier's own key (Envoy's ``xff_num_trusted_hops``); Kourier leaves
    Envoy's header, idle and connection limits at their defaults, so the other three are knpy's,
    named after Envoy's settings: ``request-headers-timeout`` and ``idle-timeout`` (Go
    durations, "0s" for none) and ``max-connections`` ("0": from the fd limit).
    """

    trusted_hops: int = 0
    header_timeout_s: float = HEADER_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connections: int = 0

    @classmethod
    def from_data(cls, data: Mapping[str, str]) -> EdgeConfig:
        """Raises ValueError naming the key whose value is bad."""
        return cls(
            trusted_hops=_count(data, "trusted-hops-count", 0),
            header_timeout_s=_seconds(data, "request-headers-timeout", HEADER_TIMEOUT_S),
            idle_timeout_s=_seconds(data, "idle-timeout", IDLE_TIMEOUT_S),
            max_connections=_count(data, "max-connections", 0),
        )

    def limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.header_timeout_s, self.idle_timeout_s, self.max_connections)


def _count(data: Mapping[str, str], key: str, default: int) -> int:
    raw = data.get(key)
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise ValueError(f"{key}: must be a whole number of 0 or more, got {raw!r}")
    return int(raw)


def _seconds(data: Mapping[str, str], key: str, default: float) -> float:
    raw = data.get(key)
    if raw is None:
        return default
    try:
        seconds = parse_seconds(raw.strip())
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ValueError(f'{key}: must be a Go duration such as "10s" (0s: none), got {raw!r}')
    return seconds


class RoutingTable:
    """Hosts, backends and pod presence, and the edge's settings, kept from the informers'
    caches (level based).

    Handlers only mark what changed and rebuild that part from the cache, so a missed or
    coalesced event converges on the next one. ``limits`` is one object for the life of the
    table, changed in place, so that the ingress's ``ProxyServer`` sees each change.
    """

    def __init__(self, domain: str = "localhost") -> None:
        self.domain = domain
        self.routes: dict[bytes, Route] = {}
        self.set_routes({})  # the platform's own hosts, before any Route
        self.backends: dict[RevisionKey, tuple[tuple[str, int], ...]] = {}
        self.pods: dict[RevisionKey, int] = {}
        self.edge = EdgeConfig()
        self.limits = self.edge.limits()
        self._routes: Informer | None = None
        self._public: Informer | None = None
        self._private: Informer | None = None
        self._config: Informer | None = None
        # None unless config-observability turns tracing on: the hot path tests for None.
        self.tracing: Tracing | None = None
        self._observability = ObservabilityConfig()

    def __repr__(self) -> str:
        return f"<RoutingTable hosts={len(self.routes)} backends={len(self.backends)}>"

    async def synced(self) -> None:
        """Once every informer ``follow`` started has its first list (an ingress worker
        serves only then: before, every host would be 404)."""
        for informer in (self._routes, self._public, self._private, self._config):
            if informer is not None:
                await informer.wait_synced()

    def follow(self, factory: InformerFactory) -> None:
        """Feed the table from Routes and the revisions' public and private Endpoints."""
        self._routes = factory.informer(ROUTES)
        self._public = factory.informer(
            ENDPOINTS, label_selector=f"{SERVICE_TYPE_LABEL}={SERVICE_TYPE_PUBLIC}"
        )
        self._private = factory.informer(
            ENDPOINTS, label_selector=f"{SERVICE_TYPE_LABEL}={SERVICE_TYPE_PRIVATE}"
        )
        self._config = factory.informer(CONFIGMAPS, namespace=SYSTEM_NAMESPACE)
        self._routes.add_handler(self._on_route)
        self._public.add_handler(self._on_public)
        self._private.add_handler(self._on_private)
        self._config.add_handler(self._on_config)

    def _on_config(self, _event: EventType, obj: Obj) -> None:
        assert self._config is not None
        if key_of(obj)[1] == OBSERVABILITY_CONFIGMAP:
            cm = self._config.get(SYSTEM_NAMESPACE, OBSERVABILITY_CONFIGMAP) or {}
            try:
                self.set_observability(from_configmap(cm.get("data") or {}))
            except ValueError as err:
                _log.error("%s/%s not applied: %s", SYSTEM_NAMESPACE, OBSERVABILITY_CONFIGMAP, err)
            return
        if key_of(obj)[1] != EDGE_CONFIGMAP:
            return
        cm = self._config.get(SYSTEM_NAMESPACE, EDGE_CONFIGMAP) or {}
        try:
            self.set_edge(EdgeConfig.from_data(cm.get("data") or {}))
        except ValueError as err:
            # As Knative's ConfigMap watchers: a bad value is logged, the last good one kept.
            _log.error("%s/%s not applied: %s", SYSTEM_NAMESPACE, EDGE_CONFIGMAP, err)

    def set_edge(self, edge: EdgeConfig) -> None:
        """Apply new edge settings: trusted hops from the next request, limits from the next
        connection or sweep."""
        self.edge = edge
        limits = self.limits
        limits.header_timeout_s = edge.header_timeout_s
        limits.idle_timeout_s = edge.idle_timeout_s
        limits.max_connections = edge.max_connections

    def set_observability(self, obs: ObservabilityConfig) -> None:
        """Trace from the next request when config-observability's tracing keys changed (as
        the activator follows them), with the service name "ingress".

        Raises:
            ConfigError: the exporter cannot be built (the last good tracer is kept).
        """
        old = self._observability
        if _tracing_of(obs) == _tracing_of(old):
            return
        tracing = None
        if obs.tracing_protocol != "none":
            from shared.tracing import setup_tracing

            tracer = setup_tracing("ingress", obs)
            tracing = Tracing(tracer) if tracer is not None else None
        self.close_tracing()
        self.tracing, self._observability = tracing, obs

    def close_tracing(self) -> None:
        """Flush the spans still batched (blocking, at most the exporter's timeout)."""
        if self.tracing is not None:
            from shared.tracing import shutdown_tracing

            shutdown_tracing(self.tracing.tracer)
            self.tracing = None

    def _on_route(self, _event: EventType, _obj: Obj) -> None:
        assert self._routes is not None
        self.set_routes(route_hosts(self._routes.list(), self.domain))

    def set_routes(self, hosts: Mapping[str, tuple[Target, ...]]) -> None:
        """Replace the host table (host -> targets); hosts match case-insensitively. The
        platform's own hosts (``SYSTEM_HOSTS``) are always in it."""
        table = {}
        for host, targets in {**hosts, **SYSTEM_HOSTS}.items():
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
        if key in _SYSTEM_KEYS:  # no private Service: its pods are these (no cold starts)
            self.pods[key] = pod_count(obj) if event is not EventType.DELETED else 0

    def _on_private(self, event: EventType, obj: Obj) -> None:
        key = _revision_key(obj)
        if event is EventType.DELETED:
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod_count(obj)


def _tracing_of(obs: ObservabilityConfig) -> tuple[str, str, float]:
    return obs.tracing_protocol, obs.tracing_endpoint, obs.tracing_sampling_rate


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


# Hosts of the platform's own components, routed like a revision to the ready addresses of
# their Service's Endpoints (labelled Public, see controlplane/system.py): the broker data
# planes at a Broker's status.address.url (the default class's and the RabbitMQBroker one's).
SYSTEM_HOSTS: Final[Mapping[str, tuple[Target, ...]]] = {
    BROKER_INGRESS_HOST: (Target(RevisionKey(EVENTING_NAMESPACE, "broker-ingress"), 100),),
    RABBITMQ_BROKER_INGRESS_HOST: (
        Target(RevisionKey(EVENTING_NAMESPACE, "rabbitmq-broker-ingress"), 100),
    ),
}
_SYSTEM_KEYS: Final = frozenset(t.key for ts in SYSTEM_HOSTS.values() for t in ts)


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
# None until the request is routed (and for one answered by the ingress itself).
@dataclass(slots=True)
class _Tag:
    key: RevisionKey
    cold_since: float
    lines: list[bytes]
    xff: bytes | None
    retries: int = 0


_Ex = Exchange[_Tag | None]


class Ingress:
    """A ``RequestHandler[_Tag | None]`` for ``shared.proxy.ProxyServer`` that routes by Host.

    Serve it as ``ProxyServer(ingress, initial_tag=None, limits=ingress.limits)``.
    """

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
        self._pools: dict[tuple[str, int], UpstreamPool[_Tag | None]] = {}
        self._next: dict[RevisionKey, int] = {}
        # Revisions whose cold start's first request is still in flight.
        self._cold: set[RevisionKey] = set()

    def __repr__(self) -> str:
        return f"<Ingress {self.table!r} pools={len(self._pools)}>"

    @property
    def limits(self) -> ConnectionLimits:
        """The client connections' limits, following ``config-kourier``."""
        return self.table.limits

    # -- RequestHandler ---------------------------------------------------------------------
    def handle(self, ex: _Ex) -> None:
        host, lines, xff = _scan(ex, self.table.edge.trusted_hops > 0)
        name = host.rsplit(b":", 1)[0] if not host.endswith(b"]") else host
        route = self.table.routes.get(name.lower())
        if route is None:
            body = error_body(f"no route for host {host.decode('latin-1')!r}")
            ex.respond(simple_response(404, body), status=404)
            return
        key = route.pick(self._draw())
        now = monotonic()
        ex.started_at = now
        cold = not self.table.pods.get(key) and key not in self._cold
        if cold:
            self._cold.add(key)
        ex.tag = _Tag(key, now if cold else 0.0, lines, xff)
        self._send(ex)

    def _send(self, ex: _Ex) -> None:
        tag = ex.tag
        assert tag is not None
        backends = self.table.backends.get(tag.key)
        if not backends:
            if not self._later(ex):
                body = error_body(f"revision {tag.key} has no endpoints")
                ex.respond(simple_response(503, body), status=503)
            return
        i = self._next.get(tag.key, 0)
        self._next[tag.key] = i + 1
        backend = backends[i % len(backends)]
        head = (
            ex.head
            if tag.retries
            else _finish(ex, list(tag.lines), tag.xff, tag.key, self.table.tracing)
        )
        ex.forward(self._pool(backend), head)

    def finished(self, ex: _Ex) -> None:
        tag = ex.tag
        if ex.span is not None:
            ex.span.set_attribute("http.response.status_code", ex.status or 502)
            ex.span.end()
        if tag is not None and tag.cold_since:
            self._cold.discard(tag.key)
            # A cold start is a request that waited at zero pods for one to answer: not one
            # the activator failed (no pod came, or it crashed), nor one cut before any answer.
            if ex.first_byte_at and ex.status not in _NO_POD_ANSWERED:
                self.cold_starts.observe(tag.key, ex.first_byte_at - tag.cold_since)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self.table.close_tracing()

    # -- internals --------------------------------------------------------------------------
    def _pool(self, addr: tuple[str, int]) -> UpstreamPool[_Tag | None]:
        pool = self._pools.get(addr)
        if pool is None:
            pool = self._pools[addr] = UpstreamPool(
                self.loop, addr[0], addr[1], on_connect_error=self._connect_failed
            )
        return pool

    def _connect_failed(self, pool: UpstreamPool[_Tag | None], ex: _Ex, err: OSError) -> bool:
        """Send the request again (see RETRY_BUDGET_S); False lets the proxy answer 502."""
        del pool, err
        return ex.tag is not None and not ex.done and self._later(ex)

    def _later(self, ex: _Ex) -> bool:
        tag = ex.tag
        assert tag is not None
        if tag.retries * RETRY_INTERVAL_S >= RETRY_BUDGET_S:
            return False
        if not tag.retries and not ex.head:
            ex.head = _finish(ex, list(tag.lines), tag.xff, tag.key, self.table.tracing)
        tag.retries += 1
        self.loop.call_later(RETRY_INTERVAL_S, self._retry, ex)
        return True

    def _retry(self, ex: _Ex) -> None:
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
_XFH: Final = 5
_FORWARDING: Final = 6
_CONNECTION: Final = 7
_USER_AGENT: Final = 8
_KINDS: Final = HeaderKinds(
    {
        b"host": _HOST,
        b"x-forwarded-for": _XFF,
        b"x-forwarded-proto": _XFP,
        b"x-forwarded-host": _XFH,
        b"forwarded": _FORWARDING,
        b"x-real-ip": _FORWARDING,
        b"connection": _CONNECTION,
        b"user-agent": _USER_AGENT,
        # Knative's internal headers (knative.dev/networking's header names): see the module
        # docstring. K-Network-Probe and -Hash are under the prefix below.
        b"k-proxy-request": DROP,
        b"k-kubelet-probe": DROP,
        b"k-original-host": DROP,
    },
    prefixes={
        b"knative-serving-": DROP,  # the ingress alone names the revision for the activator
        b"k-network-": DROP,
        b"x-forwarded-": _FORWARDING,  # -Port, -Prefix, -Server, -Client-Cert ...
    },
)

# User agents the hops behind answer as probes (queueproxy/handler.py _PROBE_AGENTS, the
# activator's "kube-probe/"), and how the ingress demotes one (see the module docstring).
_PROBE_AGENTS: Final = (b"kube-probe/", b"Knative-Activator-Probe", b"Knative-Autoscaling-Probe")
_XFP_HTTP: Final = b"X-Forwarded-Proto: http\r\n"


def _scan(ex: _Ex, trusted: bool) -> tuple[bytes, list[bytes], bytes | None]:
    """One pass over the client's headers: its Host, the lines to pass on, and the
    X-Forwarded-For chain to extend with the peer (None: the peer alone).

    ``trusted``: the peer is a trusted proxy (``trusted-hops-count`` > 0): its forwarding
    headers pass; otherwise they are removed and the ingress's own set.
    """
    spellings = _KINDS.spellings
    lines = [request_line(ex)]
    host = b""
    xff = None
    xfp = xfh = False
    drop: list[bytes] = []
    for name, value in ex.headers:
        kind = spellings.get(name)
        if kind is None:
            kind = _KINDS.learn(name)
        if kind == PASS:
            lines.append(b"%b: %b\r\n" % (name, value))
        elif kind == _HOST:
            host = value
            lines.append(b"%b: %b\r\n" % (name, value))
        elif kind == _USER_AGENT:
            if value.startswith(_PROBE_AGENTS):
                value = b"external (%b)" % value
            lines.append(b"%b: %b\r\n" % (name, value))
        elif kind == DROP:
            pass
        elif not trusted:
            if kind == _CONNECTION:
                drop.extend(connection_tokens(value))
        elif kind == _XFF:
            xff = value if xff is None else xff + b", " + value
        elif kind == _XFP:
            xfp = True
            lines.append(b"%b: %b\r\n" % (name, value))
        elif kind == _XFH:
            xfh = True
            lines.append(b"%b: %b\r\n" % (name, value))
        elif kind == _FORWARDING:
            lines.append(b"%b: %b\r\n" % (name, value))
        elif kind == _CONNECTION:
            drop.extend(connection_tokens(value))
    if drop:
        drop_listed(lines, drop)
    if not xfp:
        lines.append(_XFP_HTTP)
    if not xfh and host:
        lines.append(b"X-Forwarded-Host: %b\r\n" % host)
    return host, lines, xff


def _finish(
    ex: _Ex,
    lines: list[bytes],
    xff: bytes | None,
    activator_for: RevisionKey | None = None,
    tracing: Tracing | None = None,
) -> bytes:
    """The head for the next hop; for the activator, naming the revision in
    Knative-Serving-Revision/-Namespace as Knative's ingress does for a revision whose public
    service is the activator. Without tracing the client's trace context passes through as
    any header; with it, the ingress's span (under the client's context) replaces it."""
    if activator_for is not None:
        lines.append(b"Knative-Serving-Revision: %b\r\n" % activator_for.name.encode())
        lines.append(b"Knative-Serving-Namespace: %b\r\n" % activator_for.namespace.encode())
    traceparent = tracestate = None
    if tracing is not None:
        traceparent, tracestate = _take_trace_context(lines)
    return finish_head(
        lines,
        ex,
        xff=xff,
        traceparent=traceparent,
        tracestate=tracestate,
        tracing=tracing,
        span_name="kn.ingress.proxy",
    )


def _take_trace_context(lines: list[bytes]) -> tuple[bytes | None, bytes | None]:
    """Remove the client's ``traceparent`` and ``tracestate`` lines and return their values.

    Only with tracing on: the untraced path keeps them as plain lines and pays nothing.
    """
    found: dict[bytes, bytes] = {}
    kept = []
    for line in lines:
        name, sep, value = line.partition(b":")
        key = name.lower()
        if sep and key in (b"traceparent", b"tracestate"):
            found[key] = value.strip()
        else:
            kept.append(line)
    lines[:] = kept
    return found.get(b"traceparent"), found.get(b"tracestate")
