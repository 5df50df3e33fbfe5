"""CRUD, conflicts, patches, generation, subresources, dry runs and admission over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.kubeapi.admission import Cause, Denied, ObjectReader, Operation
from shared.kube.resources import REVISIONS, Obj
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


async def test_create_get_update_delete(api: Api) -> None:
    created = await api.ok("POST", CMS, cm("a", {"k": "1"}))
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"]
    assert "generation" not in meta, "ConfigMaps have no spec, hence no generation"
    got = await api.ok("GET", f"{CMS}/a")
    assert got == created
    created["data"]["k"] = "2"
    updated = await api.ok("PUT", f"{CMS}/a", created)
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert updated["metadata"]["uid"] == meta["uid"]
    deleted = await api.ok("DELETE", f"{CMS}/a")
    assert deleted["metadata"]["name"] == "a"
    status, body = await api.call("GET", f"{CMS}/a")
    assert status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "a" not found'


@pytest.mark.parametrize(
    ("setup", "method", "path", "body", "code", "reason"),
    [
        pytest.param(True, "POST", CMS, cm("a"), 409, "AlreadyExists", id="create-existing"),
        pytest.param(True, "PUT", f"{CMS}/a",
                     cm("a", {"x": "y"}, resourceVersion="1"), 409, "Conflict",
                     id="put-stale-rv"),
        pytest.param(False, "PUT", f"{CMS}/a", cm("a"), 404, "NotFound", id="put-missing"),
        pytest.param(False, "DELETE", f"{CMS}/a", None, 404, "NotFound", id="delete-missing"),
        pytest.param(True, "PATCH", f"{CMS}/a",
                     {"metadata": {"resourceVersion": "1"}, "data": {"b": "c"}}, 409,
                     "Conflict", id="patch-with-stale-rv"),
        pytest.param(False, "POST", CMS, {"metadata": {}}, 422, "Invalid", id="no-name"),
        pytest.param(False, "POST", CMS, cm("Bad_Name"), 422, "Invalid", id="bad-name"),
        pytest.param(False, "POST", "/api/v1/namespaces/nope/configmaps", cm("a"), 404,
                     "NotFound", id="missing-namespace"),
        pytest.param(False, "POST", CMS, {**cm("a"), "kind": "Secret"}, 400, "BadRequest",
                     id="kind-mismatch"),
        pytest.param(False, "POST", CMS, {**cm("a"), "apiVersion": "v2"}, 400, "BadRequest",
                     id="apiversion-mismatch"),
        pytest.param(False, "POST", CMS, cm("a", namespace="other"), 400, "BadRequest",
                     id="namespace-mismatch"),
        pytest.param(True, "PUT", f"{CMS}/a", cm("b"), 400, "BadRequest", id="name-mismatch"),
        pytest.param(False, "POST", CMS, [1, 2], 400, "BadRequest", id="not-an-object"),
        pytest.param(False, "GET", "/api/v1/namespaces/default/nothings", None, 404, "NotFound",
                     id="unknown-resource"),
        pytest.param(True, "POST", f"{CMS}/a", cm("a"), 405, "MethodNotAllowed",
                     id="post-on-object"),
        pytest.param(True, "PATCH", f"{CMS}/a", [{"op": "test", "path": "/data/k",
                                                  "value": "nope"}], 422, "Invalid",
                     id="json-patch-test-fails"),
    ],
)
async def test_errors(
    api: Api, setup: bool, method: str, path: str, body: Any, code: int, reason: str
) -> None:
    if setup:
        await api.ok("POST", CMS, cm("a", {"k": "v"}))
    ctype = "application/json-patch+json" if isinstance(body, list) and method == "PATCH" \
        else "application/merge-patch+json" if method == "PATCH" else "application/json"
    status, out = await api.call(method, path, body, content_type=ctype)
    assert (status, out["kind"], out["status"], out["reason"], out["code"]) == (
        code, "Status", "Failure", reason, code
    ), out


async def test_put_without_rv_is_unconditional_and_noop_keeps_rv(api: Api) -> None:
    first = await api.ok("POST", CMS, cm("a", {"k": "1"}))
    again = await api.ok("PUT", f"{CMS}/a", cm("a", {"k": "1"}))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed = await api.ok("PUT", f"{CMS}/a", cm("a", {"k": "2"}))
    assert changed["data"] == {"k": "2"}
    assert changed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]


async def test_generate_name(api: Api) -> None:
    a = await api.ok("POST", CMS, {"metadata": {"generateName": "job-"}})
    b = await api.ok("POST", CMS, {"metadata": {"generateName": "job-"}})
    assert a["metadata"]["name"].startswith("job-") and len(a["metadata"]["name"]) == 9
    assert a["metadata"]["name"] != b["metadata"]["name"]


_PATCH_CASES = [
    pytest.param("application/merge-patch+json", {"data": {"b": "2", "a": None}},
                 {"b": "2"}, id="merge"),
    pytest.param("application/json-patch+json",
                 [{"op": "test", "path": "/data/a", "value": "1"},
                  {"op": "replace", "path": "/data/a", "value": "9"}], {"a": "9"}, id="json"),
    pytest.param("application/strategic-merge-patch+json", {"data": {"c": "3"}},
                 {"a": "1", "c": "3"}, id="strategic"),
]


@pytest.mark.parametrize(("ctype", "patch", "want"), _PATCH_CASES)
async def test_patch_types(api: Api, ctype: str, patch: Any, want: dict[str, str]) -> None:
    await api.ok("POST", CMS, cm("a", {"a": "1"}))
    out = await api.ok("PATCH", f"{CMS}/a", patch, content_type=ctype)
    assert out["data"] == want
    assert (await api.ok("GET", f"{CMS}/a"))["data"] == want


async def test_strategic_patch_of_a_pod_merges_containers(api: Api) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "queue-proxy", "image": "q:1"}]}}
    await api.ok("POST", PODS, pod)
    patch = {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}}
    out = await api.ok("PATCH", f"{PODS}/p", patch,
                       content_type="application/strategic-merge-patch+json")
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "queue-proxy"]
    assert out["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"},
                                                   {"name": "B", "value": "2"}]


async def test_strategic_patch_of_a_knative_kind_is_415(api: Api) -> None:
    await api.ok("POST", REVS, revision("r"))
    status, out = await api.call("PATCH", f"{REVS}/r", {"metadata": {"labels": {"a": "b"}}},
                                 content_type="application/strategic-merge-patch+json")
    assert (status, out["reason"]) == (415, "UnsupportedMediaType")


@pytest.mark.parametrize(
    ("change", "want_generation"),
    [
        pytest.param({"spec": {"containers": [{"image": "knpy/other"}]}}, 2, id="spec-bumps"),
        pytest.param({"metadata": {"labels": {"a": "b"}}}, 1, id="labels-do-not"),
        pytest.param({"metadata": {"annotations": {"a": "b"}}}, 1, id="annotations-do-not"),
        pytest.param({"status": {"observedGeneration": 1}}, 1, id="status-is-ignored"),
    ],
)
async def test_generation(api: Api, change: Obj, want_generation: int) -> None:
    created = await api.ok("POST", REVS, revision("r"))
    assert created["metadata"]["generation"] == 1
    out = await api.ok("PATCH", f"{REVS}/r", change,
                       content_type="application/merge-patch+json")
    assert out["metadata"]["generation"] == want_generation
    assert "status" not in out, "the main resource ignores status changes"


async def test_status_subresource_changes_only_status(api: Api) -> None:
    created = await api.ok("POST", REVS, {**revision("r"), "status": {"x": 1}})
    assert "status" not in created, "create drops status for kinds with a status subresource"
    body = {**created, "spec": {"containers": [{"image": "changed"}]},
            "metadata": {**created["metadata"], "labels": {"l": "v"}},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready",
                                                                "status": "True"}]}}
    out = await api.ok("PUT", f"{REVS}/r/status", body)
    assert out["status"]["observedGeneration"] == 1
    assert out["spec"] == created["spec"] and "labels" not in out["metadata"]
    assert out["metadata"]["generation"] == 1
    status, err = await api.call("PUT", f"{REVS}/r/status", body)
    assert (status, err["reason"]) == (409, "Conflict"), "a stale rv on /status conflicts"
    merged = await api.ok("PATCH", f"{REVS}/r/status", {"status": {"actualReplicas": 2}},
                          content_type="application/merge-patch+json")
    assert merged["status"]["actualReplicas"] == 2 and merged["status"]["observedGeneration"]
    status, _ = await api.call("GET", f"{CMS}/x/status")
    assert status == 404, "ConfigMaps have no status subresource"


async def test_scale_subresource(api: Api) -> None:
    dep = {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d", "serving.knative.dev/revision": "r"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}}}
    created = await api.ok("POST", DEPLOYS, dep)
    assert created["spec"]["replicas"] == 1, "Deployment replicas default to 1"
    scale = await api.ok("GET", f"{DEPLOYS}/d/scale")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1}
    assert scale["status"] == {"replicas": 0,
                               "selector": "app=d,serving.knative.dev/revision=r"}
    out = await api.ok("PATCH", f"{DEPLOYS}/d/scale",
                       [{"op": "add", "path": "/spec/replicas", "value": 3}],
                       content_type="application/json-patch+json")
    assert out["spec"]["replicas"] == 3
    out = await api.ok("PATCH", f"{DEPLOYS}/d/scale", {"spec": {"replicas": 0}},
                       content_type="application/merge-patch+json")
    assert out["spec"]["replicas"] == 0
    out = await api.ok("PUT", f"{DEPLOYS}/d/scale", {**out, "spec": {"replicas": 5}})
    got = await api.ok("GET", f"{DEPLOYS}/d")
    assert got["spec"]["replicas"] == 5 and got["metadata"]["generation"] == 4
    status, err = await api.call("PUT", f"{DEPLOYS}/d/scale", {**scale,
                                                               "spec": {"replicas": 2}})
    assert (status, err["reason"]) == (409, "Conflict")


@pytest.mark.parametrize(
    ("method", "path", "body", "ctype"),
    [
        pytest.param("POST", CMS, cm("b", {"k": "v"}), "application/json", id="create"),
        pytest.param("PUT", f"{CMS}/a", cm("a", {"k": "changed"}), "application/json",
                     id="update"),
        pytest.param("PATCH", f"{CMS}/a", {"data": {"k": "changed"}},
                     "application/merge-patch+json", id="patch"),
        pytest.param("DELETE", f"{CMS}/a", None, "application/json", id="delete"),
    ],
)
async def test_dry_run_stores_nothing(
    api: Api, method: str, path: str, body: Any, ctype: str
) -> None:
    before = await api.ok("POST", CMS, cm("a", {"k": "v"}))
    out = await api.ok(method, path + "?dryRun=All", body, content_type=ctype)
    assert out["kind"] == "ConfigMap"
    listed = await api.ok("GET", CMS)
    assert listed["items"] == [before]
    assert listed["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


class _Hook:
    """A webhook stand-in: defaults an annotation, denies an image."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, bool]] = []

    def admit(self, operation: Operation, obj: Obj, old: Obj | None,
              reader: ObjectReader) -> Obj:
        self.ops.append((operation, old is not None))
        image = obj["spec"]["containers"][0]["image"]
        if image == "bad":
            raise Denied("bad image: spec.containers[0].image",
                         [Cause("spec.containers[0].image", "bad image")])
        obj["metadata"].setdefault("annotations", {})["defaulted"] = "yes"
        obj["spec"].setdefault("timeoutSeconds", 300)
        assert reader.get(REVISIONS, "default", obj["metadata"]["name"]) == old
        return obj


async def test_admission(tmp_path: Any) -> None:
    hook = _Hook()
    api = await start_api(tmp_path, admission={REVISIONS: hook})
    try:
        out = await api.ok("POST", REVS, revision("r"))
        assert out["metadata"]["annotations"] == {"defaulted": "yes"}
        assert out["spec"]["timeoutSeconds"] == 300
        again = await api.ok("PUT", f"{REVS}/r", revision("r"))
        assert again == out, "a re-defaulted field is no change: same generation and rv"
        bad = revision("r")
        bad["spec"]["containers"][0]["image"] = "bad"
        status, err = await api.call("PUT", f"{REVS}/r", bad)
        assert (status, err["reason"]) == (400, "BadRequest")
        assert err["message"] == (
            'admission webhook "validation.webhook.serving.knative.dev" denied the request: '
            "validation failed: bad image: spec.containers[0].image"
        )
        assert err["details"]["causes"] == [
            {"field": "spec.containers[0].image", "message": "bad image"}
        ]
        await api.ok("PUT", f"{REVS}/r/status", {**out, "status": {"x": 1}})
        status, _ = await api.call("POST", REVS + "?dryRun=All", {**bad, "metadata": {
            "name": "r2"}})
        assert status == 400, "a dry run is admitted too"
        assert hook.ops == [("CREATE", False), ("UPDATE", True), ("UPDATE", True),
                            ("CREATE", False)], \
            "status writes are not admitted"
    finally:
        await stop_api(api)


async def test_finalizers_mark_then_remove(api: Api) -> None:
    await api.ok("POST", CMS, cm("a", finalizers=["knpy.dev/test"]))
    marked = await api.ok("DELETE", f"{CMS}/a")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await api.ok("GET", f"{CMS}/a"))["metadata"]["deletionTimestamp"]
    rv = api.server.store.rv
    await api.ok("PATCH", f"{CMS}/a", {"metadata": {"finalizers": None}},
                 content_type="application/merge-patch+json")
    status, _ = await api.call("GET", f"{CMS}/a")
    assert status == 404
    (ev,) = api.server.store.since(rv) or []
    assert ev.type == "DELETED" and "finalizers" not in ev.obj["metadata"], \
        "one DELETED event, carrying the object as the update left it"


@pytest.mark.parametrize(
    ("path", "ctype", "patch"),
    [
        pytest.param("", "application/merge-patch+json",
                     {"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{}]}},
                     id="merge"),
        pytest.param("", "application/json-patch+json",
                     [{"op": "add", "path": "/spec/containers/0/image", "value": "v2"}],
                     id="json"),
        pytest.param("/status", "application/merge-patch+json",
                     {"status": {"conditions": [{"type": "Ready"}]}}, id="status"),
    ],
)
async def test_writes_never_change_stored_objects_in_place(
    api: Api, path: str, ctype: str, patch: Any
) -> None:
    """Patch results share untouched subtrees with the stored object; the object kept in the
    watch history for the earlier revision must stay as it was written."""
    rv = api.server.store.rv
    await api.ok("POST", REVS, revision("r", labels={"a": "b"}))
    (first,) = api.server.store.since(rv) or []
    before = json.dumps(first.obj, sort_keys=True)
    await api.ok("PATCH", f"{REVS}/r{path}", patch, content_type=ctype)
    await api.ok("PATCH", f"{REVS}/r", {"metadata": {"annotations": {"n": "1"}}},
                 content_type="application/merge-patch+json")
    assert json.dumps(first.obj, sort_keys=True) == before


class _BrokenHook:
    def admit(self, operation: Operation, obj: Obj, old: Obj | None,
              reader: ObjectReader) -> Obj:
        raise RuntimeError("boom")


async def test_a_failing_hook_is_a_500_status(tmp_path: Any) -> None:
    api = await start_api(tmp_path, admission={REVISIONS: _BrokenHook()})
    try:
        status, err = await api.call("POST", REVS, revision("r"))
        assert (status, err["kind"], err["reason"]) == (500, "Status", "InternalError")
        assert "RuntimeError: boom" in err["message"]
        assert (await api.ok("GET", REVS))["items"] == [], "nothing was stored"
    finally:
        await stop_api(api)
