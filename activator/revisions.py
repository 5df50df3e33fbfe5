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
  header bytes) and creates it on first use from the Revisions informer's cache. It follows
  three informers, as Knative's Throttler and revisionBackendsManager do: Revisions (a
  deleted one is forgotten), the revisions' private Endpoints (their pods, to the
  RevisionBackends) and their public Endpoints (which activators front the revision, so the
  throttler takes this activator's slice of the pods: Knative's per-revision activatorIndex
  and numActivators). Level based: an informer event only names the revision; what is
  applied is read from the informers' caches, so a missed or coalesced event converges on
  the next one, and a revision created after its Endpoints reads them from the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from activator.backends import RevisionBackends
from activator.cluster import (
    PRIVATE_ENDPOINTS_SELECTOR,
    PUBLIC_ENDPOINTS_SELECTOR,
    Endpoint,
    RevisionKey,
    RevisionSpec,
    activator_share,
    endpoints_revision,
    port_name,
    private_endpoints,
    public_addresses,
    revision_spec,
)
from activator.reporter import RevisionStats, removed_stats
from activator.split import worker_share
from activator.throttler import RevisionThrottler
from shared.kube.informer import EventType, Informer, InformerFactory
from shared.kube.resources import ENDPOINTS, REVISIONS, Obj, key_of
from shared.proxy.upstream import ConnectErrorHook, UpstreamPool

if TYPE_CHECKING:
    from activator.lb_policy import PodTracker
    from activator.metrics import RevisionMetrics
    from shared.proxy.contract import Connector
    from shared.proxy.exchange import Exchange
    from shared.reqlog import RequestLogger

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

    def __init__(self, pool: UpstreamPool[ActivatorRequest | None], address: str) -> None:
        self.pool = pool
        # Go's ReverseProxy sends Host: <target> once RewriteHostIn emptied r.Host.
        self.host_tail = b"Host: %b\r\n\r\n" % address.encode()


class ActiveRevision:
    """One revision as this activator serves it (see the module docstring)."""

    def __init__(
        self,
        spec: RevisionSpec,
        *,
        metrics: RevisionMetrics | None,
        queue_depth: int,
        probe_timeout_s: float,
        probe_frequency_s: float,
        max_idle_conns: int,
        on_connect_error: ConnectErrorHook[ActivatorRequest | None],
        connect: Connector | None = None,
    ) -> None:
        """``connect`` opens pod connections: the event loop's unless given (the in-memory
        network of shared/proxy/memory.py in unit tests)."""
        self.key = spec.key
        self.spec = spec
        self.timeout_s = spec.timeout_s
        self.response_start_timeout_s = spec.response_start_timeout_s
        self.idle_timeout_s = spec.idle_timeout_s
        # The waiters are the requests' exchanges themselves (see the module docstring).
        self.throttler: RevisionThrottler[Exchange[ActivatorRequest | None]] = RevisionThrottler(
            str(spec.key), spec.container_concurrency, queue_depth=queue_depth
        )
        self.port_name = port_name(spec.protocol)
        self.backends = RevisionBackends(
            spec.key,
            self.update_pods,
            probe_timeout_s=probe_timeout_s,
            probe_frequency_s=probe_frequency_s,
        )
        self.metrics = metrics
        self.request_log: RequestLogger | None = None  # config-observability's, when enabled
        self.stats: RevisionStats = removed_stats()
        self.pods: dict[str, _Pod] = {}
        self._max_idle = max_idle_conns
        self._on_connect_error = on_connect_error
        self._connect = connect

    def __repr__(self) -> str:
        return f"<ActiveRevision {self.throttler!r} {self.backends!r}>"

    # -- the request path ----------------------------------------------------------------
    def go(self, ex: Exchange[ActivatorRequest | None]) -> None:
        """Forward an admitted request to the pod the throttler reserved for it."""
        tracker = self.throttler.pick(ex)
        rec = ex.tag
        if tracker is None or rec is None:  # the handler tags before it admits: cannot happen
            raise AssertionError(f"{ex!r} woken without a pod by {self.throttler!r}")
        rec.tracker = tracker
        if ex.wait_span is not None:
            ex.wait_span.end()
            ex.wait_span = None
        pod = self.pods.get(tracker.address)
        if pod is None:
            pod = self.pods[tracker.address] = self._new_pod(tracker.address)
        ex.head = rec.head + pod.host_tail
        pod.pool.send(ex)  # ex.forward() without its call

    def wake(self, waiters: list[Exchange[ActivatorRequest | None]]) -> None:
        """Forward the requests the throttler just admitted (it reserved each a pod)."""
        for ex in waiters:
            self.go(ex)

    # -- capacity changes ----------------------------------------------------------------
    def update_pods(self, healthy: frozenset[str]) -> None:
        """The healthy pods changed: new capacity, perhaps waiters to send."""
        for address, pod in list(self.pods.items()):
            if address not in healthy:
                pod.pool.close_idle()
                del self.pods[address]
        self.wake(self.throttler.update_pods(healthy))

    def update_activators(self, share: tuple[int, int] | None) -> None:
        """This activator's (index, count) among the revision's activators. None (it is not
        among them) keeps the last split, at first every pod (Knative's handlePubEpsUpdate)."""
        if share is not None:
            self.wake(self.throttler.update_activators(*share))

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
            connect=self._connect,
        )
        return _Pod(pool, address)

    async def close(self) -> None:
        await self.backends.stop()
        for pod in self.pods.values():
            pod.pool.close_idle()


RevisionFactory = Callable[[RevisionSpec], ActiveRevision]


class RevisionTable:
    """The revisions this activator has seen requests for, by routing key, following the
    Revision and Endpoints informers (see the module docstring).

    Args:
        informers: where the three informers come from; the caller starts the factory.
        factory: makes the ActiveRevision of a spec (the Activator wires metrics into it).
        own_address: this activator's ``POD_IP:port`` as its public Endpoints list it; may
            be set later (the serving port is known once bound), before start().
    """

    def __init__(
        self, informers: InformerFactory, factory: RevisionFactory, own_address: str = ""
    ) -> None:
        self.factory = factory
        self.own_address = own_address
        # This process's place among the activator's workers (activator/split.py worker_share).
        self.worker = 0
        self.workers = 1
        self.revisions: Informer = informers.informer(REVISIONS)
        self.private: Informer = informers.informer(
            ENDPOINTS, label_selector=PRIVATE_ENDPOINTS_SELECTOR
        )
        self.public: Informer = informers.informer(
            ENDPOINTS, label_selector=PUBLIC_ENDPOINTS_SELECTOR
        )
        self.by_key: dict[RevisionKey, ActiveRevision] = {}
        # Raw (namespace, name) header bytes -> revision: the per-request lookup.
        self._by_raw: dict[tuple[bytes, bytes], ActiveRevision] = {}
        # Revision -> (namespace, name) of its private and public Endpoints objects. Knative
        # names them <rev>-private (hash-truncated past 63 characters) and <rev>, but the
        # label is what it trusts, so the index is built from the labels of what arrives.
        self._private_of: dict[RevisionKey, tuple[str, str]] = {}
        self._public_of: dict[RevisionKey, tuple[str, str]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<RevisionTable {self.own_address} revisions={len(self.by_key)}>"

    def lookup(self, namespace: bytes, name: bytes) -> ActiveRevision | None:
        rev = self._by_raw.get((namespace, name))
        if rev is not None:
            return rev
        key = RevisionKey(namespace.decode("latin-1"), name.decode("latin-1"))
        rev = self.by_key.get(key)
        if rev is None:
            obj = self.revisions.get(key.namespace, key.name)
            if obj is None:
                return None
            rev = self.by_key[key] = self.factory(revision_spec(obj))
            rev.backends.start()
            rev.update_activators(self.share(key, rev.port_name))
            rev.backends.set_dests(self.endpoints(key, rev.port_name))
        self._by_raw[(namespace, name)] = rev
        return rev

    # -- reading the caches --------------------------------------------------------------
    def endpoints(self, key: RevisionKey, port: str = "http") -> tuple[Endpoint, ...]:
        """The revision's pods, from its private Endpoints in the informer's cache."""
        where = self._private_of.get(key)
        obj = self.private.get(*where) if where is not None else None
        return private_endpoints(obj, port) if obj is not None else ()

    def share(self, key: RevisionKey, port: str = "http") -> tuple[int, int] | None:
        """This activator's (index, count) in the revision's public Endpoints, or None; with
        workers, this worker's among the activators' workers."""
        where = self._public_of.get(key)
        obj = self.public.get(*where) if where is not None else None
        share = (
            activator_share(public_addresses(obj, port), self.own_address)
            if obj is not None
            else None
        )
        return worker_share(share, self.worker, self.workers)

    # -- informer events: hints that name a revision --------------------------------------
    def start(self) -> None:
        """Follow the informers (handlers run at once for what is cached)."""
        self.private.add_handler(self._on_private)
        self.public.add_handler(self._on_public)
        self.revisions.add_handler(self._on_revision)

    async def stop(self) -> None:
        for rev in list(self.by_key.values()):
            await rev.close()
        self.by_key.clear()
        self._by_raw.clear()
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_revision(self, event: EventType, obj: Obj) -> None:
        namespace, name = key_of(obj)
        key = RevisionKey(namespace, name)
        rev = self.by_key.get(key)
        if rev is None:
            return
        current = self.revisions.get(namespace, name)
        if current is None:  # deleted (Knative's revisionDeleted)
            self._forget(key)
            return
        spec = revision_spec(current)
        if spec != rev.spec:
            # Revisions are immutable but for their timeouts' defaults being filled in;
            # containerConcurrency never changes (Knative keeps the throttler).
            rev.spec = spec
            rev.timeout_s = spec.timeout_s
            rev.response_start_timeout_s = spec.response_start_timeout_s
            rev.idle_timeout_s = spec.idle_timeout_s

    def _on_private(self, event: EventType, obj: Obj) -> None:
        key = self._index(self._private_of, self.private, event, obj)
        rev = self.by_key.get(key) if key is not None else None
        if rev is not None and key is not None:
            rev.backends.set_dests(self.endpoints(key, rev.port_name))

    def _on_public(self, event: EventType, obj: Obj) -> None:
        key = self._index(self._public_of, self.public, event, obj)
        rev = self.by_key.get(key) if key is not None else None
        if rev is not None and key is not None:
            rev.update_activators(self.share(key, rev.port_name))

    @staticmethod
    def _index(
        index: dict[RevisionKey, tuple[str, str]], informer: Informer, event: EventType, obj: Obj
    ) -> RevisionKey | None:
        """Keep revision -> Endpoints name current; the revision the event is about."""
        key = endpoints_revision(obj)
        if key is None:
            return None  # not a revision's (Knative logs and ignores it)
        where = key_of(obj)
        if informer.get(*where) is not None:
            index[key] = where
        elif index.get(key) == where:
            del index[key]
        return key

    def _forget(self, key: RevisionKey) -> None:
        rev = self.by_key.pop(key)
        for raw, r in list(self._by_raw.items()):
            if r is rev:
                del self._by_raw[raw]
        task = asyncio.get_running_loop().create_task(rev.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
