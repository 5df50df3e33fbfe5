"""The autoscaler process: the engine, the PA reconciler, the bucket electors, wired together.

Knative's cmd/autoscaler/main.go, over any ``KubeClient`` and ``InformerFactory`` (the real API
through kubernetes-asyncio, or ``FakeCluster`` in tests):

- ``config-leader-election`` is read once at start (buckets, lease timing), as Knative does;
  ``config-autoscaler`` is followed by an informer on the system namespace, and a change
  re-resolves every revision and resyncs every PA (Knative's global resync);
- Pods come from an informer filtered on ``serving.knative.dev/revisionUID`` (pods.py);
- one elector per bucket (bucket.py): winning a bucket resyncs the PAs, so its revisions are
  reconciled and decided here; losing it drops their deciders (the reconciler forgets a PA it
  does not own);
- Stats of another bucket's revisions are forwarded to its leader (forwarder.py).

Shutdown: the leases are released first, so another replica takes over at once, then the
workers stop and the stat server closes its WebSockets with 1012.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from autoscaler.bucket import BucketElector, LeaderElectionConfig
from autoscaler.config import AutoscalerConfig
from autoscaler.forwarder import StatForwarder
from autoscaler.pods import PodIndex
from autoscaler.reconciler import ActivatorProber, HttpActivatorProber, PodAutoscalerReconciler
from autoscaler.scraper import ScrapeClient
from autoscaler.service import AutoscalerService, ServiceConfig
from shared.envconfig import ConfigError, env_str
from shared.kube.client import KubeClient
from shared.kube.informer import EventType, InformerFactory
from shared.kube.resources import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    PODS,
    REVISION_UID_LABEL,
    SYSTEM_NAMESPACE,
    Obj,
    key_of,
)
from shared.seams import RevisionKey
from shared.stat_proto import StatData

__all__ = [
    "CONFIG_AUTOSCALER",
    "CONFIG_LEADER_ELECTION",
    "Autoscaler",
    "ProcessConfig",
]

log = logging.getLogger(__name__)

CONFIG_AUTOSCALER = "config-autoscaler"
CONFIG_LEADER_ELECTION = "config-leader-election"


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """The process's identity and ports (Knative's env contract plus knpy's port variables)."""

    pod_name: str
    pod_ip: str
    system_namespace: str = SYSTEM_NAMESPACE
    cluster_domain: str = "cluster.local"
    service: ServiceConfig = field(default_factory=ServiceConfig)

    @property
    def identity(self) -> str:
        """The Lease holderIdentity, Knative's ``<POD_NAME>_<POD_IP>``."""
        return f"{self.pod_name}_{self.pod_ip}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProcessConfig:
        """Raises: ConfigError: POD_NAME or POD_IP missing, or a port variable invalid."""
        for name in ("POD_NAME", "POD_IP"):
            if not env.get(name):
                raise ConfigError(name, "required (the lease identity is POD_NAME_POD_IP)")
        return cls(
            pod_name=env["POD_NAME"],
            pod_ip=env["POD_IP"],
            system_namespace=env_str(env, "SYSTEM_NAMESPACE", SYSTEM_NAMESPACE),
            cluster_domain=env_str(env, "CLUSTER_DOMAIN", "cluster.local"),
            service=ServiceConfig.from_env(env),
        )


class Autoscaler:
    """The whole process over a client and an informer factory; ``start``/``stop``."""

    def __init__(
        self,
        cfg: ProcessConfig,
        client: KubeClient,
        informers: InformerFactory,
        *,
        clock: Callable[[], float] = time.time,
        scrape_client: ScrapeClient | None = None,
        prober: ActivatorProber | None = None,
    ) -> None:
        self.cfg = cfg
        self._client = client
        self._informers = informers
        self._clock = clock
        self._prober = prober
        self._session: aiohttp.ClientSession | None = None
        self._configmaps = informers.informer(CONFIGMAPS, namespace=cfg.system_namespace)
        self._slices = informers.informer(ENDPOINTSLICES, namespace=cfg.system_namespace)
        self.pods = PodIndex(informers.informer(PODS, label_selector=REVISION_UID_LABEL))
        self.engine = AutoscalerService(
            cfg.service,
            self.pods,
            clock,
            on_tick=self._on_tick,
            forward=self._forward,
            scrape_client=scrape_client,
        )
        self.elector: BucketElector | None = None
        self.forwarder: StatForwarder | None = None
        self.reconciler: PodAutoscalerReconciler | None = None
        self._autoscaler_data: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Autoscaler {self.cfg.identity} {self.elector!r} {self.engine!r}>"

    async def __aenter__(self) -> Autoscaler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Sync the informers, bind the ports, then elect, reconcile and decide.

        On failure (a port taken, the API unreachable) what was started is stopped again.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        prober = self._prober or HttpActivatorProber(self._session)
        election = await self._leader_election_config()
        reconciler = PodAutoscalerReconciler(
            self._client,
            self._informers,
            self.engine,
            self.pods,
            prober,
            owns=self._owns,
            clock=self._clock,
        )
        self.reconciler = reconciler
        self._configmaps.add_handler(self._on_configmap)
        await self._informers.start()
        for inf in (
            self._configmaps,
            self._slices,
            reconciler.pas,
            reconciler.sks,
            reconciler.metrics,
            reconciler.deployments,
            self.pods.informer,
        ):
            await inf.wait_synced()
        await self.engine.start()
        self.elector = BucketElector(
            self._client,
            election,
            namespace=self.cfg.system_namespace,
            identity=self.cfg.identity,
            address=self.cfg.pod_ip,
            stat_port=self.engine.stat_port,
            on_change=self._on_leadership,
            clock=self._clock,
        )
        elector = self.elector
        self.engine.owns_bucket = lambda bucket: bucket in elector.leading
        self.forwarder = StatForwarder(
            self.elector,
            self._slices,
            self._session,
            f"{self.cfg.pod_ip}:{self.engine.stat_port}",
        )
        await reconciler.start()
        await self.elector.start()

    async def stop(self) -> None:
        if self.elector is not None:
            await self.elector.stop()  # release the leases first: a successor starts now
        if self.reconciler is not None:
            await self.reconciler.stop()
        if self.forwarder is not None:
            await self.forwarder.stop()
        await self.engine.stop()
        await self._informers.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- configuration ---------------------------------------------------------------------
    async def _leader_election_config(self) -> LeaderElectionConfig:
        cm = await self._client.get(CONFIGMAPS, self.cfg.system_namespace, CONFIG_LEADER_ELECTION)
        return LeaderElectionConfig.from_configmap(_data(cm))

    def _on_configmap(self, event: EventType, cm: Obj) -> None:
        if key_of(cm)[1] != CONFIG_AUTOSCALER:
            return
        data = {} if event is EventType.DELETED else _data(cm)
        if data == self._autoscaler_data:
            return
        try:
            autoscaler = AutoscalerConfig.from_configmap(data)
        except ConfigError as err:
            log.error("config-autoscaler is invalid, keeping the last one: %s", err)
            return
        self._autoscaler_data = data
        log.info("config-autoscaler: %s", data or "defaults")
        self.engine.reconfigure(autoscaler)
        if self.reconciler is not None:
            self.reconciler.resync()

    # -- wiring --------------------------------------------------------------------------------
    def _owns(self, key: RevisionKey) -> bool:
        return self.elector is not None and self.elector.owns(key)

    def _on_leadership(self, _bucket: str, _leading: bool) -> None:
        if self.reconciler is not None:
            self.reconciler.resync()

    def _on_tick(self, key: RevisionKey) -> None:
        if self.reconciler is not None:
            self.reconciler.on_tick(key)

    def _forward(self, key: RevisionKey, stat: StatData) -> bool:
        if self.forwarder is None:
            return True  # not electing yet: nothing is decided here
        return self.forwarder(key, stat)


def _data(cm: Obj | None) -> dict[str, str]:
    raw = (cm or {}).get("data") or {}
    return {str(k): str(v) for k, v in raw.items()}
