"""The controllers against a real ``KubeApiServer`` with Knative's webhook as its admission.

One run of what ``knpy serve`` wires: the API server on a free loopback port, the controllers
over kubernetes-asyncio informers and client through its kubeconfig. The test applies the
hello Service as ``kubectl apply`` would, then plays the autoscaler (the SKS, the
PodAutoscaler status) and the kubelet (a Pod with its own ports, Ready), and sees every object
Knative's controller makes appear, and the Service turn Ready.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.controllers import ControllerConfig, Controllers
from controlplane.kubeapi.server import KubeApiServer
from controlplane.webhook import admission_hooks
from shared.kube.client import ApiError
from shared.kube.config import load_api_client
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.kubeinformer import KubeInformerFactory
from shared.kube.resources import (
    CONFIGURATIONS,
    DEPLOYMENTS,
    ENDPOINTS,
    KSERVICES,
    PODAUTOSCALERS,
    PODS,
    REVISIONS,
    ROUTES,
    SERVERLESSSERVICES,
    SERVICES,
    Obj,
    Resource,
)

from .harness import make_pod

HELLO = Path(__file__).parents[3] / "examples" / "hello" / "service.yaml"
WAIT_S = 15.0


class Cluster:
    def __init__(self, server: KubeApiServer, client: ApiKubeClient) -> None:
        self.server = server
        self.client = client

    async def eventually(
        self, resource: Resource, name: str, check: Callable[[Obj], bool] = lambda o: True
    ) -> Obj:
        """The object once it exists and passes ``check`` (polling the API, as a user would)."""
        deadline = asyncio.get_running_loop().time() + WAIT_S
        obj: Obj | None = None
        while asyncio.get_running_loop().time() < deadline:
            obj = await self.client.get(resource, "default", name)
            if obj is not None and check(obj):
                return obj
            await asyncio.sleep(0.05)
        raise AssertionError(f"{resource} default/{name} never got there: {obj}")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    server = KubeApiServer(tmp_path / "state", admission=admission_hooks())
    await server.start()
    api = await load_api_client({}, str(server.kubeconfig_path))
    client = ApiKubeClient(api)
    controllers = Controllers(KubeInformerFactory(api), client, ControllerConfig())
    await controllers.start()
    try:
        yield Cluster(server, client)
    finally:
        await controllers.stop()
        await api.close()
        await server.stop()


def ready(obj: Obj) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


async def test_hello_service_brings_up_knatives_objects(cluster: Cluster) -> None:
    client = cluster.client
    svc = yaml.safe_load(HELLO.read_text())
    await client.create(KSERVICES, "default", svc)
    await cluster.eventually(CONFIGURATIONS, "hello")
    await cluster.eventually(ROUTES, "hello")
    rev = await cluster.eventually(REVISIONS, "hello-00001")
    assert rev["spec"]["containers"][0]["name"] == "user-container"  # defaulted by the webhook
    deployment = await cluster.eventually(DEPLOYMENTS, "hello-00001-deployment")
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        "user-container",
        "queue-proxy",
    ]
    pa = await cluster.eventually(
        PODAUTOSCALERS, "hello-00001", lambda o: o["spec"].get("reachability") == "Reachable"
    )
    assert pa["metadata"]["annotations"]["autoscaling.knative.dev/class"] == (
        "kpa.autoscaling.knative.dev"
    )

    # The autoscaler's part: the SKS, then the PA status once the first pod is up.
    sks = {
        "apiVersion": "networking.internal.knative.dev/v1alpha1",
        "kind": "ServerlessService",
        "metadata": {
            "name": "hello-00001",
            "namespace": "default",
            "labels": pa["metadata"]["labels"],
        },
        "spec": {
            "mode": "Serve",
            "numActivators": 2,
            "objectRef": pa["spec"]["scaleTargetRef"],
            "protocolType": "http1",
        },
    }
    await client.create(SERVERLESSSERVICES, "default", sks)
    await cluster.eventually(SERVICES, "hello-00001-private")
    await cluster.eventually(SERVICES, "hello-00001")

    # The kubelet's part: a Pod of the Deployment with its own local ports, Ready.
    pod = make_pod(rev, "hello-00001-deployment-x1", 43000)
    status = pod.pop("status")
    created = await client.create(PODS, "default", pod)
    created["status"] = status
    await client.replace_status(PODS, "default", created["metadata"]["name"], created)
    private = await cluster.eventually(
        ENDPOINTS, "hello-00001-private", lambda o: bool(o.get("subsets"))
    )
    assert private["subsets"][0]["addresses"][0]["targetRef"]["name"] == "hello-00001-deployment-x1"
    assert {p["name"]: p["port"] for p in private["subsets"][0]["ports"]}["http"] == 43004

    pa = copy.deepcopy(await cluster.eventually(PODAUTOSCALERS, "hello-00001"))
    pa["status"] = {
        "serviceName": "hello-00001",
        "actualScale": 1,
        "desiredScale": 1,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": "2027-01-01T00:00:00Z"}
            for t in ("Active", "Ready", "SKSReady", "ScaleTargetInitialized")
        ],
    }
    await client.replace_status(PODAUTOSCALERS, "default", "hello-00001", pa)
    public = await cluster.eventually(ENDPOINTS, "hello-00001", lambda o: bool(o.get("subsets")))
    assert [p["name"] for p in public["subsets"][0]["ports"]] == ["http"]
    svc = await cluster.eventually(KSERVICES, "hello", ready)
    assert svc["status"]["url"] == "http://hello.default.localhost"
    assert svc["status"]["traffic"] == [
        {"revisionName": "hello-00001", "latestRevision": True, "percent": 100}
    ]


async def test_a_bad_service_is_refused_with_knatives_message(cluster: Cluster) -> None:
    svc: Any = yaml.safe_load(HELLO.read_text())
    svc["spec"]["traffic"] = [{"latestRevision": True, "percent": 101}]
    with pytest.raises(ApiError) as e:
        await cluster.client.create(KSERVICES, "default", svc)
    assert e.value.status in (400, 422)
    assert "expected 0 <= 101 <= 100: spec.traffic[0].percent" in e.value.message
