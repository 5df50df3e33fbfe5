"""The asyncio shell around each revision's throttler: Knative's Throttler and its watchers.

Theory of operation (pkg/activator/net/throttler.go Throttler, revision_backends.go):

- An ``ActiveRevision`` exists for every revision that got a request. It owns the pure
  ``RevisionThrottler`` (who goes, who waits, which pod), a ``RevisionBackends`` (the pods that
  answered a probe), and one ``UpstreamPool`` of kept-alive connections per pod.
- Everything that changes capacity (a pod became healthy or failed, the set of activators
  changed, a request ended) asks the throttler, which returns the waiters it admitted; the shell
  then *does* it: ``wake`` picks each waiter's reserved pod and forwards the request there. A
  waiter is the request's ``Exchange`` itself, so waiting costs no future, no task and no
  timer: the proxy's one timeout sweep ends a request that waited too long (504), and the
  handler's ``finished`` gives back what it held.
- ``RevisionTable`` finds the ActiveRevision of a request (a dict lookup on the raw routing
  header bytes), creates it on first use from the revision seam, forgets deleted revisions,
  and tells every revision where this activator stands among all of them (Knative's
  activator-endpoints watch), so the throttler can take its slice of the pods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from activator.backends import RevisionBackends
from activator.reporter import RevisionStats, removed_stats
from activator.split import activator_index
from activator.throttler import RevisionThrottler
from shared.proxy.upstream import ConnectErrorHook, UpstreamPool
from shared.seams import EndpointsSource, RevisionKey, RevisionSource, RevisionSpec

if TYPE_CHECKING:
    from activator.lb_policy import PodTracker
    from activator.metrics import ActivatorMetrics, RevisionMetrics
    from shared.proxy.exchange import Exchange

__all__ = ["ActivatorRequest", "ActiveRevision", "RevisionTable"]


class ActivatorRequest:
    """What the activator keeps per request (in ``Exchange.tag``): a few slots, no body."""

    __slots__ = ("head", "retries", "rev", "stats", "tracker")

    def __init__(self, rev: ActiveRevision, head: bytes, stats: RevisionStats) -> None:
        self.rev = rev
        self.head = head  # the rewritten request head, without Host and the final CRLF
        self.stats = stats
        self.tracker: PodTracker | None = None  # the pod slot it holds once admitted
        self.retries = 0

    def __repr__(self) -> str:
        pod = self.tracker.address if self.tracker is not None else "-"
        return f"<ActivatorRequest {self.rev.key} pod={pod} retries={self.retries}>"


class _Pod:
    """The connection pool of one pod and the Host line requests to it carry."""

    __slots__ = ("host_tail", "pool")

    def __init__(self, pool: UpstreamPool, address: str) -> None:
        self.pool = pool
        # Go's ReverseProxy sends Host: <target> once RewriteHostIn emptied r.Host.
        self.host_tail = b"Host: %b\r\n\r\n" % address.encode()


class ActiveRevision:
    """One revision as this activator serves it (see the module docstring)."""

    def __init__(
        self,
        spec: RevisionSpec,
        *,
        endpoints: EndpointsSource,
        metrics: RevisionMetrics | None,
        queue_depth: int,
        probe_timeout_s: float,
        probe_frequency_s: float,
        max_idle_conns: int,
        on_connect_error: ConnectErrorHook,
    ) -> None:
        self.key = spec.key
        self.spec = spec
        self.timeout_s = spec.timeout_s
        self.response_start_timeout_s = spec.response_start_timeout_s
        self.idle_timeout_s = spec.idle_timeout_s
        self.throttler = RevisionThrottler(
            str(spec.key), spec.container_concurrency, queue_depth=queue_depth
        )
        self.backends = RevisionBackends(
            spec.key,
            endpoints,
            self.update_pods,
            probe_timeout_s=probe_timeout_s,
            probe_frequency_s=probe_frequency_s,
        )
        self.metrics = metrics
        self.stats: RevisionStats = removed_stats()
        self.pods: dict[str, _Pod] = {}
        self._max_idle = max_idle_conns
        self._on_connect_error = on_connect_error

    def __repr__(self) -> str:
        return f"<ActiveRevision {self.throttler!r} {self.backends!r}>"

    # -- the request path ----------------------------------------------------------------
    def go(self, ex: Exchange) -> None:
        """Forward an admitted request to the pod the throttler reserved for it."""
        tracker = self.throttler.pick(ex)
        if tracker is None:  # not admitted: cannot happen, the throttler decided it was
            raise AssertionError(f"{ex!r} woken without a pod by {self.throttler!r}")
        rec: ActivatorRequest = ex.tag
        rec.tracker = tracker
        if ex.wait_span is not None:
            ex.wait_span.end()
            ex.wait_span = None
        pod = self.pods.get(tracker.address)
        if pod is None:
            pod = self.pods[tracker.address] = self._new_pod(tracker.address)
        ex.forward(pod.pool, rec.head + pod.host_tail)

    def wake(self, waiters: list[object]) -> None:
        for ex in waiters:
            self.go(ex)  # type: ignore[arg-type]

    # -- capacity changes ----------------------------------------------------------------
    def update_pods(self, healthy: frozenset[str]) -> None:
        """The healthy pods changed: new capacity, perhaps waiters to send."""
        for address, pod in list(self.pods.items()):
            if address not in healthy:
                pod.pool.close_idle()
                del self.pods[address]
        self.wake(self.throttler.update_pods(healthy))

    def update_activators(self, index: int, count: int) -> None:
        self.wake(self.throttler.update_activators(index, count))

    def pod_failed(self, address: str) -> None:
        """A connection to the pod was refused: drop it (and its slots) until it answers."""
        if not self.backends.drop(address):
            # The backends had already dropped it; make sure the throttler has too.
            self.wake(self.throttler.remove_pod(address))

    def _new_pod(self, address: str) -> _Pod:
        host, _, port = address.rpartition(":")
        pool = UpstreamPool(
            asyncio.get_running_loop(),
            host,
            int(port),
            max_idle=self._max_idle,
            on_connect_error=self._on_connect_error,
        )
        return _Pod(pool, address)

    async def close(self) -> None:
        await self.backends.stop()
        for pod in self.pods.values():
            pod.pool.close_idle()


RevisionFactory = Callable[[RevisionSpec], ActiveRevision]


class RevisionTable:
    """The revisions this activator has seen requests for, by routing key."""

    def __init__(
        self,
        revisions: RevisionSource,
        endpoints: EndpointsSource,
        factory: RevisionFactory,
        own_address: str,
        metrics: ActivatorMetrics | None = None,
    ) -> None:
        self.revisions = revisions
        self.endpoints = endpoints
        self.factory = factory
        self.own_address = own_address
        self.metrics = metrics
        self.by_key: dict[RevisionKey, ActiveRevision] = {}
        # Raw (namespace, name) header bytes -> revision: the per-request lookup.
        self._by_raw: dict[tuple[bytes, bytes], ActiveRevision] = {}
        self.activator_index = -1
        self.activator_count = 0
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return (
            f"<RevisionTable revisions={len(self.by_key)} "
            f"activator={self.activator_index}/{self.activator_count}>"
        )

    def lookup(self, namespace: bytes, name: bytes) -> ActiveRevision | None:
        rev = self._by_raw.get((namespace, name))
        if rev is not None:
            return rev
        key = RevisionKey(namespace.decode("latin-1"), name.decode("latin-1"))
        rev = self.by_key.get(key)
        if rev is None:
            spec = self.revisions.get(key)
            if spec is None:
                return None
            rev = self.by_key[key] = self.factory(spec)
            rev.backends.start()
            if self.activator_index >= 0:
                rev.update_activators(self.activator_index, self.activator_count)
        self._by_raw[(namespace, name)] = rev
        return rev

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch_activators()))
        self._tasks.append(loop.create_task(self._watch_revisions()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for rev in self.by_key.values():
            await rev.close()

    async def _watch_activators(self) -> None:
        async for addresses in self.endpoints.watch_activators():
            index = activator_index(self.own_address, addresses)
            if index == -1:
                # Not listed yet: keep the last split (at first, every pod), as Knative does.
                continue
            self.activator_index = index
            self.activator_count = len(set(addresses))
            for rev in list(self.by_key.values()):
                rev.update_activators(index, self.activator_count)

    async def _watch_revisions(self) -> None:
        async for specs in self.revisions.watch_revisions():
            for key, rev in list(self.by_key.items()):
                spec = specs.get(key)
                if spec is None:
                    self._forget(key)
                    await rev.close()
                elif spec != rev.spec:
                    # Revisions are immutable but for their timeouts' defaults being filled
                    # in; containerConcurrency never changes (Knative keeps the throttler).
                    rev.spec = spec
                    rev.timeout_s = spec.timeout_s
                    rev.response_start_timeout_s = spec.response_start_timeout_s
                    rev.idle_timeout_s = spec.idle_timeout_s

    def _forget(self, key: RevisionKey) -> None:
        del self.by_key[key]
        for raw, rev in list(self._by_raw.items()):
            if rev.key == key:
                del self._by_raw[raw]
