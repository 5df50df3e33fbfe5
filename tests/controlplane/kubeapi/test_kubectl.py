"""The real ``kubectl`` against the server: apply, get (Knative's columns), watch, delete,
replace with a stale resourceVersion, no token, and kubectl apply's strategic merge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from tests.controlplane.kubeapi.conftest import Api, revision, start_api, stop_api

# One server for the module, so kubectl's discovery cache (keyed by host:port) is filled once;
# every test uses its own names. No skip without kubectl: scripts/setup.sh installs it, and a
# missing judge must fail the suite, not silence it.
pytestmark = [pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[3]
HELLO = ROOT / "examples" / "hello" / "service.yaml"


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.kubeconfig = kubeconfig
        self.cache = cache

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache}",
                *args]

    async def run(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), 20)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *args: str, stdin: bytes | None = None) -> str:
        rc, out, err = await self.run(*args, stdin=stdin)
        assert rc == 0, (args, out, err)
        return out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    a = await start_api(tmp_path_factory.mktemp("kubectl-state"))
    try:
        yield a
    finally:
        await stop_api(a)


@pytest.fixture(scope="module")
def kubectl(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(api.server.kubeconfig_path, tmp_path_factory.mktemp("kube-cache"))


def _table(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


async def test_apply_get_delete_a_knative_service(kubectl: Kubectl, api: Api) -> None:
    assert (await kubectl.ok("apply", "-f", str(HELLO))).strip() == (
        "service.serving.knative.dev/hello created")
    assert (await kubectl.ok("apply", "-f", str(HELLO))).strip() == (
        "service.serving.knative.dev/hello unchanged")
    stored = await api.ok("GET", "/apis/serving.knative.dev/v1/namespaces/default/services/hello")
    assert stored["spec"] == yaml.safe_load(HELLO.read_text())["spec"], "stored as applied"
    rows = _table(await kubectl.ok("get", "ksvc"))
    assert rows[0] == ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"]
    assert rows[1] == ["hello"]
    changed = HELLO.read_text().replace("containerConcurrency: 0", "containerConcurrency: 5")
    out = await kubectl.ok("apply", "-f", "-", stdin=changed.encode())
    assert out.strip() == "service.serving.knative.dev/hello configured"
    stored = await api.ok("GET", "/apis/serving.knative.dev/v1/namespaces/default/services/hello")
    assert stored["spec"]["template"]["spec"]["containerConcurrency"] == 5
    assert stored["metadata"]["generation"] == 2
    assert (await kubectl.ok("delete", "ksvc", "hello")).strip() == (
        'service.serving.knative.dev "hello" deleted')
    rc, _, err = await kubectl.run("get", "ksvc", "hello")
    assert rc == 1 and 'services.serving.knative.dev "hello" not found' in err


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded(api: Api) -> None:
    """A revision, its pod, Endpoints and PodAutoscaler, as the controllers would write them."""
    rev = revision("hello-00001", labels={
        "serving.knative.dev/configuration": "hello",
        "serving.knative.dev/configurationGeneration": "1"})
    created = await api.ok("POST", "/apis/serving.knative.dev/v1/namespaces/default/revisions",
                           rev)
    await api.ok(
        "PUT", "/apis/serving.knative.dev/v1/namespaces/default/revisions/hello-00001/status",
        {**created, "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "actualReplicas": 1, "desiredReplicas": 1}})
    pod = await api.ok("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "hello-00001-deployment-abc"},
        "spec": {"containers": [{"name": "user-container"}, {"name": "queue-proxy"}]}})
    await api.ok("PUT", "/api/v1/namespaces/default/pods/hello-00001-deployment-abc/status", {
        **pod, "status": {"phase": "Running", "podIP": "127.0.0.1", "containerStatuses": [
            {"name": "user-container", "ready": True, "restartCount": 0},
            {"name": "queue-proxy", "ready": True, "restartCount": 1}]}})
    await api.ok("POST", "/api/v1/namespaces/default/endpoints", {
        "metadata": {"name": "hello-00001"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 8012}]}]})
    await api.ok(
        "POST",
        "/apis/autoscaling.internal.knative.dev/v1alpha1/namespaces/default/podautoscalers",
        {"metadata": {"name": "hello-00001"}, "spec": {"protocolType": "http1"}})


@pytest.mark.parametrize(
    ("args", "want"),
    [
        pytest.param(["get", "revisions"],
                     [["NAME", "CONFIG", "NAME", "GENERATION", "READY", "REASON", "ACTUAL",
                       "REPLICAS", "DESIRED", "REPLICAS"],
                      ["hello-00001", "hello", "1", "True", "1", "1"]], id="revisions"),
        pytest.param(["get", "pods"],
                     [["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                      ["hello-00001-deployment-abc", "2/2", "Running", "1", "AGE"]], id="pods"),
        pytest.param(["get", "endpoints"],
                     [["NAME", "ENDPOINTS", "AGE"], ["hello-00001", "127.0.0.1:8012", "AGE"]],
                     id="endpoints"),
        pytest.param(["get", "podautoscalers"],
                     [["NAME", "DESIREDSCALE", "ACTUALSCALE", "READY", "REASON"],
                      ["hello-00001"]], id="podautoscalers"),
        pytest.param(["get", "kpa", "-o", "name"],
                     [["podautoscaler.autoscaling.internal.knative.dev/hello-00001"]],
                     id="short-name-o-name"),
        pytest.param(["get", "rev", "hello-00001", "-o", "jsonpath={.status.actualReplicas}"],
                     [["1"]], id="jsonpath"),
    ],
)
async def test_get(kubectl: Kubectl, seeded: None, args: list[str], want: list[list[str]]) -> None:
    rows = _table(await kubectl.ok(*args))
    ages = [r[-1] for r in rows[1:] if r[-1].endswith("s")]
    assert [[("AGE" if c in ages and i == len(r) - 1 and n else c) for i, c in enumerate(r)]
            for n, r in enumerate(rows)] == want


async def test_get_pods_watch(kubectl: Kubectl, api: Api) -> None:
    await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "watched"}})
    pods = "/api/v1/namespaces/watched/pods"
    await api.ok("POST", pods, {"metadata": {"name": "p1"}, "spec": {"containers": [{}]}})
    proc = await asyncio.create_subprocess_exec(
        *kubectl.argv("get", "pods", "-w", "-n", "watched"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        lines = [await asyncio.wait_for(proc.stdout.readline(), 10) for _ in range(2)]
        assert lines[0].split()[:4] == [b"NAME", b"READY", b"STATUS", b"RESTARTS"]
        assert lines[1].split()[:3] == [b"p1", b"0/1", b"Pending"]
        await api.ok("POST", pods, {"metadata": {"name": "p2"}, "spec": {"containers": [{}]}})
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line.split()[:3] == [b"p2", b"0/1", b"Pending"]
    finally:
        proc.kill()
        await proc.wait()


async def test_replace_with_a_stale_resource_version_conflicts(
    kubectl: Kubectl, api: Api
) -> None:
    text = HELLO.read_text().replace("name: hello", "name: stale")
    await kubectl.ok("apply", "-f", "-", stdin=text.encode())
    current: dict[str, Any] = yaml.safe_load(await kubectl.ok("get", "ksvc", "stale", "-o",
                                                              "yaml"))
    await api.ok("PATCH", "/apis/serving.knative.dev/v1/namespaces/default/services/stale",
                 {"metadata": {"labels": {"touched": "yes"}}},
                 content_type="application/merge-patch+json")
    rc, _, err = await kubectl.run("replace", "-f", "-",
                                   stdin=yaml.safe_dump(current).encode())
    assert rc == 1
    assert "the object has been modified; please apply your changes to the latest version" in err


async def test_a_wrong_token_is_401(kubectl: Kubectl, tmp_path: Path) -> None:
    """(With no credentials at all kubectl prompts for a username instead of asking.)"""
    cfg = yaml.safe_load(kubectl.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": "not-the-token"}
    bare = tmp_path / "no-token"
    bare.write_text(yaml.safe_dump(cfg))
    rc, _, err = await Kubectl(bare, kubectl.cache).run("get", "pods")
    assert rc == 1
    assert "You must be logged in to the server" in err


async def test_apply_a_configmap_twice_merges_strategically(kubectl: Kubectl, api: Api) -> None:
    first = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: '1'\n  b: '2'\n"
    assert (await kubectl.ok("apply", "-f", "-", stdin=first)).strip() == "configmap/cfg created"
    # Another writer adds a key kubectl never applied: a three-way merge keeps it.
    await api.ok("PATCH", "/api/v1/namespaces/default/configmaps/cfg", {"data": {"c": "3"}},
                 content_type="application/strategic-merge-patch+json")
    second = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: '9'\n"
    assert (await kubectl.ok("apply", "-f", "-", stdin=second)).strip() == (
        "configmap/cfg configured")
    got = await api.ok("GET", "/api/v1/namespaces/default/configmaps/cfg")
    assert got["data"] == {"a": "9", "c": "3"}, "b (applied before, now absent) is removed"


async def test_typed_create_commands(kubectl: Kubectl, api: Api) -> None:
    """kubectl 1.3x sends these as protobuf, kubectl 1.20 as JSON: both are stored alike."""
    assert (await kubectl.ok("create", "namespace", "typed")).strip() == "namespace/typed created"
    out = await kubectl.ok("create", "configmap", "c", "-n", "typed", "--from-literal=a=b")
    assert out.strip() == "configmap/c created"
    got = await api.ok("GET", "/api/v1/namespaces/typed/configmaps/c")
    assert got["data"] == {"a": "b"} and "generateName" not in got["metadata"]
