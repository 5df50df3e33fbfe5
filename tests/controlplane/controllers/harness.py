"""Objects and a running ``Controllers`` over ``FakeCluster``, for the reconciler tests.

``Env`` plays the parts the controllers do not: the API server's admission (Knative's webhook
hooks from ``controlplane.webhook``), the autoscaler (PodAutoscaler status, the SKS) and the
kubelet (Pods with their own local ports, Ready or not, containerStatuses).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from controlplane.controllers import ControllerConfig, Controllers
from controlplane.webhook import admission_hooks
from shared.kube.fake import FakeCluster
from shared.kube.resources import (
    CONFIGMAPS,
    ENDPOINTS,
    KSERVICES,
    PODAUTOSCALERS,
    PODS,
    REVISION_LABEL,
    REVISION_UID_LABEL,
    REVISIONS,
    SERVERLESSSERVICES,
    Obj,
    Resource,
)

NOW = 1_800_000_000.0
NOW_TEXT = "2027-01-15T08:00:00Z"


class Reader:
    """The webhook's ObjectReader over the fake's store."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._cluster = cluster

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        return self._cluster.peek(resource, namespace, name)

    def list(self, resource: Resource, namespace: str | None = None) -> list[Obj]:
        return self._cluster.objects(resource, namespace)


def hello_service(name: str = "hello", **template_spec: Any) -> Obj:
    spec: Obj = {
        "containers": [
            {
                "image": "example/hello",
                "command": ["python", "app.py"],
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "TARGET", "value": "knpy"}],
            }
        ]
    }
    spec.update(template_spec)
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": spec}},
    }


def make_pod(
    revision: Obj, name: str, base: int, *, ready: bool = True, terminated: Obj | None = None
) -> Obj:
    """A Pod of ``revision`` as the local kubelet writes it: ports ``base``..``base+4`` on
    127.0.0.1 (user-port, http-autometric, http-usermetric, http-queueadm, queue-port)."""
    rev = revision["metadata"]["name"]
    status: Obj = {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [
            {"name": "user-container", "ready": ready, "state": {"running": {}}},
            {"name": "queue-proxy", "ready": ready, "state": {"running": {}}},
        ],
    }
    if terminated is not None:
        status["containerStatuses"][0]["lastState"] = {"terminated": terminated}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": revision["metadata"]["namespace"],
            "labels": {
                REVISION_LABEL: rev,
                REVISION_UID_LABEL: revision["metadata"]["uid"],
                "app": rev,
            },
        },
        "spec": {
            "containers": [
                {"name": "user-container", "ports": [{"name": "user-port", "containerPort": base}]},
                {
                    "name": "queue-proxy",
                    "ports": [
                        {"name": "http-autometric", "containerPort": base + 1},
                        {"name": "http-usermetric", "containerPort": base + 2},
                        {"name": "http-queueadm", "containerPort": base + 3},
                        {"name": "queue-port", "containerPort": base + 4},
                    ],
                },
            ]
        },
        "status": status,
    }


class Env:
    """A FakeCluster with the controllers running, and the other components' parts."""

    def __init__(self, cluster: FakeCluster, controllers: Controllers) -> None:
        self.cluster = cluster
        self.controllers = controllers
        self.hooks = admission_hooks()
        self._ports = iter(range(41000, 42000, 10))

    def admitted(self, resource: Resource, obj: Obj, old: Obj | None = None) -> Obj:
        hook = self.hooks[resource]
        return hook.admit("UPDATE" if old else "CREATE", obj, old, Reader(self.cluster))

    async def apply(self, resource: Resource, obj: Obj) -> Obj:
        """What ``kubectl apply`` does through the API server: admit, then create or replace."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        old = self.cluster.peek(resource, ns, name)
        body = self.admitted(resource, obj, old)
        if old is None:
            out = await self.cluster.create(resource, ns, body)
        else:
            body = copy.deepcopy(body)
            body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            out = await self.cluster.replace(resource, ns, name, body)
        await self.cluster.settle()
        return out

    def get(self, resource: Resource, name: str, namespace: str = "default") -> Obj:
        obj = self.cluster.peek(resource, namespace, name)
        assert obj is not None, f"{resource} {namespace}/{name} missing"
        return obj

    async def pa_ready(self, rev: str, *, scale: int = 1, namespace: str = "default") -> None:
        """The autoscaler's PodAutoscaler status once the initial scale was reached."""
        pa = self.get(PODAUTOSCALERS, rev, namespace)
        pa["status"] = {
            "serviceName": rev,
            "metricsServiceName": f"{rev}-private",
            "actualScale": scale,
            "desiredScale": scale,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": NOW_TEXT}
                for t in ("Active", "Ready", "SKSReady", "ScaleTargetInitialized")
            ],
        }
        await self.cluster.replace_status(PODAUTOSCALERS, namespace, rev, pa)
        await self.cluster.settle()

    async def sks(
        self, rev: str, *, mode: str = "Serve", activators: int = 2, namespace: str = "default"
    ) -> None:
        """The autoscaler's ServerlessService for a revision."""
        pa = self.get(PODAUTOSCALERS, rev, namespace)
        body: Obj = {
            "apiVersion": "networking.internal.knative.dev/v1alpha1",
            "kind": "ServerlessService",
            "metadata": {
                "name": rev,
                "namespace": namespace,
                "labels": dict(pa["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": pa["apiVersion"],
                        "kind": "PodAutoscaler",
                        "name": rev,
                        "uid": pa["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "mode": mode,
                "numActivators": activators,
                "objectRef": pa["spec"]["scaleTargetRef"],
                "protocolType": "http1",
            },
        }
        old = self.cluster.peek(SERVERLESSSERVICES, namespace, rev)
        body = copy.deepcopy(self.admitted(SERVERLESSSERVICES, body, old))
        if old is None:
            await self.cluster.create(SERVERLESSSERVICES, namespace, body)
        else:
            body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            await self.cluster.replace(SERVERLESSSERVICES, namespace, rev, body)
        await self.cluster.settle()

    def pod(
        self,
        rev: str,
        name: str,
        *,
        ready: bool = True,
        namespace: str = "default",
        terminated: Obj | None = None,
    ) -> Obj:
        """A Pod of the revision as the local kubelet writes it: its own ports on 127.0.0.1."""
        revision = self.get(REVISIONS, rev, namespace)
        return make_pod(revision, name, next(self._ports), ready=ready, terminated=terminated)

    async def put_pod(self, pod: Obj) -> Obj:
        out = self.cluster.put(pod, PODS)
        await self.cluster.settle()
        return out

    async def activators(self, *ports: int) -> None:
        """``knative-serving/activator-service`` Endpoints: one ready activator per port."""
        subsets = [
            {
                "addresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            }
            for port in ports
        ]
        self.cluster.put(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "activator-service", "namespace": "knative-serving"},
                "subsets": subsets,
            },
            ENDPOINTS,
        )
        await self.cluster.settle()

    async def configmap(self, name: str, data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "knative-serving"},
            "data": data,
        }
        self.cluster.put(self.admitted(CONFIGMAPS, body), CONFIGMAPS)
        await self.cluster.settle()


@asynccontextmanager
async def running(**cfg: Any) -> AsyncIterator[Env]:
    cluster = FakeCluster(now=lambda: NOW)
    cfg.setdefault("clock", lambda: NOW)
    controllers = Controllers(cluster, cluster, ControllerConfig(**cfg))
    await controllers.start()
    try:
        yield Env(cluster, controllers)
    finally:
        await controllers.stop()


async def hello(env: Env, name: str = "hello", **template_spec: Any) -> Obj:
    """Apply the hello Service and let the controllers make its children."""
    return await env.apply(KSERVICES, hello_service(name, **template_spec))
