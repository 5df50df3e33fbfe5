"""The Route's resolved traffic, its conditions, and the labeler's routing state."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.controllers.route import route_status, routing_patches
from shared.kube.resources import KSERVICES, PODAUTOSCALERS, REVISIONS, ROUTES, Obj

from .harness import NOW_TEXT, Env, hello, hello_service, running


def config(name: str, latest_ready: str = "", ready: str = "Unknown", created: str = "") -> Obj:
    status: Obj = {"conditions": [{"type": "Ready", "status": ready}]}
    if latest_ready:
        status["latestReadyRevisionName"] = latest_ready
    if created:
        status["latestCreatedRevisionName"] = created
    return {"metadata": {"name": name}, "status": status}


def rev(name: str, ready: str = "True", configuration: str = "hello", service: str = "") -> Obj:
    labels = {"serving.knative.dev/configuration": configuration}
    if service:
        labels["serving.knative.dev/service"] = service
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def route(*traffic: Obj, service: str = "") -> Obj:
    labels = {"serving.knative.dev/service": service} if service else {}
    return {
        "metadata": {"name": "front", "namespace": "ns", "generation": 2, "labels": labels},
        "spec": {"traffic": list(traffic)},
        "status": {"traffic": [{"revisionName": "old", "percent": 100}]},
    }


CONFIGS = [config("hello", "hello-00002", "True")]
REVS = [rev("hello-00001"), rev("hello-00002"), rev("hello-00003", "Unknown")]


def resolve(r: Obj, configs: list[Obj] = CONFIGS, revs: list[Obj] = REVS) -> Obj:
    status, _, _ = route_status(r, configs, revs, NOW_TEXT, domain="localhost", cluster_domain="cl")
    return status


def ready(status: Obj) -> tuple[str, str, str]:
    c = next(c for c in status["conditions"] if c["type"] == "AllTrafficAssigned")
    return c["status"], c.get("reason", ""), c.get("message", "")


def test_split_80_20_with_a_tag() -> None:
    status = resolve(
        route(
            {"configurationName": "hello", "percent": 80},
            {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
        )
    )
    assert status["traffic"] == [
        {"revisionName": "hello-00002", "latestRevision": True, "percent": 80},
        {
            "tag": "old",
            "revisionName": "hello-00001",
            "latestRevision": False,
            "percent": 20,
            "url": "http://old-front.ns.localhost",
        },
    ]
    assert status["url"] == "http://front.ns.localhost"
    assert status["address"] == {"url": "http://front.ns.svc.cl"}
    assert status["observedGeneration"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "AllTrafficAssigned": "True",
        "IngressReady": "True",
        "Ready": "True",
    }


@pytest.mark.parametrize(
    ("r", "configs", "revs", "want"),
    [
        pytest.param(
            route({"configurationName": "hello", "percent": 100}),
            [config("hello")],
            [],
            (
                "Unknown",
                "RevisionMissing",
                'Configuration "hello" is waiting for a Revision to become ready.',
            ),
            id="no-ready-revision-yet",
        ),
        pytest.param(
            route({"configurationName": "hello", "percent": 100}),
            [config("hello", ready="False")],
            [],
            ("False", "RevisionMissing", 'Configuration "hello" does not have any ready Revision.'),
            id="configuration-failed",
        ),
        pytest.param(
            route({"revisionName": "hello-00003", "percent": 100}),
            CONFIGS,
            REVS,
            ("Unknown", "RevisionMissing", 'Revision "hello-00003" is not yet ready.'),
            id="pinned-revision-not-ready",
        ),
        pytest.param(
            route({"revisionName": "nope", "percent": 100}),
            CONFIGS,
            REVS,
            ("False", "RevisionMissing", 'Revision "nope" referenced in traffic not found.'),
            id="missing-revision",
        ),
        pytest.param(
            route({"configurationName": "gone", "percent": 100}),
            CONFIGS,
            REVS,
            (
                "False",
                "ConfigurationMissing",
                'Configuration "gone" referenced in traffic not found.',
            ),
            id="missing-configuration",
        ),
        pytest.param(
            route({"revisionName": "hello-00001", "percent": 100}, service="other"),
            CONFIGS,
            [rev("hello-00001", service="hello")],
            (
                "False",
                "RevisionNotOwned",
                'Revision "hello-00001" belongs to Service "hello", not Service "other".',
            ),
            id="revision-of-another-service",
        ),
    ],
)
def test_traffic_not_assigned(
    r: Obj, configs: list[Obj], revs: list[Obj], want: tuple[str, str, str]
) -> None:
    status = resolve(r, configs, revs)
    assert ready(status) == want
    # The previous traffic is kept: the ingress keeps routing as before.
    assert status["traffic"] == [{"revisionName": "old", "percent": 100}]


def meta_rev(name: str, state: str = "", routes: str = "") -> Obj:
    annotations = {"serving.knative.dev/routes": routes} if routes else {}
    labels = {"serving.knative.dev/routingState": state} if state else {}
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}}


@pytest.mark.parametrize(
    ("revisions", "listed", "clear", "want"),
    [
        pytest.param(
            [meta_rev("a", "pending")],
            {"a"},
            True,
            [
                (
                    "a",
                    {
                        "metadata": {
                            "annotations": {
                                "serving.knative.dev/routes": "front",
                                "serving.knative.dev/routingStateModified": NOW_TEXT,
                            },
                            "labels": {"serving.knative.dev/routingState": "active"},
                        }
                    },
                )
            ],
            id="pending-becomes-active",
        ),
        pytest.param(
            [meta_rev("a", "active", "front")],
            {"a"},
            True,
            [],
            id="already-active-no-write",
        ),
        pytest.param(
            [meta_rev("a", "active", "front")],
            set(),
            True,
            [
                (
                    "a",
                    {
                        "metadata": {
                            "annotations": {
                                "serving.knative.dev/routes": None,
                                "serving.knative.dev/routingStateModified": NOW_TEXT,
                            },
                            "labels": {"serving.knative.dev/routingState": "reserve"},
                        }
                    },
                )
            ],
            id="unlisted-becomes-reserve",
        ),
        pytest.param(
            [meta_rev("a", "active", "front,other")],
            set(),
            True,
            [("a", {"metadata": {"annotations": {"serving.knative.dev/routes": "other"}}})],
            id="still-held-by-another-route",
        ),
        pytest.param(
            [meta_rev("a", "active", "front")],
            set(),
            False,
            [],
            id="not-cleared-while-the-route-is-not-ready",
        ),
    ],
)
def test_routing_patches(
    revisions: list[Obj], listed: set[str], clear: bool, want: list[tuple[str, Obj]]
) -> None:
    assert routing_patches("front", revisions, listed, clear=clear, now=NOW_TEXT) == want


async def ready_revision(env: Env, name: str, pod: str) -> None:
    await env.sks(name)
    await env.pa_ready(name)
    await env.put_pod(env.pod(name, pod))


async def test_service_split_80_20_across_two_revisions() -> None:
    async with running() as env:
        await hello(env)
        await env.activators(50000)
        await ready_revision(env, "hello-00001", "p1")
        svc: dict[str, Any] = hello_service(containerConcurrency=3)
        svc["spec"]["traffic"] = [
            {"latestRevision": True, "percent": 80},
            {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
        ]
        await env.apply(KSERVICES, svc)
        await ready_revision(env, "hello-00002", "p2")
        traffic = env.get(KSERVICES, "hello")["status"]["traffic"]
        assert [(t["revisionName"], t["percent"], t.get("tag", "")) for t in traffic] == [
            ("hello-00002", 80, ""),
            ("hello-00001", 20, "old"),
        ]
        assert env.get(ROUTES, "hello")["status"]["traffic"] == traffic
        for name in ("hello-00001", "hello-00002"):
            labels = env.get(REVISIONS, name)["metadata"]["labels"]
            assert labels["serving.knative.dev/routingState"] == "active"
            assert env.get(PODAUTOSCALERS, name)["spec"]["reachability"] == "Reachable"
