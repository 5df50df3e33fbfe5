"""KubeInformer against a real HTTP API server that cuts, expires and drops its watches.

Every case checks convergence the way a consumer sees it: a view built only from handler
events, and the informer's cache, both equal the server's objects at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from kubernetes_asyncio.client import ApiClient

from shared.kube.informer import EventType
from shared.kube.kubeclient import ApiKubeClient
from shared.kube.kubeinformer import Backoff, InformerOptions, KubeInformer, KubeInformerFactory
from shared.kube.labels import parse_selector
from shared.kube.resources import PODAUTOSCALERS, Obj, key_of
from tests.shared.kube.apiserver import FaultyApiServer

NS = "default"
OPTS = InformerOptions(
    read_idle_timeout_s=1.0,
    backoff_initial_s=0.05,
    backoff_max_s=1.0,
    healthy_s=0.5,
)


def pa(name: str, ns: str = NS, **labels: str) -> Obj:
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containerConcurrency": 0},
    }


class View:
    """What a consumer knows from handler events alone: key -> resourceVersion."""

    def __init__(self) -> None:
        self.rvs: dict[tuple[str, str], str] = {}
        self.events: list[tuple[EventType, str]] = []

    def __call__(self, event: EventType, obj: Obj) -> None:
        self.events.append((event, obj["metadata"]["name"]))
        if event is EventType.DELETED:
            self.rvs.pop(key_of(obj), None)
        else:
            self.rvs[key_of(obj)] = obj["metadata"]["resourceVersion"]


def truth(
    server: FaultyApiServer, selector: str | None = None, namespace: str | None = None
) -> dict[tuple[str, str], str]:
    sel = parse_selector(selector)
    return {
        key_of(o): o["metadata"]["resourceVersion"]
        for o in server.cluster.objects(PODAUTOSCALERS, namespace)
        if sel.matches(o["metadata"].get("labels"))
    }


async def converge(
    inf: KubeInformer, view: View, server: FaultyApiServer, timeout_s: float = 10
) -> None:
    want: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        want = truth(server, inf._selector, inf._namespace)
        cache = {key_of(o): o["metadata"]["resourceVersion"] for o in inf.list()}
        if view.rvs == want and cache == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not converged: view={view.rvs} cache={inf.list()} want={want}")


async def change(kc: ApiKubeClient) -> None:
    """A create, a modify and a delete of the seeded objects."""
    await kc.create(PODAUTOSCALERS, NS, pa("c"))
    await kc.patch(PODAUTOSCALERS, NS, "a", {"spec": {"containerConcurrency": 5}})
    await kc.delete(PODAUTOSCALERS, NS, "b")


FAULTS = [
    pytest.param([], 1, id="no-fault"),
    pytest.param(["cut:1"], 1, id="watch-cut-mid-stream"),
    pytest.param(["cut:0", "cut:0", "cut:0"], 1, id="watch-cut-repeatedly"),
    pytest.param(["gone-event"], 2, id="410-as-error-event"),
    pytest.param(["gone-status"], 2, id="410-as-http-status"),
    pytest.param(["bookmarks-only", "bookmarks-only"], 1, id="bookmark-only-streams"),
    pytest.param(["silent:60"], 1, id="silent-watch-read-timeout"),
]


@pytest.mark.parametrize(("faults", "lists"), FAULTS)
async def test_converges_under_watch_faults(
    server: FaultyApiServer, api: ApiClient, faults: list[str], lists: int
) -> None:
    server.cluster.put(pa("a"))
    server.cluster.put(pa("b"))
    server.watch_faults.extend(faults)
    factory = KubeInformerFactory(api, OPTS)
    inf = factory.informer(PODAUTOSCALERS)
    view = View()
    inf.add_handler(view)
    await factory.start()
    try:
        await asyncio.wait_for(inf.wait_synced(), 5)
        assert view.rvs == truth(server)
        await change(ApiKubeClient(api))
        await converge(inf, view, server)
        assert inf.lists == lists
        # After a 410 the relist alone can converge the view before the informer's next watch
        # request reaches the server (a CI run saw one watch so far): wait for that request.
        deadline = time.monotonic() + 5
        while len(server.watch_requests) < len(faults) + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(server.watch_requests) >= len(faults) + 1
        # The watch resumes from where it was: never from "" after the first list.
        assert all(q.get("resourceVersion") for q in server.watch_requests)
        assert all(q["allowWatchBookmarks"] == "true" for q in server.watch_requests)
        assert all(300 <= int(q["timeoutSeconds"]) <= 600 for q in server.watch_requests)
    finally:
        await factory.stop()


async def test_bookmarks_advance_the_rv(server: FaultyApiServer, api: ApiClient) -> None:
    server.cluster.put(pa("a"))
    factory = KubeInformerFactory(api, OPTS)
    inf = factory.informer(PODAUTOSCALERS, namespace="elsewhere")
    await factory.start()
    try:
        await inf.wait_synced()
        listed_rv = inf.resource_version
        server.cluster.put(pa("b"))  # not in the watched namespace: only a bookmark moves
        deadline = time.monotonic() + 5
        while inf.resource_version == listed_rv and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert int(inf.resource_version) > int(listed_rv)
        assert inf.list() == []
    finally:
        await factory.stop()


async def test_payload_error_logged_once(
    server: FaultyApiServer, api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.cluster.put(pa("a"))
    server.watch_faults.extend(["cut:0"] * 4)
    factory = KubeInformerFactory(api, OPTS)
    inf = factory.informer(PODAUTOSCALERS)
    view = View()
    inf.add_handler(view)
    with caplog.at_level(logging.INFO, logger="shared.kube.kubeinformer"):
        await factory.start()
        try:
            await inf.wait_synced()
            await change(ApiKubeClient(api))
            server.cluster.put(pa("b"))
            await converge(inf, view, server)
        finally:
            await factory.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ClientPayloadError" in warnings[0], warnings


async def test_api_down_10s_then_back_with_changes(server: FaultyApiServer, api: ApiClient) -> None:
    """The API goes away for 10 s; meanwhile objects change and history is compacted, so the
    resumed watch gets 410 and the relist's diff alone must bring the consumer to the truth."""
    for n in ("a", "b", "keep"):
        server.cluster.put(pa(n, app="x"))
    server.cluster.put(pa("other", app="y"))
    factory = KubeInformerFactory(api, OPTS)
    inf = factory.informer(PODAUTOSCALERS, label_selector="app=x")
    view = View()
    inf.add_handler(view)
    await factory.start()
    try:
        await inf.wait_synced()
        assert set(view.rvs) == {(NS, "a"), (NS, "b"), (NS, "keep")}
        await server.down()
        await asyncio.sleep(0.5)
        c = server.cluster
        await c.create(PODAUTOSCALERS, NS, pa("new", app="x"))
        await c.patch(PODAUTOSCALERS, NS, "a", {"spec": {"containerConcurrency": 9}})
        await c.delete(PODAUTOSCALERS, NS, "b")
        await c.patch(PODAUTOSCALERS, NS, "other", {"metadata": {"labels": {"app": "x"}}})
        await c.settle()
        server.compact()
        await asyncio.sleep(9.5)
        lists_while_down = inf.lists
        await server.up()
        await converge(inf, view, server, timeout_s=5)
        assert lists_while_down == 1 and inf.lists == 2
        assert set(view.rvs) == {(NS, "a"), (NS, "keep"), (NS, "new"), (NS, "other")}
        assert (EventType.DELETED, "b") in view.events
    finally:
        await factory.stop()


async def test_backs_off_without_spinning(server: FaultyApiServer, api: ApiClient) -> None:
    """The list fails for 2 s: a handful of attempts, not a hot loop."""
    server.token = "wrong"  # every request gets 401
    opts = InformerOptions(backoff_initial_s=0.1, backoff_max_s=1.0)
    factory = KubeInformerFactory(api, opts)
    inf = factory.informer(PODAUTOSCALERS)
    await factory.start()
    await asyncio.sleep(2)
    attempts = len(server.requests)
    assert 2 <= attempts <= 8 and not inf.synced  # 0.1, 0.2, 0.4, 0.8 s... not a hot loop
    server.token = "test-token"
    await asyncio.wait_for(inf.wait_synced(), 5)
    await factory.stop()


async def test_handler_error_does_not_stop_informer(
    server: FaultyApiServer, api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    factory = KubeInformerFactory(api, OPTS)
    inf = factory.informer(PODAUTOSCALERS)

    def broken(event: EventType, obj: Obj) -> None:
        raise RuntimeError("handler bug")

    inf.add_handler(broken)
    view = View()
    inf.add_handler(view)
    await factory.start()
    try:
        await inf.wait_synced()
        with caplog.at_level(logging.ERROR, logger="shared.kube.kubeinformer"):
            await ApiKubeClient(api).create(PODAUTOSCALERS, NS, pa("z"))
            await converge(inf, view, server)
        assert any("handler failed" in r.getMessage() for r in caplog.records)
    finally:
        await factory.stop()


def test_factory_shares_informers_and_backoff_grows() -> None:
    b = Backoff(0.2, 30, rand=lambda: 0.0)
    assert [b.next() for _ in range(10)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]
    b.reset()
    assert b.next() == 0.2
    j = Backoff(1, 30, rand=lambda: 1.0)
    assert j.next() == 1.5 and j.next() == 3.0
    with pytest.raises(ValueError):
        Backoff(0, 1)


async def test_factory_shares(api: ApiClient) -> None:
    f = KubeInformerFactory(api, OPTS)
    a = f.informer(PODAUTOSCALERS, label_selector="x=y")
    assert f.informer(PODAUTOSCALERS, label_selector="x=y") is a
    assert f.informer(PODAUTOSCALERS) is not a
    assert f.informer(PODAUTOSCALERS, label_selector="") is f.informer(PODAUTOSCALERS)


async def test_random_faults_soak(server: FaultyApiServer, api: ApiClient) -> None:
    """150 random writes while every watch meets a random fault (seeded, bounded): the
    consumer's view ends equal to the server, through selectors entering and leaving."""
    rng = random.Random(8)
    faults = ["cut:0", "cut:1", "cut:3", "gone-event", "gone-status", "bookmarks-only", ""]
    server.watch_faults.extend(rng.choice(faults) for _ in range(40))
    factory = KubeInformerFactory(api, OPTS)
    everything = factory.informer(PODAUTOSCALERS)
    selected = factory.informer(PODAUTOSCALERS, namespace=NS, label_selector="app=x")
    views = [View(), View()]
    everything.add_handler(views[0])
    selected.add_handler(views[1])
    kc = ApiKubeClient(api)
    await factory.start()
    try:
        await asyncio.wait_for(factory.wait_synced(), 5)
        for _ in range(150):
            name = f"pa-{rng.randrange(12)}"
            ns = rng.choice([NS, NS, "other"])
            exists = server.cluster.peek(PODAUTOSCALERS, ns, name) is not None
            op = rng.random()
            if not exists:
                await kc.create(PODAUTOSCALERS, ns, pa(name, ns, app=rng.choice("xy")))
            elif op < 0.3:
                await kc.delete(PODAUTOSCALERS, ns, name)
            elif op < 0.6:
                labels = {"app": rng.choice("xy")}
                await kc.patch(PODAUTOSCALERS, ns, name, {"metadata": {"labels": labels}})
            else:
                spec = {"containerConcurrency": rng.randrange(100)}
                await kc.patch(PODAUTOSCALERS, ns, name, {"spec": spec})
            await asyncio.sleep(rng.random() * 0.03)
        await converge(everything, views[0], server, timeout_s=20)
        await converge(selected, views[1], server, timeout_s=20)
        assert len(server.watch_faults) <= 40 - 10  # the faults really happened
    finally:
        await factory.stop()
