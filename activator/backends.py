"""Which pods of one revision may take requests: Knative's revisionWatcher, over the seams.

Theory of operation (pkg/activator/net/revision_backends.go):

- The endpoints seam yields the revision's pods, ready or not. A pod is *healthy* (usable)
  once its queue-proxy answered a ``K-Network-Probe: queue`` probe, whether or not the
  platform marked it ready yet: Knative's probe optimisation (on by default), which is what
  lets a cold request reach a pod the moment its app is up rather than a kubelet period later.
- Pods not yet healthy are probed at once on every endpoints change and then every
  ``probe_frequency_s`` (200 ms) until they answer; each probe is bounded by
  ``probe_timeout_s`` (300 ms). A healthy pod is not probed again, unless it went from ready
  to not ready (Knative's reprobe set: it may be draining).
- A pod that leaves the endpoints leaves the healthy set; a pod the proxy found dead
  (connection refused) is dropped at once by ``drop`` and probed again like a new one.
- Every change of the healthy set is pushed to ``on_update`` (the revision's throttler), and
  only changes: the throttler's capacity moves with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from activator.probe import probe_queue
from shared.seams import Endpoint, EndpointsSource, RevisionKey

__all__ = ["RevisionBackends"]

HealthyUpdate = Callable[[frozenset[str]], None]
_T = TypeVar("_T")


async def _next(it: AsyncIterator[_T]) -> _T:
    return await anext(it)


class RevisionBackends:
    """Watches one revision's endpoints and probes its pods into a healthy set."""

    def __init__(
        self,
        key: RevisionKey,
        source: EndpointsSource,
        on_update: HealthyUpdate,
        *,
        probe_timeout_s: float,
        probe_frequency_s: float,
    ) -> None:
        self.key = key
        self.source = source
        self.on_update = on_update
        self.probe_timeout_s = probe_timeout_s
        self.probe_frequency_s = probe_frequency_s
        self.dests: dict[str, Endpoint] = {}
        self.healthy: frozenset[str] = frozenset()
        self._recheck = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<RevisionBackends {self.key} healthy={len(self.healthy)}/{len(self.dests)}>"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def drop(self, address: str) -> bool:
        """The proxy could not connect to ``address``: unusable until it answers a probe."""
        if address not in self.healthy:
            return False
        self.healthy = self.healthy - {address}
        self.on_update(self.healthy)
        self._recheck.set()
        return True

    # -- internals ---------------------------------------------------------------------
    async def _run(self) -> None:
        watch = self.source.watch_endpoints(self.key)
        loop = asyncio.get_running_loop()
        next_eps = loop.create_task(_next(watch))
        recheck: asyncio.Task[bool] = loop.create_task(self._recheck.wait())
        try:
            while True:
                timeout = self.probe_frequency_s if len(self.healthy) < len(self.dests) else None
                done, _ = await asyncio.wait(
                    {next_eps, recheck}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if next_eps in done:
                    self._set_dests(next_eps.result())
                    next_eps = loop.create_task(_next(watch))
                if recheck in done:
                    self._recheck.clear()
                    recheck = loop.create_task(self._recheck.wait())
                await self._check()
        finally:
            next_eps.cancel()
            recheck.cancel()

    def _set_dests(self, endpoints: tuple[Endpoint, ...]) -> None:
        prev = self.dests
        self.dests = {ep.address: ep for ep in endpoints}
        # Knative's becameNonReady: a healthy pod the platform now calls not ready is probed
        # again (it may be shutting down), and is unusable until it answers.
        reprobe = {
            address
            for address, ep in self.dests.items()
            if not ep.ready and address in prev and prev[address].ready
        }
        healthy = frozenset(a for a in self.healthy if a in self.dests and a not in reprobe)
        if healthy != self.healthy:
            self.healthy = healthy
            self.on_update(healthy)

    async def _check(self) -> None:
        to_probe = [ep for address, ep in self.dests.items() if address not in self.healthy]
        if not to_probe:
            return
        results = await asyncio.gather(
            *(probe_queue(ep.host, ep.port, self.probe_timeout_s) for ep in to_probe)
        )
        fresh = {ep.address for ep, ok in zip(to_probe, results, strict=True) if ok}
        # Endpoints may have changed while probing: keep only pods still listed.
        healthy = frozenset(a for a in self.healthy | fresh if a in self.dests)
        if healthy != self.healthy:
            self.healthy = healthy
            self.on_update(healthy)
