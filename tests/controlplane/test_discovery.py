"""Prometheus's way into knpy serve: the targets of each kind of pod, the platform's metrics and
the prometheus.yml, checked by Prometheus's own ``promtool``, on a real API server."""

from __future__ import annotations

import asyncio
import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane import discovery
from controlplane.kubeapi.store import Store

from .kubeapi.conftest import start_api, stop_api

Json = dict[str, Any]


def _pod(
    name: str,
    namespace: str,
    labels: dict[str, str],
    containers: list[tuple[str, list[tuple[str, int]]]],
    *,
    phase: str = "Running",
    running: tuple[str, ...] | None = None,
) -> Json:
    started = {c for c, _ in containers} if running is None else set(running)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "containers": [
                {"name": c, "ports": [{"name": n, "containerPort": p} for n, p in ports]}
                for c, ports in containers
            ]
        },
        "status": {
            "phase": phase,
            "podIP": "127.0.0.1",
            "containerStatuses": [
                {
                    "name": c,
                    "state": {"running": {"startedAt": "x"}} if c in started else {"waiting": {}},
                }
                for c, _ in containers
            ],
        },
    }


REVISION_LABELS = {
    "serving.knative.dev/service": "hello",
    "serving.knative.dev/configuration": "hello",
    "serving.knative.dev/revision": "hello-00001",
    "app": "hello-00001",
}
REVISION_CONTAINERS = [
    ("user-container", [("user-port", 41001)]),
    (
        "queue-proxy",
        [
            ("http-autometric", 41002),
            ("http-usermetric", 41003),
            ("http-queueadm", 41004),
            ("queue-port", 41005),
        ],
    ),
]
REVISION_POD = _pod("hello-00001-deployment-abc-x", "default", REVISION_LABELS, REVISION_CONTAINERS)
ACTIVATOR_POD = _pod(
    "activator-abc-y",
    "knative-serving",
    {"app": "activator", "role": "activator"},
    [("activator", [("http1", 42001), ("metrics", 42002)])],
)
QUEUE_LABELS = {
    "namespace": "default",
    "service": "hello",
    "configuration": "hello",
    "revision": "hello-00001",
    "pod": "hello-00001-deployment-abc-x",
    "component": "queue-proxy",
}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(
            REVISION_POD,
            [
                {
                    "targets": ["127.0.0.1:41002"],
                    "labels": {**QUEUE_LABELS, "endpoint": "http-autometric"},
                },
                {
                    "targets": ["127.0.0.1:41003"],
                    "labels": {**QUEUE_LABELS, "endpoint": "http-usermetric"},
                },
            ],
            id="revision-pod-both-queue-proxy-metrics-ports",
        ),
        pytest.param(
            _pod(
                "p",
                "default",
                REVISION_LABELS,
                REVISION_CONTAINERS,
                running=("user-container",),
            ),
            [],
            id="queue-proxy-not-running-yet",
        ),
        pytest.param(
            _pod("p", "default", REVISION_LABELS, REVISION_CONTAINERS, phase="Pending"),
            [],
            id="pending-pod",
        ),
        pytest.param(
            ACTIVATOR_POD,
            [
                {
                    "targets": ["127.0.0.1:42002"],
                    "labels": {
                        "namespace": "knative-serving",
                        "pod": "activator-abc-y",
                        "component": "activator",
                        "endpoint": "metrics",
                    },
                }
            ],
            id="activator-metrics-port",
        ),
        pytest.param(
            _pod("web-1", "default", {"app": "web"}, [("web", [("metrics", 43001)])]),
            [],
            id="a-plain-deployments-pod-is-not-knatives",
        ),
    ],
)
def test_pod_targets(pod: Json, expected: list[Json]) -> None:
    assert discovery.pod_targets(pod) == expected


def test_a_revision_without_a_service_leaves_the_label_out() -> None:
    pod = copy.deepcopy(REVISION_POD)
    del pod["metadata"]["labels"]["serving.knative.dev/service"]
    for group in discovery.pod_targets(pod):
        assert "service" not in group["labels"]
        assert group["labels"]["configuration"] == "hello"


def test_targets_list_the_platform_first_then_pods_in_a_stable_order() -> None:
    groups = discovery.targets([REVISION_POD, ACTIVATOR_POD], "127.0.0.1:9080")
    assert groups[0] == {
        "targets": ["127.0.0.1:9080"],
        "labels": {"component": "platform", "endpoint": "http"},
    }
    assert [g["targets"][0] for g in groups[1:]] == [
        "127.0.0.1:41002",
        "127.0.0.1:41003",
        "127.0.0.1:42002",
    ]
    assert discovery.targets([ACTIVATOR_POD, REVISION_POD], "127.0.0.1:9080") == groups


def _deployment(name: str, replicas: int | None, ready: int, existing: int) -> Json:
    spec = {} if replicas is None else {"replicas": replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
        "status": {"replicas": existing, "readyReplicas": ready},
    }


def test_platform_metrics_are_kube_state_metrics_replicas_and_stored_object_counts() -> None:
    store = Store(None)
    store.put("deployments.apps", _deployment("hello-00001-deployment", 3, 1, 2))
    store.put("deployments.apps", _deployment("bare", None, 0, 0))
    store.put("pods", copy.deepcopy(REVISION_POD))
    families = {f.name: f for f in discovery.PlatformMetrics(lambda: store).collect()}
    value = {
        (name, tuple(s.labels.values())): s.value for name, f in families.items() for s in f.samples
    }
    hello = ("default", "hello-00001-deployment")
    assert value[("kube_deployment_spec_replicas", hello)] == 3
    assert value[("kube_deployment_status_replicas", hello)] == 2
    assert value[("kube_deployment_status_replicas_ready", hello)] == 1
    # No spec.replicas means 1, as the API server defaults it.
    assert value[("kube_deployment_spec_replicas", ("default", "bare"))] == 1
    assert value[("apiserver_storage_objects", ("deployments.apps",))] == 2
    assert value[("apiserver_storage_objects", ("pods",))] == 1


def _promtool(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Prometheus's own checker (Debian's prometheus package; .ci/run installs it)."""
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, timeout=30)


def test_prometheus_yml_passes_promtool(tmp_path: Path) -> None:
    token = tmp_path / "api-token"
    token.write_text("secret")
    text = discovery.prometheus_config("http://127.0.0.1:9080", token, interval_s=1.0)
    config = yaml.safe_load(text)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"knpy", "knpy-platform"}
    # Only the platform's job sends the token; both discover through it.
    bearer = {"type": "Bearer", "credentials_file": str(token)}
    assert "authorization" not in jobs["knpy"]
    assert jobs["knpy-platform"]["authorization"] == bearer
    for job in jobs.values():
        (sd,) = job["http_sd_configs"]
        assert sd["url"] == "http://127.0.0.1:9080/knpy/v1/targets"
        assert sd["authorization"] == bearer
    assert config["global"]["scrape_interval"] == "1s"
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = _promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


async def test_install_serves_targets_and_metrics_behind_the_token(tmp_path: Path) -> None:
    api = await start_api(tmp_path / "state")
    try:
        config = discovery.install(api.server)
        assert config == (tmp_path / "state" / "prometheus.yml").resolve()
        token_file = config.parent / "api-token"
        assert token_file.read_text() == api.server.token
        assert token_file.stat().st_mode & 0o077 == 0
        assert f"url: {api.server.url}/knpy/v1/targets" in config.read_text()

        # A running revision pod, as the kubelet writes it (object, then status).
        pod = copy.deepcopy(REVISION_POD)
        status = pod.pop("status")
        await api.ok("POST", "/api/v1/namespaces/default/pods", pod)
        path = f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}/status"
        stored = await api.ok("GET", path.removesuffix("/status"))
        await api.ok("PUT", path, {**stored, "status": status})

        assert (await api.call("GET", "/knpy/v1/targets", token="wrong"))[0] == 401
        groups = await api.ok("GET", "/knpy/v1/targets")
        address = api.server.url.removeprefix("http://")
        assert groups == discovery.targets([REVISION_POD], address)

        status_code, text = await api.call("GET", "/metrics")
        assert status_code == 200
        assert (
            "kube_deployment_spec_replicas" in text
            and 'apiserver_storage_objects{resource="pods"} 1.0' in text
        )
        assert "process_resident_memory_bytes" in text
        checked = await asyncio.to_thread(_promtool, "check", "metrics", stdin=text.encode())
        assert checked.returncode == 0 and not checked.stdout + checked.stderr, checked

        assert (await api.call("POST", "/metrics", {}))[0] == 405
        _, root = await api.call("GET", "/")
        assert {"/knpy/v1/targets", "/metrics"} <= set(root["paths"])
    finally:
        await stop_api(api)
