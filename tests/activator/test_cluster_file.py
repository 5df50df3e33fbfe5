"""activator.app.load_cluster_file: a static informer source of Kubernetes objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from activator.app import load_cluster_file
from shared.envconfig import ConfigError
from shared.kube.resources import CONFIGMAPS, ENDPOINTS, REVISIONS
from tests.activator.objects import configmap, private_endpoints, revision

OBJECTS = [
    configmap("config-network", {}),
    revision("default", "hello-00001", cc=2),
    private_endpoints("default", "hello-00001", []),
]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("c.yaml", yaml.safe_dump_all(OBJECTS), id="yaml documents"),
        pytest.param("c.json", json.dumps(OBJECTS), id="json array"),
        pytest.param(
            "c.yaml",
            yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": OBJECTS}),
            id="kubectl's List",
        ),
    ],
)
def test_loads_objects(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    cluster = load_cluster_file(path)
    assert cluster.peek(CONFIGMAPS, "knative-serving", "config-network") is not None
    rev = cluster.peek(REVISIONS, "default", "hello-00001")
    assert rev is not None and rev["spec"]["containerConcurrency"] == 2
    assert cluster.peek(ENDPOINTS, "default", "hello-00001-private") is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a: [", "cannot read the cluster file", id="bad yaml"),
        pytest.param("- 3\n", "[0]: must be a Kubernetes object", id="not an object"),
        pytest.param(
            "apiVersion: v9\nkind: Thing\nmetadata: {name: x}\n",
            "[0]: unknown apiVersion/kind v9/Thing",
            id="unknown kind",
        ),
    ],
)
def test_bad_files_name_the_place(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_cluster_file(path)
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the cluster file"):
        load_cluster_file(tmp_path / "nope.yaml")
