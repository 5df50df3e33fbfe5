"""The platform API's resource half on a real server, with the real store and real pods."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from controlplane.api import PlatformApi, PlatformSeams, start_api
from controlplane.ingress import ColdStarts, Target
from controlplane.pods import PodManager, free_port
from controlplane.serve import LocalPlatform
from controlplane.store import Store
from shared.seams import Mode, RevisionKey, ScaleDecision
from shared.seams_http import decision_to_json

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = REPO_ROOT / "examples" / "sampleapp" / "app.py"
STEP_S = 20.0
REV1 = RevisionKey("default", "hello-00001")


def service_yaml(greeting: str = "hi", traffic: str = "") -> str:
    return f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: knpy/sampleapp
          command: [python, {SAMPLE_APP}]
          env: [{{name: GREETING, value: {greeting}}}]
{traffic}
"""


BAD = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: other}
spec:
  template:
    spec:
      containers: [{image: x, command: [python]}]
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: bad}
spec:
  template:
    spec:
      containers: [{image: x, command: [python]}]
  traffic:
    - {latestRevision: true, percent: 80}
    - {latestRevision: true, percent: 101}
"""


@dataclass
class Harness:
    url: str
    client: aiohttp.ClientSession
    platform: LocalPlatform
    routes: list[dict[str, tuple[Target, ...]]]

    async def call(self, method: str, path: str, **kw: object) -> tuple[int, dict[str, object]]:
        async with self.client.request(method, self.url + path, **kw) as resp:  # type: ignore[arg-type]
            return resp.status, await resp.json()

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(STEP_S):
            while not check():
                await asyncio.sleep(0.05)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    store = Store(tmp_path)
    seams = PlatformSeams()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    routes: list[dict[str, tuple[Target, ...]]] = []
    platform: LocalPlatform | None = None

    def publish(key: RevisionKey, eps: tuple[object, ...]) -> None:
        assert platform is not None
        platform.publish(key, eps)  # type: ignore[arg-type]

    pods = PodManager(tmp_path, publish, drain_period_s=0.2, base_env=env)
    cold = ColdStarts()
    platform = LocalPlatform(store, seams, pods, cold_starts=cold, set_routes=routes.append)
    port = free_port()
    runner: web.AppRunner = await start_api(
        PlatformApi(seams, platform, cold_starts=cold), "127.0.0.1", port
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP_S)) as client:
            yield Harness(f"http://127.0.0.1:{port}", client, platform, routes)
    finally:
        await asyncio.wait_for(pods.close(), STEP_S)
        await runner.cleanup()
        store.close()


async def test_apply_get_and_live_status(api: Harness) -> None:
    status, body = await api.call("POST", "/apis/v1/apply", data=service_yaml())
    assert status == 200, body
    assert body["results"] == [
        {
            "kind": "Service",
            "namespace": "default",
            "name": "hello",
            "action": "created",
            "line": "service.serving.knative.dev/hello created",
        }
    ]
    assert body["revisionsCreated"] == ["default/hello-00001"]
    # The revision starts at its initial scale; its first ready pod makes it Ready and routed.
    await api.until(lambda: "hello.default.localhost" in api.platform.routes)
    assert api.platform.routes["hello.default.localhost"] == (Target(REV1, 100),)
    status, rev = await api.call("GET", "/apis/v1/revisions/default/hello-00001")
    assert status == 200
    assert rev["kind"] == "Revision"
    assert rev["status"]["actualReplicas"] == 1  # type: ignore[index]
    assert rev["status"]["desiredReplicas"] == 1  # type: ignore[index]
    assert rev["status"]["trafficPercent"] == 100  # type: ignore[index]
    status, svc = await api.call("GET", "/apis/v1/services/default/hello")
    assert svc["status"]["url"] == "http://hello.default.localhost"  # type: ignore[index]
    assert svc["status"]["traffic"] == [  # type: ignore[index]
        {"revisionName": "hello-00001", "latestRevision": True, "percent": 100}
    ]
    status, listed = await api.call("GET", "/apis/v1/routes")
    assert [r["metadata"]["name"] for r in listed["items"]] == ["hello"]  # type: ignore[attr-defined]
    status, same = await api.call("POST", "/apis/v1/apply", data=service_yaml())
    assert same["results"][0]["action"] == "unchanged"  # type: ignore[index]


async def test_bad_documents_are_refused_with_field_paths(api: Harness) -> None:
    status, body = await api.call("POST", "/apis/v1/apply", data=BAD)
    assert status == 400
    assert "spec.traffic[1].percent" in str(body["message"])
    assert body["kind"] == "Status" and body["code"] == 400
    # Nothing of the file was applied, not even the good first document.
    status, listed = await api.call("GET", "/apis/v1/services")
    assert listed["items"] == []
    status, body = await api.call("POST", "/apis/v1/apply", data="kind: [")
    assert status == 400


async def test_json_apply_template_change_and_delete(api: Harness) -> None:
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {
            "template": {
                "spec": {"containers": [{"image": "x", "command": ["python", str(SAMPLE_APP)]}]}
            }
        },
    }
    status, _ = await api.call("POST", "/apis/v1/apply", data=json.dumps(doc))
    assert status == 200
    await api.until(lambda: "hello.default.localhost" in api.platform.routes)
    doc["spec"]["template"]["spec"]["timeoutSeconds"] = 30  # type: ignore[index]
    status, body = await api.call("POST", "/apis/v1/apply", data=json.dumps(doc))
    assert body["revisionsCreated"] == ["default/hello-00002"]
    rev2 = RevisionKey("default", "hello-00002")
    await api.until(lambda: api.platform.routes["hello.default.localhost"] == (Target(rev2, 100),))
    status, listed = await api.call("GET", "/apis/v1/revisions/default")
    assert [r["metadata"]["name"] for r in listed["items"]] == ["hello-00001", "hello-00002"]  # type: ignore[attr-defined]
    status, _ = await api.call("DELETE", "/apis/v1/services/default/hello")
    assert status == 200
    assert api.platform.routes == {}
    assert api.platform.pods.pods(rev2) == ()
    status, listed = await api.call("GET", "/apis/v1/revisions")
    assert listed["items"] == []
    status, body = await api.call("DELETE", "/apis/v1/services/default/hello")
    assert status == 404


async def test_decisions_scale_pods_and_set_the_mode(api: Harness) -> None:
    await api.call("POST", "/apis/v1/apply", data=service_yaml())
    await api.until(lambda: "hello.default.localhost" in api.platform.routes)
    decision = {
        "namespace": "default",
        "name": "hello-00001",
        "desiredScale": 2,
        "mode": "serve",
        "activators": 1,
    }
    status, _ = await api.call("POST", "/seams/v1/decisions", json=decision)
    assert status == 200
    assert api.platform.seams.mode_of(REV1) is Mode.SERVE
    await api.until(lambda: sum(p.ready for p in api.platform.pods.pods(REV1)) == 2)
    zero = {**decision, "desiredScale": 0, "mode": "proxy"}
    await api.call("POST", "/seams/v1/decisions", json=zero)
    await api.until(lambda: api.platform.seams.endpoints(REV1) == ())
    status, rev = await api.call("GET", "/apis/v1/revisions/default/hello-00001")
    assert rev["status"]["actualReplicas"] == 0  # type: ignore[index]
    assert rev["status"]["mode"] == "proxy"  # type: ignore[index]
    status, _ = await api.call("POST", "/seams/v1/decisions", json={"bad": 1})
    assert status == 400
    gone = ScaleDecision(RevisionKey("default", "gone"), 1, Mode.PROXY, 1)
    status, _ = await api.call("POST", "/seams/v1/decisions", json=decision_to_json(gone))
    assert status == 404


async def test_errors_and_metrics(api: Harness) -> None:
    status, body = await api.call("GET", "/apis/v1/widgets")
    assert status == 404
    status, body = await api.call("GET", "/apis/v1/services/default/nope")
    assert status == 404 and "nope" in str(body["message"])
    api.platform.cold_starts.observe(REV1, 0.3)
    async with api.client.get(api.url + "/metrics") as resp:
        text = await resp.text()
    assert (
        'knpy_cold_start_seconds_bucket{namespace="default",revision="hello-00001",le="0.5"} 1'
        in text
    )
    assert 'knpy_cold_start_seconds_count{namespace="default",revision="hello-00001"} 1' in text
