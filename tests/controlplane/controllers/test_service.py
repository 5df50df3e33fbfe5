"""The whole chain on FakeCluster: Service → Configuration + Route → Revision → Deployment + PA,
the statuses flowing back up, a new template, and convergence after lost events and conflicts."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from controlplane.controllers.service import make_configuration, make_route, service_status
from shared.kube.client import Conflict
from shared.kube.resources import (
    CONFIGURATIONS,
    DEPLOYMENTS,
    ENDPOINTS,
    KSERVICES,
    PODAUTOSCALERS,
    REVISIONS,
    ROUTES,
    SERVERLESSSERVICES,
    SERVICES,
    Obj,
)

from .harness import NOW_TEXT, Env, hello, hello_service, running


def conditions(obj: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in obj["status"]["conditions"]}


async def serve_ready(env: Env, rev: str, pod: str) -> None:
    """What the autoscaler and the kubelet do for a revision that comes up."""
    await env.sks(rev)
    await env.pa_ready(rev)
    await env.put_pod(env.pod(rev, pod))


async def test_hello_makes_every_child_with_knatives_names_labels_and_owners() -> None:
    async with running() as env:
        svc = await hello(env)
        uid = svc["metadata"]["uid"]
        config = env.get(CONFIGURATIONS, "hello")
        route = env.get(ROUTES, "hello")
        rev = env.get(REVISIONS, "hello-00001")
        owner = {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "name": "hello",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        for child in (config, route):
            assert child["metadata"]["ownerReferences"] == [owner]
            assert child["metadata"]["labels"] == {
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/serviceUID": uid,
            }
        assert config["spec"]["template"] == svc["spec"]["template"]
        assert route["spec"]["traffic"] == [
            {"latestRevision": True, "percent": 100, "configurationName": "hello"}
        ]
        labels = rev["metadata"]["labels"]
        assert labels["serving.knative.dev/configuration"] == "hello"
        assert labels["serving.knative.dev/configurationGeneration"] == "1"
        assert labels["serving.knative.dev/configurationUID"] == config["metadata"]["uid"]
        assert labels["serving.knative.dev/service"] == "hello"
        assert labels["serving.knative.dev/routingState"] == "active"  # the route holds it
        assert rev["metadata"]["annotations"]["serving.knative.dev/routes"] == "hello"
        assert rev["spec"] == svc["spec"]["template"]["spec"]
        assert env.get(DEPLOYMENTS, "hello-00001-deployment")["spec"]["replicas"] == 1
        assert env.get(PODAUTOSCALERS, "hello-00001")["spec"]["reachability"] == "Reachable"
        status = env.get(KSERVICES, "hello")["status"]
        assert status["url"] == "http://hello.default.localhost"
        assert status["address"] == {"url": "http://hello.default.svc.cluster.local"}
        assert status["latestCreatedRevisionName"] == "hello-00001"
        assert "latestReadyRevisionName" not in status
        assert conditions(env.get(KSERVICES, "hello")) == {
            "ConfigurationsReady": ("Unknown", ""),
            "RoutesReady": ("Unknown", "RevisionMissing"),
            "Ready": ("Unknown", ""),
        }


async def test_service_turns_ready_with_its_first_revision_and_points_traffic_at_it() -> None:
    async with running() as env:
        await hello(env)
        await env.activators(50000)
        await serve_ready(env, "hello-00001", "hello-00001-deployment-a")
        svc = env.get(KSERVICES, "hello")
        assert conditions(svc) == {
            "ConfigurationsReady": ("True", ""),
            "RoutesReady": ("True", ""),
            "Ready": ("True", ""),
        }
        assert svc["status"]["latestReadyRevisionName"] == "hello-00001"
        assert svc["status"]["traffic"] == [
            {"revisionName": "hello-00001", "latestRevision": True, "percent": 100}
        ]
        assert svc["status"]["observedGeneration"] == 1
        assert all(c["lastTransitionTime"] == NOW_TEXT for c in svc["status"]["conditions"])
        # The SKS made both Services, and the public Endpoints serve the pod (Serve mode).
        assert env.get(SERVICES, "hello-00001-private")["spec"]["selector"] == {
            "serving.knative.dev/revisionUID": env.get(REVISIONS, "hello-00001")["metadata"]["uid"]
        }
        public = env.get(ENDPOINTS, "hello-00001")
        assert [p["name"] for s in public["subsets"] for p in s["ports"]] == ["http"]


async def test_a_new_template_makes_the_next_revision_and_traffic_follows_once_it_is_ready() -> (
    None
):
    async with running() as env:
        await hello(env)
        await env.activators(50000)
        await serve_ready(env, "hello-00001", "p1")
        await env.apply(KSERVICES, hello_service(containerConcurrency=10))
        assert env.get(CONFIGURATIONS, "hello")["metadata"]["generation"] == 2
        rev2 = env.get(REVISIONS, "hello-00002")
        assert rev2["metadata"]["labels"]["serving.knative.dev/configurationGeneration"] == "2"
        assert rev2["spec"]["containerConcurrency"] == 10
        svc = env.get(KSERVICES, "hello")
        # Until hello-00002 is ready, traffic stays on hello-00001.
        assert svc["status"]["latestCreatedRevisionName"] == "hello-00002"
        assert svc["status"]["latestReadyRevisionName"] == "hello-00001"
        assert svc["status"]["traffic"][0]["revisionName"] == "hello-00001"
        assert conditions(svc)["ConfigurationsReady"] == ("Unknown", "")
        await serve_ready(env, "hello-00002", "p2")
        svc = env.get(KSERVICES, "hello")
        assert svc["status"]["traffic"] == [
            {"revisionName": "hello-00002", "latestRevision": True, "percent": 100}
        ]
        assert conditions(svc)["Ready"] == ("True", "")
        # hello-00001 is no longer routed: reserve, and its PodAutoscaler Unreachable; it is
        # still Ready (a revision at zero pods stays Ready, as Knative's).
        old = env.get(REVISIONS, "hello-00001")
        assert old["metadata"]["labels"]["serving.knative.dev/routingState"] == "reserve"
        assert "serving.knative.dev/routes" not in old["metadata"]["annotations"]
        assert env.get(PODAUTOSCALERS, "hello-00001")["spec"]["reachability"] == "Unreachable"
        assert conditions(old)["Ready"] == ("True", "")


async def test_a_configuration_the_service_does_not_own_is_reported_not_taken() -> None:
    async with running() as env:
        env.cluster.put(
            {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Configuration",
                "metadata": {"name": "hello", "namespace": "default"},
                "spec": {"template": {"spec": {"containers": [{"image": "other"}]}}},
            },
            CONFIGURATIONS,
        )
        await hello(env)
        assert env.get(CONFIGURATIONS, "hello")["spec"]["template"]["spec"]["containers"] == [
            {"image": "other"}
        ]
        status, reason = conditions(env.get(KSERVICES, "hello"))["ConfigurationsReady"]
        assert (status, reason) == ("False", "NotOwned")
        ready = env.get(KSERVICES, "hello")["status"]["conditions"]
        message = next(c["message"] for c in ready if c["type"] == "Ready")
        assert message == 'There is an existing Configuration "hello" that we do not own.'


@pytest.mark.parametrize(
    ("resource", "name"),
    [
        pytest.param(CONFIGURATIONS, "hello", id="configuration"),
        pytest.param(ROUTES, "hello", id="route"),
        pytest.param(DEPLOYMENTS, "hello-00001-deployment", id="deployment"),
        pytest.param(SERVICES, "hello-00001-private", id="private-service"),
        pytest.param(ENDPOINTS, "hello-00001", id="public-endpoints"),
        pytest.param(ENDPOINTS, "hello-00001-private", id="private-endpoints"),
    ],
)
async def test_a_deleted_output_comes_back(resource: Any, name: str) -> None:
    async with running() as env:
        await hello(env)
        await env.activators(50000)
        await serve_ready(env, "hello-00001", "p1")
        before = env.get(resource, name)
        await env.cluster.delete(resource, "default", name)
        await env.cluster.settle()
        after = env.get(resource, name)
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
        for key in ("spec", "subsets"):
            if key in before and resource != CONFIGURATIONS:
                assert after.get(key) == before[key]


async def test_a_lost_event_converges_on_the_next_one() -> None:
    """Reconcilers read the cache, not the event: a Route whose status was written behind the
    controllers' back is put right by any later event for it."""
    async with running() as env:
        await hello(env)
        route = env.get(ROUTES, "hello")
        bogus = copy.deepcopy(route)
        bogus["status"]["url"] = "http://elsewhere"
        await env.cluster.replace_status(ROUTES, "default", "hello", bogus)
        await env.cluster.settle()
        assert env.get(ROUTES, "hello")["status"]["url"] == "http://hello.default.localhost"


@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        pytest.param("update/status", KSERVICES, id="service-status"),
        pytest.param("update/status", REVISIONS, id="revision-status"),
        pytest.param("create", DEPLOYMENTS, id="deployment-create"),
        pytest.param("update/status", SERVERLESSSERVICES, id="sks-status"),
    ],
)
async def test_conflicts_are_retried(verb: str, resource: Any) -> None:
    async with running() as env:
        for _ in range(2):  # the status write retries once itself; the second reaches the queue
            env.cluster.fail_next(verb, Conflict(409, "Conflict", "stale"), resource)
        await hello(env)
        await env.activators(50000)
        await converge(env)
        await serve_ready(env, "hello-00001", "p1")
        await converge(env)
        assert conditions(env.get(KSERVICES, "hello"))["Ready"] == ("True", "")
        assert env.get(SERVERLESSSERVICES, "hello-00001")["status"]["privateServiceName"] == (
            "hello-00001-private"
        )


async def test_no_write_when_nothing_changed() -> None:
    async with running() as env:
        await hello(env)
        await env.activators(50000)
        await serve_ready(env, "hello-00001", "p1")
        writes = len(env.cluster.writes)
        for controller in env.controllers.controllers():
            for obj in env.cluster.objects(controller_resource(env, controller.name)):
                controller.add((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
        await env.cluster.settle()
        await asyncio.sleep(0.01)
        assert env.cluster.writes[writes:] == []


async def converge(env: Env) -> None:
    """Let retries wait out their backoff (5 ms, then 10 ms) and run."""
    for _ in range(5):
        await asyncio.sleep(0.02)
        await env.cluster.settle()


def controller_resource(env: Env, name: str) -> Any:
    return next(r.resource for r in env.controllers.reconcilers if r.name == name)


def svc_obj(**spec: Any) -> Obj:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "u-1",
            "generation": 3,
            "labels": {"team": "a"},
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("traffic", "want"),
    [
        pytest.param(
            [{"latestRevision": True, "percent": 100}],
            [{"latestRevision": True, "percent": 100, "configurationName": "s"}],
            id="latest-follows-own-configuration",
        ),
        pytest.param(
            [
                {"latestRevision": True, "percent": 80},
                {"revisionName": "s-00001", "percent": 20, "tag": "old", "latestRevision": False},
            ],
            [
                {"latestRevision": True, "percent": 80, "configurationName": "s"},
                {"revisionName": "s-00001", "percent": 20, "tag": "old", "latestRevision": False},
            ],
            id="pinned-revision-kept",
        ),
    ],
)
def test_make_route(traffic: list[Obj], want: list[Obj]) -> None:
    route = make_route(svc_obj(traffic=traffic))
    assert route["spec"]["traffic"] == want
    assert route["metadata"]["annotations"] == {"note": "kept"}
    assert route["metadata"]["labels"] == {
        "team": "a",
        "serving.knative.dev/service": "s",
        "serving.knative.dev/serviceUID": "u-1",
    }


def test_make_configuration_copies_the_template() -> None:
    template = {"metadata": {"name": "s-blue"}, "spec": {"containers": [{"image": "x"}]}}
    config = make_configuration(svc_obj(template=template))
    assert config["spec"] == {"template": template}
    assert config["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def child(generation: int, observed: int, ready: str, **status: Any) -> Obj:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": ready}],
            **status,
        },
    }


@pytest.mark.parametrize(
    ("config", "route", "want"),
    [
        pytest.param(
            child(2, 1, "True"),
            child(1, 1, "True"),
            {
                "ConfigurationsReady": ("Unknown", "OutOfDate"),
                "RoutesReady": ("True", ""),
                "Ready": ("Unknown", "OutOfDate"),
            },
            id="configuration-out-of-date",
        ),
        pytest.param(
            child(1, 1, "True", latestReadyRevisionName="s-00002"),
            child(1, 1, "True", traffic=[{"revisionName": "s-00001", "latestRevision": True}]),
            {
                "ConfigurationsReady": ("True", ""),
                "RoutesReady": ("Unknown", "TrafficNotMigrated"),
                "Ready": ("Unknown", "TrafficNotMigrated"),
            },
            id="traffic-not-migrated",
        ),
        pytest.param(
            child(1, 1, "False"),
            child(1, 1, "True"),
            {
                "ConfigurationsReady": ("False", ""),
                "RoutesReady": ("True", ""),
                "Ready": ("False", ""),
            },
            id="configuration-failed",
        ),
    ],
)
def test_service_status(config: Obj, route: Obj, want: dict[str, tuple[str, str]]) -> None:
    svc = svc_obj()
    svc["status"] = service_status(svc, config, route, NOW_TEXT)
    assert conditions(svc) == want
    assert svc["status"]["observedGeneration"] == 3


async def test_an_object_of_another_kind_in_an_informer_is_ignored() -> None:
    """A watch that replays another kind's events must not make a Pod a Revision."""
    async with running() as env:
        env.cluster.put(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}},
            REVISIONS,
        )
        await env.cluster.settle()
        assert env.cluster.objects(DEPLOYMENTS) == []
        assert env.cluster.writes == []


async def test_deleting_the_service_leaves_nothing_behind() -> None:
    async with running() as env:
        await hello(env)
        await env.activators(50000)
        await serve_ready(env, "hello-00001", "p1")
        await env.cluster.delete(KSERVICES, "default", "hello")
        await env.cluster.settle()
        await converge(env)
        for resource in (
            CONFIGURATIONS,
            ROUTES,
            REVISIONS,
            DEPLOYMENTS,
            PODAUTOSCALERS,
            SERVERLESSSERVICES,
            SERVICES,
        ):
            assert env.cluster.objects(resource, "default") == [], resource
        # The private Endpoints go with their Service (Kubernetes' endpoints controller).
        assert [e["metadata"]["name"] for e in env.cluster.objects(ENDPOINTS, "default")] == []
        # Nothing keeps failing (a route patching revisions that went, say).
        assert all("failing=0" in repr(c) for c in env.controllers.controllers())
