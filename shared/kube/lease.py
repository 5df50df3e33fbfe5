"""Leader election on coordination.k8s.io/v1 Leases: client-go's algorithm over a KubeClient.

Theory of operation (client-go tools/leaderelection, as knative/pkg leaderelection runs it):

- **Acquire.** Every ``retry_period`` (jittered up to +120 %, client-go's ``JitterFactor``) read
  the Lease. Take it when it does not exist (create), when its ``holderIdentity`` is empty (a
  released lease), or when it has not changed for ``leaseDurationSeconds`` of *our* monotonic
  clock. Like client-go we time expiry from when we last saw the record change, not from its
  ``renewTime``, so clock skew between replicas cannot shorten a lease. Taking over from another
  holder sets ``acquireTime`` and increments ``leaseTransitions``. (A test that jumps a fake
  ``clock`` past the lease must first let the followers read the leader's last renewal, a
  couple of retry periods: a renewal first seen after the jump starts a whole new lease.)
- **Renew.** While leading, rewrite ``renewTime`` every ``retry_period`` (a PUT with the
  resourceVersion read, so two writers cannot both win: the loser gets 409 Conflict, which is
  the normal sign of another replica and not an error). If no renewal succeeds for
  ``renew_deadline``, or another holder is seen, stop leading. Since renew_deadline (40 s) <
  lease_duration (60 s), the old leader stops before anyone may take over: never two leaders.
- **Release** (knative/pkg's ``ReleaseOnCancel``): on shutdown the leader writes an empty
  ``holderIdentity`` and ``leaseDurationSeconds: 1``, so a successor takes over on its next try
  instead of waiting out the lease.

Times in the Lease are MicroTime (RFC 3339 with microseconds, UTC). Callbacks are synchronous
(decide, then let the caller's tasks do): ``on_started_leading`` when leadership is gained,
``on_stopped_leading`` when a held leadership ends (lost or released).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.kube.client import ApiError, Conflict, KubeClient
from shared.kube.resources import LEASES, Obj

__all__ = ["LeaderElectionConfig", "LeaderElector", "micro_time"]

_log = logging.getLogger(__name__)

JITTER_FACTOR: Final = 1.2  # client-go's leaderelection JitterFactor


@dataclass(frozen=True, slots=True)
class LeaderElectionConfig:
    """knative/pkg's defaults (config-leader-election): lease 60 s, renew deadline 40 s,
    retry period 10 s."""

    lease_duration_s: int = 60
    renew_deadline_s: float = 40.0
    retry_period_s: float = 10.0

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector checks the same ordering.
        if self.lease_duration_s < 1 or self.lease_duration_s <= self.renew_deadline_s:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline_s <= JITTER_FACTOR * self.retry_period_s:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        if self.retry_period_s <= 0:
            raise ValueError("retryPeriod must be greater than zero")


def micro_time(t: float) -> str:
    """A Kubernetes MicroTime: ``2026-11-30T23:50:00.123456Z``."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Elect one leader among the replicas sharing ``namespace/name``.

    Args:
        identity: this replica's holderIdentity (Knative's autoscaler: ``<POD_NAME>_<POD_IP>``).
        clock: monotonic seconds, for expiry; wall: epoch seconds, for the Lease's times.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        config: LeaderElectionConfig | None = None,
        *,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        self._client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.config = config or LeaderElectionConfig()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._wall = wall
        self._leading = False
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"LeaderElector({self.namespace}/{self.name}, identity={self.identity!r}, "
            f"leading={self._leading})"
        )

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def holder(self) -> str:
        """The holder last observed (ours when leading); "" when unknown or released."""
        return str((self._observed_spec or {}).get("holderIdentity") or "")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the election in a background task until ``stop``."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"leaderelection {self.namespace}/{self.name}"
            )

    async def stop(self, release: bool = True) -> None:
        """Stop electing and, when leading, release the lease (ReleaseOnCancel)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if release:
            await self.release()
        else:
            self._stop_leading()

    async def run(self) -> None:
        """Acquire, lead until leadership is lost, and try again; forever."""
        while True:
            await self._acquire()
            await self._renew_until_lost()

    async def _acquire(self) -> None:
        while not await self.try_acquire_or_renew():
            delay = self.config.retry_period_s * (1 + random.random() * JITTER_FACTOR)
            await asyncio.sleep(delay)
        self._leading = True
        _log.info("%s: %s became leader", self.name, self.identity)
        if self._on_started is not None:
            self._callback(self._on_started)

    async def _renew_until_lost(self) -> None:
        cfg = self.config
        last_renew = self._clock()
        while True:
            await asyncio.sleep(cfg.retry_period_s)
            remaining = cfg.renew_deadline_s - (self._clock() - last_renew)
            ok = False
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        ok = await self.try_acquire_or_renew()
                except TimeoutError:
                    ok = False
            if ok:
                last_renew = self._clock()
                continue
            other = self.holder not in ("", self.identity)
            if other or self._clock() - last_renew >= cfg.renew_deadline_s:
                _log.info(
                    "%s: %s lost leadership (%s)",
                    self.name,
                    self.identity,
                    f"held by {self.holder}" if other else "renew deadline passed",
                )
                self._stop_leading()
                return

    def _stop_leading(self) -> None:
        if self._leading:
            self._leading = False
            if self._on_stopped is not None:
                self._callback(self._on_stopped)

    # -- one attempt -----------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One client-go ``tryAcquireOrRenew``: True when we hold the lease afterwards.

        API errors (a conflict with another replica included) are False, never raised.
        """
        try:
            return await self._try()
        except Conflict:
            return False  # another replica wrote first: normal
        except ApiError as e:
            self._note(f"{e.status} {e.reason}: {e.message}")
            return False
        except (ValueError, TypeError, KeyError) as e:  # a malformed Lease: retry, never crash
            self._note(f"malformed lease: {type(e).__name__}: {e}")
            return False

    def _callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # the election must go on: a dead elector would hold the lease
            _log.exception("%s: leader election callback failed", self.identity)

    def _note(self, error: str) -> None:
        if error != self._last_error:
            _log.warning("%s: lease %s/%s: %s", self.identity, self.namespace, self.name, error)
            self._last_error = error

    async def _try(self) -> bool:
        now = micro_time(self._wall())
        lease = await self._client.get(LEASES, self.namespace, self.name)
        if lease is None:
            spec = self._spec(now, now, 0)
            await self._client.create(LEASES, self.namespace, self._lease(None, spec))
            self._observe(spec)
            return True
        old: dict[str, Any] = lease.get("spec") or {}
        if old != self._observed_spec:
            self._observed_spec = old
            self._observed_time = self._clock()
        holder = str(old.get("holderIdentity") or "")
        duration = float(old.get("leaseDurationSeconds") or 0)
        valid = self._observed_time + duration > self._clock()
        if holder and holder != self.identity and valid:
            return False  # held by another, not expired
        if holder == self.identity and self._leading:
            acquire_time = str(old.get("acquireTime") or now)
            transitions = int(old.get("leaseTransitions") or 0)
        else:  # a new holder: client-go counts every change of hands
            acquire_time = now
            transitions = int(old.get("leaseTransitions") or 0) + 1
        spec = self._spec(acquire_time, now, transitions)
        await self._client.replace(LEASES, self.namespace, self.name, self._lease(lease, spec))
        self._observe(spec)
        return True

    def _spec(self, acquire_time: str, renew_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.config.lease_duration_s,
            "acquireTime": acquire_time,
            "renewTime": renew_time,
            "leaseTransitions": transitions,
        }

    def _lease(self, old: Obj | None, spec: dict[str, Any]) -> Obj:
        metadata = dict(old["metadata"]) if old else {"name": self.name}
        metadata["namespace"] = self.namespace
        return {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": metadata,
            "spec": spec,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        self._observed_spec = spec
        self._observed_time = self._clock()
        if self._last_error is not None:
            _log.info("%s: lease %s/%s reachable again", self.identity, self.namespace, self.name)
            self._last_error = None

    async def release(self) -> bool:
        """Give the lease up if we hold it (holderIdentity "", leaseDurationSeconds 1), so a
        successor takes over at once; True when released. Leadership ends here either way."""
        was_leading = self._leading
        self._stop_leading()
        if not was_leading:
            return False
        with contextlib.suppress(ApiError):
            lease = await self._client.get(LEASES, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            now = micro_time(self._wall())
            spec = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": (lease.get("spec") or {}).get("leaseTransitions", 0),
            }
            await self._client.replace(LEASES, self.namespace, self.name, self._lease(lease, spec))
            _log.info("%s: %s released the lease", self.name, self.identity)
            return True
        return False
