"""The queue-proxy's request policy, in the order of Knative's handler chain.

Knative composes (pkg/queue/sharedmain/handlers.go, outermost first): request log, drainer with
health checks, route tag, timeouts, the Forwarded shim, the proxy handler (stats, breaker) and the
request metrics, then httputil.ReverseProxy. Here the same steps are one pass over the request
headers and a few branches, because every function call on this path costs throughput:

1. Probes are answered here and never reach the app or the stats: ``K-Network-Probe: queue``,
   kubelet probes (``K-Kubelet-Probe`` or a ``kube-probe/`` user agent) and the activator's and
   autoscaler's probe user agents report the app's readiness (503 while draining);
   ``K-Network-Probe: probe`` is the ingress prober's and echoes ``K-Network-Hash``.
2. Everything else restarts the drain's quiet period, counts in the stats (before the breaker, so
   queued requests count as concurrency, as Knative's ProxyHandler) and gets its timeouts.
3. The head is rewritten: Knative-Serving-Revision/Namespace dropped, Host restored from
   K-Original-Host, Forwarded built from X-Forwarded-* when absent, the client's address
   appended to X-Forwarded-For (as Go's ReverseProxy does), hop-by-hop headers removed.
4. With containerConcurrency > 0 the breaker admits, queues (reading of the body paused) or
   rejects with 503.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING, Final

from queueproxy.drain import Drainer
from queueproxy.forwarded import generate_forwarded
from shared.breaker import ADMITTED, QUEUED, Breaker
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
from shared.proxy.tracing import Tracing
from shared.proxy.upstream import UpstreamPool
from shared.request_stats import RequestStats

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer

    from queueproxy.metrics import UserMetrics
    from queueproxy.readiness import ReadinessProber
    from shared.reqlog import RequestLogger

# Header kinds the policy looks at; every other header passes through untouched.
_HOST: Final = 2
_ORIGINAL_HOST: Final = 3
_NETWORK_PROBE: Final = 4
_KUBELET_PROBE: Final = 5
_USER_AGENT: Final = 6
_PROXY_REQUEST: Final = 7
_XFF: Final = 8
_XFP: Final = 9
_XFH: Final = 10
_FORWARDED: Final = 11
_CONNECTION: Final = 12
_TRACEPARENT: Final = 13
_TRACESTATE: Final = 14
_NETWORK_HASH: Final = 15

_KINDS: Final = HeaderKinds(
    {
        b"knative-serving-revision": DROP,
        b"knative-serving-namespace": DROP,
        b"host": _HOST,
        b"k-original-host": _ORIGINAL_HOST,
        b"k-network-probe": _NETWORK_PROBE,
        b"k-kubelet-probe": _KUBELET_PROBE,
        b"user-agent": _USER_AGENT,
        b"k-proxy-request": _PROXY_REQUEST,
        b"x-forwarded-for": _XFF,
        b"x-forwarded-proto": _XFP,
        b"x-forwarded-host": _XFH,
        b"forwarded": _FORWARDED,
        b"connection": _CONNECTION,
        b"traceparent": _TRACEPARENT,
        b"tracestate": _TRACESTATE,
        b"k-network-hash": _NETWORK_HASH,
    }
)

# User agents whose requests are health checks (knative.dev/networking header constants:
# kubelet's "kube-probe/", and the activator's and autoscaler's probes).
_PROBE_AGENTS: Final = (b"kube-probe/", b"Knative-Activator-Probe", b"Knative-Autoscaling-Probe")

# Per-request policy state kept in Exchange.tag (an int: no allocation per request); the
# queue-proxy's ProxyServer starts every tag at 0.
_PROXIED: Final = 1
_QUEUED: Final = 2
_ADMITTED: Final = 4
_PROBE: Final = 8

_QUEUE_BODY: Final = b"queue"
_QUEUE_FULL: Final = simple_response(503, error_body("pending request queue full"))
_SHUTTING_DOWN: Final = simple_response(503, error_body("shutting down"))
_NOT_READY: Final = simple_response(503, b"")
_READY: Final = simple_response(200, _QUEUE_BODY)
_NO_HASH: Final = error_body('a probe request must contain a non-empty "K-Network-Hash" header')


class QueueHandler:
    """Knative's queue-proxy chain for one revision's pod (see the module docstring)."""

    def __init__(
        self,
        *,
        pool: UpstreamPool[int],
        stats: RequestStats,
        drainer: Drainer,
        prober: ReadinessProber,
        metrics: UserMetrics,
        breaker: Breaker[Exchange[int]] | None,
        timeout_s: float,
        response_start_timeout_s: float,
        idle_timeout_s: float,
        request_log: RequestLogger | None = None,
        log_probes: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self.pool = pool
        self.stats = stats
        self.drainer = drainer
        self.prober = prober
        self.metrics = metrics
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.response_start_timeout_s = response_start_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.request_log = request_log
        self.log_probes = log_probes
        self.tracing = Tracing(tracer) if tracer is not None else None
        self._probes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<QueueHandler pool={self.pool!r} breaker={self.breaker!r}>"

    # -- RequestHandler ---------------------------------------------------------------------
    def handle(self, ex: Exchange[int]) -> None:
        now = monotonic()
        ex.started_at = now
        ex.last_write = now
        spellings = _KINDS.spellings
        out = [request_line(ex)]
        host = original_host = probe = xff = xfp = xfh = None
        traceparent = tracestate = network_hash = None
        health = forwarded = False
        drop: list[bytes] = []
        tag = 0
        for name, value in ex.headers:
            kind = spellings.get(name)
            if kind is None:
                kind = _KINDS.learn(name)
            if kind == PASS:
                out.append(b"%b: %b\r\n" % (name, value))
            elif kind == _HOST:
                host = value
            elif kind == DROP:
                pass
            elif kind == _USER_AGENT:
                if value.startswith(_PROBE_AGENTS):
                    health = True
                out.append(b"%b: %b\r\n" % (name, value))
            elif kind == _PROXY_REQUEST:
                if value == b"activator":
                    tag = _PROXIED
                out.append(b"%b: %b\r\n" % (name, value))
            elif kind == _ORIGINAL_HOST:
                original_host = value
            elif kind == _NETWORK_PROBE:
                probe = value
            elif kind == _KUBELET_PROBE:
                health = True
            elif kind == _XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == _XFP:
                xfp = value
                out.append(b"%b: %b\r\n" % (name, value))
            elif kind == _XFH:
                xfh = value
                out.append(b"%b: %b\r\n" % (name, value))
            elif kind == _FORWARDED:
                forwarded = True
                out.append(b"%b: %b\r\n" % (name, value))
            elif kind == _CONNECTION:
                drop.extend(connection_tokens(value))
            elif kind == _TRACEPARENT:
                traceparent = value
            elif kind == _TRACESTATE:
                tracestate = value
            elif kind == _NETWORK_HASH:
                network_hash = value
                out.append(b"%b: %b\r\n" % (name, value))

        if health or probe is not None:
            self._health(ex, probe, network_hash, health)
            return

        self.drainer.last_request = now  # restarts the drain's quiet period
        self.stats.req_in(now, tag == _PROXIED)
        ex.tag = tag
        ex.deadline = now + self.timeout_s
        if self.response_start_timeout_s:
            ex.start_deadline = now + self.response_start_timeout_s
        if self.idle_timeout_s:
            ex.idle_timeout = self.idle_timeout_s

        if drop:
            drop_listed(out, drop)
        if original_host is not None:
            host = original_host
        if host is not None:
            out.append(b"Host: %b\r\n" % host)
        if not forwarded and (xff or xfp or xfh):
            out.append(b"Forwarded: %b\r\n" % generate_forwarded(xff, xfp, xfh))
        ex.head = finish_head(
            out, ex, xff, traceparent, tracestate, self.tracing, "kn.queueproxy.proxy"
        )

        breaker = self.breaker
        if breaker is None:
            self.pool.send(ex)  # ex.head is set: forward() without its call
            return
        admission = breaker.try_acquire(ex)
        if admission is ADMITTED:
            ex.tag = tag | _ADMITTED
            self.pool.send(ex)  # ex.head is set: forward() without its call
        elif admission is QUEUED:
            ex.tag = tag | _QUEUED
            if self.tracing is not None:
                ex.wait_span = self.tracing.start_child("kn.queueproxy.wait", ex.span)
            ex.wait()
        else:
            ex.respond(_QUEUE_FULL, status=503)

    def finished(self, ex: Exchange[int]) -> None:
        tag = ex.tag
        now = monotonic()
        if tag & _PROBE:
            if self.log_probes and self.request_log is not None:
                self._log(ex, now)
            return
        self.stats.req_out(now, bool(tag & _PROXIED))
        status = ex.status or (499 if ex.aborted else 502)
        self.metrics.request_finished(status, now - ex.started_at)
        breaker = self.breaker
        if breaker is not None:
            if tag & _ADMITTED:
                waiter = breaker.release()
                if waiter is not None:
                    self._admit(waiter)
            elif tag & _QUEUED:
                breaker.cancel(ex)
                if ex.wait_span is not None:
                    ex.wait_span.end()
        if ex.span is not None:
            ex.span.set_attribute("http.response.status_code", status)
            ex.span.end()
        if self.request_log is not None:
            self._log(ex, now)

    # -- internals --------------------------------------------------------------------------
    def _admit(self, ex: Exchange[int]) -> None:
        ex.tag = (ex.tag & ~_QUEUED) | _ADMITTED
        if ex.wait_span is not None:
            ex.wait_span.end()
            ex.wait_span = None
        # Never a finished exchange: finished() cancels a queued waiter in the breaker.
        self.pool.send(ex)  # ex.head is set: forward() without its call

    def _health(
        self, ex: Exchange[int], probe: bytes | None, network_hash: bytes | None, health: bool
    ) -> None:
        ex.tag = _PROBE
        if self.drainer.draining:
            ex.respond(_SHUTTING_DOWN, status=503)
        elif probe == b"probe" and not health:
            # The ingress prober's probe (knative.dev/pkg network/handlers/drain.go).
            if not network_hash:
                ex.respond(simple_response(400, _NO_HASH), status=400)
            else:
                echo = simple_response(200, headers=((b"K-Network-Hash", network_hash),))
                ex.respond(echo, status=200)
        elif probe is not None and probe != _QUEUE_BODY:
            # As Knative's health.ProbeHandler: only the queue's own probe value is valid.
            body = error_body("unexpected probe header value: " + probe.decode("latin-1"))
            ex.respond(simple_response(400, body), status=400)
        else:
            task = asyncio.get_running_loop().create_task(self._probe(ex))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _probe(self, ex: Exchange[int]) -> None:
        try:
            ready = await self.prober.probe()
        except Exception:
            ready = False
        if ex.done:
            return
        if self.drainer.draining:
            ex.respond(_SHUTTING_DOWN, status=503)
        elif ready:
            ex.respond(_READY, status=200)
        else:
            ex.respond(_NOT_READY, status=503)

    def _log(self, ex: Exchange[int], now: float) -> None:
        log = self.request_log
        assert log is not None
        latency_s = now - ex.started_at if ex.started_at else 0.0
        log.log_exchange(ex, ex.status, latency_s, probe=bool(ex.tag & _PROBE))
