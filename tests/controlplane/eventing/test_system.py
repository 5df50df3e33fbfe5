"""The broker data plane as a system component: its Service (Public, for the ingress) and
Deployment in knative-eventing, created once serving is up, and not started early on a
restart."""

from __future__ import annotations

from controlplane.ingress import SYSTEM_HOSTS, RoutingTable
from controlplane.system import SystemConfig, bootstrap, start_eventing
from shared.kube.fake import FakeCluster
from shared.kube.resources import DEPLOYMENTS, SERVICES
from shared.seams import RevisionKey

CFG = SystemConfig(python="/py", kubeconfig="/state/kubeconfig", autoscaler_stat_port=40123,
                   broker_state_dir="/state/eventing")


async def test_the_broker_starts_after_serving_and_a_restart_does_not_start_it_early() -> None:
    cluster = FakeCluster()
    await bootstrap(cluster, CFG)
    assert not cluster.objects(DEPLOYMENTS, "knative-eventing")  # not before the activator
    await start_eventing(cluster, CFG)
    (broker,) = cluster.objects(DEPLOYMENTS, "knative-eventing")
    (container,) = broker["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/py", "-m", "eventing.broker", "--kubeconfig",
                                    "/state/kubeconfig", "--state-dir", "/state/eventing"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    (service,) = cluster.objects(SERVICES, "knative-eventing")
    assert service["metadata"]["name"] == "broker-ingress"
    assert service["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == (
        "Public")  # so the ingress follows its Endpoints
    assert service["spec"]["ports"][0]["name"] == "http"
    await bootstrap(cluster, CFG)  # a restart: the old Deployment waits for start_eventing
    assert not cluster.objects(DEPLOYMENTS, "knative-eventing")
    await start_eventing(cluster, SystemConfig("/py", "/k", 1))  # no state dir: no broker
    assert not cluster.objects(DEPLOYMENTS, "knative-eventing")


def test_the_ingress_routes_the_broker_host_to_the_broker_ingress_endpoints() -> None:
    table = RoutingTable()
    key = RevisionKey("knative-eventing", "broker-ingress")
    assert SYSTEM_HOSTS["broker-ingress.knative-eventing.localhost"][0].key == key
    assert b"broker-ingress.knative-eventing.localhost" in table.routes
    table.set_routes({})  # a Route change keeps the platform's hosts
    assert table.routes[b"broker-ingress.knative-eventing.localhost"].pick(0.5) == key
