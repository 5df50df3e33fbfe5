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

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping

import aiohttp

from autoscaler.bucket import BucketElector, LeaderElectionConfig
from autoscaler.config import ProcessConfig
from autoscaler.configmap import CONFIG_NAME, AutoscalerConfig
from autoscaler.engine import AutoscalerEngine
from autoscaler.forwarder import StatForwarder
from autoscaler.pods import PodIndex
from autoscaler.reconciler import ActivatorProber, HttpActivatorProber, PodAutoscalerReconciler
from autoscaler.scraper import ScrapeClient
from shared.envconfig import ConfigError
from shared.kube.client import KubeClient
from shared.kube.informer import EventType, InformerFactory
from shared.kube.resources import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    PODS,
    REVISION_UID_LABEL,
    Obj,
    key_of,
)
from shared.seams import RevisionKey
from shared.stat_proto import StatData

__all__ = [
    "CONFIG_LEADER_ELECTION",
    "Autoscaler",
    "serve",
]

log = logging.getLogger(__name__)

CONFIG_LEADER_ELECTION = "config-leader-election"


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
        self.engine = AutoscalerEngine(
            cfg.engine,
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
        if key_of(cm)[1] != CONFIG_NAME:
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


async def serve(cfg: ProcessConfig, env: Mapping[str, str], kubeconfig: str | None) -> None:
    """Run against the Kubernetes API until SIGTERM or SIGINT, then stop.

    In a pod (``KUBERNETES_SERVICE_HOST`` set) the service account; otherwise ``kubeconfig``,
    ``$KUBECONFIG`` or ``~/.kube/config`` (shared/kube/config.py).

    Raises:
        KubeConfigError: no usable credentials.
    """
    from shared.kube.config import load_api_client
    from shared.kube.kubeclient import ApiKubeClient
    from shared.kube.kubeinformer import KubeInformerFactory

    api = await load_api_client(env, kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Autoscaler(cfg, ApiKubeClient(api), KubeInformerFactory(api)):
            await stop.wait()
    finally:
        await api.close()
