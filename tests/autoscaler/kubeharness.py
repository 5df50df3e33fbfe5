"""Objects as Knative's controller and the kubelet write them, and an in-memory reconciler rig.

The rig is the real engine and reconciler over ``FakeCluster`` (shared/kube/fake.py), with a
fake clock, pods that report a set concurrency, and an activator probe the test answers. The
test plays Knative's controller: it writes the PA, the Deployment, the Pods and the SKS status.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from autoscaler.config import EngineConfig
from autoscaler.configmap import AutoscalerConfig
from autoscaler.engine import AutoscalerEngine
from autoscaler.pods import PodIndex
from autoscaler.reconciler import ActivatorProber, PodAutoscalerReconciler
from autoscaler.resources import format_time
from autoscaler.scraper import ScrapeError
from shared.kube.fake import FakeCluster
from shared.kube.resources import (
    CLASS_ANNOTATION,
    CONFIGURATION_LABEL,
    DEPLOYMENTS,
    KPA_CLASS,
    PODAUTOSCALERS,
    PODS,
    REVISION_LABEL,
    REVISION_UID_LABEL,
    SERVERLESSSERVICES,
    SERVICE_LABEL,
    Obj,
)
from shared.seams import Endpoint, RevisionKey
from shared.stat_proto import StatData

NS, REV = "default", "hello-00001"
KEY = RevisionKey(NS, REV)
QKEY = f"{NS}/{REV}"
DEPLOYMENT = f"{REV}-deployment"
UID = "7d3c5a4e-0000-4000-8000-000000000001"
T0 = 1_700_000_000.0
# Short windows, as the integration tests use: stable 6 s, grace 6 s.
CONFIG = {"stable-window": "6s", "scale-to-zero-grace-period": "6s"}


def pa(
    cc: int = 10,
    annotations: dict[str, str] | None = None,
    cls: str | None = KPA_CLASS,
    labels: dict[str, str] | None = None,
) -> Obj:
    ann = dict(annotations or {})
    if cls is not None:
        ann[CLASS_ANNOTATION] = cls
    return {
        "apiVersion": PODAUTOSCALERS.api_version,
        "kind": PODAUTOSCALERS.kind,
        "metadata": {
            "name": REV,
            "namespace": NS,
            "uid": UID,
            "generation": 1,
            "labels": labels
            if labels is not None
            else {
                SERVICE_LABEL: "hello",
                CONFIGURATION_LABEL: "hello",
                REVISION_LABEL: REV,
                REVISION_UID_LABEL: "rev-uid",
            },
            "annotations": ann,
        },
        "spec": {
            "containerConcurrency": cc,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT},
            "protocolType": "http1",
            "reachability": "Reachable",
        },
    }


def deployment(replicas: int | None = 1) -> Obj:
    spec: Obj = {"selector": {"matchLabels": {REVISION_UID_LABEL: "rev-uid"}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": DEPLOYMENT,
            "namespace": NS,
            "labels": {REVISION_LABEL: REV, REVISION_UID_LABEL: "rev-uid"},
        },
        "spec": spec,
    }


def pod(i: int, started: float = T0 - 3600, ready: bool = True, metrics_port: int = 0) -> Obj:
    ports: list[Obj] = [{"name": "http1", "containerPort": 8012}]
    if metrics_port:
        ports.append({"name": "http-autometric", "containerPort": metrics_port})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{REV}-deployment-{i}",
            "namespace": NS,
            "labels": {REVISION_LABEL: REV, REVISION_UID_LABEL: "rev-uid"},
        },
        "spec": {
            "containers": [{"name": "user-container"}, {"name": "queue-proxy", "ports": ports}]
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.0.0.{i + 1}",
            "startTime": format_time(started),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def sks_status(sks: Obj, *, proxy_since: float | None, ready: bool = True) -> Obj:
    """The SKS as Knative's SKS reconciler leaves it (serviceName, private service, conditions)."""
    out = dict(sks)
    conds = [
        {
            "type": "Ready",
            "status": "True" if ready else "Unknown",
            "lastTransitionTime": format_time(T0),
        }
    ]
    if proxy_since is not None:
        conds.append(
            {
                "type": "ActivatorEndpointsPopulated",
                "status": "True",
                "lastTransitionTime": format_time(proxy_since),
            }
        )
    out["status"] = {
        "serviceName": REV,
        "privateServiceName": f"{REV}-private",
        "conditions": conds,
    }
    return out


def public_endpoints(ip: str = "10.1.0.1", port: int = 8012) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": REV, "namespace": NS},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": port}]}],
    }


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakePods:
    """Every pod reports ``concurrency``; pods named in ``failing`` refuse."""

    def __init__(self) -> None:
        self.concurrency = 0.0
        self.failing: set[str] = set()

    async def scrape(self, endpoint: Endpoint) -> StatData:
        if endpoint.pod_name in self.failing:
            raise ScrapeError(f"{endpoint.pod_name}: connection refused")
        return StatData(endpoint.pod_name, self.concurrency, 0.0, self.concurrency, 0.0)


@dataclass
class FakeProber(ActivatorProber):
    """Answers the scale-to-zero probe as the test says; records what was probed."""

    ok: bool = False
    probed: list[Any] = field(default_factory=list)

    async def probe(self, pa: Obj, sks: Obj, endpoints: Obj | None) -> bool:
        self.probed.append(endpoints)
        return self.ok


class Rig:
    """Engine + reconciler over a FakeCluster; the test drives time and reconciles."""

    def __init__(self, config: dict[str, str] | None = None) -> None:
        self.clock = Clock()
        self.cluster = FakeCluster(now=self.clock)
        self.scrape = FakePods()
        self.prober = FakeProber()
        self.pods = PodIndex(self.cluster.informer(PODS, label_selector=REVISION_UID_LABEL))
        cfg = EngineConfig(
            autoscaler=AutoscalerConfig.from_configmap(config if config is not None else CONFIG),
            stat_port=0,
            metrics_port=0,
        )
        self.engine = AutoscalerEngine(
            cfg, self.pods, self.clock, scrape_client=self.scrape, rng=random.Random(1)
        )
        self.rec = PodAutoscalerReconciler(
            self.cluster, self.cluster, self.engine, self.pods, self.prober, clock=self.clock
        )

    async def reconcile(self) -> None:
        await self.cluster.settle()
        await self.rec.reconcile(QKEY)
        await self.cluster.settle()

    def sks(self) -> Obj | None:
        return self.cluster.peek(SERVERLESSSERVICES, NS, REV)

    def pa(self) -> Obj:
        obj = self.cluster.peek(PODAUTOSCALERS, NS, REV)
        assert obj is not None
        return obj

    def replicas(self) -> int:
        d = self.cluster.peek(DEPLOYMENTS, NS, DEPLOYMENT)
        assert d is not None
        return int(d["spec"].get("replicas", 1))

    async def ready_sks(self, proxy_since: float | None = T0) -> None:
        """Play Knative's SKS reconciler: the services exist, activators are in the path."""
        await self.reconcile()
        sks = self.sks()
        assert sks is not None
        self.cluster.put(sks_status(sks, proxy_since=proxy_since))
        self.cluster.put(public_endpoints())
        await self.reconcile()

    def set_pods(self, n: int) -> None:
        for obj in self.cluster.objects(PODS, NS):
            self.cluster._delete(PODS, (NS, obj["metadata"]["name"]))
        for i in range(n):
            self.cluster.put(pod(i))

    async def second(self, seconds: int = 1) -> None:
        """Advance second by second: scrape each, decide every 2 s, reconcile after each."""
        for _ in range(seconds):
            self.clock.now += 1
            await self.engine.scrape_all()
            if int(self.clock.now - T0) % 2 == 0:
                await self.engine.tick_all(self.clock.now)
            await self.reconcile()

    def writes(self, verb: str, resource: Any = None) -> list[Any]:
        return [w for w in self.cluster.writes if w.verb == verb and resource in (None, w.resource)]

    def clear_writes(self) -> None:
        self.cluster.writes.clear()

    def seed(self, obj: Obj) -> Obj:
        return self.cluster.put(obj)
