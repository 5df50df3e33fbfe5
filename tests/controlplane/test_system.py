"""The objects knpy serve puts in its API at start: ConfigMaps kept, system objects refreshed."""

from __future__ import annotations

from activator.config import ActivatorConfig
from controlplane.pods import STARTING_POLL_S
from controlplane.system import (
    ACTIVATOR,
    CONFIGMAP_DEFAULTS,
    INGRESS_SERVICE,
    SystemConfig,
    bootstrap,
    ingress_service,
    system_objects,
)
from shared.kube.fake import FakeCluster
from shared.kube.resources import CONFIGMAPS, DEPLOYMENTS, SERVICES

CFG = SystemConfig(python="/py", kubeconfig="/state/kubeconfig", autoscaler_stat_port=40123)


async def test_bootstrap_keeps_what_a_person_applied_and_refreshes_the_system() -> None:
    cluster = FakeCluster()
    cluster.put({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
                 "data": {"stable-window": "6s"}})  # fmt: skip
    await bootstrap(cluster, None)
    names = {c["metadata"]["name"] for c in cluster.objects(CONFIGMAPS, "knative-serving")}
    assert names == set(CONFIGMAP_DEFAULTS)
    kept = cluster.peek(CONFIGMAPS, "knative-serving", "config-autoscaler")
    assert kept is not None and kept["data"] == {"stable-window": "6s"}
    assert not cluster.objects(DEPLOYMENTS)  # -f is checked before anything runs

    await bootstrap(cluster, CFG)
    await bootstrap(cluster, SystemConfig("/py", "/state/kubeconfig", 40999))  # a restart
    deployments = {d["metadata"]["name"]: d for d in cluster.objects(DEPLOYMENTS)}
    assert set(deployments) == {"activator", "autoscaler"}
    (autoscaler,) = deployments["autoscaler"]["spec"]["template"]["spec"]["containers"]
    assert autoscaler["ports"][0]["hostPort"] == 40999  # this run's port
    (activator,) = deployments["activator"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in activator["env"]}
    assert env["ACTIVATOR_AUTOSCALER_URL"] == "ws://127.0.0.1:40999"
    assert activator["command"] == ["/py", "-m", "activator", "--kubeconfig", "/state/kubeconfig"]
    services = {s["metadata"]["name"]: s for s in cluster.objects(SERVICES, "knative-serving")}
    assert services["activator-service"]["spec"]["selector"] == {"app": "activator"}
    http = services["activator-service"]["spec"]["ports"][0]
    assert (http["name"], http["targetPort"]) == ("http", "http1")  # resolved per pod


def test_the_activator_probes_a_starting_pod_more_often_than_the_kubelet_polls_it() -> None:
    """Else a held request waits for the kubelet's readiness and the Endpoints chain rather
    than the activator's own probe of the pod (Knative's probe optimisation)."""
    (activator,) = [
        o for r, o in system_objects(CFG) if r == DEPLOYMENTS and o["metadata"]["name"] == ACTIVATOR
    ]
    (container,) = activator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = ActivatorConfig.from_env({**env, "POD_NAME": "a", "POD_IP": "127.0.0.1"})
    assert config.probe_frequency_s < STARTING_POLL_S


def test_system_pods_declare_the_ports_their_services_name() -> None:
    objects = system_objects(CFG)
    ports = {
        o["metadata"]["name"]: {
            p["name"] for c in o["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for r, o in objects
        if r == DEPLOYMENTS
    }
    for r, o in objects:
        if r == SERVICES:
            app = o["spec"]["selector"]["app"]
            assert {p["targetPort"] for p in o["spec"]["ports"]} <= ports[app], o


def test_the_ingress_port_is_published_as_a_load_balancer_service() -> None:
    svc = ingress_service(41234)
    assert svc["metadata"]["name"] == INGRESS_SERVICE == "knpy-ingress"
    assert svc["metadata"]["namespace"] == "knative-serving"
    assert svc["spec"]["type"] == "LoadBalancer" and "selector" not in svc["spec"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [41234]
