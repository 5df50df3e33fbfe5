"""ApiKubeClient against a real HTTP API server: paths, content types, Status errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from shared.kube.client import ApiError, Conflict, NotFound
from shared.kube.config import load_api_client
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.resources import CONFIGMAPS, DEPLOYMENTS, NAMESPACES, PODAUTOSCALERS, Obj
from tests.shared.kube.apiserver import FaultyApiServer

NS = "default"


def pa(name: str = "pa", **labels: str) -> Obj:
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"scaleTargetRef": {"name": name}},
    }


async def test_crud_round_trip(server: FaultyApiServer, api: ApiClient) -> None:
    kc = ApiKubeClient(api)
    created = await kc.create(PODAUTOSCALERS, NS, pa(app="x"))
    assert created["metadata"]["generation"] == 1
    assert await kc.get(PODAUTOSCALERS, NS, "pa") == created
    assert await kc.get(PODAUTOSCALERS, NS, "missing") is None
    await kc.create(PODAUTOSCALERS, NS, pa("other"))
    listed = await kc.list(PODAUTOSCALERS, NS, label_selector="app=x")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["pa"]
    assert listed["metadata"]["resourceVersion"] == "2"

    created["status"] = {"desiredScale": 3}
    st = await kc.replace_status(PODAUTOSCALERS, NS, "pa", created)
    assert st["status"] == {"desiredScale": 3}
    with pytest.raises(Conflict) as err:
        await kc.replace(PODAUTOSCALERS, NS, "pa", created)  # rv is stale now
    assert err.value.status == 409 and "modified" in err.value.message

    merged = await kc.patch(PODAUTOSCALERS, NS, "pa", {"metadata": {"labels": {"b": "c"}}})
    assert merged["metadata"]["labels"] == {"app": "x", "b": "c"}
    st2 = await kc.patch(
        PODAUTOSCALERS, NS, "pa", {"status": {"actualScale": 1}}, subresource="status"
    )
    assert st2["status"] == {"desiredScale": 3, "actualScale": 1}

    await kc.delete(PODAUTOSCALERS, NS, "pa")
    await kc.delete(PODAUTOSCALERS, NS, "pa")  # missing is not an error
    assert await kc.get(PODAUTOSCALERS, NS, "pa") is None


async def test_scale_patch_and_content_types(server: FaultyApiServer, api: ApiClient) -> None:
    kc = ApiKubeClient(api)
    server.cluster.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}},
        }
    )
    scale = await kc.patch(
        DEPLOYMENTS,
        NS,
        "d",
        [{"op": "replace", "path": "/spec/replicas", "value": 4}],
        "json",
        "scale",
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    await kc.patch(DEPLOYMENTS, NS, "d", {"spec": {"replicas": 2}}, "merge", "scale")
    await kc.patch(DEPLOYMENTS, NS, "d", {"metadata": {"labels": {"a": "b"}}}, "strategic")
    patches = [(p, ct) for m, p, ct in server.requests if m == "PATCH"]
    base = "/apis/apps/v1/namespaces/default/deployments/d"
    assert patches == [
        (f"{base}/scale", "application/json-patch+json"),
        (f"{base}/scale", "application/merge-patch+json"),
        (base, "application/strategic-merge-patch+json"),
    ]
    got = await kc.get(DEPLOYMENTS, NS, "d")
    assert got is not None and got["spec"]["replicas"] == 2


ERRORS = [
    pytest.param(
        lambda kc: kc.create(PODAUTOSCALERS, NS, pa("dup")),
        Conflict,
        409,
        "AlreadyExists",
        id="already-exists",
    ),
    pytest.param(
        lambda kc: kc.replace(PODAUTOSCALERS, NS, "missing", pa("missing")),
        NotFound,
        404,
        "NotFound",
        id="not-found",
    ),
    pytest.param(
        lambda kc: kc.patch(
            PODAUTOSCALERS, NS, "dup", [{"op": "test", "path": "/x", "value": 1}], "json"
        ),
        ApiError,
        422,
        "Invalid",
        id="invalid-json-patch",
    ),
    pytest.param(
        lambda kc: kc.patch(PODAUTOSCALERS, NS, "dup", {"a": 1}, "json"),
        ApiError,
        400,
        "BadRequest",
        id="dict-as-json-patch-refused-locally",
    ),
    pytest.param(
        lambda kc: kc.get(NAMESPACES, "", "x"),
        None,
        0,
        "",
        id="cluster-scoped-get-missing-is-none",
    ),
]


@pytest.mark.parametrize(("call", "cls", "code", "reason"), ERRORS)
async def test_errors(
    server: FaultyApiServer, api: ApiClient, call: Any, cls: Any, code: int, reason: str
) -> None:
    kc = ApiKubeClient(api)
    await kc.create(PODAUTOSCALERS, NS, pa("dup"))
    if cls is None:
        assert await call(kc) is None
        return
    with pytest.raises(cls) as err:
        await call(kc)
    assert (err.value.status, err.value.reason) == (code, reason)


async def test_unauthorized_and_unreachable(server: FaultyApiServer, api: ApiClient) -> None:
    kc = ApiKubeClient(api, timeout_s=2)
    server.token = "rotated"
    with pytest.raises(ApiError) as err:
        await kc.list(PODAUTOSCALERS)
    assert (err.value.status, err.value.reason) == (401, "Unauthorized")
    await server.down()
    with pytest.raises(ApiError) as err:
        await kc.list(PODAUTOSCALERS)
    assert err.value.status == 503 and err.value.reason == "ServiceUnavailable"


async def test_get_retried_once_on_a_dropped_connection(tmp_path: Path) -> None:
    """The first connection is closed without an answer (a keep-alive connection the server
    dropped): a GET is sent again on a fresh one; a POST, which may have been applied, is not."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections % 2 == 1:
            writer.close()  # no answer
            return
        body = json.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = await load_api_client({}, str(kubeconfig))
    try:
        kc = ApiKubeClient(api, timeout_s=5)
        got = await kc.get(CONFIGMAPS, NS, "x")
        assert got is not None and got["metadata"]["name"] == "x"
        assert connections == 2
        with pytest.raises(ApiError) as err:
            await kc.create(CONFIGMAPS, NS, {"metadata": {"name": "y"}})
        assert err.value.status == 503 and connections == 3
    finally:
        await api.close()
        srv.close()
        await srv.wait_closed()
