"""A real ``python -m activator --kubeconfig`` against knpy's Kubernetes API server.

The API server (controlplane/kubeapi) runs in the test's loop; it has no controllers, so the
test writes Knative's objects itself, as Knative's controllers and Kubernetes' endpoints
controller would: the Revision, the revision's private Endpoints (its pods, ready or not) and
its public Endpoints (the activators in its path), and config-network in knative-serving.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.kubeapi.server import KubeApiServer
from shared.kube.config import load_api_client
from shared.kube.fake import resource_for
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.resources import Obj, key_of
from shared.ports import free_port
from tests.activator.objects import configmap
from tests.queueproxy.integration.qpharness import LOOPBACK, Child, wait_listening


@dataclass
class KubeApi:
    server: KubeApiServer
    client: ApiKubeClient

    @property
    def kubeconfig(self) -> Path:
        return self.server.kubeconfig_path

    async def apply(self, obj: Obj) -> Obj:
        """Create, or replace what is there (the last write wins, as a controller's would)."""
        resource = resource_for(obj["apiVersion"], obj["kind"])
        namespace, name = key_of(obj)
        current = await self.client.get(resource, namespace, name)
        if current is None:
            return await self.client.create(resource, namespace, obj)
        body = {**obj, "metadata": {**obj["metadata"], **_rv(current)}}
        return await self.client.replace(resource, namespace, name, body)


def _rv(obj: Obj) -> dict[str, Any]:
    return {"resourceVersion": obj["metadata"]["resourceVersion"]}


@contextlib.asynccontextmanager
async def kube_api(state_dir: Path) -> AsyncIterator[KubeApi]:
    """The API server with config-network in place, and a client to write objects."""
    server = KubeApiServer(state_dir)
    await server.start()
    api = await load_api_client({}, str(server.kubeconfig_path))
    try:
        kube = KubeApi(server, ApiKubeClient(api))
        await kube.apply(configmap("config-network", {}))
        yield kube
    finally:
        await api.close()
        await server.stop()


@dataclass
class ActivatorProcess:
    child: Child
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        """How the revision's public Endpoints name it: POD_IP:port."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"


async def spawn_activator(
    children: Any, kube: KubeApi, autoscaler_url: str, name: str = "activator-0", **env: str
) -> ActivatorProcess:
    """``python -m activator --kubeconfig ...`` as ``knpy serve`` starts it."""
    port, metrics = free_port(), free_port()
    full_env = {
        "POD_NAME": name,
        "POD_IP": LOOPBACK,
        "SYSTEM_NAMESPACE": "knative-serving",
        "ACTIVATOR_BIND_HOST": LOOPBACK,
        "ACTIVATOR_SERVING_PORT": str(port),
        "ACTIVATOR_METRICS_PORT": str(metrics),
        "ACTIVATOR_AUTOSCALER_URL": autoscaler_url,
        **env,
    }
    argv = [sys.executable, "-m", "activator", "--kubeconfig", str(kube.kubeconfig)]
    child = children.spawn(name, argv, full_env)
    await wait_listening(child, {"ACTIVATOR_SERVING_PORT": port, "ACTIVATOR_METRICS_PORT": metrics})
    return ActivatorProcess(child, port, metrics)


def gauge(text: str, name: str, revision: str) -> float | None:
    """One revision's value of a gauge in Prometheus text, None when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'kn_revision_name="{revision}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None
