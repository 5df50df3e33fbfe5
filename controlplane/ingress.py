"""The local platform's ingress: Knative's networking layer for one machine.

Theory of operation. A request's Host names a route: ``<service>.<namespace>.localhost`` is the
service's default route and ``<tag>-<service>.<namespace>.localhost`` a tag route (Knative's
default domain template with ``localhost`` as the domain; the names come from
``controlplane.traffic.host_name`` and the table from ``Store.hosts()``). A route is a list of
revisions with percents; one is drawn at random with those weights (E.g. 80/20: a draw in
[0, 0.8) picks the first). Then, as Knative's ServerlessService mode says:

* serve mode with ready pods: straight to one pod's queue-proxy (round robin), Host kept;
* proxy mode, or no ready pod yet: to the activator, with ``Knative-Serving-Revision`` and
  ``Knative-Serving-Namespace`` naming the revision, as Knative's ingress does for a revision
  whose public service points at the activator.

A request that arrives while its revision has no pod at all starts a cold start: the time from
its arrival to the first byte of its response is observed (``ColdStarts``). Only that first
request counts; the others that arrive before a pod exists wait on the same cold start, and
counting them too would turn one burst of 100 into, say, 9 "cold starts" of near-equal length.
The next cold start can begin once that first request has finished.

The route table and the modes are set by the platform as they change; the ingress reads them per
request without locks (one event loop).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

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
from shared.seams import Endpoint, EndpointsSource, Mode, RevisionKey


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


# A connection that could not be made carried no byte of the request, so the request may be
# sent again: to the activator after a short wait (it restarts, or has not started yet), for
# up to RETRY_BUDGET_S; and a pod that refuses (it is going away) hands over to the activator,
# which knows which pods are still alive. Knative's ingresses retry the same way on
# connect-failure.
RETRY_INTERVAL_S: Final = 0.1
RETRY_BUDGET_S: Final = 10.0


# Exchange.tag for the ingress: the revision, for a cold start when it arrived, and retries.
@dataclass(slots=True)
class _Tag:
    key: RevisionKey
    cold_since: float
    retries: int = 0


class Ingress:
    """A ``RequestHandler`` for ``shared.proxy.ProxyServer`` that routes by Host."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        endpoints: EndpointsSource,
        mode_of: Callable[[RevisionKey], Mode],
        activator: tuple[str, int],
        cold_starts: ColdStarts | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.endpoints = endpoints
        self.mode_of = mode_of
        self.activator_pool = UpstreamPool(
            loop, activator[0], activator[1], on_connect_error=self._connect_failed
        )
        self.cold_starts = cold_starts if cold_starts is not None else ColdStarts()
        self._draw = (rng or random.Random()).random
        self.routes: dict[bytes, Route] = {}
        self._pools: dict[tuple[str, int], UpstreamPool] = {}
        self._next: dict[RevisionKey, int] = {}
        # Revisions whose cold start's first request is still in flight.
        self._cold: set[RevisionKey] = set()

    def __repr__(self) -> str:
        return f"<Ingress routes={len(self.routes)} pools={len(self._pools)}>"

    def set_routes(self, routes: Mapping[str, tuple[Target, ...]]) -> None:
        """Replace the route table (host -> targets); hosts are matched case-insensitively."""
        self.routes = {host.lower().encode(): Route(targets) for host, targets in routes.items()}

    # -- RequestHandler ---------------------------------------------------------------------
    def handle(self, ex: Exchange) -> None:
        host, lines, xff = _scan(ex)
        name = host.rsplit(b":", 1)[0] if not host.endswith(b"]") else host
        route = self.routes.get(name.lower())
        if route is None:
            body = error_body(f"no route for host {host.decode('latin-1')!r}")
            ex.respond(simple_response(404, body), status=404)
            return
        key = route.pick(self._draw())
        pods = self.endpoints.endpoints(key)
        now = time.monotonic()
        ex.started_at = now
        cold = not pods and key not in self._cold
        if cold:
            self._cold.add(key)
        ex.tag = _Tag(key, now if cold else 0.0)
        ready = [p for p in pods if p.ready]
        if ready and self.mode_of(key) is Mode.SERVE:
            pod = self._round_robin(key, ready)
            ex.forward(self._pool(pod), _finish(ex, lines, xff))
        else:
            ex.forward(self.activator_pool, _finish(ex, lines, xff, key))

    def finished(self, ex: Exchange) -> None:
        tag = ex.tag
        if isinstance(tag, _Tag) and tag.cold_since:
            self._cold.discard(tag.key)
            if ex.first_byte_at:
                self.cold_starts.observe(tag.key, ex.first_byte_at - tag.cold_since)

    def close(self) -> None:
        self.activator_pool.close()
        for pool in self._pools.values():
            pool.close()

    # -- internals --------------------------------------------------------------------------
    def _round_robin(self, key: RevisionKey, ready: list[Endpoint]) -> Endpoint:
        i = self._next.get(key, 0)
        self._next[key] = i + 1
        return ready[i % len(ready)]

    def _pool(self, pod: Endpoint) -> UpstreamPool:
        addr = (pod.host, pod.port)
        pool = self._pools.get(addr)
        if pool is None:
            pool = self._pools[addr] = UpstreamPool(
                self.loop, pod.host, pod.port, on_connect_error=self._connect_failed
            )
        return pool

    def _connect_failed(self, pool: UpstreamPool, ex: Exchange, err: OSError) -> bool:
        """Send the request again (see RETRY_BUDGET_S); False lets the proxy answer 502."""
        tag = ex.tag
        if not isinstance(tag, _Tag) or ex.done:
            return False
        if pool is not self.activator_pool:
            ex.forward(self.activator_pool, _activator_head(ex, tag.key))
            return True
        if tag.retries * RETRY_INTERVAL_S >= RETRY_BUDGET_S:
            return False
        tag.retries += 1
        self.loop.call_later(RETRY_INTERVAL_S, self._retry, ex)
        return True

    def _retry(self, ex: Exchange) -> None:
        if not ex.done:
            ex.forward(self.activator_pool, ex.head)


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


def _activator_head(ex: Exchange, key: RevisionKey) -> bytes:
    """A fresh head for the activator (after a pod refused the request)."""
    _, lines, xff = _scan(ex)
    return _finish(ex, lines, xff, key)
