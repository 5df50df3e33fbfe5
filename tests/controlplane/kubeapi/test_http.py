"""Access control, discovery, tables, namespaces, cascading delete and restart, over HTTP."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.kubeapi.discovery import GIT_VERSION
from tests.controlplane.kubeapi.conftest import (
    CMS,
    DEPLOYS,
    PODS,
    REVS,
    Api,
    cm,
    revision,
    start_api,
    stop_api,
)


@pytest.mark.parametrize(
    ("method", "path", "kw", "code", "reason"),
    [
        pytest.param("GET", CMS, {"token": ""}, 401, "Unauthorized", id="no-token"),
        pytest.param("GET", CMS, {"token": "wrong"}, 401, "Unauthorized", id="wrong-token"),
        pytest.param("GET", "/version", {"token": ""}, 401, "Unauthorized",
                     id="discovery-needs-token"),
        pytest.param("GET", CMS, {"headers": {"Host": "evil.example:8080"}}, 403, "Forbidden",
                     id="dns-rebinding-host"),
        pytest.param("POST", CMS, {"data": b'{"metadata":{"name":"a"}}',
                                   "content_type": "text/plain"}, 415,
                     "UnsupportedMediaType", id="text-plain-post"),
        pytest.param("PATCH", f"{CMS}/a", {"data": b"{}", "content_type": "application/json"},
                     415, "UnsupportedMediaType", id="patch-as-plain-json"),
        pytest.param("POST", CMS, {"data": b"{" + b" " * (3 * 1024 * 1024) + b"}"}, 413,
                     "RequestEntityTooLarge", id="body-over-3MiB"),
        pytest.param("POST", CMS, {"data": b'{"metadata": '}, 400, "BadRequest",
                     id="malformed-json"),
        pytest.param("POST", CMS, {"data": b"a: [1", "content_type": "application/yaml"}, 400,
                     "BadRequest", id="malformed-yaml"),
        pytest.param("PATCH", f"{CMS}/a", {"data": b"{}",
                                           "content_type": "application/apply-patch+yaml"},
                     415, "UnsupportedMediaType", id="server-side-apply"),
    ],
)
async def test_access_and_bodies(
    api: Api, method: str, path: str, kw: dict[str, Any], code: int, reason: str
) -> None:
    status, out = await api.call(method, path, **kw)
    assert (status, out["kind"], out["reason"], out["code"]) == (code, "Status", reason, code)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:6443", "localhost", "[::1]:80", "127.1.2.3", "foo.localhost:1"]
)
async def test_loopback_hosts_are_allowed(api: Api, host: str) -> None:
    status, _ = await api.call("GET", "/version", headers={"Host": host})
    assert status == 200


async def test_health_is_open_and_yaml_bodies_work(api: Api) -> None:
    status, text = await api.call("GET", "/healthz", token="")
    assert (status, text) == (200, "ok")
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  when: 2024-01-01\n"
    out = await api.ok("POST", CMS, data=body, content_type="application/yaml")
    assert out["data"] == {"when": "2024-01-01"}, "YAML dates stay strings"


async def test_a_body_without_content_type_is_json(api: Api) -> None:
    """kubectl 1.20's typed creates send none; kube-apiserver reads them as JSON."""
    out = await api.ok("POST", CMS, cm("bare", {"k": "v"}), content_type="")
    assert out["data"] == {"k": "v"}


async def test_big_bodies_are_parsed(api: Api) -> None:
    data = {f"k{i}": "x" * 1000 for i in range(400)}  # ~400 KiB: parsed in a thread
    out = await api.ok("POST", CMS, cm("big", data))
    assert len(out["data"]) == 400


async def test_kubeconfig(api: Api) -> None:
    path = api.server.kubeconfig_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cfg = yaml.safe_load(path.read_text())
    assert cfg["current-context"] == "knpy"
    assert cfg["contexts"][0]["context"] == {"cluster": "knpy", "user": "knpy",
                                             "namespace": "default"}
    assert cfg["users"][0] == {"name": "knpy", "user": {"token": api.server.token}}
    cluster = cfg["clusters"][0]["cluster"]
    assert cluster["server"] == api.server.tls_url and cluster["server"].startswith("https://")
    assert cluster["certificate-authority-data"]
    assert api.server.url.startswith("http://127.0.0.1:")


async def test_discovery(api: Api) -> None:
    version = await api.ok("GET", "/version")
    assert version["gitVersion"] == GIT_VERSION and version["minor"] == "34"
    assert (await api.ok("GET", "/api"))["versions"] == ["v1"]
    groups = {g["name"]: g for g in (await api.ok("GET", "/apis"))["groups"]}
    assert set(groups) >= {"serving.knative.dev", "autoscaling.internal.knative.dev",
                           "networking.internal.knative.dev", "apps", "coordination.k8s.io",
                           "discovery.k8s.io"}
    assert groups["serving.knative.dev"]["preferredVersion"]["version"] == "v1"
    serving = await api.ok("GET", "/apis/serving.knative.dev/v1")
    res = {r["name"]: r for r in serving["resources"]}
    assert res["services"]["shortNames"] == ["kservice", "ksvc"]
    assert res["services"]["categories"] == ["all", "knative", "serving"]
    assert res["revisions"]["kind"] == "Revision" and res["revisions"]["namespaced"]
    assert "watch" in res["routes"]["verbs"] and "services/status" in res
    core = {r["name"]: r for r in (await api.ok("GET", "/api/v1"))["resources"]}
    assert core["namespaces"]["namespaced"] is False
    assert core["pods"]["shortNames"] == ["po"] and "pods/status" in core
    apps = {r["name"]: r for r in (await api.ok("GET", "/apis/apps/v1"))["resources"]}
    assert apps["deployments/scale"]["kind"] == "Scale"
    assert apps["deployments/scale"]["group"] == "autoscaling"
    pa = await api.ok("GET", "/apis/autoscaling.internal.knative.dev/v1alpha1")
    assert {r["name"]: r for r in pa["resources"]}["podautoscalers"]["shortNames"] == [
        "kpa", "pa"]
    status, _ = await api.call("GET", "/apis/nope.dev")
    assert status == 404


_TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.mark.parametrize(
    ("path", "obj", "columns", "cells"),
    [
        pytest.param(
            "/apis/serving.knative.dev/v1/namespaces/default/services",
            {"metadata": {"name": "hello"}, "spec": {}},
            ["Name", "URL", "LatestCreated", "LatestReady", "Ready", "Reason"],
            ["hello", None, None, None, None, None], id="ksvc"),
        pytest.param(
            REVS, revision("r", labels={"serving.knative.dev/configuration": "hello",
                                        "serving.knative.dev/configurationGeneration": "1"}),
            ["Name", "Config Name", "Generation", "Ready", "Reason", "Actual Replicas",
             "Desired Replicas"],
            ["r", "hello", "1", None, None, None, None], id="revision"),
        pytest.param(
            "/apis/autoscaling.internal.knative.dev/v1alpha1/namespaces/default/podautoscalers",
            {"metadata": {"name": "pa"}, "spec": {}},
            ["Name", "DesiredScale", "ActualScale", "Ready", "Reason"],
            ["pa", None, None, None, None], id="podautoscaler"),
        pytest.param(
            PODS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"},
                                                                      {"name": "b"}]}},
            ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"],
            ["p", "0/2", "Pending", "0", "0s", None, None], id="pod"),
        pytest.param(
            "/api/v1/namespaces/default/endpoints",
            {"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                                                     "ports": [{"port": 8012}]}]},
            ["Name", "Endpoints", "Age"], ["e", "127.0.0.1:8012", "0s"], id="endpoints"),
        pytest.param(CMS, cm("c", {"a": "1", "b": "2"}), ["Name", "Data", "Age"],
                     ["c", 2, "0s"], id="configmap"),
    ],
)
async def test_tables(
    api: Api, path: str, obj: dict[str, Any], columns: list[str], cells: list[Any]
) -> None:
    await api.ok("POST", path, obj)
    out = await api.ok("GET", path, headers={"Accept": _TABLE})
    assert out["kind"] == "Table" and out["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in out["columnDefinitions"]] == columns
    (row,) = out["rows"]
    age = [i for i, c in enumerate(columns) if c == "Age"]
    got = [("0s" if i in age and c in ("0s", "1s") else c) for i, c in enumerate(row["cells"])]
    assert got == cells
    assert row["object"]["kind"] == "PartialObjectMetadata"
    one = await api.ok("GET", f"{path}/{obj['metadata']['name']}?includeObject=Object",
                       headers={"Accept": _TABLE})
    assert one["rows"][0]["object"]["metadata"]["name"] == obj["metadata"]["name"]
    assert "spec" in one["rows"][0]["object"] or "data" in one["rows"][0]["object"] or \
        "subsets" in one["rows"][0]["object"]


async def test_ready_columns_read_the_ready_condition(api: Api) -> None:
    created = await api.ok("POST", REVS, revision("r"))
    status = {"conditions": [{"type": "Active", "status": "False"},
                             {"type": "Ready", "status": "False", "reason": "Deploying"}],
              "actualReplicas": 0, "desiredReplicas": 1}
    await api.ok("PUT", f"{REVS}/r/status", {**created, "status": status})
    out = await api.ok("GET", REVS, headers={"Accept": _TABLE})
    assert out["rows"][0]["cells"][3:] == ["False", "Deploying", 0, 1]


@pytest.mark.parametrize(
    ("propagation", "left", "deleted"),
    [
        pytest.param("Background", [], ["r", "dep", "pod"], id="background-owner-first"),
        pytest.param("Foreground", [], ["pod", "dep", "r"], id="foreground-dependents-first"),
        pytest.param("Orphan", ["dep", "pod"], ["r"], id="orphan-keeps-them"),
    ],
)
async def test_cascading_delete(
    api: Api, propagation: str, left: list[str], deleted: list[str]
) -> None:
    owner = await api.ok("POST", REVS, revision("r"))
    ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": "r",
           "uid": owner["metadata"]["uid"], "controller": True}
    dep = await api.ok("POST", DEPLOYS, {"metadata": {"name": "dep", "ownerReferences": [ref]},
                                         "spec": {"selector": {}, "template": {}}})
    dref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dep",
            "uid": dep["metadata"]["uid"]}
    await api.ok("POST", PODS, {"metadata": {"name": "pod", "ownerReferences": [dref]},
                                "spec": {"containers": []}})
    await api.ok("POST", CMS, cm("unrelated"))
    before = api.server.store.rv
    await api.ok("DELETE", f"{REVS}/r", {"propagationPolicy": propagation})
    events = api.server.store.since(before) or []
    assert [e.obj["metadata"]["name"] for e in events if e.type == "DELETED"] == deleted
    names = [o["metadata"]["name"] for path in (DEPLOYS, PODS)
             for o in (await api.ok("GET", path))["items"]]
    assert names == left
    if propagation == "Orphan":
        assert "ownerReferences" not in (await api.ok("GET", f"{DEPLOYS}/dep"))["metadata"]
    assert len((await api.ok("GET", CMS))["items"]) == 1


async def test_a_dependent_created_after_its_owner_was_deleted_is_collected(api: Api) -> None:
    """Kubernetes' garbage collector removes a dependent whose owners are all gone: a
    controller working from a stale cache once re-created a deleted Revision's PodAutoscaler
    and left it for ever (a CI run's kubectl test). One live owner keeps it."""
    owner = await api.ok("POST", REVS, revision("r"))
    live = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": "r",
            "uid": owner["metadata"]["uid"]}
    gone = {**live, "name": "old", "uid": "0b2f6c1e-0000-4000-8000-000000000000"}
    await api.ok("POST", CMS, {**cm("orphan"), "metadata": {"name": "orphan",
                                                              "ownerReferences": [gone]}})
    await api.ok("POST", CMS, {**cm("kept"), "metadata": {"name": "kept",
                                                            "ownerReferences": [gone, live]}})
    status, _ = await api.call("GET", f"{CMS}/orphan")
    assert status == 404
    await api.ok("GET", f"{CMS}/kept")


async def test_namespaces(api: Api) -> None:
    names = [n["metadata"]["name"] for n in (await api.ok("GET", "/api/v1/namespaces"))["items"]]
    assert {"default", "kube-system", "knative-serving"} <= set(names)
    ns = await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    assert ns["status"] == {"phase": "Active"} and "namespace" not in ns["metadata"]
    await api.ok("POST", "/api/v1/namespaces/team/configmaps", cm("a"))
    await api.ok("POST", "/apis/serving.knative.dev/v1/namespaces/team/revisions", revision("r"))
    await api.ok("DELETE", "/api/v1/namespaces/team")
    status, _ = await api.call("GET", "/api/v1/namespaces/team")
    assert status == 404
    assert (await api.ok("GET", "/api/v1/configmaps"))["items"] == []
    status, _ = await api.call("POST", "/api/v1/namespaces/team/configmaps", cm("b"))
    assert status == 404, "NamespaceLifecycle: no objects in a missing namespace"
    status, err = await api.call("DELETE", "/api/v1/namespaces/default")
    assert (status, err["reason"]) == (403, "Forbidden")


async def test_restart_resumes(tmp_path: Path) -> None:
    api = await start_api(tmp_path)
    try:
        a = await api.ok("POST", CMS, cm("a", {"k": "v"}))
        await api.ok("POST", REVS, revision("r"))
        await api.ok("DELETE", f"{REVS}/r")
        rv = api.server.store.rv
    finally:
        await stop_api(api)
    api = await start_api(tmp_path)
    try:
        assert (await api.ok("GET", f"{CMS}/a")) == a
        listed = await api.ok("GET", REVS)
        assert listed["items"] == [] and listed["metadata"]["resourceVersion"] == str(rv)
        b = await api.ok("POST", CMS, cm("b"))
        assert int(b["metadata"]["resourceVersion"]) == rv + 1
        status, ev = await api.call("GET", CMS + f"?watch=1&resourceVersion={rv - 1}")
        assert (status, ev["type"], ev["object"]["code"]) == (200, "ERROR", 410), \
            "the watch history starts empty after a restart: clients relist"
    finally:
        await stop_api(api)


async def test_python_m_entry(tmp_path: Path) -> None:
    """``python -m controlplane.kubeapi`` prints its URL and kubeconfig, serves, and stops
    cleanly on SIGTERM."""
    import asyncio
    import signal
    import sys

    import aiohttp

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlplane.kubeapi", "--state-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert proc.stdout is not None
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        kubeconfig = Path((await asyncio.wait_for(proc.stdout.readline(), 5)).decode().strip())
        assert url.startswith("http://127.0.0.1:") and kubeconfig == tmp_path / "kubeconfig"
        token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
        async with aiohttp.ClientSession() as s, s.get(
            url + "/version", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200 and (await r.json())["gitVersion"] == GIT_VERSION
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_event_table_puts_the_name_last_and_wide(api: Api) -> None:
    """kube's event printer: LAST SEEN TYPE REASON OBJECT MESSAGE, NAME only with -o wide."""
    await api.ok("POST", "/api/v1/namespaces/default/events", {
        "metadata": {"name": "hello.1"}, "type": "Normal", "reason": "Created",
        "involvedObject": {"kind": "Revision", "name": "hello-00001"},
        "message": "Created Deployment", "lastTimestamp": "2020-01-01T00:00:00Z"})
    out = await api.ok("GET", "/api/v1/namespaces/default/events", headers={"Accept": _TABLE})
    cols = [(c["name"], c["priority"]) for c in out["columnDefinitions"]]
    assert cols == [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0),
                    ("Message", 0), ("Name", 1)]
    cells = out["rows"][0]["cells"]
    assert cells[1:] == ["Normal", "Created", "revision/hello-00001", "Created Deployment",
                         "hello.1"]
    assert cells[0].endswith("y") or cells[0].endswith("d"), "years since 2020"
