"""Kubernetes' endpoints controller: Endpoints of selector Services from the Pods."""

from __future__ import annotations

import pytest

from controlplane.controllers.endpoints import endpoint_subsets
from shared.kube.resources import ENDPOINTS, PODS, SERVICES, Obj

from .harness import running

SERVICE: Obj = {
    "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
    "spec": {
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": "queue-port", "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
        ],
    },
}


def pod(
    name: str,
    port: int | None,
    *,
    ready: bool = True,
    ip: str = "127.0.0.1",
    phase: str = "Running",
    deleting: bool = False,
) -> Obj:
    ports = [] if port is None else [{"name": "queue-port", "containerPort": port}]
    meta: Obj = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "labels": {"app": "web"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def summary(subsets: list[Obj]) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    return [
        (
            tuple(a["targetRef"]["name"] for a in s.get("addresses", [])),
            tuple(a["targetRef"]["name"] for a in s.get("notReadyAddresses", [])),
            ",".join(f"{p['name']}={p['port']}" for p in s["ports"]),
        )
        for s in subsets
    ]


@pytest.mark.parametrize(
    ("pods", "want"),
    [
        pytest.param(
            [pod("a", 41000), pod("b", 41010)],
            [
                (("a",), (), "http=41000,metrics=9090"),
                (("b",), (), "http=41010,metrics=9090"),
            ],
            id="local-pods-one-subset-each",
        ),
        pytest.param(
            [pod("a", 8012, ip="10.0.0.1"), pod("b", 8012, ip="10.0.0.2")],
            [(("a", "b"), (), "http=8012,metrics=9090")],
            id="cluster-pods-share-a-subset",
        ),
        pytest.param(
            [pod("a", 8012, ip="10.0.0.1"), pod("b", 8012, ip="10.0.0.2", ready=False)],
            [(("a",), ("b",), "http=8012,metrics=9090")],
            id="not-ready-pod-in-not-ready-addresses",
        ),
        pytest.param(
            [
                pod("a", 8012, ip="10.0.0.1", deleting=True),
                pod("b", 8012, ip=""),
                pod("c", 8012, ip="10.0.0.3", phase="Failed"),
            ],
            [],
            id="deleting-unscheduled-and-finished-pods-left-out",
        ),
        pytest.param(
            [pod("a", None)],
            [(("a",), (), "metrics=9090")],
            id="named-port-missing-leaves-that-port-out",
        ),
    ],
)
def test_endpoint_subsets(pods: list[Obj], want: list[tuple[object, ...]]) -> None:
    assert summary(endpoint_subsets(SERVICE, pods)) == want


async def test_endpoints_follow_pods_and_copy_the_service_labels() -> None:
    async with running() as env:
        env.cluster.put({"apiVersion": "v1", "kind": "Service", **SERVICE}, SERVICES)
        env.cluster.put(pod("a", 41000, ready=False), PODS)
        env.cluster.put(pod("other", 1), PODS)
        other = env.cluster.peek(PODS, "default", "other")
        assert other is not None
        other["metadata"]["labels"] = {"app": "else"}
        env.cluster.put(other, PODS)
        await env.cluster.settle()
        eps = env.get(ENDPOINTS, "web")
        assert eps["metadata"]["labels"] == {"tier": "front"}
        assert summary(eps["subsets"]) == [((), ("a",), "http=41000,metrics=9090")]
        assert eps["subsets"][0]["notReadyAddresses"][0]["targetRef"] == {
            "kind": "Pod",
            "namespace": "default",
            "name": "a",
            "uid": "uid-a",
        }
        env.cluster.put(pod("a", 41000, ready=True), PODS)
        await env.cluster.settle()
        assert summary(env.get(ENDPOINTS, "web")["subsets"]) == [
            (("a",), (), "http=41000,metrics=9090")
        ]
        await env.cluster.delete(PODS, "default", "a")
        await env.cluster.settle()
        assert (
            "subsets" not in env.get(ENDPOINTS, "web") or not env.get(ENDPOINTS, "web")["subsets"]
        )
        await env.cluster.delete(SERVICES, "default", "web")
        await env.cluster.settle()
        assert env.cluster.peek(ENDPOINTS, "default", "web") is None


async def test_endpoints_of_services_without_selector_are_not_touched() -> None:
    async with running() as env:
        env.cluster.put(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "activator-service", "namespace": "knative-serving"},
                "subsets": [
                    {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 5}]}
                ],
            },
            ENDPOINTS,
        )
        await env.cluster.settle()
        writes = list(env.cluster.writes)
        assert env.get(ENDPOINTS, "activator-service", "knative-serving")["subsets"][0][
            "ports"
        ] == [{"name": "http", "port": 5}]
        assert writes == []


async def test_private_endpoints_left_without_their_service_are_removed_after_a_restart() -> None:
    """Endpoints of a revision's private Service whose Service went while the controllers were
    down (the Endpoints controller only then sees the Endpoints)."""
    async with running() as env:
        env.cluster.put(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": "gone-00001-private",
                    "namespace": "default",
                    "labels": {"networking.internal.knative.dev/serviceType": "Private"},
                },
            },
            ENDPOINTS,
        )
        await env.cluster.settle()
        assert env.cluster.peek(ENDPOINTS, "default", "gone-00001-private") is None
