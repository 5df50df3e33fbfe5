"""activator.cluster: Knative's Revision and Endpoints objects to the activator's values."""

from __future__ import annotations

from typing import Any

import pytest

from activator.cluster import (
    DEFAULT_TIMEOUT_S,
    Endpoint,
    Protocol,
    RevisionKey,
    activator_share,
    endpoints_revision,
    port_name,
    private_endpoints,
    public_addresses,
    revision_spec,
)
from tests.activator.objects import address, public_endpoints, revision, subset
from tests.activator.objects import private_endpoints as private_eps

NS = "default"
REV = "hello-00001"


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        pytest.param(
            revision(NS, REV, cc=3, timeout_s=60),
            {"container_concurrency": 3, "timeout_s": 60.0, "protocol": Protocol.HTTP1},
            id="cc and timeout",
        ),
        pytest.param(
            revision(NS, REV, cc=None, timeout_s=None),
            {"container_concurrency": 0, "timeout_s": DEFAULT_TIMEOUT_S},
            id="undefaulted: unlimited, 300 s",
        ),
        pytest.param(
            revision(
                NS,
                REV,
                extra_spec={"responseStartTimeoutSeconds": 5, "idleTimeoutSeconds": 7},
            ),
            {"response_start_timeout_s": 5.0, "idle_timeout_s": 7.0},
            id="response start and idle timeouts",
        ),
        pytest.param(
            revision(NS, REV),
            {"response_start_timeout_s": 0.0, "idle_timeout_s": 0.0},
            id="no response start or idle timeout",
        ),
        pytest.param(
            revision(NS, REV, extra_spec={"containers": [{"ports": [{"name": "h2c"}]}]}),
            {"protocol": Protocol.H2C},
            id="h2c by the first port's name",
        ),
        pytest.param(
            revision(NS, REV, cc=-1, timeout_s=0),
            {"container_concurrency": 0, "timeout_s": DEFAULT_TIMEOUT_S},
            id="nonsense values fall back",
        ),
        pytest.param(
            revision(NS, REV, annotations={"autoscaling.knative.dev/target": "10"}),
            {
                "annotations": {"autoscaling.knative.dev/target": "10"},
                "labels": {
                    "serving.knative.dev/configuration": "hello",
                    "serving.knative.dev/service": "hello",
                },
            },
            id="annotations and labels",
        ),
        pytest.param(
            {"metadata": {"namespace": NS, "name": REV}},
            {"container_concurrency": 0, "timeout_s": DEFAULT_TIMEOUT_S},
            id="no spec at all",
        ),
    ],
)
def test_revision_spec(obj: dict[str, Any], want: dict[str, Any]) -> None:
    spec = revision_spec(obj)
    assert spec.key == RevisionKey(NS, REV)
    got = {k: getattr(spec, k) for k in want}
    for k in ("annotations", "labels"):
        if k in got:
            got[k] = dict(got[k])
    assert got == want


HTTP = {"http": 8012}


@pytest.mark.parametrize(
    ("subsets", "port", "want"),
    [
        pytest.param([], "http", [], id="no subsets"),
        pytest.param(
            [subset(HTTP, [address("10.0.0.1", "p1")], [address("10.0.0.2", "p2")])],
            "http",
            [("p1", "10.0.0.1:8012", True), ("p2", "10.0.0.2:8012", False)],
            id="ready and not ready",
        ),
        pytest.param(
            [
                subset(HTTP, [address("10.0.0.1", "p1")]),
                subset({"http": 9012}, [address("10.0.0.3", "p3")], [address("10.0.0.4", "p4")]),
            ],
            "http",
            [
                ("p1", "10.0.0.1:8012", True),
                ("p3", "10.0.0.3:9012", True),
                ("p4", "10.0.0.4:9012", False),
            ],
            id="several subsets, each its own port number",
        ),
        pytest.param(
            [
                subset(
                    {"http-autometric": 9090, "http": 8012, "http-usermetric": 9091},
                    [address("10.0.0.1", "p1")],
                )
            ],
            "http",
            [("p1", "10.0.0.1:8012", True)],
            id="the port by name among several",
        ),
        pytest.param(
            [subset({"http-autometric": 9090, "https": 8112}, [address("10.0.0.1", "p1")])],
            "http",
            [],
            id="no http port: no backends",
        ),
        pytest.param(
            [subset({"http": 8012, "http2": 8013}, [address("10.0.0.1", "p1")])],
            "http2",
            [("p1", "10.0.0.1:8013", True)],
            id="h2c takes the http2 port",
        ),
        pytest.param(
            [subset(HTTP, [address("10.0.0.1")])],
            "http",
            [("10.0.0.1", "10.0.0.1:8012", True)],
            id="no targetRef: named by its IP",
        ),
        pytest.param(
            [
                subset(HTTP, [], [address("10.0.0.1", "p1")]),
                subset(HTTP, [address("10.0.0.1", "p1")]),
            ],
            "http",
            [("p1", "10.0.0.1:8012", True)],
            id="listed ready and not ready: ready wins",
        ),
    ],
)
def test_private_endpoints(
    subsets: list[dict[str, Any]], port: str, want: list[tuple[str, str, bool]]
) -> None:
    eps = private_endpoints(private_eps(NS, REV, subsets), port)
    assert [(ep.pod_name, ep.address, ep.ready) for ep in eps] == want
    assert all(isinstance(ep, Endpoint) for ep in eps)


def test_endpoints_revision_by_label() -> None:
    assert endpoints_revision(private_eps(NS, REV, [])) == RevisionKey(NS, REV)
    assert endpoints_revision({"metadata": {"namespace": NS, "name": "x"}}) is None
    assert port_name(Protocol.HTTP1) == "http"
    assert port_name(Protocol.H2C) == "http2"


ME = "10.0.0.2:8012"


@pytest.mark.parametrize(
    ("activators", "own", "want"),
    [
        pytest.param([], ME, None, id="empty"),
        pytest.param(["10.0.0.1:8012", "10.0.0.3:8012"], ME, None, id="not included"),
        pytest.param(["10.0.0.2:8012"], ME, (0, 1), id="alone"),
        pytest.param(["10.0.0.2:8012", "10.0.0.1:8012"], ME, (1, 2), id="2nd of 2"),
        pytest.param(["10.0.0.3:8012", "10.0.0.2:8012"], ME, (0, 2), id="1st of 2"),
        pytest.param(
            ["10.0.0.3:8012", "10.0.0.1:8012", "10.0.0.2:8012"], ME, (1, 3), id="2nd of 3"
        ),
        pytest.param(
            ["127.0.0.1:40001", "127.0.0.1:9000", "127.0.0.1:8999"],
            "127.0.0.1:9000",
            (1, 3),
            id="one host: by port number, not string",
        ),
        pytest.param(
            ["10.0.0.12:8012", "10.0.0.1:8012"],
            "10.0.0.1:8012",
            (0, 2),
            id="by IP string as Knative: 10.0.0.1 before 10.0.0.12",
        ),
        pytest.param(["10.0.0.2:8013"], ME, None, id="same IP, other port: not us"),
    ],
)
def test_activator_share(activators: list[str], own: str, want: tuple[int, int] | None) -> None:
    obj = public_endpoints(NS, REV, activators)
    assert activator_share(public_addresses(obj), own) == want


def test_public_addresses_only_ready_under_http() -> None:
    obj = public_endpoints(NS, REV, ["10.0.0.1:8012"])
    obj["subsets"].append(
        subset({"http": 8012}, [], [address("10.0.0.9")])  # not ready: not in the path
    )
    obj["subsets"].append(subset({"https": 8112}, [address("10.0.0.8")]))
    assert public_addresses(obj) == ["10.0.0.1:8012"]
