"""The three patch types as pure functions, on the shapes kubectl and Knative send."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.kubeapi.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

_POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {"name": "app", "image": "i:1", "env": [{"name": "A", "value": "1"}],
             "ports": [{"containerPort": 8080, "name": "http"}]},
            {"name": "queue-proxy", "image": "q:1"},
        ],
        "volumes": [{"name": "v1", "emptyDir": {}}],
        "tolerations": [{"key": "k1"}],
    },
}


@pytest.mark.parametrize(
    ("target", "patch", "want"),
    [
        pytest.param({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}}, {"a": 1, "b": {"c": 2, "d": 3}},
                     id="maps-merge"),
        pytest.param({"a": 1, "b": 2}, {"a": None}, {"b": 2}, id="null-deletes"),
        pytest.param({"l": [1, 2]}, {"l": [3]}, {"l": [3]}, id="lists-replace"),
        pytest.param({"a": {"b": 1}}, {"a": 5}, {"a": 5}, id="scalar-replaces-map"),
        pytest.param({}, {"spec": {"replicas": 3}}, {"spec": {"replicas": 3}},
                     id="creates-parents"),
    ],
)
def test_merge_patch(target: Any, patch: Any, want: Any) -> None:
    assert merge_patch(target, patch) == want


@pytest.mark.parametrize(
    ("ops", "want"),
    [
        pytest.param([{"op": "add", "path": "/spec/replicas", "value": 3}],
                     {"spec": {"replicas": 3}, "l": [1, 2]}, id="add"),
        pytest.param([{"op": "add", "path": "/l/-", "value": 9}],
                     {"spec": {}, "l": [1, 2, 9]}, id="append"),
        pytest.param([{"op": "add", "path": "/l/0", "value": 0}],
                     {"spec": {}, "l": [0, 1, 2]}, id="insert"),
        pytest.param([{"op": "remove", "path": "/l/1"}], {"spec": {}, "l": [1]}, id="remove"),
        pytest.param([{"op": "replace", "path": "/l/1", "value": 7}], {"spec": {}, "l": [1, 7]},
                     id="replace"),
        pytest.param([{"op": "move", "from": "/l", "path": "/spec/l"}],
                     {"spec": {"l": [1, 2]}}, id="move"),
        pytest.param([{"op": "copy", "from": "/l/0", "path": "/spec/x"}],
                     {"spec": {"x": 1}, "l": [1, 2]}, id="copy"),
        pytest.param([{"op": "test", "path": "/l/0", "value": 1},
                      {"op": "add", "path": "/spec/ok", "value": True}],
                     {"spec": {"ok": True}, "l": [1, 2]}, id="test-passes"),
        pytest.param([{"op": "add", "path": "/spec/a~1b", "value": 1}],
                     {"spec": {"a/b": 1}, "l": [1, 2]}, id="escaped-pointer"),
    ],
)
def test_json_patch(ops: Any, want: Any) -> None:
    target = {"spec": {}, "l": [1, 2]}
    assert json_patch(target, ops) == want
    assert target == {"spec": {}, "l": [1, 2]}, "the target is not changed in place"


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([{"op": "test", "path": "/l/0", "value": 5}], id="test-fails"),
        pytest.param([{"op": "remove", "path": "/nope"}], id="remove-missing"),
        pytest.param([{"op": "replace", "path": "/spec/nope", "value": 1}],
                     id="replace-missing"),
        pytest.param([{"op": "add", "path": "/l/9", "value": 1}], id="index-out-of-range"),
        pytest.param([{"op": "frob", "path": "/l"}], id="unknown-op"),
        pytest.param({"op": "add"}, id="not-a-list"),
    ],
)
def test_json_patch_errors(ops: Any) -> None:
    with pytest.raises(PatchError):
        json_patch({"spec": {}, "l": [1, 2]}, ops)


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        pytest.param(
            {"spec": {"containers": [{"name": "app", "image": "i:2"}]}},
            lambda o: [c["image"] for c in o["spec"]["containers"]] == ["i:2", "q:1"]
            and o["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}],
            id="containers-merge-by-name",
        ),
        pytest.param(
            {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}},
            lambda o: o["spec"]["containers"][0]["env"]
            == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            id="env-merge-by-name",
        ),
        pytest.param(
            {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080,
                                                                 "protocol": "TCP"}]}]}},
            lambda o: o["spec"]["containers"][0]["ports"]
            == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            id="ports-merge-by-containerPort",
        ),
        pytest.param(
            {"spec": {"containers": [{"name": "queue-proxy", "$patch": "delete"}]}},
            lambda o: [c["name"] for c in o["spec"]["containers"]] == ["app"],
            id="patch-delete-element",
        ),
        pytest.param(
            {"spec": {"volumes": [{"name": "v2", "emptyDir": {}}, {"$patch": "replace"}]}},
            lambda o: o["spec"]["volumes"] == [{"name": "v2", "emptyDir": {}}],
            id="patch-replace-list",
        ),
        pytest.param(
            {"metadata": {"labels": {"$patch": "replace", "c": "3"}}},
            lambda o: o["metadata"]["labels"] == {"c": "3"},
            id="patch-replace-map",
        ),
        pytest.param(
            {"metadata": {"labels": {"a": None, "c": "3"}}},
            lambda o: o["metadata"]["labels"] == {"b": "2", "c": "3"},
            id="map-merge-and-null-delete",
        ),
        pytest.param(
            {"spec": {"tolerations": [{"key": "k2"}]}},
            lambda o: o["spec"]["tolerations"] == [{"key": "k2"}],
            id="list-without-merge-key-replaces",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["y"]}},
            lambda o: o["metadata"]["finalizers"] == ["x", "y"],
            id="primitive-merge-list-unions",
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}},
            lambda o: o["metadata"]["finalizers"] == [],
            id="delete-from-primitive-list",
        ),
        pytest.param(
            {"spec": {"$setElementOrder/containers": [{"name": "app"}],
                      "containers": [{"name": "app", "image": "i:3"}]}},
            lambda o: o["spec"]["containers"][0]["image"] == "i:3"
            and "$setElementOrder/containers" not in o["spec"],
            id="set-element-order-stripped",
        ),
    ],
)
def test_strategic_merge_patch(patch: Any, check: Any) -> None:
    out = strategic_merge_patch(_POD, patch)
    assert check(out), out
    assert _POD["spec"]["containers"][0]["image"] == "i:1", "the target is not changed"
