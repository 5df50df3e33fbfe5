"""What ``knpy func deploy`` writes and ``subscribe`` edits, as pure functions (the objects are
compared with what Knative's func writes: knative/func pkg/knative/deployer.go)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from functions.create import create
from functions.deploy import (
    DEPLOY_FILE,
    Runs,
    container_env,
    kubeconfig_of,
    namespace_of,
    reachable_url,
    scale_annotations,
    service_manifest,
    source_digest,
    trigger_manifests,
)
from functions.manage import describe, human, parse_filters, plain, subscribe
from functions.project import Env, FunctionProject, ProjectError


def project(doc: dict[str, Any], root: Path = Path("/src/fn")) -> FunctionProject:
    envs = tuple(
        Env(e.get("name"), e.get("value")) for e in (doc.get("run") or {}).get("envs") or []
    )
    return FunctionProject(root, doc.get("name", "fn"), "python", "http", envs, doc)


@pytest.mark.parametrize(
    ("scale", "want"),
    [
        pytest.param({}, {}, id="none"),
        pytest.param(
            {"min": 0, "max": 3},
            {"autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/max-scale": "3"},
            id="min-max",
        ),
        pytest.param(
            {"metric": "rps", "target": 50, "utilization": 70.5},
            {
                "autoscaling.knative.dev/metric": "rps",
                "autoscaling.knative.dev/target": "50.000000",
                "autoscaling.knative.dev/target-utilization-percentage": "70.500000",
            },
            id="func-writes-floats-with-%f",
        ),
    ],
)
def test_scale_becomes_knatives_autoscaling_annotations(
    scale: dict[str, Any], want: dict[str, str]
) -> None:
    assert scale_annotations(scale) == want


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        pytest.param({"min": -1}, "deploy.options.scale.min", id="negative-min"),
        pytest.param({"max": "three"}, "deploy.options.scale.max", id="text-max"),
        pytest.param({"target": 0}, "deploy.options.scale.target", id="zero-target"),
        pytest.param({"metric": "qps"}, "concurrency, rps, cpu or memory", id="unknown-metric"),
    ],
)
def test_bad_scale_names_the_field(scale: dict[str, Any], message: str) -> None:
    with pytest.raises(ProjectError, match=message):
        scale_annotations(scale)


def test_the_service_runs_the_host_on_the_source_with_funcs_labels_and_annotations() -> None:
    p = project(
        {
            "name": "fn",
            "run": {"envs": [{"name": "A", "value": "1"}, {"name": "B", "value": "{{ env:X }}"}]},
            "deploy": {
                "annotations": {"team": "x"},
                "labels": [{"key": "tier", "value": "web"}],
                "options": {
                    "scale": {"min": 1},
                    "resources": {"limits": {"concurrency": 4, "memory": "256Mi"}},
                },
                "healthEndpoints": {"readiness": "/ready"},
            },
        }
    )
    svc = service_manifest(
        p,
        Runs("img", source=True, liveness=False, source_digest="d1"),
        namespace="ns",
        environ={"X": "from-shell"},
    )
    labels = {
        "tier": "web",
        "boson.dev/function": "true",
        "function.knative.dev/name": "fn",
        "function.knative.dev/runtime": "python",
    }
    assert svc["metadata"] == {
        "name": "fn",
        "namespace": "ns",
        "labels": labels,
        "annotations": {"function.knative.dev/deployer": "knative", "team": "x"},
    }
    template = svc["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "function.knative.dev/deployer": "knative",
        "team": "x",
        "autoscaling.knative.dev/min-scale": "1",
        "knpy.dev/source-digest": "d1",
    }
    assert template["spec"]["containerConcurrency"] == 4
    (container,) = template["spec"]["containers"]
    assert container == {
        "image": "img",
        "command": ["python", "-m", "functions.host", "/src/fn"],
        "workingDir": "/src/fn",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "from-shell"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "resources": {"limits": {"memory": "256Mi"}},
    }


def test_the_source_digest_follows_the_contents_of_the_functions_files(tmp_path: Path) -> None:
    """From the source directory a new revision per edit: the digest in the template changes
    with the code, not with a touch or with what knpy writes in .func or caches."""
    create(tmp_path / "fn")
    root = tmp_path / "fn"
    first = source_digest(root)
    assert first == source_digest(root)
    func_py = root / "function" / "func.py"
    os.utime(func_py, (1, 1))
    (root / ".func").mkdir()
    (root / ".func" / "deploy.json").write_text("{}")
    (root / "function" / "__pycache__").mkdir()
    (root / "function" / "__pycache__" / "x.py").write_text("stale")
    assert source_digest(root) == first
    func_py.write_text(func_py.read_text().replace('b"OK"', 'b"Edited"'))
    edited = source_digest(root)
    assert edited != first
    (root / "function" / "helper.py").write_text("")  # a new file, even empty
    assert source_digest(root) not in (first, edited)


def test_from_an_image_the_container_has_no_command_and_both_probes() -> None:
    svc = service_manifest(project({}), Runs("reg/fn:1", source=False), namespace="d", environ={})
    (container,) = svc["spec"]["template"]["spec"]["containers"]
    assert container == {
        "image": "reg/fn:1",
        "livenessProbe": {"httpGet": {"path": "/health/liveness", "port": 8080}},
        "readinessProbe": {"httpGet": {"path": "/health/readiness", "port": 8080}},
    }


def test_secret_and_configmap_keys_become_value_from() -> None:
    envs = [Env("S", "{{ secret:creds:token }}"), Env("C", "{{configMap:cfg:level}}")]
    assert container_env(envs, {}) == [
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(Env("A", "{{ env:UNSET_HERE }}"), "UNSET_HERE is not set", id="unset-env"),
        pytest.param(Env(None, "{{ secret:all }}"), "without a name", id="whole-secret"),
        pytest.param(Env("A", "{{ secret:nokey }}"), "secret:NAME:KEY", id="secret-no-key"),
        pytest.param(Env("A", "{{ vault:x }}"), "unknown reference", id="unknown-kind"),
    ],
)
def test_bad_env_references_say_what_to_do(env: Env, message: str) -> None:
    with pytest.raises(ProjectError, match=message):
        container_env([env], {})


def test_each_subscription_is_a_trigger_owned_by_the_service() -> None:
    p = project(
        {
            "deploy": {
                "subscriptions": [
                    {"source": "default", "filters": {"type": "a", "flag": True}},
                    {"source": "other"},
                ]
            }
        }
    )
    service = {"metadata": {"name": "fn", "namespace": "ns", "uid": "u-1"}}
    first, second = trigger_manifests(p, service)
    assert first == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {
            "name": "fn-function-trigger-0",
            "namespace": "ns",
            "labels": {"function.knative.dev/name": "fn"},
            "ownerReferences": [
                {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": "fn",
                    "uid": "u-1",
                }
            ],
        },
        "spec": {
            "broker": "default",
            "filter": {"attributes": {"type": "a", "flag": "true"}},
            "subscriber": {
                "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "fn"}
            },
        },
    }
    assert second["metadata"]["name"] == "fn-function-trigger-1"
    assert second["spec"]["broker"] == "other"
    assert second["spec"]["filter"] == {"attributes": {}}


def test_a_subscription_without_a_source_is_refused() -> None:
    p = project({"deploy": {"subscriptions": [{"filters": {"type": "a"}}]}})
    with pytest.raises(ProjectError, match=r"deploy.subscriptions\[0\]: no source"):
        trigger_manifests(p, {"metadata": {"name": "fn"}})


@pytest.mark.parametrize(
    ("before", "source", "filters", "after"),
    [
        pytest.param({}, "default", {"type": "t"},
                     [{"source": "default", "filters": {"type": "t"}}], id="first"),
        pytest.param(
            {"deploy": {"subscriptions": [{"source": "default", "filters": {"type": "t"}}]}},
            "default", {"type": "u", "source": "s"},
            [{"source": "default", "filters": {"type": "u", "source": "s"}}],
            id="same-broker-merges-filters",
        ),
        pytest.param(
            {"deploy": {"subscriptions": [{"source": "default", "filters": {"type": "t"}}]}},
            "other", {},
            [{"source": "default", "filters": {"type": "t"}}, {"source": "other", "filters": {}}],
            id="another-broker-adds-one",
        ),
    ],
)  # fmt: skip
def test_subscribe_adds_or_updates_as_func_does(
    before: dict[str, Any], source: str, filters: dict[str, str], after: list[Any]
) -> None:
    assert subscribe(before, source, filters)["deploy"]["subscriptions"] == after


def test_filters_must_be_pairs() -> None:
    assert parse_filters(["type=a", "q=x=y"]) == {"type": "a", "q": "x=y"}
    with pytest.raises(ProjectError, match="want ATTRIBUTE=VALUE"):
        parse_filters(["type"])


@pytest.mark.parametrize(
    ("url", "port", "want"),
    [
        pytest.param("http://f.default.localhost", 8080, "http://f.default.localhost:8080",
                     id="ingress-port-added"),
        pytest.param("http://f.default.localhost", 80, "http://f.default.localhost", id="port-80"),
        pytest.param("http://f.example.com", None, "http://f.example.com", id="not-knpy"),
        pytest.param("http://f.x:9000/p", 8080, "http://f.x:9000/p", id="explicit-port-kept"),
    ],
)  # fmt: skip
def test_reachable_url(url: str, port: int | None, want: str) -> None:
    assert reachable_url(url, port) == want


def test_namespace_and_kubeconfig_come_from_the_flag_then_func_yaml_then_the_last_deploy(
    tmp_path: Path,
) -> None:
    bare = project({}, tmp_path)
    assert namespace_of(bare, None) == "default"
    assert kubeconfig_of(bare, None) == (Path(".knpy") / "kubeconfig").resolve()
    (tmp_path / ".func").mkdir()
    (tmp_path / ".func" / DEPLOY_FILE).write_text(
        '{"kubeconfig": "/s/kubeconfig", "namespace": "last", "name": "fn"}'
    )
    assert namespace_of(bare, None) == "last"
    assert kubeconfig_of(bare, None) == Path("/s/kubeconfig")
    assert kubeconfig_of(bare, Path("/given")) == Path("/given")
    assert namespace_of(project({"namespace": "top"}, tmp_path), None) == "top"
    assert namespace_of(project({"deploy": {"namespace": "dep"}}, tmp_path), None) == "dep"
    assert namespace_of(project({"deploy": {"namespace": "dep"}}, tmp_path), "flag") == "flag"


def test_describe_layouts_as_funcs() -> None:
    service = {
        "metadata": {
            "name": "fn",
            "namespace": "default",
            "labels": {"function.knative.dev/runtime": "python"},
            "annotations": {"function.knative.dev/deployer": "knative"},
        },
        "spec": {"template": {"spec": {"containers": [{"image": "img"}]}}},
        "status": {
            "url": "http://fn.default.localhost",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    trigger = {
        "metadata": {"name": "fn-function-trigger-0"},
        "spec": {"broker": "default", "filter": {"attributes": {"type": "t", "source": "s"}}},
    }
    d = describe(service, [trigger], 8080)
    assert human(d).splitlines() == [
        "Function name:", "  fn",
        "Function is built in image:", "  img",
        "Function is deployed in namespace:", "  default",
        "Routes:", "  http://fn.default.localhost:8080",
        "Function is ready:", "  True",
        "Deployer:", "  knative",
        "Subscriptions (Source, Type, Broker):", "  s t default",
        "Labels:", "  function.knative.dev/runtime: python",
    ]  # fmt: skip
    assert plain(d).splitlines()[:4] == [
        "Name fn", "Image img", "Namespace default", "Route http://fn.default.localhost:8080"
    ]  # fmt: skip
    assert "source" not in d.as_json()
    # On knpy serve the image is a name only: describe says where the function runs from.
    container = {"image": "localhost/knpy-func/fn:latest", "workingDir": "/src/fn",
                 "command": ["python", "-m", "functions.host", "/src/fn"]}  # fmt: skip
    service["spec"] = {"template": {"spec": {"containers": [container]}}}
    d = describe(service, [], 8080)
    assert human(d).splitlines()[2:4] == ["Function runs from its source directory:", "  /src/fn"]
    assert plain(d).splitlines()[1] == "Source /src/fn"
    assert d.as_json()["source"] == "/src/fn"
