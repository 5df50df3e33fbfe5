"""FakeCluster behaves like the API server where reconcilers' tests care."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared.kube.client import ApiError, Conflict, NotFound
from shared.kube.fake import FakeCluster, Write, json_patch, merge_patch
from shared.kube.informer import EventType
from shared.kube.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACES,
    PODAUTOSCALERS,
    REVISIONS,
    Obj,
)

NS = "default"


def rev(name: str = "r1", **labels: str) -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": name, "namespace": NS, "labels": dict(labels)},
        "spec": {"containerConcurrency": 0},
        "status": {"observedGeneration": 1},
    }


def deployment(name: str = "d1", replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
        "status": {"replicas": replicas},
    }


# -- the behaviour table: (seed, action, check) --------------------------------------------------

Action = Callable[[FakeCluster], Awaitable[Any]]


async def _create_twice(c: FakeCluster) -> Any:
    await c.create(REVISIONS, NS, {"metadata": {"name": "x"}, "spec": {}})
    return await c.create(REVISIONS, NS, {"metadata": {"name": "x"}, "spec": {}})


async def _stale_replace(c: FakeCluster) -> Any:
    obj = await c.get(REVISIONS, NS, "r1")
    assert obj is not None
    await c.patch(REVISIONS, NS, "r1", {"metadata": {"labels": {"a": "b"}}})
    obj["spec"]["containerConcurrency"] = 5
    return await c.replace(REVISIONS, NS, "r1", obj)


BEHAVIOUR = [
    pytest.param(
        [],
        lambda c: c.create(REVISIONS, NS, {"metadata": {"name": "x"}, "spec": {}, "status": {}}),
        lambda r, c: (
            r["metadata"]["generation"] == 1
            and r["metadata"]["resourceVersion"] == "1"
            and len(r["metadata"]["uid"]) == 36
            and r["metadata"]["creationTimestamp"].endswith("Z")
            and r["kind"] == "Revision"
            and "status" not in r
        ),
        id="create-sets-server-fields-drops-status",
    ),
    pytest.param(
        [],
        lambda c: c.create(CONFIGMAPS, NS, {"metadata": {"generateName": "cm-"}, "data": {}}),
        lambda r, c: r["metadata"]["name"].startswith("cm-") and len(r["metadata"]["name"]) == 8,
        id="create-generate-name",
    ),
    pytest.param(
        [], _create_twice, (Conflict, 409, "AlreadyExists"), id="create-existing-already-exists"
    ),
    pytest.param([rev()], _stale_replace, (Conflict, 409, "Conflict"), id="replace-stale-rv"),
    pytest.param(
        [],
        lambda c: c.replace(REVISIONS, NS, "nope", rev("nope")),
        (NotFound, 404, "NotFound"),
        id="replace-missing-not-found",
    ),
    pytest.param(
        [],
        lambda c: c.get(REVISIONS, NS, "nope"),
        lambda r, c: r is None,
        id="get-missing-none",
    ),
    pytest.param(
        [rev()],
        lambda c: c.replace(
            REVISIONS, NS, "r1", {**rev(), "spec": {"containerConcurrency": 3}, "status": {}}
        ),
        lambda r, c: (
            r["metadata"]["generation"] == 2
            and r["spec"]["containerConcurrency"] == 3
            and r["status"] == {"observedGeneration": 1}
        ),
        id="replace-spec-bumps-generation-keeps-status",
    ),
    pytest.param(
        [rev()],
        lambda c: c.patch(REVISIONS, NS, "r1", {"metadata": {"labels": {"a": "b"}}}),
        lambda r, c: r["metadata"]["generation"] == 1 and r["metadata"]["labels"] == {"a": "b"},
        id="metadata-change-keeps-generation",
    ),
    pytest.param(
        [rev()],
        lambda c: c.replace(REVISIONS, NS, "r1", rev()),
        lambda r, c: r["metadata"]["resourceVersion"] == "1" and c.flush() == 1,
        id="noop-write-no-new-rv",
    ),
    pytest.param(
        [rev()],
        lambda c: c.replace_status(
            REVISIONS, NS, "r1", {**rev(), "spec": {"x": 1}, "status": {"ready": True}}
        ),
        lambda r, c: r["status"] == {"ready": True} and r["spec"] == {"containerConcurrency": 0},
        id="status-put-changes-only-status",
    ),
    pytest.param(
        [rev()],
        lambda c: c.patch(
            REVISIONS,
            NS,
            "r1",
            {"spec": {"y": 1}, "status": {"observedGeneration": None, "ok": 1}},
            subresource="status",
        ),
        lambda r, c: r["status"] == {"ok": 1} and "y" not in r["spec"],
        id="status-merge-patch",
    ),
    pytest.param(
        [rev()],
        lambda c: c.patch(
            REVISIONS, NS, "r1", {"spec": {"a": 1}, "metadata": {"resourceVersion": "999"}}
        ),
        (Conflict, 409, "Conflict"),
        id="patch-rv-precondition",
    ),
    pytest.param(
        [rev()],
        lambda c: c.patch(
            REVISIONS,
            NS,
            "r1",
            [
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
                {"op": "replace", "path": "/spec/containerConcurrency", "value": 7},
            ],
            "json",
        ),
        lambda r, c: r["metadata"]["finalizers"] == ["f"] and r["metadata"]["generation"] == 2,
        id="json-patch",
    ),
    pytest.param(
        [rev()],
        lambda c: c.patch(
            REVISIONS,
            NS,
            "r1",
            [{"op": "test", "path": "/spec/containerConcurrency", "value": 9}],
            "json",
        ),
        (ApiError, 422, "Invalid"),
        id="json-patch-test-fails",
    ),
    pytest.param(
        [deployment(replicas=1)],
        lambda c: c.patch(
            DEPLOYMENTS,
            NS,
            "d1",
            [{"op": "replace", "path": "/spec/replicas", "value": 3}],
            "json",
            "scale",
        ),
        lambda r, c: (
            r["kind"] == "Scale"
            and r["spec"]["replicas"] == 3
            and r["status"] == {"replicas": 1, "selector": "app=d1"}
            and c.peek(DEPLOYMENTS, NS, "d1")["spec"]["replicas"] == 3
            and c.peek(DEPLOYMENTS, NS, "d1")["metadata"]["generation"] == 2
        ),
        id="scale-json-patch",
    ),
    pytest.param(
        [deployment(replicas=2)],
        lambda c: c.patch(DEPLOYMENTS, NS, "d1", {"spec": {"replicas": 0}}, subresource="scale"),
        lambda r, c: c.peek(DEPLOYMENTS, NS, "d1")["spec"]["replicas"] == 0,
        id="scale-merge-patch-to-zero",
    ),
    pytest.param(
        [rev("a", app="x"), rev("b", app="y"), rev("c")],
        lambda c: c.list(REVISIONS, NS, "app in (x,y),app!=y"),
        lambda r, c: (
            [o["metadata"]["name"] for o in r["items"]] == ["a"]
            and r["metadata"]["resourceVersion"] == "3"
        ),
        id="list-label-selector",
    ),
    pytest.param(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1", "namespace": "x"}}],
        lambda c: c.get(NAMESPACES, "", "ns1"),
        lambda r, c: r is not None and "namespace" not in r["metadata"],
        id="cluster-scoped",
    ),
    pytest.param(
        [],
        lambda c: c.delete(REVISIONS, NS, "nope"),
        lambda r, c: r is None and c.writes == [Write("delete", REVISIONS, NS, "nope", None)],
        id="delete-missing-is-fine",
    ),
]


@pytest.mark.parametrize(("seed", "action", "check"), BEHAVIOUR)
async def test_behaviour(seed: list[Obj], action: Action, check: Any) -> None:
    cluster = FakeCluster()
    for obj in seed:
        cluster.put(obj)
    if isinstance(check, tuple):
        cls, status, reason = check
        with pytest.raises(cls) as err:
            await action(cluster)
        assert (err.value.status, err.value.reason) == (status, reason)
    else:
        result = await action(cluster)
        assert check(result, cluster), result


async def test_cascading_delete() -> None:
    c = FakeCluster()
    owner = c.put(rev("owner"))
    ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": "owner"}
    pa = c.put(
        {
            "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
            "kind": "PodAutoscaler",
            "metadata": {
                "name": "owner",
                "namespace": NS,
                "ownerReferences": [{**ref, "uid": owner["metadata"]["uid"]}],
            },
        }
    )
    dep = deployment("grandchild")
    dep["metadata"]["ownerReferences"] = [{"uid": pa["metadata"]["uid"]}]
    c.put(dep)
    c.put(deployment("unrelated"))
    await c.delete(REVISIONS, NS, "owner")
    assert c.objects(PODAUTOSCALERS) == []
    assert [d["metadata"]["name"] for d in c.objects(DEPLOYMENTS)] == ["unrelated"]


async def test_writes_and_injected_failure() -> None:
    c = FakeCluster()
    c.fail_next("create", ApiError(500, "InternalError", "boom"), resource=REVISIONS)
    with pytest.raises(ApiError):
        await c.create(REVISIONS, NS, rev())
    await c.create(REVISIONS, NS, rev())
    await c.patch(REVISIONS, NS, "r1", {"metadata": {"labels": {"a": "b"}}})
    assert [(w.verb, w.resource, w.name) for w in c.writes] == [
        ("create", REVISIONS, "r1"),
        ("patch", REVISIONS, "r1"),
    ]
    assert c.writes[1].body == {"metadata": {"labels": {"a": "b"}}}


# -- informers -----------------------------------------------------------------------------------


async def test_informer_events_after_write_and_settle() -> None:
    c = FakeCluster()
    c.put(rev("seeded"))
    inf = c.informer(REVISIONS, namespace=NS)
    seen: list[tuple[EventType, str]] = []
    inf.add_handler(lambda e, o: seen.append((e, o["metadata"]["name"])))
    assert seen == [(EventType.ADDED, "seeded")]  # at once, for what is cached
    await c.create(REVISIONS, NS, rev("new"))
    assert inf.get(NS, "new") is None  # delivered after the write returns
    await c.settle()
    assert inf.get(NS, "new") is not None
    await c.patch(REVISIONS, NS, "new", {"spec": {"a": 1}})
    await c.delete(REVISIONS, NS, "seeded")
    await c.settle()
    assert seen[1:] == [
        (EventType.ADDED, "new"),
        (EventType.MODIFIED, "new"),
        (EventType.DELETED, "seeded"),
    ]
    assert [o["metadata"]["name"] for o in inf.list()] == ["new"]
    assert c.informer(REVISIONS, namespace=NS) is inf


async def test_informer_selector_enter_and_leave() -> None:
    c = FakeCluster()
    inf = c.informer(REVISIONS, label_selector="app=x")
    seen: list[tuple[EventType, str]] = []
    inf.add_handler(lambda e, o: seen.append((e, o["metadata"]["name"])))
    await c.create(REVISIONS, NS, rev("a"))
    await c.patch(REVISIONS, NS, "a", {"metadata": {"labels": {"app": "x"}}})
    await c.patch(REVISIONS, NS, "a", {"metadata": {"labels": {"app": "y"}}})
    await c.settle()
    assert seen == [(EventType.ADDED, "a"), (EventType.DELETED, "a")]


async def test_informer_namespace_filter_and_late_informer() -> None:
    c = FakeCluster()
    other = rev("o")
    other["metadata"]["namespace"] = "other"
    c.put(other)
    c.put(rev("d"))  # pending events, no loop turn yet
    late = c.informer(REVISIONS, namespace="other")
    seen: list[str] = []
    late.add_handler(lambda e, o: seen.append(f"{e.value}:{o['metadata']['name']}"))
    await c.settle()
    assert seen == ["ADDED:o"]  # listed once; the older pending events are not replayed


def test_merge_and_json_patch_pure() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {
        "a": {"c": 2, "d": 3}
    }
    doc = {"a": [1, 2], "b/c": {"~": 0}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "move", "from": "/b~1c/~0", "path": "/z"},
            {"op": "copy", "from": "/a/0", "path": "/a/0"},
            {"op": "remove", "path": "/a/1"},
        ],
    )
    assert out == {"a": [1, 2, 3], "b/c": {}, "z": 0}
    assert doc == {"a": [1, 2], "b/c": {"~": 0}}


async def test_handler_error_reraised_by_settle_others_still_run() -> None:
    c = FakeCluster()
    inf = c.informer(REVISIONS)
    seen: list[str] = []

    def broken(event: EventType, obj: Obj) -> None:
        raise RuntimeError("handler bug")

    inf.add_handler(broken)
    inf.add_handler(lambda e, o: seen.append(o["metadata"]["name"]))
    await c.create(REVISIONS, NS, rev("a"))
    with pytest.raises(RuntimeError, match="handler bug"):
        await c.settle()
    assert seen == ["a"]
    await c.settle()  # reported once
