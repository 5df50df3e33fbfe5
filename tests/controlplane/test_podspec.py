"""podspec: a pod template made runnable on 127.0.0.1, the rollout plan and the statuses."""

from __future__ import annotations

import json

import pytest

from controlplane.podspec import (
    ContainerView,
    PodSummary,
    PodView,
    RolloutPlan,
    container_argv,
    deployment_status,
    localize,
    plan_rollout,
    pod_name,
    pod_object,
    pod_status,
    ports_to_allocate,
    resolve_env,
    template_hash,
)
from shared.kube.resources import Obj

# A Knative revision pod template as the revision reconciler writes it (trimmed).
REVISION_SPEC: Obj = {
    "containers": [
        {
            "name": "user-container",
            "image": "knpy/sampleapp",
            "command": ["python", "app.py"],
            "ports": [{"name": "user-port", "containerPort": 8080}],
            "env": [{"name": "PORT", "value": "8080"}, {"name": "DB_PORT", "value": "5432"}],
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
                {"name": "QUEUE_SERVING_PORT", "value": "8012"},
                {"name": "USER_PORT", "value": "8080"},
                {"name": "SERVING_READINESS_PROBE", "value": '{"tcpSocket":{"port":8080}}'},
                {"name": "SERVING_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {
                    "name": "SERVING_POD_IP",
                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                },
            ],
            "readinessProbe": {
                "httpGet": {
                    "port": 8012,
                    "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
                }
            },
        },
    ]
}
MOVED = {8080: 41001, 8012: 41002, 8022: 41003, 9090: 41004, 9091: 41005}


def _env(container: Obj) -> dict[str, str]:
    return {v["name"]: v.get("value", "") for v in container["env"]}


def test_localize_moves_every_declared_port_and_what_names_it() -> None:
    user, queue = localize(REVISION_SPEC, MOVED)["containers"]
    assert [p["containerPort"] for p in user["ports"]] == [41001]
    assert [(p["name"], p["containerPort"]) for p in queue["ports"]] == [
        ("http1", 41002), ("http-queueadm", 41003), ("http-autometric", 41004),
        ("http-usermetric", 41005),
    ]  # fmt: skip
    assert _env(user) == {"PORT": "41001", "DB_PORT": "5432"}  # not a declared port: kept
    env = _env(queue)
    assert env["QUEUE_SERVING_PORT"] == "41002" and env["USER_PORT"] == "41001"
    assert env["QUEUE_ADMIN_PORT"] == "41003" and env["QUEUE_METRICS_PORT"] == "41004"
    assert env["USER_METRICS_PORT"] == "41005" and env["QUEUE_BIND_HOST"] == "127.0.0.1"
    assert json.loads(env["SERVING_READINESS_PROBE"]) == {
        "tcpSocket": {"port": 41001, "host": "127.0.0.1"}
    }
    assert queue["readinessProbe"]["httpGet"]["port"] == 41002
    assert REVISION_SPEC["containers"][0]["ports"][0]["containerPort"] == 8080  # a copy


@pytest.mark.parametrize(
    ("spec", "free", "pinned"),
    [
        pytest.param(REVISION_SPEC, [8080, 8012, 8022, 9090, 9091], {}, id="revision"),
        pytest.param(
            {"containers": [{"ports": [{"containerPort": 8012, "hostPort": 40000},
                                       {"containerPort": 9090}]}]},
            [9090], {8012: 40000}, id="hostPort-pins",
        ),
        pytest.param({"containers": [{"name": "x"}]}, [], {}, id="no-ports"),
    ],
)  # fmt: skip
def test_ports_to_allocate(spec: Obj, free: list[int], pinned: dict[int, int]) -> None:
    assert ports_to_allocate(spec) == (free, pinned)


def test_bare_container_gets_PORT_of_its_first_port() -> None:
    spec = {"containers": [{"name": "app", "command": ["x"], "ports": [{"containerPort": 80}]}]}
    assert _env(localize(spec, {80: 40123})["containers"][0]) == {"PORT": "40123"}


def test_resolve_env_reads_the_downward_api() -> None:
    pod = pod_object(
        {"metadata": {"name": "d", "namespace": "ns", "uid": "u1"},
         "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": REVISION_SPEC}}},
        "d-h-x", "h", MOVED, 1767225600.25,
    )  # fmt: skip
    env = resolve_env(pod["spec"]["containers"][1], pod)
    assert env["SERVING_POD"] == "d-h-x" and env["SERVING_POD_IP"] == "127.0.0.1"
    assert pod["metadata"]["labels"] == {"app": "a", "pod-template-hash": "h"}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert pod["metadata"]["annotations"] == {"knpy.dev/created-at": "1767225600.250000"}


@pytest.mark.parametrize(
    ("container", "argv"),
    [
        pytest.param({"command": ["python", "a.py"], "args": ["-v"]}, ["/py", "a.py", "-v"],
                     id="python-is-knpy's"),
        pytest.param({"name": "queue-proxy"}, ["/py", "-m", "queueproxy"], id="queue-proxy"),
        pytest.param({"command": ["/bin/app"]}, ["/bin/app"], id="as-written"),
    ],
)  # fmt: skip
def test_container_argv(container: Obj, argv: list[str]) -> None:
    assert container_argv(container, "/py") == argv


def test_container_without_command_is_refused_with_why() -> None:
    with pytest.raises(ValueError, match="knpy runs no images"):
        container_argv({"name": "app", "image": "nginx"}, "/py")


def _pods(*specs: tuple[str, str, bool, float]) -> list[PodSummary]:
    return [PodSummary(n, h, r, t) for n, h, r, t in specs]


@pytest.mark.parametrize(
    ("pods", "replicas", "plan"),
    [
        pytest.param([], 2, RolloutPlan(start=2), id="from-zero"),
        pytest.param(_pods(("a", "h", True, 1), ("b", "h", True, 3), ("c", "h", False, 4)), 1,
                     RolloutPlan(stop=("c", "b")), id="down-not-ready-then-newest"),
        pytest.param(_pods(("a", "h", True, 1)), 0, RolloutPlan(stop=("a",)), id="to-zero"),
        pytest.param(_pods(("a", "old", True, 1)), 1, RolloutPlan(start=1), id="roll-starts-new"),
        pytest.param(_pods(("a", "old", True, 1), ("b", "h", False, 2)), 1, RolloutPlan(),
                     id="roll-keeps-old-until-new-ready"),
        pytest.param(_pods(("a", "old", True, 1), ("b", "h", True, 2)), 1,
                     RolloutPlan(stop=("a",)), id="roll-stops-old-once-new-ready"),
        pytest.param(_pods(("a", "old", True, 1)), 0, RolloutPlan(stop=("a",)),
                     id="roll-to-zero"),
        pytest.param(_pods(("a", "h", True, 1)), -1, RolloutPlan(stop=("a",)),
                     id="negative-is-zero"),
    ],
)  # fmt: skip
def test_plan_rollout(pods: list[PodSummary], replicas: int, plan: RolloutPlan) -> None:
    assert plan_rollout(pods, replicas, "h") == plan


def test_deployment_status_keeps_transition_times_while_status_holds() -> None:
    dep = {"metadata": {"generation": 3}, "spec": {"replicas": 2}}
    first = deployment_status(dep, _pods(("a", "h", True, 1)), "h", None, "T1")
    assert first["replicas"] == 1 and first["readyReplicas"] == 1
    assert first["observedGeneration"] == 3 and first["unavailableReplicas"] == 1
    conds = {c["type"]: c for c in first["conditions"]}
    assert conds["Available"]["status"] == "False"
    assert conds["Progressing"]["reason"] == "ReplicaSetUpdated"
    pods = _pods(("a", "h", True, 1), ("b", "h", True, 2))
    second = deployment_status(dep, pods, "h", first, "T2")
    conds2 = {c["type"]: c for c in second["conditions"]}
    assert conds2["Available"] == {**conds2["Available"], "status": "True",
                                   "lastTransitionTime": "T2"}  # fmt: skip
    assert conds2["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert conds2["Progressing"]["lastTransitionTime"] == "T1"  # still True
    late = deployment_status(dep, _pods(("a", "h", False, 1)), "h", second, "T3",
                             progress_deadline_exceeded=True)  # fmt: skip
    conds3 = {c["type"]: c for c in late["conditions"]}
    assert conds3["Progressing"]["status"] == "False"
    assert conds3["Progressing"]["reason"] == "ProgressDeadlineExceeded"


def test_pod_status_crash_loop_shape() -> None:
    crashed = {"exitCode": 1, "reason": "Error", "message": "config missing"}
    view = PodView(
        start_time="T0",
        containers=(
            ContainerView("user-container", "img", False, 2, waiting_reason="CrashLoopBackOff",
                          waiting_message="back-off", last_terminated=crashed),
            ContainerView("queue-proxy", "qp", False, 0, started_at="T0"),
        ),
    )  # fmt: skip
    status = pod_status(view)
    assert status["phase"] == "Running" and status["podIP"] == "127.0.0.1"
    user, queue = status["containerStatuses"]
    assert user["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
    assert user["lastState"] == {"terminated": crashed} and user["restartCount"] == 2
    assert queue["state"] == {"running": {"startedAt": "T0"}}
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == ready["ContainersReady"] == "False"


def test_names() -> None:
    h = template_hash({"spec": {"containers": [{"name": "a"}]}})
    assert h == template_hash({"spec": {"containers": [{"name": "a"}]}}) and len(h) == 10
    assert h != template_hash({"spec": {"containers": [{"name": "b"}]}})
    name = pod_name("hello-00001-deployment", h, 12345)
    assert name.startswith(f"hello-00001-deployment-{h}-") and len(name.rsplit("-", 1)[1]) == 5
