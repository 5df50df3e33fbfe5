"""Which pods of one revision may take requests: Knative's revisionWatcher.

Theory of operation (pkg/activator/net/revision_backends.go):

- ``set_dests`` gets the revision's pods, ready or not, from its private Endpoints (the
  RevisionTable calls it with the informer's current object on every change: level based).
- A pod is *healthy* (usable) once its queue-proxy answered a ``K-Network-Probe: queue``
  probe, whether or not Kubernetes marked it ready yet: Knative's probe optimisation (on by
  default), which lets a cold request reach a pod the moment its app is up rather than a
  kubelet period later.
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
from collections.abc import Callable

from activator.cluster import Endpoint, RevisionKey
from activator.probe import probe_queue

__all__ = ["RevisionBackends"]

HealthyUpdate = Callable[[frozenset[str]], None]


class RevisionBackends:
    """Follows one revision's endpoints and probes its pods into a healthy set."""

    def __init__(
        self,
        key: RevisionKey,
        on_update: HealthyUpdate,
        *,
        probe_timeout_s: float,
        probe_frequency_s: float,
    ) -> None:
        self.key = key
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

    def set_dests(self, endpoints: tuple[Endpoint, ...]) -> None:
        """The revision's pods now (Knative's endpointsUpdated): drop the gone, probe the new."""
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
        if len(healthy) < len(self.dests):
            self._recheck.set()

    # -- internals ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            timeout = self.probe_frequency_s if len(self.healthy) < len(self.dests) else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._recheck.wait()
            self._recheck.clear()
            await self._check()

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
