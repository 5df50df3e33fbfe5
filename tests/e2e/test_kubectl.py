"""``kubectl`` as the outside judge of ``knpy serve``'s Kubernetes API, and Knative's objects as
Knative writes them while a revision scales from zero through the activator.

kubectl is Debian's (kubernetes-client; scripts/setup.sh installs it when absent) and talks to
the server only through the kubeconfig ``knpy serve`` wrote, with its bearer token over TLS.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable

import aiohttp
import pytest

from .harness import EXAMPLES, FAST_AUTOSCALER, STEP_S, WAIT_S, Json, Serve, hello_yaml

pytestmark = pytest.mark.timeout(120)

HELLO = "hello.default.localhost"


async def _get_json(s: Serve, *args: str) -> Json:
    _, out, _ = await s.kubectl("get", *args, "-o", "json")
    doc: Json = json.loads(out)
    return doc


async def test_kubectl_apply_get_watch_conflict_delete(serve: Callable[..., Serve]) -> None:
    s = serve()
    _, out, _ = await s.kubectl("apply", "-f", str(EXAMPLES / "hello" / "service.yaml"))
    assert out.strip() == "service.serving.knative.dev/hello created"
    await s.answers(HELLO, "hello-00001")

    _, ksvc, _ = await s.kubectl("get", "ksvc")
    assert "http://hello.default.localhost" in ksvc and "True" in ksvc, ksvc
    _, revisions, _ = await s.kubectl("get", "revisions")
    assert "hello-00001" in revisions, revisions
    pods = await _get_json(s, "pods", "-l", "serving.knative.dev/revision=hello-00001")
    (pod,) = pods["items"]
    assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"] == "127.0.0.1"
    assert {c["name"] for c in pod["status"]["containerStatuses"]} == {
        "user-container",
        "queue-proxy",
    }
    assert pod["metadata"]["ownerReferences"][0]["name"] == "hello-00001-deployment"
    _, endpoints, _ = await s.kubectl("get", "endpoints", "-A")
    for name in ("hello-00001", "hello-00001-private", "activator-service", "autoscaler"):
        assert name in endpoints, endpoints
    _, pas, _ = await s.kubectl("get", "podautoscalers")
    assert "hello-00001" in pas, pas

    # A watch sees a new pod appear (a second service), as kubectl get pods -w shows it.
    watch = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(s.kubeconfig), "get", "pods", "-w", "-o", "name",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await s.apply(hello_yaml("second"))
        seen: list[str] = []
        deadline = time.monotonic() + WAIT_S
        assert watch.stdout is not None
        while not any(line.startswith("pod/second-00001-deployment-") for line in seen):
            assert time.monotonic() < deadline, f"the watch showed only {seen}"
            line = await asyncio.wait_for(watch.stdout.readline(), WAIT_S)
            assert line, "the watch ended"
            seen.append(line.decode().strip())
    finally:
        watch.kill()
        await watch.wait()

    # A replace with a stale resourceVersion is a 409, as on any API server.
    old = await _get_json(s, "ksvc", "hello")
    await s.kubectl("annotate", "ksvc", "hello", "knpy.dev/touched=yes")
    stale = s.state.parent / "stale.json"
    stale.write_text(json.dumps(old))
    code, _, err = await s.kubectl("replace", "-f", str(stale), check=False)
    assert code != 0 and ("modified" in err or "Conflict" in err), err

    # Without the token: 401.
    async with (
        aiohttp.ClientSession() as plain,
        plain.get(f"{s.api}/api/v1/namespaces/default/pods") as resp,
    ):
        assert resp.status == 401

    # Deleting the Service deletes what it owns, down to the pods.
    await s.kubectl("delete", "ksvc", "hello")

    async def gone() -> bool:
        left = []
        for kind in ("revisions", "deployments", "podautoscalers", "pods"):
            doc = await _get_json(s, kind, "-l", "serving.knative.dev/service=hello")
            left += [f"{kind}/{i['metadata']['name']}" for i in doc["items"]]
        return not left

    await s.until(gone, "hello's revisions, deployments, autoscalers and pods to go")
    await s.until(lambda: _status_is(s, HELLO, 404), "the route to go")
    assert await s.stop() == 0


async def _status_is(s: Serve, host: str, status: int) -> bool:
    return (await s.request(host))[0] == status


@pytest.mark.timeout(120)
async def test_scale_from_zero_through_the_activator_as_knative_writes_it(
    serve: Callable[..., Serve],
) -> None:
    """Target burst capacity 0: the SKS is Proxy (public Endpoints = the activator) at zero
    and Serve (public Endpoints = the pod) once a pod is ready; the autoscaler writes the
    Deployment's replicas through /scale and the PodAutoscaler's status."""
    s = serve()
    tbc0 = "autoscaling.knative.dev/target-burst-capacity: '0'"
    await s.apply(FAST_AUTOSCALER + "---" + hello_yaml(annotations=tbc0))
    await s.answers(HELLO, "hello-00001")
    activator = await _get_json(s, "endpoints", "-n", "knative-serving", "activator-service")
    activator_addrs = _addresses(activator)
    assert activator_addrs, activator

    async def state() -> tuple[int, str, set[str]]:
        dep = await _get_json(s, "deployment", "hello-00001-deployment")
        sks = await _get_json(s, "serverlessservices", "hello-00001")
        public = await _get_json(s, "endpoints", "hello-00001")
        return int(dep["spec"].get("replicas", 1)), sks["spec"]["mode"], _addresses(public)

    async def at_zero() -> bool:
        replicas, mode, public = await state()
        return replicas == 0 and mode == "Proxy" and public == activator_addrs

    await s.until(at_zero, "zero replicas, the SKS in Proxy and the activator in the public")
    assert await s.pods("hello-00001") == []

    # A request at zero goes through the activator, which wakes the autoscaler.
    status, body = await asyncio.wait_for(s.request(HELLO), STEP_S)
    assert status == 200 and "hello-00001" in body

    async def serving() -> bool:
        replicas, mode, public = await state()
        return replicas >= 1 and mode == "Serve" and bool(public) and public != activator_addrs

    await s.until(serving, "a replica, the SKS in Serve and the pod in the public Endpoints")
    last: list[Json] = [{}]

    async def pa_active() -> bool:
        status = (await _get_json(s, "podautoscalers", "hello-00001")).get("status") or {}
        last[0] = status
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return (
            status.get("desiredScale", 0) >= 1
            and status.get("actualScale", 0) >= 1
            and conditions.get("Ready") == conditions.get("Active") == "True"
        )

    try:
        await s.until(pa_active, "the PodAutoscaler Active and Ready with a replica")
    except AssertionError as err:
        raise AssertionError(f"{err}: {last[0]}") from None
    dep = await _get_json(s, "deployment", "hello-00001-deployment")
    assert dep["status"]["readyReplicas"] >= 1 and dep["status"]["observedGeneration"] >= 1
    assert await s.stop() == 0


def _addresses(endpoints: Json) -> set[str]:
    """``ip:port`` of every ready address under the port named http."""
    out = set()
    for subset in endpoints.get("subsets") or []:
        ports = [p["port"] for p in subset.get("ports") or [] if p.get("name") == "http"]
        for a in subset.get("addresses") or []:
            out |= {f"{a['ip']}:{p}" for p in ports}
    return out
