"""FakeCluster agrees with knpy's API server (controlplane/kubeapi) on what reconcilers see.

Each scenario runs the same calls on both through the ``KubeClient`` interface and compares the
answers with the server-made values (uid, timestamps, resourceVersion numbers) masked, and
errors by class, status and reason.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.kubeapi.server import KubeApiServer
from shared.kube.client import ApiError, KubeClient
from shared.kube.config import load_api_client
from shared.kube.fake import FakeCluster
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.resources import CONFIGMAPS, DEPLOYMENTS, Obj

NS = "default"
Step = Callable[[KubeClient], Awaitable[Any]]


def cm(name: str, **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "data": data,
    }


def dep(name: str, replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
        "status": {"replicas": 7},
    }


MASKED = ("uid", "creationTimestamp", "resourceVersion", "managedFields")


def normalize(value: Any) -> Any:
    """Mask server-made values; keep the shape."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in MASKED:
                out[k] = "<set>" if v else v
            else:
                out[k] = normalize(v)
        return out
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


async def outcome(step: Step, kc: KubeClient) -> Any:
    try:
        return ("ok", normalize(await step(kc)))
    except ApiError as e:
        return ("error", type(e).__name__, e.status, e.reason)


async def stale_replace(kc: KubeClient) -> Obj:
    old = await kc.get(CONFIGMAPS, NS, "a")
    assert old is not None
    await kc.patch(CONFIGMAPS, NS, "a", {"data": {"k": "2"}})
    return await kc.replace(CONFIGMAPS, NS, "a", old)


async def noop_replace_keeps_rv(kc: KubeClient) -> bool:
    old = await kc.get(CONFIGMAPS, NS, "a")
    assert old is not None
    new = await kc.replace(CONFIGMAPS, NS, "a", copy.deepcopy(old))
    return bool(new["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"])


async def generation_after(kc: KubeClient, patch: Obj) -> int:
    await kc.patch(DEPLOYMENTS, NS, "d", patch)
    got = await kc.get(DEPLOYMENTS, NS, "d")
    assert got is not None
    return int(got["metadata"]["generation"])


async def status_put_changes_only_status(kc: KubeClient) -> Obj:
    old = await kc.get(DEPLOYMENTS, NS, "d")
    assert old is not None
    body = copy.deepcopy(old)
    body["spec"]["replicas"] = 9
    body["metadata"]["labels"] = {"ignored": "yes"}
    body["status"] = {"replicas": 1, "readyReplicas": 1}
    return await kc.replace_status(DEPLOYMENTS, NS, "d", body)


async def spec_put_keeps_status(kc: KubeClient) -> Obj:
    await kc.patch(DEPLOYMENTS, NS, "d", {"status": {"replicas": 3}}, subresource="status")
    old = await kc.get(DEPLOYMENTS, NS, "d")
    assert old is not None
    body = copy.deepcopy(old)
    body["spec"]["replicas"] = 2
    body["status"] = {"replicas": 100}
    return await kc.replace(DEPLOYMENTS, NS, "d", body)


async def cascade(kc: KubeClient) -> list[str]:
    owner = await kc.get(DEPLOYMENTS, NS, "d")
    assert owner is not None
    ref = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "d",
        "uid": owner["metadata"]["uid"],
    }
    child = cm("child")
    child["metadata"]["ownerReferences"] = [ref]
    await kc.create(CONFIGMAPS, NS, child)
    await kc.delete(DEPLOYMENTS, NS, "d")
    for _ in range(100):  # the API server's collector may run after the delete returns
        names = [o["metadata"]["name"] for o in (await kc.list(CONFIGMAPS, NS))["items"]]
        if "child" not in names:
            break
        await asyncio.sleep(0.02)
    return names


SCENARIOS: list[Any] = [
    pytest.param(status_put_changes_only_status, id="status-put-only-status"),
    pytest.param(spec_put_keeps_status, id="spec-put-keeps-status"),
    pytest.param(cascade, id="cascading-delete"),
    pytest.param(lambda kc: kc.create(CONFIGMAPS, NS, cm("new", k="v")), id="create"),
    pytest.param(lambda kc: kc.create(CONFIGMAPS, NS, cm("a")), id="create-existing"),
    pytest.param(lambda kc: kc.create(DEPLOYMENTS, NS, dep("n")), id="create-drops-status"),
    pytest.param(lambda kc: kc.get(CONFIGMAPS, NS, "missing"), id="get-missing"),
    pytest.param(lambda kc: kc.list(CONFIGMAPS, NS, "app in (a,b)"), id="list-selector"),
    pytest.param(stale_replace, id="replace-stale"),
    pytest.param(noop_replace_keeps_rv, id="noop-replace-keeps-rv"),
    pytest.param(lambda kc: kc.replace(CONFIGMAPS, NS, "zz", cm("zz")), id="replace-missing"),
    pytest.param(lambda kc: kc.patch(CONFIGMAPS, NS, "a", {"data": {"k": None}}), id="merge-null"),
    pytest.param(
        lambda kc: kc.patch(CONFIGMAPS, NS, "a", [{"op": "remove", "path": "/data/k"}], "json"),
        id="json-remove",
    ),
    pytest.param(
        lambda kc: kc.patch(
            CONFIGMAPS, NS, "a", [{"op": "test", "path": "/data/k", "value": "x"}], "json"
        ),
        id="json-test-fails",
    ),
    pytest.param(
        lambda kc: kc.patch(CONFIGMAPS, NS, "a", {"metadata": {"resourceVersion": "999"}}),
        id="merge-stale-rv-precondition",
    ),
    pytest.param(lambda kc: kc.patch(CONFIGMAPS, NS, "zz", {"data": {}}), id="patch-missing"),
    pytest.param(
        lambda kc: generation_after(kc, {"metadata": {"labels": {"x": "y"}}}),
        id="generation-metadata-only",
    ),
    pytest.param(
        lambda kc: generation_after(kc, {"spec": {"minReadySeconds": 3}}),
        id="generation-spec-change",
    ),
    pytest.param(
        lambda kc: kc.patch(
            DEPLOYMENTS, NS, "d", [{"op": "replace", "path": "/spec/replicas", "value": 5}],
            "json", "scale",
        ),
        id="scale-json-patch",
    ),
    pytest.param(
        lambda kc: kc.patch(DEPLOYMENTS, NS, "d", {"status": {"replicas": 2}}, "merge", "status"),
        id="status-merge-patch",
    ),
    pytest.param(lambda kc: kc.delete(CONFIGMAPS, NS, "zz"), id="delete-missing"),
    pytest.param(lambda kc: kc.list(CONFIGMAPS, NS, "a in (b"), id="list-bad-selector"),
    pytest.param(
        lambda kc: kc.patch(CONFIGMAPS, NS, "a", {"status": {}}, subresource="status"),
        id="no-status-subresource",
    ),
    pytest.param(
        lambda kc: kc.patch(CONFIGMAPS, NS, "a", {"spec": {"replicas": 1}}, subresource="scale"),
        id="no-scale-subresource",
    ),
]  # fmt: skip


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[ApiKubeClient]:
    server = KubeApiServer(tmp_path / "state")
    await server.start()
    api = await load_api_client({}, str(server.kubeconfig_path))
    try:
        yield ApiKubeClient(api)
    finally:
        await api.close()
        await server.stop()


async def seed(kc: KubeClient) -> None:
    await kc.create(CONFIGMAPS, NS, cm("a", k="1"))
    await kc.create(CONFIGMAPS, NS, cm("b", k="1"))
    await kc.create(DEPLOYMENTS, NS, dep("d"))


@pytest.mark.parametrize("step", SCENARIOS)
async def test_fake_matches_kubeapi(real: ApiKubeClient, step: Step) -> None:
    fake = FakeCluster()
    await seed(fake)
    await seed(real)
    assert await outcome(step, fake) == await outcome(step, real)
