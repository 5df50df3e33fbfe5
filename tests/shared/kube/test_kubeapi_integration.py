"""The client layer against knpy's own API server (controlplane/kubeapi), in this loop.

The client, an informer across an API restart (history is not persisted, so the resumed watch
is 410 Gone and the informer must relist and diff), and two electors on one Lease.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from controlplane.kubeapi.server import KubeApiServer
from shared.kube.client import Conflict
from shared.kube.config import load_api_client
from shared.kube.informer import EventType
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.kubeinformer import InformerOptions, KubeInformerFactory
from shared.kube.lease import LeaderElectionConfig, LeaderElector
from shared.kube.resources import CONFIGMAPS, DEPLOYMENTS, LEASES, Obj, key_of

NS = "default"
OPTS = InformerOptions(read_idle_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.5)


def cm(name: str, **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "t"}},
        "data": data,
    }


def http_kubeconfig(server: KubeApiServer, path: Path) -> Path:
    """What the brief asks to work: ``server: http://127.0.0.1:PORT`` and a bearer token."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "k", "cluster": {"server": server.url}}],
                "users": [{"name": "k", "user": {"token": server.token}}],
                "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}],
                "current-context": "k",
            }
        )
    )
    return path


@pytest.fixture
async def kubeapi(tmp_path: Path) -> AsyncIterator[KubeApiServer]:
    server = KubeApiServer(tmp_path / "state", bookmark_interval_s=0.5)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http_api(kubeapi: KubeApiServer, tmp_path: Path) -> AsyncIterator[ApiClient]:
    api = await load_api_client({}, str(http_kubeconfig(kubeapi, tmp_path / "kc")))
    try:
        yield api
    finally:
        await api.close()


async def test_client_against_kubeapi_over_tls_kubeconfig(kubeapi: KubeApiServer) -> None:
    """The kubeconfig knpy's server writes itself (HTTPS with its CA, when openssl exists)."""
    api = await load_api_client({"KUBECONFIG": str(kubeapi.kubeconfig_path)})
    try:
        kc = ApiKubeClient(api)
        created = await kc.create(CONFIGMAPS, NS, cm("a", k="v"))
        assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
        got = await kc.get(CONFIGMAPS, NS, "a")
        assert got is not None and got["data"] == {"k": "v"}
    finally:
        await api.close()


async def test_client_verbs(http_api: ApiClient) -> None:
    kc = ApiKubeClient(http_api)
    created = await kc.create(CONFIGMAPS, NS, cm("a", k="v"))
    await kc.create(CONFIGMAPS, NS, {**cm("b"), "metadata": {"name": "b", "namespace": NS}})
    listed = await kc.list(CONFIGMAPS, NS, label_selector="app=t")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]
    with pytest.raises(Conflict) as err:
        await kc.create(CONFIGMAPS, NS, cm("a"))
    assert err.value.reason == "AlreadyExists"
    await kc.patch(CONFIGMAPS, NS, "a", {"data": {"k": "w"}})
    with pytest.raises(Conflict):
        await kc.replace(CONFIGMAPS, NS, "a", created)  # stale resourceVersion
    patched = await kc.patch(
        CONFIGMAPS, NS, "a", [{"op": "add", "path": "/data/x", "value": "y"}], "json"
    )
    assert patched["data"] == {"k": "w", "x": "y"}

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    await kc.create(DEPLOYMENTS, NS, dep)
    scale = await kc.patch(
        DEPLOYMENTS,
        NS,
        "d",
        [{"op": "replace", "path": "/spec/replicas", "value": 3}],
        "json",
        "scale",
    )
    assert scale["spec"]["replicas"] == 3
    got = await kc.get(DEPLOYMENTS, NS, "d")
    assert got is not None and got["spec"]["replicas"] == 3
    await kc.delete(CONFIGMAPS, NS, "a")
    await kc.delete(CONFIGMAPS, NS, "a")
    assert await kc.get(CONFIGMAPS, NS, "a") is None


async def test_informer_across_a_restart(
    kubeapi: KubeApiServer, http_api: ApiClient, tmp_path: Path
) -> None:
    kc = ApiKubeClient(http_api)
    for n in ("a", "b", "c"):
        await kc.create(CONFIGMAPS, NS, cm(n))
    factory = KubeInformerFactory(http_api, OPTS)
    inf = factory.informer(CONFIGMAPS, namespace=NS, label_selector="app=t")
    view: dict[tuple[str, str], str] = {}

    def handler(event: EventType, obj: Obj) -> None:
        if event is EventType.DELETED:
            view.pop(key_of(obj), None)
        else:
            view[key_of(obj)] = obj["metadata"]["resourceVersion"]

    inf.add_handler(handler)
    await factory.start()
    second: KubeApiServer | None = None
    try:
        await asyncio.wait_for(inf.wait_synced(), 5)
        await kc.patch(CONFIGMAPS, NS, "a", {"data": {"n": "1"}})
        await until(lambda: view.get((NS, "a")) == rv_of(kubeapi, "a"))

        # Restart on the same port and token; change objects before the informer is back.
        # A write the informer does not watch (no label) moves the server past its rv, so the
        # resumed watch is older than the restarted server's history: 410 Gone.
        await kc.create(CONFIGMAPS, NS, {"metadata": {"name": "unwatched"}, "data": {}})
        port, token = kubeapi.url.rsplit(":", 1)[1], kubeapi.token
        await kubeapi.stop()
        second = KubeApiServer(kubeapi.state_dir, port=int(port), bookmark_interval_s=0.5)
        second.token = token
        await second.start()
        await kc.delete(CONFIGMAPS, NS, "b")
        await kc.patch(CONFIGMAPS, NS, "c", {"data": {"n": "2"}})
        await kc.create(CONFIGMAPS, NS, cm("d"))
        want = {(NS, n): rv_of(second, n) for n in ("a", "c", "d")}
        await until(lambda: view == want and {key_of(o) for o in inf.list()} == set(want))
        assert inf.lists >= 2  # the resumed watch was 410 Gone: relisted and diffed
    finally:
        await factory.stop()
        if second is not None:
            await second.stop()


async def test_two_electors_on_kubeapi(http_api: ApiClient) -> None:
    cfg = LeaderElectionConfig(lease_duration_s=2, renew_deadline_s=1.5, retry_period_s=0.2)
    kc = ApiKubeClient(http_api)
    electors = [
        LeaderElector(
            kc, "knative-serving", "autoscaler-bucket-00-of-01", f"as-{i}_10.0.0.{i}", cfg
        )
        for i in range(2)
    ]
    for e in electors:
        e.start()
    try:
        await until(lambda: sum(e.is_leader for e in electors) == 1)
        first = next(i for i, e in enumerate(electors) if e.is_leader)
        t0 = time.monotonic()
        await electors[first].stop()
        await until(lambda: electors[1 - first].is_leader)
        assert time.monotonic() - t0 < 1.8  # the next retry, not the 2 s lease
        lease = await kc.get(LEASES, "knative-serving", "autoscaler-bucket-00-of-01")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == f"as-{1 - first}_10.0.0.{1 - first}"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        for e in electors:
            await e.stop()


def rv_of(server: KubeApiServer, name: str) -> str | None:
    obj = server.reader.get(CONFIGMAPS, NS, name)
    return None if obj is None else str(obj["metadata"]["resourceVersion"])


async def until(cond: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
