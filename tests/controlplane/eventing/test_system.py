"""The broker data plane as a system component: its Service (Public, for the ingress) and
Deployment in knative-eventing, created once serving is up, and not started early on a
restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.ingress import SYSTEM_HOSTS, RoutingTable
from controlplane.serve import rabbitmq_prefix
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


async def test_rabbitmq_data_plane_runs_only_with_a_url_and_keeps_it_off_the_command_line(
) -> None:
    cluster = FakeCluster()
    rabbit = SystemConfig("/py", "/state/kubeconfig", 1, broker_state_dir="/state/eventing",
                          rabbitmq_url_file="/state/rabbitmq-url",
                          rabbitmq_prefix="knpy.0123abcd.")
    await start_eventing(cluster, rabbit)
    deployments = {d["metadata"]["name"]: d for d in cluster.objects(DEPLOYMENTS,
                                                                     "knative-eventing")}
    assert sorted(deployments) == ["eventing-broker", "rabbitmq-broker"]
    (container,) = deployments["rabbitmq-broker"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/py", "-m", "eventing.broker", "--kubeconfig",
                                    "/state/kubeconfig", "--backend", "rabbitmq"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RABBITMQ_URL_FILE"] == "/state/rabbitmq-url"  # the URL itself is not there
    assert "RABBITMQ_URL" not in env
    assert env["BROKER_RABBITMQ_PREFIX"] == "knpy.0123abcd."
    services = {s["metadata"]["name"] for s in cluster.objects(SERVICES, "knative-eventing")}
    assert services == {"broker-ingress", "rabbitmq-broker-ingress"}
    await bootstrap(cluster, CFG)  # a restart: neither starts before serving is up
    assert not cluster.objects(DEPLOYMENTS, "knative-eventing")
    await start_eventing(cluster, CFG)  # without --rabbitmq this time: the default class only
    assert [d["metadata"]["name"] for d in cluster.objects(DEPLOYMENTS, "knative-eventing")] == [
        "eventing-broker"]
    host = "rabbitmq-broker-ingress.knative-eventing.localhost"
    assert SYSTEM_HOSTS[host][0].key == RevisionKey("knative-eventing", "rabbitmq-broker-ingress")


def test_rabbitmq_prefix_is_one_per_state_dir() -> None:
    a, b = rabbitmq_prefix(Path("/a/.knpy")), rabbitmq_prefix(Path("/b/.knpy"))
    assert a != b and a == rabbitmq_prefix(Path("/a/.knpy"))
    assert a.startswith("knpy.") and a.endswith(".") and len(a) == len("knpy.") + 8 + 1


def test_knpy_serve_refuses_a_rabbitmq_flag_that_is_not_an_amqp_url(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "serve", "--state-dir", str(tmp_path),
         "--rabbitmq", "http://127.0.0.1:5672/"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert "--rabbitmq must be an amqp:// or amqps:// URL" in proc.stderr
    assert not (tmp_path / "kube.sqlite3").exists()  # refused before anything started


def test_knpy_serve_takes_the_rabbitmq_url_from_its_environment_and_never_echoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KNPY_RABBITMQ_URL keeps the password out of ps; a bad one is named by its scheme only,
    and no child of knpy serve inherits the variable."""
    from controlplane.serve import LocalServe, ServeConfig

    monkeypatch.setenv("KNPY_RABBITMQ_URL", "http://user:s3cret@127.0.0.1:5672/")
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "serve", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert "--rabbitmq must be an amqp:// or amqps:// URL, got 'http'" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    assert not (tmp_path / "kube.sqlite3").exists()
    monkeypatch.setenv("KNPY_RABBITMQ_URL", "amqp://user:s3cret@127.0.0.1:5672/")
    serve = LocalServe(ServeConfig(state_dir=tmp_path, rabbitmq_url="amqp://x/"))
    assert "KNPY_RABBITMQ_URL" not in serve.base_env


def test_the_broker_metrics_port_is_a_declared_port_so_each_platform_gets_its_own() -> None:
    """BROKER_METRICS_PORT (9092, Knative's) is declared with the container's ports, so the
    local kubelet moves it, and the variable with it, to a free port: two platforms on one
    machine do not both bind 9092."""
    from controlplane.podspec import localize, ports_to_allocate
    from controlplane.system import eventing_objects

    (deployment,) = [obj for res, obj in eventing_objects(CFG) if res == DEPLOYMENTS]
    spec = deployment["spec"]["template"]["spec"]
    free, _pinned = ports_to_allocate(spec)
    assert 9092 in free
    (container,) = localize(spec, {port: 41000 + i for i, port in enumerate(free)})["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    moved = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["BROKER_METRICS_PORT"] == str(moved["http-metrics"]) != "9092"
