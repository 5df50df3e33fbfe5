"""func.yaml: Knative's fields read and written, unknown fields named, envs resolved."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from functions.create import create
from functions.project import (
    Env,
    ProjectError,
    check_schema,
    load,
    new_doc,
    resolve_envs,
    write,
)

KNATIVE_FUNC_YAML = """\
specVersion: 0.36.0
name: hello
runtime: python
registry: example.com/alice
image: example.com/alice/hello:latest
namespace: default
created: 2026-01-02T03:04:05.123456Z
invoke: cloudevent
build:
  builder: host
  buildEnvs:
  - name: PIP_INDEX_URL
    value: https://pypi.example.com
run:
  envs:
  - name: GREETING
    value: hi
  volumes:
  - secret: creds
    path: /creds
deploy:
  namespace: default
  annotations:
    autoscaling.knative.dev/target: "10"
  options:
    scale:
      min: 0
      max: 3
    resources:
      limits:
        concurrency: 10
  healthEndpoints:
    liveness: /health/liveness
    readiness: /health/readiness
  subscriptions:
  - source: default
    filters:
      type: com.example.order
"""


def test_a_knative_func_yaml_loads(tmp_path: Path) -> None:
    (tmp_path / "func.yaml").write_text(KNATIVE_FUNC_YAML)
    project = load(tmp_path)
    assert (project.name, project.runtime, project.invoke) == ("hello", "python", "cloudevent")
    assert project.envs == (Env("GREETING", "hi"),)
    assert project.section("deploy", "options", "scale") == {"min": 0, "max": 3}
    assert project.section("deploy", "subscriptions") == {}  # a list, not a section
    assert project.doc["deploy"]["subscriptions"][0]["filters"] == {"type": "com.example.order"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("name: a\nnmae: b\n", "'nmae'", id="top-level-typo"),
        pytest.param("deploy:\n  option:\n    scale: {}\n", "'deploy.option'", id="nested"),
        pytest.param(
            "deploy:\n  options:\n    scale:\n      minimum: 1\n",
            "'deploy.options.scale.minimum'",
            id="deep",
        ),
        pytest.param(
            "run:\n  envs:\n  - name: A\n    vaule: b\n", "'run.envs[0].vaule'", id="in-a-list"
        ),
        pytest.param("template: event\n", "'template'", id="old-docs-field"),
    ],
)
def test_an_unknown_field_is_named(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "func.yaml").write_text(text)
    with pytest.raises(ProjectError, match="unknown field") as err:
        load(tmp_path)
    assert named in str(err.value)
    assert "func.yaml" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("run: [1, 2]\n", "run: expected a mapping", id="list-for-mapping"),
        pytest.param("run:\n  envs: {a: b}\n", "run.envs: expected a list", id="map-for-list"),
        pytest.param("name: {a: b}\n", "name: expected a single value", id="map-for-scalar"),
        pytest.param("name: f\ninvoke: grpc\n", "invoke 'grpc'", id="bad-invoke"),
        pytest.param("name: Hello_World\n", "not a valid function name", id="bad-name"),
        pytest.param("name: [\n", "not valid YAML", id="bad-yaml"),
        pytest.param(
            "name: f\nrun:\n  startTimeout: 60\n", "run.startTimeout 60: want a positive duration",
            id="start-timeout-bare-number",
        ),
        pytest.param(
            "name: f\nrun:\n  startTimeout: soon\n", "run.startTimeout 'soon'",
            id="start-timeout-words",
        ),
        pytest.param(
            "name: f\nrun:\n  startTimeout: 0s\n", "startTimeout '0s'", id="start-timeout-zero"
        ),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "func.yaml").write_text(text)
    with pytest.raises(ProjectError) as err:
        load(tmp_path)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("name: f\n", None, id="unset"),
        pytest.param("name: f\nrun:\n  startTimeout: 1m30s\n", 90.0, id="go-duration"),
        pytest.param("name: f\nrun:\n  startTimeout: 250ms\n", 0.25, id="milliseconds"),
    ],
)
def test_start_timeout_is_a_go_duration(tmp_path: Path, text: str, want: float | None) -> None:
    (tmp_path / "func.yaml").write_text(text)
    assert load(tmp_path).start_timeout_s == want


def test_outside_a_function_directory(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "not a function directory" in message
    assert "knpy func create" in message
    assert "--path" in message


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    write(tmp_path, new_doc("round-trip", "cloudevent", now=now))
    project = load(tmp_path)
    assert project.name == "round-trip"
    assert project.invoke == "cloudevent"
    assert project.doc["specVersion"] == "0.36.0"
    with pytest.raises(ProjectError, match="'bogus'"):
        write(tmp_path, {"name": "x", "bogus": 1})


@pytest.mark.parametrize(
    ("envs", "environ", "want"),
    [
        pytest.param((Env("A", "1"),), {}, {"A": "1"}, id="plain"),
        pytest.param((Env("A", "{{ env:HOME_X }}"),), {"HOME_X": "/h"}, {"A": "/h"}, id="env"),
        pytest.param((Env("A", "{{env:X}}"),), {"X": "x"}, {"A": "x"}, id="env-no-spaces"),
        pytest.param((Env("A", None),), {}, {"A": ""}, id="no-value"),
    ],
)
def test_resolve_envs(envs: tuple[Env, ...], environ: dict[str, str], want: dict[str, str]) -> None:
    assert resolve_envs(envs, environ) == want


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(Env("A", "{{ env:NOPE }}"), "NOPE is not set", id="unset"),
        pytest.param(Env("A", "{{ secret:db:password }}"), "a secret exists only", id="secret"),
        pytest.param(Env(None, "{{ configMap:cfg }}"), "a configMap exists only", id="cm"),
        pytest.param(Env("A", "{{ vault:x }}"), "unknown reference", id="unknown"),
    ],
)
def test_resolve_envs_refuses(env: Env, message: str) -> None:
    with pytest.raises(ProjectError) as err:
        resolve_envs((env,), {})
    assert message in str(err.value)


def test_check_schema_accepts_what_create_writes(tmp_path: Path) -> None:
    create(tmp_path / "fn", template="cloudevents")
    check_schema(load(tmp_path / "fn").doc)
