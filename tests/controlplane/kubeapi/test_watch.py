"""List and watch: selectors, resourceVersions, bookmarks, 410 after compaction, fan-out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.controlplane.kubeapi.conftest import CMS, Api, cm, start_api, stop_api


class Stream:
    """An open watch: ``next()`` returns the next event, ``none()`` asserts silence."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.resp.content.readline(), timeout)
        assert line, "the stream ended"
        out: dict[str, Any] = json.loads(line)
        return out

    async def types_names(self, n: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(n):
            ev = await self.next()
            out.append((ev["type"], ev["object"]["metadata"].get("name", "")))
        return out

    async def ended(self, timeout: float = 3.0) -> bool:
        return await asyncio.wait_for(self.resp.content.readline(), timeout) == b""


async def watch(api: Api, path: str, **params: str) -> Stream:
    q = "&".join(f"{k}={v}" for k, v in {"watch": "1", **params}.items())
    resp = await api.session.get(f"{api.server.url}{path}?{q}", headers={
        "Authorization": f"Bearer {api.server.token}"})
    assert resp.status == 200, await resp.text()
    return Stream(resp)


@pytest.mark.parametrize(
    ("label_selector", "field_selector", "want"),
    [
        pytest.param("", "", ["a", "b", "c"], id="all"),
        pytest.param("app=x", "", ["a", "b"], id="label-equals"),
        pytest.param("app!=x", "", ["c"], id="label-not-equals-includes-missing"),
        pytest.param("app in (x,y),tier", "", ["b"], id="label-set-and-exists"),
        pytest.param("!tier", "", ["a", "c"], id="label-not-exists"),
        pytest.param("", "metadata.name=b", ["b"], id="field-name"),
        pytest.param("", "metadata.name!=b", ["a", "c"], id="field-name-not"),
        pytest.param("", "metadata.namespace=default", ["a", "b", "c"], id="field-namespace"),
        pytest.param("app=x", "metadata.name=a", ["a"], id="both"),
    ],
)
async def test_list_selectors(
    api: Api, label_selector: str, field_selector: str, want: list[str]
) -> None:
    await api.ok("POST", CMS, cm("c"))
    await api.ok("POST", CMS, cm("a", labels={"app": "x"}))
    await api.ok("POST", CMS, cm("b", labels={"app": "x", "tier": "web"}))
    q = f"?labelSelector={label_selector}&fieldSelector={field_selector}"
    out = await api.ok("GET", CMS + q)
    assert [o["metadata"]["name"] for o in out["items"]] == want
    assert out["kind"] == "ConfigMapList" and int(out["metadata"]["resourceVersion"]) > 0


async def test_list_all_namespaces_and_bad_selector(api: Api) -> None:
    await api.ok("POST", CMS, cm("a"))
    await api.ok("POST", "/api/v1/namespaces/knative-serving/configmaps", cm("b"))
    out = await api.ok("GET", "/api/v1/configmaps")
    assert sorted(o["metadata"]["name"] for o in out["items"]) == ["a", "b"]
    status, err = await api.call("GET", CMS + "?labelSelector=a%20in%20")
    assert (status, err["reason"]) == (400, "BadRequest")


async def test_watch_from_zero_then_changes(api: Api) -> None:
    await api.ok("POST", CMS, cm("a"))
    s = await watch(api, CMS, resourceVersion="0")
    assert await s.types_names(1) == [("ADDED", "a")]
    await api.ok("POST", CMS, cm("b"))
    await api.ok("PATCH", f"{CMS}/a", {"data": {"k": "v"}},
                 content_type="application/merge-patch+json")
    await api.ok("DELETE", f"{CMS}/b")
    assert await s.types_names(3) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    s.resp.close()


async def test_watch_from_a_resource_version_replays(api: Api) -> None:
    a = await api.ok("POST", CMS, cm("a"))
    await api.ok("POST", CMS, cm("b"))
    await api.ok("DELETE", f"{CMS}/a")
    s = await watch(api, CMS, resourceVersion=a["metadata"]["resourceVersion"])
    assert await s.types_names(2) == [("ADDED", "b"), ("DELETED", "a")]
    s.resp.close()


async def test_watch_label_selector_transitions(api: Api) -> None:
    await api.ok("POST", CMS, cm("a"))
    s = await watch(api, CMS, labelSelector="app=x")
    for labels in ({"app": "x"}, {"app": "x", "more": "1"}, {"app": "y"}):
        await api.ok("PATCH", f"{CMS}/a", {"metadata": {"labels": labels}},
                     content_type="application/merge-patch+json")
    assert await s.types_names(3) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    s.resp.close()


async def test_watch_one_object_by_field_selector(api: Api) -> None:
    """``kubectl delete --wait`` watches the one name it deletes."""
    await api.ok("POST", CMS, cm("a"))
    await api.ok("POST", CMS, cm("b"))
    s = await watch(api, CMS, fieldSelector="metadata.name=a")
    assert await s.types_names(1) == [("ADDED", "a")]
    await api.ok("DELETE", f"{CMS}/b")
    await api.ok("DELETE", f"{CMS}/a")
    assert await s.types_names(1) == [("DELETED", "a")]
    s.resp.close()


async def test_watch_timeout_ends_the_stream(api: Api) -> None:
    s = await watch(api, CMS, timeoutSeconds="0.2")
    assert await s.ended()


async def test_bookmarks_carry_only_the_resource_version(tmp_path: Path) -> None:
    api = await start_api(tmp_path, bookmark_interval_s=0.1)
    try:
        await api.ok("POST", CMS, cm("a"))
        s = await watch(api, CMS, allowWatchBookmarks="true", resourceVersion="0")
        assert await s.types_names(1) == [("ADDED", "a")]
        ev = await s.next()
        assert ev == {"type": "BOOKMARK", "object": {
            "kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"resourceVersion": str(api.server.store.rv)}}}
        s.resp.close()
        plain = await watch(api, CMS, resourceVersion=str(api.server.store.rv))
        with pytest.raises(TimeoutError):
            await plain.next(timeout=0.4)
        plain.resp.close()
    finally:
        await stop_api(api)


async def test_watch_from_a_compacted_revision_is_410(tmp_path: Path) -> None:
    api = await start_api(tmp_path, history_events=3)
    try:
        first = await api.ok("POST", CMS, cm("a"))
        for i in range(4):
            await api.ok("POST", CMS, cm(f"b{i}"))
        s = await watch(api, CMS, resourceVersion=first["metadata"]["resourceVersion"])
        ev = await s.next()
        assert ev["type"] == "ERROR"
        assert (ev["object"]["kind"], ev["object"]["code"], ev["object"]["reason"]) == (
            "Status", 410, "Expired")
        assert await s.ended()
    finally:
        await stop_api(api)


async def test_a_slow_watcher_is_closed_not_buffered(api: Api) -> None:
    """Three watchers, one with a queue of 5 that a burst of 20 writes (made with no await
    in between, so no stream drains) overflows: that one is closed and its connection
    aborted, the other two see all 20 events."""
    streams = [await watch(api, CMS) for _ in range(3)]
    await asyncio.sleep(0.05)
    watchers = api.server.hub.watchers("configmaps")
    assert len(watchers) == 3
    watchers[0].max_queue = 5
    kind = api.server.registry.lookup("", "v1", "configmaps")
    assert kind is not None
    for i in range(20):
        api.server.rest.create(kind, "default", cm(f"o{i}"))
    assert watchers[0].closed and watchers[0].overflowed
    assert not watchers[1].closed and len(watchers[1].lines) == 20
    counts = []
    for s in streams:
        n = 0
        while n < 20:
            try:
                line = await asyncio.wait_for(s.resp.content.readline(), 3)
            except aiohttp.ClientError:
                break  # the overflowed watch's connection is aborted
            if not line:
                break
            n += 1
        counts.append(n)
        s.resp.close()
    assert sorted(counts) == [0, 20, 20]


async def test_a_big_initial_listing_does_not_overflow(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's bound is for changes: a watcher bounded at 10 takes a listing of 30, and
    its bound becomes the listing plus 10."""
    import controlplane.kubeapi.watch as watch_module

    monkeypatch.setattr(watch_module, "DEFAULT_MAX_QUEUE", 10)
    kind = api.server.registry.lookup("", "v1", "configmaps")
    assert kind is not None
    for i in range(30):
        api.server.rest.create(kind, "default", cm(f"o{i:02d}"))
    s = await watch(api, CMS)
    names = [n for _, n in await s.types_names(30)]
    assert names == [f"o{i:02d}" for i in range(30)]
    (w,) = api.server.hub.watchers("configmaps")
    assert w.max_queue == 40 and not w.closed
    s.resp.close()
