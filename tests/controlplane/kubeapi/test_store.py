"""The store: one revision counter, the bounded history (410 past it), SQLite restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.kubeapi.store import Store


def _obj(name: str, ns: str = "default", **extra: object) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": ns}, **extra}


def test_revisions_order_every_change() -> None:
    s = Store(None)
    a = s.put("configmaps", _obj("a"))
    b = s.put("pods", _obj("b"))
    a2 = s.put("configmaps", _obj("a", data={"k": "v"}))
    gone = s.remove("pods", "default", "b")
    assert [a.rv, b.rv, a2.rv] == [1, 2, 3]
    assert [a.type, a2.type] == ["ADDED", "MODIFIED"]
    assert gone is not None and (gone.type, gone.rv) == ("DELETED", 4)
    assert gone.obj["metadata"]["resourceVersion"] == "4"
    assert s.rv == 4 and s.remove("pods", "default", "b") is None


@pytest.mark.parametrize(
    ("history", "writes", "since", "want"),
    [
        pytest.param(10, 5, 0, [1, 2, 3, 4, 5], id="all-kept"),
        pytest.param(10, 5, 3, [4, 5], id="from-the-middle"),
        pytest.param(10, 5, 5, [], id="up-to-date"),
        pytest.param(3, 5, 2, [3, 4, 5], id="oldest-kept-boundary"),
        pytest.param(3, 5, 1, None, id="compacted-is-gone"),
    ],
)
def test_since(history: int, writes: int, since: int, want: list[int] | None) -> None:
    s = Store(None, history_events=history)
    for i in range(writes):
        s.put("configmaps", _obj(f"o{i}"))
    events = s.since(since)
    assert (None if events is None else [e.rv for e in events]) == want


def test_restart_resumes_objects_and_counter_but_not_history(tmp_path: Path) -> None:
    path = tmp_path / "kube.sqlite3"
    s = Store(path)
    s.put("configmaps", _obj("a", data={"k": "1"}))
    s.put("configmaps", _obj("b"))
    s.remove("configmaps", "default", "b")
    s.put("namespaces", {"metadata": {"name": "ns1"}})
    s.close()
    s2 = Store(path)
    assert s2.rv == 4
    assert s2.get("configmaps", "default", "a") == {
        "metadata": {"name": "a", "namespace": "default", "resourceVersion": "1"},
        "data": {"k": "1"},
    }
    assert s2.get("configmaps", "default", "b") is None
    assert s2.get("namespaces", "", "ns1") is not None
    assert s2.since(3) is None, "history starts empty: older revisions are Gone"
    assert s2.since(4) == []
    assert s2.put("configmaps", _obj("c")).rv == 5
    s2.close()


def test_owner_index_follows_writes_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "kube.sqlite3"
    s = Store(path)
    ref = {"uid": "u1", "kind": "Revision", "name": "r"}
    s.put("deployments.apps", {"metadata": {"name": "d", "namespace": "default",
                                            "ownerReferences": [ref]}})
    s.put("pods", {"metadata": {"name": "p", "namespace": "default",
                                "ownerReferences": [ref, {"uid": "u2"}]}})
    assert s.owned_by("u1") == [("deployments.apps", "default", "d"), ("pods", "default", "p")]
    s.put("pods", {"metadata": {"name": "p", "namespace": "default",
                                "ownerReferences": [{"uid": "u2"}]}})
    assert s.owned_by("u1") == [("deployments.apps", "default", "d")]
    s.close()
    s2 = Store(path)
    assert s2.owned_by("u1") == [("deployments.apps", "default", "d")]
    assert s2.owned_by("u2") == [("pods", "default", "p")]
    s2.remove("pods", "default", "p")
    assert s2.owned_by("u2") == []
    s2.close()
