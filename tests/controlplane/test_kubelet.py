"""The kubelet against an in-memory API (FakeCluster) with real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlplane.kubelet import Kubelet
from shared.kube.fake import FakeCluster
from shared.kube.resources import DEPLOYMENTS, PODS, Obj

APP = Path(__file__).resolve().parents[2] / "examples" / "sampleapp" / "app.py"
WAIT_S = 20.0
pytestmark = pytest.mark.timeout(60)


def revision_deployment(
    name: str = "hello-00001-deployment",
    replicas: int = 1,
    command: list[str] | None = None,
    version: str = "1",
) -> Obj:
    """A Deployment shaped as Knative's revision reconciler makes it (user + queue-proxy)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"serving.knative.dev/revisionUID": "r1"}},
            "template": {
                "metadata": {"labels": {"serving.knative.dev/revisionUID": "r1",
                                        "serving.knative.dev/revision": "hello-00001"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "user-container",
                            "image": "knpy/sampleapp",
                            "command": command or ["python", str(APP)],
                            "ports": [{"name": "user-port", "containerPort": 8080}],
                            "env": [{"name": "K_REVISION", "value": "hello-00001"},
                                    {"name": "VERSION", "value": version}],
                        },
                        {
                            "name": "queue-proxy",
                            "image": "knpy/queue-proxy",
                            "ports": [
                                {"name": "http1", "containerPort": 8012},
                                {"name": "http-queueadm", "containerPort": 8022},
                                {"name": "http-autometric", "containerPort": 9090},
                                {"name": "http-usermetric", "containerPort": 9091},
                            ],
                            "env": [
                                {"name": "SERVING_NAMESPACE", "value": "default"},
                                {"name": "SERVING_CONFIGURATION", "value": "hello"},
                                {"name": "SERVING_REVISION", "value": "hello-00001"},
                                {"name": "SERVING_POD",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "SERVING_POD_IP",
                                 "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                {"name": "QUEUE_SERVING_PORT", "value": "8012"},
                                {"name": "USER_PORT", "value": "8080"},
                                {"name": "CONTAINER_CONCURRENCY", "value": "0"},
                            ],
                            "readinessProbe": {
                                "httpGet": {"port": 8012, "httpHeaders": [
                                    {"name": "K-Network-Probe", "value": "queue"}]},
                            },
                        },
                    ],
                },
            },
        },
    }  # fmt: skip


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[FakeCluster, Kubelet]]:
    cluster = FakeCluster()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(APP.parents[2])}
    kubelet = Kubelet(cluster, cluster, tmp_path, drain_period_s=0.2, base_env=env)
    kubelet.start()
    await cluster.start()
    try:
        yield cluster, kubelet
    finally:
        await kubelet.close()
        await cluster.stop()


async def until(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        await asyncio.sleep(0.05)
        if check():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def pods(cluster: FakeCluster) -> list[Obj]:
    cluster.flush()
    return cluster.objects(PODS, "default")


def ready(pod: Obj) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def port_named(pod: Obj, name: str) -> int:
    for c in pod["spec"]["containers"]:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return int(p["containerPort"])
    raise AssertionError(name)


async def test_replicas_run_as_ready_pods_with_their_own_ports(
    node: tuple[FakeCluster, Kubelet],
) -> None:
    cluster, _ = node
    cluster.put(revision_deployment(replicas=2))
    await until(lambda: len(pods(cluster)) == 2 and all(map(ready, pods(cluster))), "2 ready")
    serving = set()
    async with aiohttp.ClientSession() as session:
        for pod in pods(cluster):
            assert pod["metadata"]["name"].startswith("hello-00001-deployment-")
            assert pod["metadata"]["ownerReferences"][0]["name"] == "hello-00001-deployment"
            assert pod["status"]["podIP"] == "127.0.0.1" and pod["status"]["phase"] == "Running"
            assert float(pod["metadata"]["annotations"]["knpy.dev/ready-after-seconds"]) > 0
            port = port_named(pod, "http1")
            serving.add(port)
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200 and "hello-00001" in await resp.text()
    assert len(serving) == 2 and 8012 not in serving
    await until(
        lambda: (cluster.peek(DEPLOYMENTS, "default", "hello-00001-deployment") or {})
        .get("status", {}).get("readyReplicas") == 2,
        "the Deployment's readyReplicas",
    )  # fmt: skip
    status = cluster.peek(DEPLOYMENTS, "default", "hello-00001-deployment")["status"]  # type: ignore[index]
    assert status["availableReplicas"] == status["updatedReplicas"] == status["replicas"] == 2
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds == {"Available": "True", "Progressing": "True"}

    # Scale to zero: the Pod objects go, and so do the processes.
    dep = cluster.peek(DEPLOYMENTS, "default", "hello-00001-deployment")
    assert dep is not None
    dep["spec"]["replicas"] = 0
    await cluster.replace(DEPLOYMENTS, "default", "hello-00001-deployment", dep)
    await until(lambda: pods(cluster) == [], "the pods to go")
    await until(lambda: not _listening(serving), "the queue-proxies to stop")


def _listening(ports: set[int]) -> bool:
    import socket

    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
    return False


@pytest.mark.parametrize(
    ("command", "reason", "exit_code", "message"),
    [
        pytest.param([sys.executable, "-c", "import sys; sys.exit('config missing')"],
                     "CrashLoopBackOff", 1, "config missing", id="crash-loop"),
        pytest.param(["/nonexistent/app"], "RunContainerError", 128,
                     'exec: "/nonexistent/app": [Errno 2] No such file or directory',
                     id="cannot-start-ENOENT"),
        pytest.param(["/tmp"], "RunContainerError", 128,
                     'exec: "/tmp": [Errno 13] Permission denied',
                     id="cannot-start-EACCES"),
    ],
)  # fmt: skip
async def test_failing_container_shows_as_kubernetes_shows_it(
    node: tuple[FakeCluster, Kubelet],
    command: list[str],
    reason: str,
    exit_code: int,
    message: str,
) -> None:
    cluster, _ = node
    cluster.put(revision_deployment(command=command))

    def user_status() -> Obj:
        for pod in pods(cluster):
            for c in pod.get("status", {}).get("containerStatuses") or []:
                if c["name"] == "user-container" and c.get("lastState"):
                    return c  # type: ignore[no-any-return]
        return {}

    await until(lambda: user_status().get("state", {}).get("waiting"), "a waiting state")
    status = user_status()
    assert status["state"]["waiting"]["reason"] == reason
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] == exit_code and message in terminated["message"]
    assert not any(map(ready, pods(cluster)))
    await until(lambda: user_status().get("restartCount", 0) >= 1, "a restart")


async def test_deleted_pod_is_replaced_and_template_change_rolls(
    node: tuple[FakeCluster, Kubelet],
) -> None:
    cluster, kubelet = node
    cluster.put(revision_deployment())
    await until(lambda: len(pods(cluster)) == 1 and ready(pods(cluster)[0]), "a ready pod")
    first = pods(cluster)[0]["metadata"]["name"]
    await cluster.delete(PODS, "default", first)
    await until(
        lambda: [p["metadata"]["name"] for p in pods(cluster) if ready(p)] not in ([], [first]),
        "a replacement",
    )
    assert first not in kubelet.pod_names("default", "hello-00001-deployment")
    second = pods(cluster)[0]["metadata"]["name"]
    # A new template: the new pod is ready before the old one goes (maxUnavailable 0).
    cluster.put(revision_deployment(version="2"))
    seen_ready: list[int] = []

    def rolled() -> bool:
        current = pods(cluster)
        seen_ready.append(sum(map(ready, current)))
        names = [p["metadata"]["name"] for p in current]
        return len(names) == 1 and names[0] != second and ready(current[0])

    await until(rolled, "the rollout")
    assert min(seen_ready) >= 1, seen_ready


async def test_stale_pods_of_a_previous_run_are_removed(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.put({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "old", "namespace": "default"},
                 "spec": {"nodeName": "knpy", "containers": []}})  # fmt: skip
    cluster.put({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "elsewhere", "namespace": "default"},
                 "spec": {"nodeName": "node-2", "containers": []}})  # fmt: skip
    kubelet = Kubelet(cluster, cluster, tmp_path)
    assert await kubelet.remove_stale_pods() == 1
    assert [p["metadata"]["name"] for p in cluster.objects(PODS)] == ["elsewhere"]
    await kubelet.close()
