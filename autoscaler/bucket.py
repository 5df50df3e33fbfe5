"""Autoscaler buckets: which replica decides which revision, by Knative's bucket Leases.

Theory of operation (Knative's cmd/autoscaler/leaderelection.go, pkg/autoscaler/bucket and
knative/pkg leaderelection). ``config-leader-election`` says how many buckets there are
(``buckets``, default 1) and the lease timing (``lease-duration`` 60 s, ``renew-deadline``
40 s, ``retry-period`` 10 s). Bucket i of n is the coordination.k8s.io/v1 Lease
``autoscaler-bucket-<ii>-of-<nn>`` in the system namespace; a revision ``ns/name`` belongs to
the bucket ``ChooseSubset(buckets, 1, "ns/name")`` picks (knative/pkg hash), so every replica,
Go or Python, agrees on it.

Every replica runs one elector per bucket, with holderIdentity ``<POD_NAME>_<POD_IP>``, as
client-go's leaderelection does:

- acquire when the Lease is missing, released (holder ""), ours, or expired (its renewTime is
  more than leaseDurationSeconds old, as seen on our clock);
- renew every retry period; a leader that cannot renew within the renew deadline steps down
  (so it stops acting before another may take over after the lease duration);
- release on shutdown (holder "", lease 1 s), so a successor need not wait for expiry.

The leader of a bucket publishes where it takes stats: a selector-less Service ``<bucket>``
(port ``http``) and an EndpointSlice ``<bucket>`` (label ``kubernetes.io/service-name``) with
its IP and stat port. Replicas on one host share an IP and differ by port, so forwarding reads
the address from the EndpointSlice, not from the holder identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import importlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from autoscaler.config import parse_go_duration
from shared.envconfig import ConfigError
from shared.kube.client import ApiError, Conflict, KubeClient
from shared.kube.resources import ENDPOINTSLICES, LEASES, SERVICES, Obj, meta
from shared.seams import RevisionKey

__all__ = [
    "BucketElector",
    "LeaderElectionConfig",
    "bucket_name",
    "bucket_names",
    "owner_bucket",
]

log = logging.getLogger(__name__)

COMPONENT = "autoscaler"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_BUCKETS = 10  # knative/pkg leaderelection's MaxBuckets
_NS_PER_S = 1e9


@dataclass(frozen=True, slots=True)
class LeaderElectionConfig:
    """``config-leader-election`` (knative/pkg leaderelection.NewConfigFromConfigMap)."""

    buckets: int = 1
    lease_duration_s: float = 60.0
    renew_deadline_s: float = 40.0
    retry_period_s: float = 10.0

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> LeaderElectionConfig:
        """Raises: ConfigError: a key is not a Go duration or an integer in range."""

        def seconds(key: str, default: float) -> float:
            if key not in data:
                return default
            try:
                return parse_go_duration(data[key]) / _NS_PER_S
            except ValueError as err:
                raise ConfigError(key, str(err)) from err

        buckets = 1
        if "buckets" in data:
            try:
                buckets = int(data["buckets"])
            except ValueError as err:
                raise ConfigError("buckets", f"not an integer: {data['buckets']!r}") from err
            if not 1 <= buckets <= MAX_BUCKETS:
                raise ConfigError("buckets", f"must be in [1, {MAX_BUCKETS}], got {buckets}")
        return cls(
            buckets,
            seconds("lease-duration", 60.0),
            seconds("renew-deadline", 40.0),
            seconds("retry-period", 10.0),
        )


def bucket_name(ordinal: int, total: int) -> str:
    """Knative's AutoscalerBucketName: ``autoscaler-bucket-00-of-01``."""
    return f"{COMPONENT}-bucket-{ordinal:02d}-of-{total:02d}"


def bucket_names(total: int) -> list[str]:
    return [bucket_name(i, total) for i in range(total)]


def owner_bucket(key: RevisionKey, buckets: list[str]) -> str:
    """The bucket a revision belongs to: knative/pkg's ChooseSubset(buckets, 1, "ns/name")."""
    if len(buckets) == 1:
        return buckets[0]
    # knative/pkg's hash, byte for byte (shared/kube/hashing.py), so Go replicas agree.
    hashing = importlib.import_module("shared.kube.hashing")
    (chosen,) = hashing.choose_subset(buckets, 1, f"{key.namespace}/{key.name}")
    return str(chosen)


def _micro_time(t: float) -> str:
    """metav1.MicroTime, as Leases carry acquireTime and renewTime."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


OnChange = Callable[[str, bool], None]  # (bucket, now leading?)


class BucketElector:
    """Leader election on every bucket's Lease, and the leader's stat endpoint.

    ``leading`` is the set of buckets this replica holds now; ``on_change`` is called when one
    is won or lost (the reconciler resyncs, the engine drops what it no longer decides).
    """

    def __init__(
        self,
        client: KubeClient,
        cfg: LeaderElectionConfig,
        *,
        namespace: str,
        identity: str,
        address: str,
        stat_port: int,
        on_change: OnChange,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.cfg = cfg
        self.namespace = namespace
        self.identity = identity
        self.address = address
        self.stat_port = stat_port
        self._on_change = on_change
        self._clock = clock
        self.buckets = bucket_names(cfg.buckets)
        self.leading: set[str] = set()
        self._renewed: dict[str, float] = {}  # our last successful renew per bucket
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"<BucketElector {self.identity} leading={sorted(self.leading)}>"

    def owns(self, key: RevisionKey) -> bool:
        return owner_bucket(key, self.buckets) in self.leading

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(b), name=f"elector-{b}") for b in self.buckets]

    async def stop(self) -> None:
        """Stop electing and release every lease held (Knative's ReleaseOnCancel)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for bucket in list(self.leading):
            with contextlib.suppress(ApiError, OSError):
                await self._release(bucket)
            self._set(bucket, False)

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self, bucket: str) -> None:
        while True:
            try:
                held = await self._try_acquire_or_renew(bucket)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the API is down: keep trying, step down on deadline
                log.warning("lease %s: %s", bucket, err)
                held = False
            now = self._clock()
            if held:
                self._renewed[bucket] = now
                if bucket not in self.leading:
                    log.info("%s: leading %s", self.identity, bucket)
                    self._set(bucket, True)
                    await self._publish(bucket)
            elif bucket in self.leading:
                last = self._renewed.get(bucket, 0.0)
                if now - last >= self.cfg.renew_deadline_s or not await self._still_ours(bucket):
                    log.warning("%s: lost %s", self.identity, bucket)
                    self._set(bucket, False)
            await asyncio.sleep(self.cfg.retry_period_s)

    def _set(self, bucket: str, leading: bool) -> None:
        if leading:
            self.leading.add(bucket)
        else:
            self.leading.discard(bucket)
        self._on_change(bucket, leading)

    async def _still_ours(self, bucket: str) -> bool:
        with contextlib.suppress(ApiError, OSError):
            lease = await self._client.get(LEASES, self.namespace, bucket)
            return lease is not None and _holder(lease) == self.identity
        return True  # unknown: the renew deadline decides

    async def _try_acquire_or_renew(self, bucket: str) -> bool:
        now = self._clock()
        lease = await self._client.get(LEASES, self.namespace, bucket)
        duration = max(1, round(self.cfg.lease_duration_s))
        if lease is None:
            body: Obj = {
                "apiVersion": LEASES.api_version,
                "kind": LEASES.kind,
                "metadata": {"name": bucket, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": _micro_time(now),
                    "renewTime": _micro_time(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                await self._client.create(LEASES, self.namespace, body)
            except Conflict:
                return False  # someone else created it first
            return True
        spec = lease.get("spec") or {}
        holder = _holder(lease)
        if holder and holder != self.identity:
            renewed = _parse_micro_time(spec.get("renewTime")) or 0.0
            held_for = float(spec.get("leaseDurationSeconds") or duration)
            if renewed + held_for > now:
                return False  # held by another and not expired
        body = copy.deepcopy(lease)
        new_spec = body.setdefault("spec", {})
        if holder != self.identity:
            new_spec["acquireTime"] = _micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        new_spec["holderIdentity"] = self.identity
        new_spec["leaseDurationSeconds"] = duration
        new_spec["renewTime"] = _micro_time(now)
        try:
            await self._client.replace(LEASES, self.namespace, bucket, body)
        except Conflict:
            return False
        return True

    async def _release(self, bucket: str) -> None:
        lease = await self._client.get(LEASES, self.namespace, bucket)
        if lease is None or _holder(lease) != self.identity:
            return
        body = copy.deepcopy(lease)
        spec = body.setdefault("spec", {})
        spec["holderIdentity"] = ""
        spec["leaseDurationSeconds"] = 1
        spec["renewTime"] = _micro_time(self._clock())
        await self._client.replace(LEASES, self.namespace, bucket, body)
        log.info("%s: released %s", self.identity, bucket)

    # -- the leader's stat endpoint --------------------------------------------------------------
    async def _publish(self, bucket: str) -> None:
        """The bucket's Service and EndpointSlice point at this replica's stat server."""
        service: Obj = {
            "apiVersion": SERVICES.api_version,
            "kind": SERVICES.kind,
            "metadata": {"name": bucket, "namespace": self.namespace},
            "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": self.stat_port}]},
        }
        eps: Obj = {
            "apiVersion": ENDPOINTSLICES.api_version,
            "kind": ENDPOINTSLICES.kind,
            "metadata": {
                "name": bucket,
                "namespace": self.namespace,
                "labels": {SERVICE_NAME_LABEL: bucket},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": [self.address],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                }
            ],
            "ports": [{"name": "http", "port": self.stat_port, "protocol": "TCP"}],
        }
        try:
            if await self._client.get(SERVICES, self.namespace, bucket) is None:
                with contextlib.suppress(Conflict):
                    await self._client.create(SERVICES, self.namespace, service)
            current = await self._client.get(ENDPOINTSLICES, self.namespace, bucket)
            if current is None:
                await self._client.create(ENDPOINTSLICES, self.namespace, eps)
            elif {k: current.get(k) for k in ("endpoints", "ports")} != {
                k: eps[k] for k in ("endpoints", "ports")
            }:
                body = copy.deepcopy(current)
                body.update({k: eps[k] for k in ("addressType", "endpoints", "ports")})
                body["metadata"].setdefault("labels", {}).update(eps["metadata"]["labels"])
                await self._client.replace(ENDPOINTSLICES, self.namespace, bucket, body)
        except ApiError as err:
            log.error("%s: publishing the stat endpoint failed: %s", bucket, err)


def _holder(lease: Obj) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def slice_address(eps: Obj | None) -> str | None:
    """``ip:port`` of a bucket's EndpointSlice (its leader's stat server), or None."""
    if eps is None:
        return None
    port = next((p.get("port") for p in eps.get("ports") or [] if p.get("name") == "http"), None)
    for endpoint in eps.get("endpoints") or []:
        for address in endpoint.get("addresses") or []:
            if port is not None:
                return f"{address}:{port}"
    return None


def meta_name(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))
