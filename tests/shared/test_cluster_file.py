"""Tests for shared.cluster_file: the static cluster of ``python -m activator --cluster-file``.

A hand-written file is where typos happen, so every kind of mistake must stop the activator at
start-up with the path of the field at fault (``revisions[1].endpoints[0].port``), never start
it with a revision silently missing or half-configured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.cluster_file import load_cluster_file
from shared.envconfig import ConfigError
from shared.seams import Endpoint, InMemoryCluster, RevisionKey, RevisionSpec

GOOD_YAML = """\
activators: ["127.0.0.1:8012", "127.0.0.1:8112"]
revisions:
  - namespace: prod
    name: hello-00001
    containerConcurrency: 1
    timeoutSeconds: 30
    responseStartTimeoutSeconds: 5
    idleTimeoutSeconds: 2.5
    endpoints:
      - {pod: hello-a, host: 10.0.0.1, port: 8013, ready: true}
      - {pod: hello-b, host: 10.0.0.2, port: 8014, ready: false}
  - name: cold-00001
"""

HELLO = RevisionKey("prod", "hello-00001")
COLD = RevisionKey("default", "cold-00001")


async def _activators(cluster: InMemoryCluster) -> tuple[str, ...]:
    watch = cluster.watch_activators()
    return await anext(watch)


async def test_good_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(GOOD_YAML)
    cluster = load_cluster_file(path)
    assert cluster.get(HELLO) == RevisionSpec(
        HELLO,
        container_concurrency=1,
        timeout_s=30.0,
        response_start_timeout_s=5.0,
        idle_timeout_s=2.5,
    )
    assert cluster.endpoints(HELLO) == (
        Endpoint("hello-a", "10.0.0.1", 8013, ready=True),
        Endpoint("hello-b", "10.0.0.2", 8014, ready=False),
    )
    # Knative's defaults for what the file leaves out: namespace default, cc 0, 300 s.
    assert cluster.get(COLD) == RevisionSpec(COLD)
    assert cluster.endpoints(COLD) == ()
    assert await _activators(cluster) == ("127.0.0.1:8012", "127.0.0.1:8112")


async def test_good_json_file_with_endpoint_defaults(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"revisions": [{"name": "r", "endpoints": [{}]}]}))
    cluster = load_cluster_file(path)
    key = RevisionKey("default", "r")
    assert cluster.endpoints(key) == (Endpoint("r-0", "127.0.0.1", 8012, ready=True),)
    assert await _activators(cluster) == ()


@pytest.mark.parametrize(
    ("text", "suffix"),
    [
        pytest.param("{}", ".json", id="empty-json-mapping"),
        pytest.param("revisions: []\n", ".yaml", id="no-revisions"),
    ],
)
def test_empty_clusters(tmp_path: Path, text: str, suffix: str) -> None:
    path = tmp_path / f"cluster{suffix}"
    path.write_text(text)
    cluster = load_cluster_file(path)
    assert cluster.get(RevisionKey("default", "anything")) is None


def _rev(**fields: Any) -> dict[str, Any]:
    return {"name": "r", **fields}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param({"activators": "127.0.0.1:8012"}, "activators: must be a list", id="acts"),
        pytest.param({"activators": [8012]}, "activators: must be a list", id="acts-not-str"),
        pytest.param({"revisions": {"name": "r"}}, "revisions: must be a list", id="revs"),
        pytest.param({"revisions": ["r"]}, "revisions[0]: must be a mapping", id="rev-not-map"),
        pytest.param({"revisions": [{}]}, "revisions[0].name: required", id="no-name"),
        pytest.param(
            {"revisions": [_rev(name=7)]}, "revisions[0].name: must be a str, got 7", id="name-int"
        ),
        pytest.param(
            {"revisions": [_rev(namespace=["x"])]},
            "revisions[0].namespace: must be a str",
            id="namespace-list",
        ),
        pytest.param(
            {"revisions": [_rev(), _rev()]},
            "revisions[1].name: duplicate revision default/r",
            id="duplicate",
        ),
        pytest.param(
            {"revisions": [_rev(containerConcurrency="1")]},
            "revisions[0].containerConcurrency: must be a int, got '1'",
            id="cc-string",
        ),
        pytest.param(
            {"revisions": [_rev(containerConcurrency=True)]},
            "revisions[0].containerConcurrency: must be a int, got True",
            id="cc-bool",
        ),
        pytest.param(
            {"revisions": [_rev(containerConcurrency=-1)]},
            "revisions[0].containerConcurrency: must be >= 0, got -1",
            id="cc-negative",
        ),
        pytest.param(
            {"revisions": [_rev(timeoutSeconds=0)]},
            "revisions[0].timeoutSeconds: must be >= 0.001, got 0.0",
            id="timeout-0",
        ),
        pytest.param(
            {"revisions": [_rev(idleTimeoutSeconds=-1)]},
            "revisions[0].idleTimeoutSeconds: must be >= 0",
            id="idle-negative",
        ),
        pytest.param(
            {"revisions": [_rev(responseStartTimeoutSeconds="5s")]},
            "revisions[0].responseStartTimeoutSeconds: must be a float",
            id="start-timeout-string",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints={"pod": "p"})]},
            "revisions[0].endpoints: must be a list",
            id="endpoints-mapping",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints=["127.0.0.1:8013"])]},
            "revisions[0].endpoints[0]: must be a mapping",
            id="endpoint-string",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints=[{}, {"port": "8013"}])]},
            "revisions[0].endpoints[1].port: must be a int",
            id="port-string",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints=[{"port": 70000}])]},
            "revisions[0].endpoints[0].port: must be in [1, 65535], got 70000",
            id="port-range",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints=[{"ready": "yes"}])]},
            "revisions[0].endpoints[0].ready: must be a bool",
            id="ready-string",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints=[{"ready": 1}])]},
            "revisions[0].endpoints[0].ready: must be a bool, got 1",
            id="ready-int",
        ),
        pytest.param(
            {"revisions": [_rev(endpoints=[{"host": None}])]},
            "revisions[0].endpoints[0].host: must be a str, got None",
            id="host-null",
        ),
    ],
)
def test_bad_documents_name_the_field(tmp_path: Path, doc: Any, message: str) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        load_cluster_file(path)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("cluster.json", "{not json", id="bad-json"),
        pytest.param("cluster.yaml", "revisions: [\n", id="bad-yaml"),
        pytest.param("cluster.yaml", "\xff", id="yaml-scalar"),
        pytest.param("cluster.yaml", "", id="empty-yaml"),
        pytest.param("cluster.json", '["a list"]', id="not-a-mapping"),
    ],
)
def test_unparsable_files_name_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_cluster_file(path)
    assert err.value.name == str(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read the cluster file") as err:
        load_cluster_file(path)
    assert err.value.name == str(path)
