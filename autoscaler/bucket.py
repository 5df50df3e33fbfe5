"""Autoscaler buckets: which replica decides which revision, by Knative's bucket Leases.

Theory of operation (Knative's cmd/autoscaler/leaderelection.go, pkg/autoscaler/bucket and
knative/pkg leaderelection). ``config-leader-election`` says how many buckets there are
(``buckets``, default 1, at most 10) and the lease timing (``lease-duration`` 60 s,
``renew-deadline`` 40 s, ``retry-period`` 10 s). Bucket i of n is the coordination.k8s.io/v1
Lease ``autoscaler-bucket-<ii>-of-<nn>`` in the system namespace; a revision ``ns/name``
belongs to the bucket ``ChooseSubset(buckets, 1, "ns/name")`` picks (knative/pkg hash, in
shared/kube/hashing.py), so every replica, Go or Python, agrees on it.

Every replica runs one client-go elector per bucket (shared/kube/lease.py) with holderIdentity
``<POD_NAME>_<POD_IP>``: it takes a released or expired Lease, renews it every retry period,
steps down when it cannot renew within the renew deadline (before anyone may take over after
the lease duration), and releases it on shutdown, so a successor need not wait for expiry.

The leader of a bucket publishes where it takes stats: a selector-less Service ``<bucket>``
(port ``http``) and an EndpointSlice ``<bucket>`` (label ``kubernetes.io/service-name``) with
its IP and stat port. Replicas on one host share an IP and differ by port, so forwarding reads
the address from the EndpointSlice, not from the holder identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared.envconfig import ConfigError
from shared.gosyntax import parse_seconds
from shared.kube import hashing, lease
from shared.kube.client import ApiError, Conflict, KubeClient
from shared.kube.resources import ENDPOINTSLICES, SERVICES, Obj
from shared.seams import RevisionKey

__all__ = [
    "SERVICE_NAME_LABEL",
    "BucketElector",
    "LeaderElectionConfig",
    "bucket_name",
    "bucket_names",
    "owner_bucket",
    "slice_address",
]

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_BUCKETS = 10  # knative/pkg leaderelection's MaxBuckets


@dataclass(frozen=True, slots=True)
class LeaderElectionConfig:
    """``config-leader-election`` (knative/pkg leaderelection.NewConfigFromConfigMap)."""

    buckets: int = 1
    lease_duration_s: float = 60.0
    renew_deadline_s: float = 40.0
    retry_period_s: float = 10.0

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> LeaderElectionConfig:
        """Raises: ConfigError: a key is not a Go duration or an integer in range, or the
        timings are not ordered as client-go requires."""

        def seconds(key: str, default: float) -> float:
            if key not in data:
                return default
            try:
                return parse_seconds(data[key])
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
        cfg = cls(
            buckets,
            seconds("lease-duration", 60.0),
            seconds("renew-deadline", 40.0),
            seconds("retry-period", 10.0),
        )
        try:
            cfg.lease()
        except ValueError as err:
            raise ConfigError("config-leader-election", str(err)) from err
        return cfg

    def lease(self) -> lease.LeaderElectionConfig:
        """The elector's timing (a Lease carries whole seconds)."""
        return lease.LeaderElectionConfig(
            max(1, round(self.lease_duration_s)), self.renew_deadline_s, self.retry_period_s
        )


def bucket_name(ordinal: int, total: int) -> str:
    """Knative's AutoscalerBucketName: ``autoscaler-bucket-00-of-01``."""
    return hashing.autoscaler_bucket_name(ordinal, total)


def bucket_names(total: int) -> list[str]:
    return hashing.autoscaler_bucket_names(total)


def owner_bucket(key: RevisionKey, buckets: list[str]) -> str:
    """The bucket a revision belongs to: knative/pkg's ChooseSubset(buckets, 1, "ns/name")."""
    if len(buckets) == 1:
        return buckets[0]
    return hashing.bucket_owner(buckets, f"{key.namespace}/{key.name}")


OnChange = Callable[[str, bool], None]  # (bucket, now leading?)


class BucketElector:
    """Leader election on every bucket's Lease, and the leader's stat endpoint.

    ``leading`` is the set of buckets this replica holds now; ``on_change`` is called when one
    is won or lost (the reconciler resyncs, and forgets what it no longer leads).
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.cfg = cfg
        self.namespace = namespace
        self.identity = identity
        self.address = address
        self.stat_port = stat_port
        self._on_change = on_change
        self.buckets = bucket_names(cfg.buckets)
        self.leading: set[str] = set()
        self._publishing: set[asyncio.Task[None]] = set()
        self._electors = [
            lease.LeaderElector(
                client,
                namespace,
                bucket,
                identity,
                cfg.lease(),
                on_started_leading=functools.partial(self._set, bucket, True),
                on_stopped_leading=functools.partial(self._set, bucket, False),
                clock=clock,
            )
            for bucket in self.buckets
        ]

    def __repr__(self) -> str:
        return f"<BucketElector {self.identity} leading={sorted(self.leading)}>"

    def owns(self, key: RevisionKey) -> bool:
        return owner_bucket(key, self.buckets) in self.leading

    async def start(self) -> None:
        for elector in self._electors:
            elector.start()

    async def stop(self, release: bool = True) -> None:
        """Stop electing and release every lease held (Knative's ReleaseOnCancel); without
        ``release`` the leases are left to expire, as after a crash."""
        for elector in self._electors:
            await elector.stop(release=release)
        for task in list(self._publishing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _set(self, bucket: str, leading: bool) -> None:
        if leading:
            self.leading.add(bucket)
            task = asyncio.get_running_loop().create_task(self._publish(bucket))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        else:
            self.leading.discard(bucket)
        self._on_change(bucket, leading)

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
