"""The ServerlessService's Services and public Endpoints: Serve, Proxy, the forced modes."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.controllers.serverlessservice import public_subsets, sks_status
from shared.kube.hashing import choose_subset
from shared.kube.resources import ENDPOINTS, SERVERLESSSERVICES, SERVICES, Obj

from .harness import NOW_TEXT, hello, running


def sks(mode: str, n: int = 2, protocol: str = "http1") -> Obj:
    return {
        "metadata": {"name": "hello-00001", "namespace": "default", "generation": 1},
        "spec": {"mode": mode, "numActivators": n, "protocolType": protocol},
    }


def pods(*ports: int, ready: bool = True) -> Obj:
    key = "addresses" if ready else "notReadyAddresses"
    return {
        "subsets": [
            {
                key: [{"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "name": f"p{port}"}}],
                "ports": [
                    {"name": "http", "port": port, "protocol": "TCP"},
                    {"name": "http-autometric", "port": port + 1, "protocol": "TCP"},
                ],
            }
            for port in ports
        ]
    }


def activators(*ports: int) -> Obj:
    return {
        "subsets": [
            {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": p}]}
            for p in ports
        ]
    }


def served(subsets: list[Obj]) -> list[str]:
    """ip:port of every address, ready or not, with the ports each subset keeps."""
    out = []
    for s in subsets:
        ports = ",".join(f"{p['name']}={p['port']}" for p in s["ports"])
        for a in s.get("addresses", []):
            out.append(f"{a['ip']} {ports}")
        for a in s.get("notReadyAddresses", []):
            out.append(f"not-ready {a['ip']} {ports}")
    return out


@pytest.mark.parametrize(
    ("obj", "private", "activator", "want", "found"),
    [
        pytest.param(
            sks("Serve"),
            pods(41000, 41010),
            activators(50000),
            ["127.0.0.1 http=41000", "127.0.0.1 http=41010"],
            True,
            id="serve-the-pods-http-port-only",
        ),
        pytest.param(
            sks("Proxy"),
            pods(41000),
            activators(50000, 50010),
            ["127.0.0.1 http=50000", "127.0.0.1 http=50010"],
            True,
            id="proxy-the-activators",
        ),
        pytest.param(
            sks("Serve"),
            pods(41000, ready=False),
            activators(50000),
            ["127.0.0.1 http=50000"],
            False,
            id="serve-forced-to-proxy-without-ready-pods",
        ),
        pytest.param(
            sks("Proxy"),
            pods(41000),
            activators(),
            ["127.0.0.1 http=41000"],
            True,
            id="proxy-forced-to-serve-without-activators",
        ),
        pytest.param(
            sks("Proxy"),
            None,
            None,
            [],
            False,
            id="nothing-yet",
        ),
        pytest.param(
            sks("Serve"),
            {
                "subsets": [
                    *pods(41000)["subsets"],
                    *pods(41010, ready=False)["subsets"],
                ]
            },
            activators(50000),
            ["127.0.0.1 http=41000", "not-ready 127.0.0.1 http=41010"],
            True,
            id="not-ready-pods-copied-as-not-ready",
        ),
    ],
)
def test_public_subsets(
    obj: Obj, private: Obj | None, activator: Obj | None, want: list[str], found: bool
) -> None:
    subsets, got_found = public_subsets(obj, private, activator)
    assert served(subsets) == want
    assert got_found == found


def test_proxy_takes_numactivators_chosen_by_knatives_hash() -> None:
    ports = (50000, 50010, 50020, 50030, 50040)
    subsets, _ = public_subsets(sks("Proxy", n=2), pods(41000), activators(*ports))
    chosen = {f"127.0.0.1:{p}" for p in ports} & {
        f"127.0.0.1:{s['ports'][0]['port']}" for s in subsets
    }
    assert chosen == choose_subset({f"127.0.0.1:{p}" for p in ports}, 2, "hello-00001")
    assert len(chosen) == 2


@pytest.mark.parametrize(
    ("obj", "found", "want"),
    [
        pytest.param(
            sks("Serve"),
            True,
            {
                "ActivatorEndpointsPopulated": ("False", "Info"),
                "EndpointsPopulated": ("True", ""),
                "Ready": ("True", ""),
            },
            id="serving",
        ),
        pytest.param(
            sks("Proxy"),
            True,
            {
                "ActivatorEndpointsPopulated": ("True", "Info"),
                "EndpointsPopulated": ("True", ""),
                "Ready": ("True", ""),
            },
            id="proxying-with-pods",
        ),
        pytest.param(
            sks("Serve"),
            False,
            {
                "ActivatorEndpointsPopulated": ("True", "Info"),
                "EndpointsPopulated": ("Unknown", ""),
                "Ready": ("Unknown", ""),
            },
            id="no-pods",
        ),
    ],
)
def test_sks_status(obj: Obj, found: bool, want: dict[str, tuple[str, str]]) -> None:
    status = sks_status(obj, found, NOW_TEXT)
    assert {c["type"]: (c["status"], c.get("severity", "")) for c in status["conditions"]} == want
    assert status["serviceName"] == "hello-00001"
    assert status["privateServiceName"] == "hello-00001-private"


def activator_condition(obj: Obj) -> Obj:
    return next(
        c for c in obj["status"]["conditions"] if c["type"] == "ActivatorEndpointsPopulated"
    )


async def test_services_and_the_serve_proxy_switch() -> None:
    clock = [1_800_000_000.0]
    async with running(clock=lambda: clock[0]) as env:
        await hello(env)
        await env.activators(50000, 50010)
        await env.sks("hello-00001", mode="Proxy")
        private = env.get(SERVICES, "hello-00001-private")
        assert private["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == (
            "Private"
        )
        assert private["metadata"]["labels"][
            "networking.internal.knative.dev/serverlessservice"
        ] == ("hello-00001")
        assert [(p["name"], p["port"], p["targetPort"]) for p in private["spec"]["ports"]] == [
            ("http", 80, "queue-port"),
            ("http-autometric", 9090, "http-autometric"),
            ("http-usermetric", 9091, "http-usermetric"),
            ("http-istio", 8012, "queue-port"),
        ]
        public = env.get(SERVICES, "hello-00001")
        assert "selector" not in public["spec"]
        assert public["spec"]["ports"] == [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8012}
        ]
        # No pod yet: the activators are in the path.
        eps = env.get(ENDPOINTS, "hello-00001")
        assert served(eps["subsets"]) == ["127.0.0.1 http=50000", "127.0.0.1 http=50010"]
        assert eps["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == "Public"
        first = activator_condition(env.get(SERVERLESSSERVICES, "hello-00001"))
        assert first["status"] == "True"
        # A ready pod and Serve mode: the pod takes over; the activator condition moves.
        clock[0] += 60
        await env.put_pod(env.pod("hello-00001", "p1"))
        await env.sks("hello-00001", mode="Serve")
        eps = env.get(ENDPOINTS, "hello-00001")
        assert served(eps["subsets"]) == [f"127.0.0.1 http={41000 + 4}"]
        moved = activator_condition(env.get(SERVERLESSSERVICES, "hello-00001"))
        assert moved["status"] == "False"
        assert moved["lastTransitionTime"] != first["lastTransitionTime"]


async def test_endpoints_the_sks_does_not_own_are_left_alone() -> None:
    async with running() as env:
        await hello(env)
        env.cluster.put(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "hello-00001", "namespace": "default"},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 1}]}],
            },
            ENDPOINTS,
        )
        await env.sks("hello-00001")
        assert env.get(ENDPOINTS, "hello-00001")["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]
        ready = next(
            c
            for c in env.get(SERVERLESSSERVICES, "hello-00001")["status"]["conditions"]
            if c["type"] == "EndpointsPopulated"
        )
        want: dict[str, Any] = {
            "status": "False",
            "reason": "NotOwned",
            "message": "Resource hello-00001 of type Endpoints is not owned by SKS",
        }
        assert {k: ready[k] for k in want} == want
