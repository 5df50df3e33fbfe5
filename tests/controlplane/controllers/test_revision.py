"""The Revision's Deployment (user container + queue-proxy), PodAutoscaler and status."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controlplane.controllers.deployment import make_deployment, observability_json
from controlplane.controllers.revision import make_pa, reachability, revision_status
from shared.kube.resources import DEPLOYMENTS, KSERVICES, PODAUTOSCALERS, PODS, REVISIONS, Obj

from .harness import NOW_TEXT, hello, running


def revision(**changes: Any) -> Obj:
    rev: Obj = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": "hello-00001",
            "namespace": "default",
            "uid": "rev-uid",
            "generation": 1,
            "labels": {
                "serving.knative.dev/configuration": "hello",
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/routingState": "active",
            },
            "annotations": {
                "autoscaling.knative.dev/min-scale": "1",
                "serving.knative.dev/routes": "hello",
                "note": "n",
            },
        },
        "spec": {
            "containers": [
                {
                    "name": "user-container",
                    "image": "example/hello",
                    "command": ["python", "app.py"],
                    "ports": [{"containerPort": 8081}],
                    "env": [{"name": "TARGET", "value": "x"}],
                    "readinessProbe": {"httpGet": {"path": "/ready"}, "periodSeconds": 2},
                }
            ],
            "containerConcurrency": 5,
            "timeoutSeconds": 120,
            "responseStartTimeoutSeconds": 30,
        },
    }
    for key, value in changes.items():
        rev["spec"][key] = value
    return rev


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deployment_carries_knatives_queue_proxy_contract() -> None:
    d = make_deployment(
        revision(), queue_image="knpy/qp", queue_env={"QUEUE_DRAIN_PERIOD_SECONDS": "2"}
    )
    assert d["metadata"]["name"] == "hello-00001-deployment"
    assert d["metadata"]["ownerReferences"][0]["uid"] == "rev-uid"
    labels = d["metadata"]["labels"]
    assert labels["serving.knative.dev/revision"] == "hello-00001"
    assert labels["serving.knative.dev/revisionUID"] == "rev-uid"
    assert labels["app"] == "hello-00001"
    assert "serving.knative.dev/routingState" not in labels
    assert d["metadata"]["annotations"] == {"note": "n"}  # no autoscaling or routing keys
    spec = d["spec"]
    assert spec["selector"] == {"matchLabels": {"serving.knative.dev/revisionUID": "rev-uid"}}
    assert spec["replicas"] == 1
    assert spec["progressDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert spec["template"]["metadata"]["annotations"] == {
        "note": "n",
        "kubectl.kubernetes.io/default-container": "user-container",
    }
    user, queue = pod["containers"]
    assert user["ports"] == [{"name": "user-port", "containerPort": 8081}]
    assert "readinessProbe" not in user
    assert user["lifecycle"] == {"preStop": {"httpGet": {"port": 8022, "path": "/wait-for-drain"}}}
    assert env_of(user) == {
        "TARGET": "x",
        "PORT": "8081",
        "K_REVISION": "hello-00001",
        "K_CONFIGURATION": "hello",
        "K_SERVICE": "hello",
    }
    assert queue["name"] == "queue-proxy"
    assert queue["image"] == "knpy/qp"
    assert queue["ports"] == [
        {"name": "http-autometric", "containerPort": 9090},
        {"name": "http-usermetric", "containerPort": 9091},
        {"name": "http-queueadm", "containerPort": 8022},
        {"name": "queue-port", "containerPort": 8012},
    ]
    assert queue["readinessProbe"] == {
        "periodSeconds": 2,
        "httpGet": {"port": 8012, "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]},
    }
    env = env_of(queue)
    assert json.loads(env.pop("SERVING_READINESS_PROBE")) == {
        "httpGet": {"path": "/ready", "host": "127.0.0.1", "port": 8081, "scheme": "HTTP"},
        "periodSeconds": 2,
        "timeoutSeconds": 1,
    }
    assert env == {
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "QUEUE_SERVING_PORT": "8012",
        "QUEUE_ADMIN_PORT": "8022",
        "QUEUE_METRICS_PORT": "9090",
        "USER_METRICS_PORT": "9091",
        "CONTAINER_CONCURRENCY": "5",
        "REVISION_TIMEOUT_SECONDS": "120",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "30",
        "REVISION_IDLE_TIMEOUT_SECONDS": "0",
        "SERVING_POD": {"fieldRef": {"fieldPath": "metadata.name"}},
        "SERVING_POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "USER_PORT": "8081",
        "SYSTEM_NAMESPACE": "knative-serving",
        "OBSERVABILITY_CONFIG": "{}",
        "QUEUE_DRAIN_PERIOD_SECONDS": "2",
    }


@pytest.mark.parametrize(
    ("annotations", "autoscaler", "want"),
    [
        pytest.param({}, {}, 1, id="knative-default"),
        pytest.param({}, {"initial-scale": "3"}, 3, id="config-autoscaler"),
        pytest.param({"autoscaling.knative.dev/initial-scale": "0"}, {}, 0, id="annotation"),
        pytest.param({}, {"initial-scale": "x"}, 1, id="bad-configmap-keeps-default"),
    ],
)
def test_initial_replicas(
    annotations: dict[str, str], autoscaler: dict[str, str], want: int
) -> None:
    rev = revision()
    rev["metadata"]["annotations"] = annotations
    d = make_deployment(rev, queue_image="q", autoscaler_data=autoscaler)
    assert d["spec"]["replicas"] == want


def test_h2c_uses_the_http2_queue_port_and_protocol() -> None:
    rev = revision()
    rev["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "name": "h2c"}]
    queue = make_deployment(rev, queue_image="q")["spec"]["template"]["spec"]["containers"][1]
    assert {"name": "queue-port", "containerPort": 8013} in queue["ports"]
    assert make_pa(rev, None)["spec"]["protocolType"] == "h2c"


def test_observability_config_from_the_configmap() -> None:
    data = {
        "logging.enable-request-log": "true",
        "logging.request-log-template": "{{.Request.Method}}",
        "tracing-protocol": "grpc",
        "tracing-endpoint": "otel:4317",
        "tracing-sampling-rate": "0.5",
    }
    assert json.loads(observability_json(data)) == {
        "enableRequestLog": True,
        "requestLogTemplate": "{{.Request.Method}}",
        "tracing": {"protocol": "grpc", "endpoint": "otel:4317", "samplingRate": 0.5},
    }


def test_pa_passes_knatives_annotations_through() -> None:
    pa = make_pa(revision(), None)
    assert pa["metadata"]["name"] == "hello-00001"
    assert pa["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "1", "note": "n"}
    assert pa["spec"] == {
        "containerConcurrency": 5,
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "hello-00001-deployment",
        },
        "protocolType": "http1",
        "reachability": "Reachable",
    }


def with_state(state: str | None, failed: bool = False) -> Obj:
    rev = revision()
    if state is None:
        del rev["metadata"]["labels"]["serving.knative.dev/routingState"]
    else:
        rev["metadata"]["labels"]["serving.knative.dev/routingState"] = state
    if failed:
        rev["status"] = {"conditions": [{"type": "ContainerHealthy", "status": "False"}]}
    return rev


@pytest.mark.parametrize(
    ("rev", "deployment", "want"),
    [
        pytest.param(with_state("pending"), None, "", id="new"),
        pytest.param(with_state(None), None, "", id="unlabelled"),
        pytest.param(with_state("active"), None, "Reachable", id="routed"),
        pytest.param(with_state("reserve"), None, "Unreachable", id="unrouted"),
        pytest.param(
            with_state("active", failed=True),
            {"spec": {"replicas": 1}, "status": {}},
            "Unreachable",
            id="failed-with-pods-wanted",
        ),
        pytest.param(
            with_state("active", failed=True),
            {"spec": {"replicas": 0}, "status": {}},
            "Reachable",
            id="failed-at-zero",
        ),
    ],
)
def test_reachability(rev: Obj, deployment: Obj | None, want: str) -> None:
    assert reachability(rev, deployment) == want


def pa(*, ready: str | None, initialized: str = "True", service: str = "hello-00001") -> Obj:
    conds = [{"type": "ScaleTargetInitialized", "status": initialized}]
    if ready is not None:
        conds.append(
            {"type": "Ready", "status": ready, "reason": "NoTraffic" if ready == "False" else ""}
        )
    return {
        "status": {"serviceName": service, "actualScale": 0, "desiredScale": 0, "conditions": conds}
    }


def deployment(
    replicas: int, available: int = 0, ready: int = 0, conds: list[Obj] | None = None
) -> Obj:
    return {
        "spec": {"replicas": replicas},
        "status": {
            "availableReplicas": available,
            "readyReplicas": ready,
            "conditions": conds if conds is not None else [],
        },
    }


def crashed(code: int, message: str) -> Obj:
    return {
        "metadata": {"name": "p1"},
        "status": {
            "containerStatuses": [
                {"name": "queue-proxy", "state": {"running": {}}},
                {
                    "name": "user-container",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": code, "message": message}},
                },
            ]
        },
    }


def conds(status: Obj) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c.get("reason", ""), c.get("message", ""))
        for c in status["conditions"]
    }


@pytest.mark.parametrize(
    ("dep", "autoscaler", "pods", "want"),
    [
        pytest.param(
            None,
            None,
            [],
            {
                "ResourcesAvailable": ("Unknown", "Deploying", ""),
                "ContainerHealthy": ("Unknown", "Deploying", ""),
                "Ready": ("Unknown", "Deploying", ""),
            },
            id="creating",
        ),
        pytest.param(
            deployment(1),
            None,
            [crashed(1, "boom")],
            {
                "ResourcesAvailable": ("Unknown", "Deploying", ""),
                "ContainerHealthy": ("False", "ExitCode1", "Container failed with: boom"),
                "Ready": ("False", "ExitCode1", "Container failed with: boom"),
            },
            id="crash-before-ready",
        ),
        pytest.param(
            deployment(1),
            None,
            [crashed(0, "")],
            {
                "ResourcesAvailable": ("Unknown", "Deploying", ""),
                "ContainerHealthy": (
                    "False",
                    "ExitCode0",
                    "Container failed with: container exited with no error",
                ),
                "Ready": (
                    "False",
                    "ExitCode0",
                    "Container failed with: container exited with no error",
                ),
            },
            id="clean-exit-is-a-failure-too",
        ),
        pytest.param(
            deployment(1, 1, 1, [{"type": "Available", "status": "True"}]),
            pa(ready="True"),
            [],
            {
                "ResourcesAvailable": ("True", "", ""),
                "ContainerHealthy": ("True", "", ""),
                "Active": ("True", "", ""),
                "Ready": ("True", "", ""),
            },
            id="serving",
        ),
        pytest.param(
            deployment(0, 0, 0, [{"type": "Available", "status": "True"}]),
            pa(ready="False"),
            [],
            {
                "ResourcesAvailable": ("True", "", ""),
                "ContainerHealthy": ("True", "", ""),
                "Active": ("False", "NoTraffic", ""),
                "Ready": ("True", "", ""),
            },
            id="scaled-to-zero-stays-ready",
        ),
        pytest.param(
            deployment(1),
            pa(ready="False", initialized="False"),
            [],
            {
                "ResourcesAvailable": (
                    "False",
                    "ProgressDeadlineExceeded",
                    "Initial scale was never achieved",
                ),
                "ContainerHealthy": ("Unknown", "", ""),
                "Active": ("False", "NoTraffic", ""),
                "Ready": ("False", "ProgressDeadlineExceeded", "Initial scale was never achieved"),
            },
            id="initial-scale-never-reached",
        ),
        pytest.param(
            deployment(
                1,
                conds=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "timed out",
                    }
                ],
            ),
            None,
            [],
            {
                "ResourcesAvailable": ("False", "ProgressDeadlineExceeded", "timed out"),
                "ContainerHealthy": ("Unknown", "", ""),
                "Ready": ("False", "ProgressDeadlineExceeded", "timed out"),
            },
            id="deployment-timed-out",
        ),
    ],
)
def test_revision_status(
    dep: Obj | None, autoscaler: Obj | None, pods: list[Obj], want: dict[str, tuple[str, str, str]]
) -> None:
    status = revision_status(revision(), dep, autoscaler, pods, NOW_TEXT)
    assert conds(status) == want
    assert status["observedGeneration"] == 1


def test_replicas_come_from_the_pa() -> None:
    autoscaler = pa(ready="True")
    autoscaler["status"].update(actualScale=3, desiredScale=4)
    status = revision_status(revision(), deployment(4), autoscaler, [], NOW_TEXT)
    assert (status["actualReplicas"], status["desiredReplicas"]) == (3, 4)


def test_transition_time_moves_only_on_change() -> None:
    rev = revision()
    rev["status"] = revision_status(rev, None, None, [], "2027-01-01T00:00:00Z")
    again = revision_status(rev, None, None, [], "2027-01-02T00:00:00Z")
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"2027-01-01T00:00:00Z"}
    rev["status"] = again
    later = revision_status(rev, deployment(1), None, [crashed(2, "x")], "2027-01-03T00:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times == {
        "ResourcesAvailable": "2027-01-01T00:00:00Z",
        "ContainerHealthy": "2027-01-03T00:00:00Z",
        "Ready": "2027-01-03T00:00:00Z",
    }


async def test_deployment_update_keeps_the_autoscalers_replicas() -> None:
    async with running() as env:
        await hello(env)
        d = env.get(DEPLOYMENTS, "hello-00001-deployment")
        scaled = copy.deepcopy(d)
        scaled["spec"]["replicas"] = 7
        await env.cluster.replace(DEPLOYMENTS, "default", d["metadata"]["name"], scaled)
        await env.cluster.settle()
        # A changed config-observability changes the queue-proxy's environment.
        await env.configmap("config-observability", {"logging.enable-request-log": "true"})
        d = env.get(DEPLOYMENTS, "hello-00001-deployment")
        assert d["spec"]["replicas"] == 7
        queue = d["spec"]["template"]["spec"]["containers"][1]
        assert env_of(queue)["OBSERVABILITY_CONFIG"] == '{"enableRequestLog":true}'


async def test_a_crash_looping_container_fails_the_revision_and_the_service() -> None:
    async with running() as env:
        await hello(env)
        pod = env.pod("hello-00001", "p1", ready=False, terminated={"exitCode": 3, "message": "no"})
        await env.put_pod(pod)
        rev = env.get(REVISIONS, "hello-00001")
        assert conds(rev["status"])["Ready"] == ("False", "ExitCode3", "Container failed with: no")
        svc = env.get(KSERVICES, "hello")
        ready = next(c for c in svc["status"]["conditions"] if c["type"] == "ConfigurationsReady")
        assert ready["status"] == "False"
        assert ready["message"] == (
            'Revision "hello-00001" failed with message: Container failed with: no.'
        )
        # Its PodAutoscaler is told: pods wanted, none ready, failed → Unreachable.
        assert env.get(PODAUTOSCALERS, "hello-00001")["spec"]["reachability"] == "Unreachable"


async def test_a_crash_beside_a_ready_pod_does_not_fail_the_revision() -> None:
    """No Deployment controller writes replica counts here: they are counted from the pods."""
    async with running() as env:
        await hello(env)
        await env.sks("hello-00001")
        await env.pa_ready("hello-00001")
        await env.put_pod(env.pod("hello-00001", "p1"))
        crashed_pod = env.pod(
            "hello-00001", "p2", ready=False, terminated={"exitCode": 1, "message": "oops"}
        )
        await env.put_pod(crashed_pod)
        rev = env.get(REVISIONS, "hello-00001")
        assert conds(rev["status"])["Ready"] == ("True", "", "")
        assert "status" not in env.get(DEPLOYMENTS, "hello-00001-deployment")
        # The only ready pod goes: now the crash is what the kubelet reports.
        await env.cluster.delete(PODS, "default", "p1")
        await env.cluster.settle()
        rev = env.get(REVISIONS, "hello-00001")
        assert conds(rev["status"])["ContainerHealthy"] == (
            "False",
            "ExitCode1",
            "Container failed with: oops",
        )
