"""The activator's request policy, in the order of Knative's activator handler chain.

Knative composes (cmd/activator/main.go, outermost first): the kubelet health check, the
network probe handlers, tracing, the context handler (which revision?), request metrics and
the concurrency reporter, the timeout handler, then the activation handler (throttler, then
httputil.ReverseProxy). Here it is one pass over the request headers and a few branches:

1. Kubelet probes (``K-Kubelet-Probe`` or a ``kube-probe/`` user agent) get the activator's own
   health: 500 with the reason once SIGTERM arrived or while the autoscaler link is down,
   else 200 (healthz_handler.go, newHealthCheck). ``K-Network-Probe: activator`` is answered
   ``activator``, any other value is a 400 (probe_handler.go); ``K-Network-Probe: probe`` is
   the ingress prober's and echoes ``K-Network-Hash``.
2. The revision comes from ``Knative-Serving-Revision`` and ``Knative-Serving-Namespace``, or
   from a ``<revision>.<namespace>.svc.<cluster domain>`` Host; an unknown one is a 404
   (context_handler.go).
3. The request counts in the demand stats from now until its response ends, queueing included
   (concurrency_reporter.go), and gets the revision's timeouts.
4. The head is rewritten once, before it waits: the routing headers and hop-by-hop headers
   dropped, Host moved to ``K-Original-Host`` unless that is set (RewriteHostIn),
   ``K-Proxy-Request: activator`` set, the client appended to ``X-Forwarded-For``. The pod's
   address becomes the Host line when a pod is chosen.
5. The throttler admits it (forward now), queues it (the body stays unread in the socket) or
   refuses it (503 "pending request queue full").
6. A pod that refuses the connection is dropped and the request, none of it sent yet, tries
   again on another pod (at most MAX_CONNECT_RETRIES times); any other upstream failure is a
   502 from the proxy core.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Final

from activator.revisions import ActivatorRequest, ActiveRevision, RevisionTable
from shared.breaker import ADMITTED, QUEUED
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

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.sdk.trace import Tracer

    from activator.reporter import ConcurrencyReporter
    from shared.proxy.exchange import Exchange
    from shared.proxy.upstream import UpstreamPool

__all__ = ["MAX_CONNECT_RETRIES", "ActivatorHandler"]

# Pods a request may be refused by before it fails with a 502: enough to step over the pods
# of a scale-down, not enough to turn one request into a storm.
MAX_CONNECT_RETRIES: Final = 3

_HOST: Final = 2
_ORIGINAL_HOST: Final = 3
_NETWORK_PROBE: Final = 4
_KUBELET_PROBE: Final = 5
_USER_AGENT: Final = 6
_XFF: Final = 7
_CONNECTION: Final = 8
_TRACEPARENT: Final = 9
_TRACESTATE: Final = 10
_NETWORK_HASH: Final = 11
_REVISION: Final = 12
_NAMESPACE: Final = 13

_KINDS: Final = HeaderKinds(
    {
        b"knative-serving-revision": _REVISION,
        b"knative-serving-namespace": _NAMESPACE,
        b"k-proxy-request": DROP,  # set below, as Knative's r.Header.Set
        b"host": _HOST,
        b"k-original-host": _ORIGINAL_HOST,
        b"k-network-probe": _NETWORK_PROBE,
        b"k-kubelet-probe": _KUBELET_PROBE,
        b"user-agent": _USER_AGENT,
        b"x-forwarded-for": _XFF,
        b"connection": _CONNECTION,
        b"traceparent": _TRACEPARENT,
        b"tracestate": _TRACESTATE,
        b"k-network-hash": _NETWORK_HASH,
    }
)

_KUBE_PROBE_AGENT: Final = b"kube-probe/"
_ACTIVATOR: Final = b"activator"
_PROXY_LINE: Final = b"K-Proxy-Request: activator\r\n"
_QUEUE_FULL: Final = simple_response(503, error_body("pending request queue full"))
_HEALTHY: Final = simple_response(200)
_PROBE_OK: Final = simple_response(200, _ACTIVATOR)
_NO_HASH: Final = error_body('a probe request must contain a non-empty "K-Network-Hash" header')


class ActivatorHandler:
    """Knative's activator chain on the raw proxy (see the module docstring)."""

    def __init__(
        self,
        table: RevisionTable,
        reporter: ConcurrencyReporter,
        *,
        health: Callable[[], str | None],
        cluster_domain: str = "cluster.local",
        tracer: Tracer | None = None,
    ) -> None:
        self.table = table
        self.reporter = reporter
        self.health = health
        self.cluster_domain = cluster_domain.encode()
        self.tracing = Tracing(tracer) if tracer is not None else None

    def __repr__(self) -> str:
        return f"<ActivatorHandler {self.table!r}>"

    def set_tracer(self, tracer: Tracer | None) -> None:
        """config-observability changed the tracing settings: spans from now on go here."""
        self.tracing = Tracing(tracer) if tracer is not None else None

    # -- RequestHandler ---------------------------------------------------------------------
    def handle(self, ex: Exchange[ActivatorRequest | None]) -> None:
        now = monotonic()
        ex.started_at = now
        ex.last_write = now
        spellings = _KINDS.spellings
        out = [request_line(ex)]
        name = namespace = host = original_host = probe = xff = None
        traceparent = tracestate = network_hash = None
        kubelet = False
        drop: list[bytes] = []
        for hname, value in ex.headers:
            kind = spellings.get(hname)
            if kind is None:
                kind = _KINDS.learn(hname)
            if kind == PASS:
                out.append(b"%b: %b\r\n" % (hname, value))
            elif kind == _REVISION:
                name = value
            elif kind == _NAMESPACE:
                namespace = value
            elif kind == _HOST:
                host = value
            elif kind == DROP:
                pass
            elif kind == _USER_AGENT:
                if value.startswith(_KUBE_PROBE_AGENT):
                    kubelet = True
                out.append(b"%b: %b\r\n" % (hname, value))
            elif kind == _ORIGINAL_HOST:
                original_host = value
            elif kind == _NETWORK_PROBE:
                probe = value
            elif kind == _KUBELET_PROBE:
                kubelet = True
            elif kind == _XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == _CONNECTION:
                drop.extend(connection_tokens(value))
            elif kind == _TRACEPARENT:
                traceparent = value
            elif kind == _TRACESTATE:
                tracestate = value
            elif kind == _NETWORK_HASH:
                network_hash = value
                out.append(b"%b: %b\r\n" % (hname, value))

        if kubelet:
            self._health(ex)
            return
        if probe is not None:
            self._probe(ex, probe, network_hash)
            return

        if not name or not namespace:
            name, namespace = self._from_host(host)
        rev = self.table.lookup(namespace, name) if name and namespace else None
        if rev is None:
            self._not_found(ex, name)
            return

        if drop:
            drop_listed(out, drop)
        out.append(_PROXY_LINE)
        if original_host is None:
            original_host = host
        if original_host is not None:
            out.append(b"K-Original-Host: %b\r\n" % original_host)
        # Not terminated: the pod's Host line and the blank line follow per pod.
        head = finish_head(
            out, ex, xff, traceparent, tracestate, self.tracing, "kn.activator.proxy", False
        )

        stats = rev.stats
        if stats.removed:
            stats = rev.stats = self.reporter.entry(rev.key, now)
        stats.req_in(now)
        ex.tag = ActivatorRequest(rev, head, stats)
        ex.deadline = now + rev.timeout_s
        if rev.response_start_timeout_s:
            ex.start_deadline = now + rev.response_start_timeout_s
        if rev.idle_timeout_s:
            ex.idle_timeout = rev.idle_timeout_s
        self._admit(rev, ex)

    def finished(self, ex: Exchange[ActivatorRequest | None]) -> None:
        rec = ex.tag
        if rec is None:  # answered here (probe, 404): not a request of a revision
            return
        now = monotonic()
        rev = rec.rev
        tracker = rec.tracker
        if tracker is not None:
            rec.tracker = None
            woken = rev.throttler.release(tracker)
        else:
            woken = rev.throttler.cancel(ex)
        if woken:
            rev.wake(woken)
        rec.stats.req_out(now)
        status = ex.status or (499 if ex.aborted else 502)
        if rev.metrics is not None:
            rev.metrics.request_finished(status, now - ex.started_at)
        if ex.wait_span is not None:
            ex.wait_span.end()
            ex.wait_span = None
        if ex.span is not None:
            ex.span.set_attribute("http.response.status_code", status)
            ex.span.end()
        if rev.request_log is not None:
            # Knative's RequestLogHandler around the activation handler: only requests for a
            # revision, never probes.
            rev.request_log.log_exchange(ex, status, now - ex.started_at)

    # -- the upstream pools' hook -----------------------------------------------------------
    def connect_failed(
        self,
        pool: UpstreamPool[ActivatorRequest | None],
        ex: Exchange[ActivatorRequest | None],
        err: OSError,
    ) -> bool:
        """A pod refused the connection before any byte was sent: drop it, try another."""
        rec = ex.tag
        if rec is None or rec.tracker is None:
            return False
        rev = rec.rev
        tracker = rec.tracker
        rev.pod_failed(tracker.address)
        if rec.retries >= MAX_CONNECT_RETRIES:
            return False  # 502; finished() gives the slot back
        rec.retries += 1
        rec.tracker = None
        woken = rev.throttler.release(tracker)
        if woken:
            rev.wake(woken)
        if not ex.done:
            self._admit(rev, ex)
        return True

    # -- internals --------------------------------------------------------------------------
    def _admit(self, rev: ActiveRevision, ex: Exchange[ActivatorRequest | None]) -> None:
        admission = rev.throttler.try_acquire(ex)
        if admission is ADMITTED:
            rev.go(ex)
        elif admission is QUEUED:
            if self.tracing is not None:
                ex.wait_span = self.tracing.start_child("kn.activator.throttler_try", ex.span)
            ex.wait()
        else:
            ex.respond(_QUEUE_FULL, status=503)

    def _from_host(self, host: bytes | None) -> tuple[bytes | None, bytes | None]:
        """``<revision>.<namespace>.svc.<cluster domain>[:port]`` (Knative's context handler)."""
        if host is None:
            return None, None
        parts = host.split(b".", 3)
        if (
            len(parts) == 4
            and parts[2] == b"svc"
            and parts[3].split(b":", 1)[0] == self.cluster_domain
        ):
            return parts[0], parts[1]
        return None, None

    def _not_found(self, ex: Exchange[ActivatorRequest | None], name: bytes | None) -> None:
        revision = (name or b"").decode("latin-1")
        body = error_body(
            f'Error getting active endpoint: revision.serving.knative.dev "{revision}" not found'
        )
        ex.respond(simple_response(404, body), status=404)

    def _health(self, ex: Exchange[ActivatorRequest | None]) -> None:
        problem = self.health()
        if problem is None:
            ex.respond(_HEALTHY, status=200)
        else:
            ex.respond(simple_response(500, error_body(problem)), status=500)

    def _probe(
        self, ex: Exchange[ActivatorRequest | None], probe: bytes, network_hash: bytes | None
    ) -> None:
        if probe == _ACTIVATOR:
            ex.respond(_PROBE_OK, status=200)
        elif probe == b"probe":
            # The ingress prober's probe (knative.dev/networking pkg/http/probe/handler.go).
            if not network_hash:
                ex.respond(simple_response(400, _NO_HASH), status=400)
            else:
                echo = simple_response(200, headers=((b"K-Network-Hash", network_hash),))
                ex.respond(echo, status=200)
        else:
            body = error_body("unexpected probe header value: " + probe.decode("latin-1"))
            ex.respond(simple_response(400, body), status=400)
