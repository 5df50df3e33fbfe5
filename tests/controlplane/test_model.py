"""parse_documents and to_dict: Knative-shaped round trips and decoding errors with paths."""

from __future__ import annotations

import json

import pytest

from controlplane.model import (
    ConfigMap,
    Container,
    ContainerPort,
    EnvVar,
    HTTPGetAction,
    HTTPHeader,
    Probe,
    Revision,
    RevisionSpec,
    Route,
    Service,
    TCPSocketAction,
    TrafficTarget,
    ValidationError,
    from_dict,
    parse_documents,
    to_dict,
)

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: default
  labels: {team: a}
  annotations: {note: "x"}
spec:
  template:
    metadata:
      name: hello-v1
      annotations: {autoscaling.knative.dev/min-scale: "1"}
    spec:
      containerConcurrency: 0
      timeoutSeconds: 30
      responseStartTimeoutSeconds: 10
      idleTimeoutSeconds: 5
      containers:
        - image: ghcr.io/knative/helloworld-go
          command: [python, app.py]
          args: ["--port", "8080"]
          workingDir: /srv
          env: [{name: TARGET, value: World}]
          ports: [{containerPort: 8080, name: http1}]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080, httpHeaders: [{name: X, value: "1"}]}
            periodSeconds: 2
            failureThreshold: 3
  traffic:
    - {latestRevision: true, percent: 80}
    - {revisionName: hello-v0, percent: 20, tag: old, latestRevision: false}
    - {tag: staging, latestRevision: true, percent: 0}
"""

CONFIGURATION = """\
apiVersion: serving.knative.dev/v1
kind: Configuration
metadata: {name: worker}
spec:
  template:
    spec:
      containers: [{command: [./worker]}]
"""

ROUTE = """\
apiVersion: serving.knative.dev/v1
kind: Route
metadata: {name: front}
spec:
  traffic: [{configurationName: worker, percent: 100}]
"""

REVISION = """\
apiVersion: serving.knative.dev/v1
kind: Revision
metadata:
  name: worker-00001
  labels: {serving.knative.dev/configuration: worker}
spec:
  containers: [{command: [./worker], readinessProbe: {tcpSocket: {}}}]
status:
  actualReplicas: 0
  desiredReplicas: 2
  conditions: [{type: Ready, status: "True", lastTransitionTime: "2024-01-01T00:00:00Z"}]
"""

CONFIG_DEFAULTS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: config-defaults, namespace: knative-serving}
data: {revision-timeout-seconds: "100", container-concurrency: "4"}
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SERVICE, id="service"),
        pytest.param(CONFIGURATION, id="configuration"),
        pytest.param(ROUTE, id="route"),
        pytest.param(REVISION, id="revision-with-status"),
        pytest.param(CONFIG_DEFAULTS, id="configmap"),
    ],
)
def test_round_trip_keeps_what_was_written(text: str) -> None:
    import yaml

    (resource,) = parse_documents(text)
    assert to_dict(resource) == yaml.safe_load(text)
    assert from_dict(to_dict(resource)) == resource
    # JSON is YAML too: what `knpy get -o json` prints parses back.
    assert parse_documents(json.dumps(to_dict(resource))) == [resource]


def test_service_fields_are_typed() -> None:
    (svc,) = parse_documents(SERVICE)
    assert isinstance(svc, Service)
    assert svc.spec.template.spec.containers == (
        Container(
            image="ghcr.io/knative/helloworld-go",
            command=("python", "app.py"),
            args=("--port", "8080"),
            working_dir="/srv",
            env=(EnvVar("TARGET", "World"),),
            ports=(ContainerPort(8080, "http1"),),
            readiness_probe=Probe(
                http_get=HTTPGetAction(
                    path="/healthz", port=8080, http_headers=(HTTPHeader("X", "1"),)
                ),
                period_seconds=2,
                failure_threshold=3,
            ),
        ),
    )
    assert svc.spec.traffic[1] == TrafficTarget(
        tag="old", revision_name="hello-v0", latest_revision=False, percent=20
    )
    assert svc.spec.traffic[2].percent == 0  # an explicit 0 is kept, not "unset"
    assert svc.spec.template.metadata.annotations["autoscaling.knative.dev/min-scale"] == "1"


@pytest.mark.parametrize(
    "value, encoded",
    [
        pytest.param(
            TrafficTarget(percent=0, latest_revision=False),
            {"latestRevision": False, "percent": 0},
            id="pointer-zero-kept",
        ),
        pytest.param(TrafficTarget(), {}, id="unset-left-out"),
        pytest.param(
            Probe(tcp_socket=TCPSocketAction()), {"tcpSocket": {}}, id="empty-pointer-object-kept"
        ),
        pytest.param(
            Probe(period_seconds=0, success_threshold=1),
            {"successThreshold": 1},
            id="plain-zero-left-out",
        ),
        pytest.param(
            RevisionSpec(container_concurrency=0), {"containerConcurrency": 0}, id="cc-zero-kept"
        ),
    ],
)
def test_omitempty_follows_go(value: object, encoded: dict[str, object]) -> None:
    from controlplane.model import canonical

    assert json.loads(canonical(value)) == encoded


def test_multi_document_yaml_list_and_array() -> None:
    docs = parse_documents(f"{SERVICE}---\n{ROUTE}---\n# empty\n---\n{CONFIG_DEFAULTS}")
    assert [type(d) for d in docs] == [Service, Route, ConfigMap]
    listed = {"apiVersion": "v1", "kind": "List", "items": [to_dict(d) for d in docs]}
    assert parse_documents(json.dumps(listed)) == docs
    assert parse_documents(json.dumps([to_dict(d) for d in docs])) == docs


def test_timestamps_stay_strings() -> None:
    (rev,) = parse_documents(REVISION)
    assert isinstance(rev, Revision)
    assert rev.status.conditions[0].last_transition_time == "2024-01-01T00:00:00Z"


BAD_SVC = "document 1 (Service bad): "
C0 = "spec.template.spec.containers[0]"
BAD = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: bad, labels: {n: 1}}
spec:
  template:
    spec:
      containers:
        - command: echo
          resources: {limits: {cpu: "1"}}
          ports: [{containerPort: "8080"}]
  traffic: [{percent: true, latestRevision: "yes"}]
---
apiVersion: serving.knative.dev/v1alpha1
kind: Service
metadata: {name: old}
---
apiVersion: serving.knative.dev/v1
kind: DomainMapping
metadata: {name: dm}
---
- 1
"""


def test_decoding_errors_name_every_document_and_path() -> None:
    with pytest.raises(ValidationError) as e:
        parse_documents(BAD)
    assert str(e.value).splitlines() == [
        f'{BAD_SVC}invalid value: "8080": {C0}.ports[0].containerPort',
        "  expected an integer",
        'document 1 (Service bad): invalid value: "echo": spec.template.spec.containers[0].command',
        "  expected a list",
        'document 1 (Service bad): invalid value: "yes": spec.traffic[0].latestRevision',
        "  expected true or false",
        "document 1 (Service bad): invalid value: 1: metadata.labels.n",
        "  expected a string (quote numbers and booleans)",
        "document 1 (Service bad): invalid value: true: spec.traffic[0].percent",
        "  expected an integer",
        f"{BAD_SVC}must not set the field(s): {C0}.resources",
        "  knpy's local platform does not support these fields",
        "document 2: invalid value: serving.knative.dev/v1alpha1: apiVersion",
        "  knpy serves serving.knative.dev/v1 Service, serving.knative.dev/v1 Configuration, "
        "serving.knative.dev/v1 Revision, serving.knative.dev/v1 Route, v1 ConfigMap",
        "document 3: invalid value: DomainMapping: kind",
        "  knpy serves serving.knative.dev/v1 Service, serving.knative.dev/v1 Configuration, "
        "serving.knative.dev/v1 Revision, serving.knative.dev/v1 Route, v1 ConfigMap",
        "document 4: invalid value: 1: ",
        "  expected an object",
    ]
    paths = {p for fe in e.value.field_errors for p in fe.paths}
    assert "spec.template.spec.containers[0].ports[0].containerPort" in paths


def test_not_yaml() -> None:
    with pytest.raises(ValidationError, match="not YAML or JSON"):
        parse_documents("a: [b")


def test_null_is_absent() -> None:
    (svc,) = parse_documents(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: x, labels: null}\n"
        "spec: {traffic: null}\n"
    )
    assert isinstance(svc, Service)
    assert svc.spec.traffic == ()
    assert dict(svc.metadata.labels) == {}
