"""Validation as Knative's webhook: each bad field reported with Knative's path and message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.defaults import DefaultsConfig
from controlplane.model import FieldError, ValidationError, from_dict
from controlplane.validation import ValidationContext, field_errors, validate, validate_update
from shared.envconfig import ConfigError

Doc = dict[str, Any]


def service() -> Doc:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"command": ["python", "app.py"], "ports": [{"containerPort": 8080}]}
                    ]
                }
            }
        },
    }


def route() -> Doc:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Route",
        "metadata": {"name": "front"},
        "spec": {"traffic": [{"configurationName": "hello", "percent": 100}]},
    }


def container(d: Doc) -> Doc:
    c: Doc = d["spec"]["template"]["spec"]["containers"][0]
    return c


def errors_of(doc: Doc, ctx: ValidationContext | None = None) -> list[str]:
    with pytest.raises(ValidationError) as e:
        validate(from_dict(doc), ctx)
    return str(e.value).splitlines()


def with_(base: Callable[[], Doc], change: Callable[[Doc], object]) -> Doc:
    d = copy.deepcopy(base())
    change(d)
    return d


def set_traffic(*targets: Doc) -> Callable[[Doc], None]:
    def change(d: Doc) -> None:
        d["spec"]["traffic"] = list(targets)

    return change


def set_template(**fields: object) -> Callable[[Doc], None]:
    def change(d: Doc) -> None:
        d["spec"]["template"]["spec"].update(fields)

    return change


def set_container(**fields: object) -> Callable[[Doc], None]:
    def change(d: Doc) -> None:
        container(d).update(fields)

    return change


S = "Service default/hello: "
R = "Route default/front: "
C0 = "spec.template.spec.containers[0]"
PROBE = f"{C0}.readinessProbe"
DNS1035 = (
    "a DNS-1035 label is lower case letters, digits and '-', starting with a letter and "
    "ending with a letter or digit (regex '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

CASES = [
    # -- traffic ---------------------------------------------------------------------------
    pytest.param(
        with_(
            service,
            set_traffic(
                {"latestRevision": True, "percent": 80},
                {"revisionName": "hello-00001", "percent": 30},
            ),
        ),
        [S + "Traffic targets sum to 110, want 100: spec.traffic"],
        id="traffic-sum",
    ),
    pytest.param(
        with_(
            service,
            set_traffic(
                {"latestRevision": True, "percent": 100},
                {"revisionName": "hello-00001", "percent": 101},
            ),
        ),
        [
            S + "Traffic targets sum to 201, want 100: spec.traffic",
            S + "expected 0 <= 101 <= 100: spec.traffic[1].percent",
        ],
        id="percent-above-100",
    ),
    pytest.param(
        with_(
            service, set_traffic({"percent": 105}, {"revisionName": "hello-00001", "percent": -5})
        ),
        [
            S + "expected 0 <= -5 <= 100: spec.traffic[1].percent",
            S + "expected 0 <= 105 <= 100: spec.traffic[0].percent",
        ],
        id="percent-out-of-bounds-each",
    ),
    pytest.param(
        with_(
            service,
            set_traffic(
                {"percent": 50, "tag": "a"},
                {"revisionName": "hello-00001", "percent": 50, "tag": "a"},
            ),
        ),
        [S + 'Multiple definitions for "a": spec.traffic[0].tag, spec.traffic[1].tag'],
        id="duplicate-tag",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "tag": "Blue_1"})),
        [S + f"invalid value: not a DNS 1035 label: [{DNS1035}]: spec.traffic[0].tag"],
        id="tag-not-dns-1035",
    ),
    pytest.param(
        with_(
            service,
            set_traffic({"percent": 100, "revisionName": "hello-00001", "latestRevision": True}),
        ),
        [
            S + 'may not set revisionName "hello-00001" when latestRevision is true: '
            "spec.traffic[0].latestRevision"
        ],
        id="revision-name-with-latest",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "latestRevision": False})),
        [
            S + 'may not set revisionName "" when latestRevision is false: '
            "spec.traffic[0].latestRevision"
        ],
        id="not-latest-without-revision",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "configurationName": "other"})),
        [S + "must not set the field(s): spec.traffic[0].configurationName"],
        id="service-configuration-name",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "revisionName": "Bad_"})),
        [
            S + 'invalid key name "Bad_": spec.traffic[0].revisionName',
            "  a qualified name is at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        ],
        id="revision-name-not-qualified",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "url": "http://x"})),
        [S + "must not set the field(s): spec.traffic[0].url"],
        id="url-in-spec",
    ),
    pytest.param(
        with_(route, set_traffic({"percent": 100})),
        [
            R + "expected exactly one, got neither: "
            "spec.traffic[0].configurationName, spec.traffic[0].revisionName"
        ],
        id="route-neither",
    ),
    pytest.param(
        with_(
            route,
            set_traffic(
                {
                    "percent": 100,
                    "revisionName": "a-1",
                    "configurationName": "a",
                    "latestRevision": False,
                }
            ),
        ),
        [
            R + "expected exactly one, got both: "
            "spec.traffic[0].configurationName, spec.traffic[0].revisionName"
        ],
        id="route-both",
    ),
    pytest.param(
        with_(route, set_traffic()),
        [R + "Traffic targets sum to 0, want 100: spec.traffic"],
        id="route-without-traffic",
    ),
    # -- the revision template -------------------------------------------------------------
    pytest.param(
        with_(service, set_template(containerConcurrency=1001)),
        [S + "expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency"],
        id="cc-above-limit",
    ),
    pytest.param(
        with_(service, set_template(containerConcurrency=-1)),
        [S + "expected 0 <= -1 <= 1000: spec.template.spec.containerConcurrency"],
        id="cc-negative",
    ),
    pytest.param(
        with_(service, set_template(timeoutSeconds=601)),
        [S + "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds"],
        id="timeout-above-max",
    ),
    pytest.param(
        with_(service, set_template(responseStartTimeoutSeconds=-1, idleTimeoutSeconds=700)),
        [
            S + "expected 0 <= -1 <= 600: spec.template.spec.responseStartTimeoutSeconds",
            S + "expected 0 <= 700 <= 600: spec.template.spec.idleTimeoutSeconds",
        ],
        id="other-timeouts",
    ),
    pytest.param(
        with_(service, set_template(containers=[])),
        [S + "missing field(s): spec.template.spec.containers"],
        id="no-container",
    ),
    pytest.param(
        with_(service, set_template(containers=[{"command": ["a"]}, {"command": ["b"]}])),
        [S + "knpy runs one container per revision, but found 2: spec.template.spec.containers"],
        id="two-containers",
    ),
    pytest.param(
        with_(service, set_container(command=[])),
        [
            S + f"a local run needs a command: {C0}.command",
            "  knpy starts the container's command (and args) as a local process; "
            "it pulls no image",
        ],
        id="no-command",
    ),
    pytest.param(
        with_(service, set_container(ports=[{"containerPort": 70000}])),
        [S + f"expected 0 <= 70000 <= 65535: {C0}.ports[0].containerPort"],
        id="port-out-of-range",
    ),
    pytest.param(
        with_(service, set_container(ports=[{"containerPort": 8012}])),
        [
            S + f"invalid value: 8012 is a reserved port: {C0}.ports[0].containerPort",
            "  8012 is reserved for the queue-proxy; use another port",
        ],
        id="port-reserved",
    ),
    pytest.param(
        with_(
            service,
            set_container(ports=[{"containerPort": 8080, "name": "grpc", "protocol": "UDP"}]),
        ),
        [
            S + f"Port name grpc is not allowed: {C0}.ports[0]",
            "  Name must be empty, or one of: 'h2c', 'http1'",
            S + f"invalid value: UDP: {C0}.ports[0].protocol",
        ],
        id="port-name-and-protocol",
    ),
    pytest.param(
        with_(service, set_container(ports=[{"containerPort": 8080}, {"containerPort": 8081}])),
        [
            S + "more than one container port is set: spec.template.spec.containers[*].ports",
            "  Only a single port is allowed across all containers",
        ],
        id="two-ports",
    ),
    pytest.param(
        with_(service, set_container(env=[{"name": "K_REVISION", "value": "x"}, {"value": "y"}])),
        [
            S + f'"K_REVISION" is a reserved environment variable: {C0}.env[0].name',
            S + f"missing field(s): {C0}.env[1].name",
        ],
        id="env",
    ),
    pytest.param(
        with_(service, set_container(name="queue-proxy")),
        [S + f'"queue-proxy" is a reserved container name: {C0}.name'],
        id="container-name-reserved",
    ),
    pytest.param(
        with_(
            service, set_container(readinessProbe={"httpGet": {"port": "admin"}, "tcpSocket": {}})
        ),
        [
            S + f"expected exactly one, got both: {PROBE}.httpGet, {PROBE}.tcpSocket",
            S + f"invalid value: admin: {C0}.readinessProbe.httpGet.port",
            "  Probe port must match container port",
        ],
        id="probe-handlers",
    ),
    pytest.param(
        with_(
            service,
            set_container(
                readinessProbe={"tcpSocket": {}, "timeoutSeconds": 2, "failureThreshold": 2}
            ),
        ),
        [
            S + "failureThreshold is disallowed when periodSeconds is zero: "
            f"{PROBE}.failureThreshold",
            S + f"timeoutSeconds is disallowed when periodSeconds is zero: {PROBE}.timeoutSeconds",
        ],
        id="probe-aggressive-with-timeouts",
    ),
    pytest.param(
        with_(
            service,
            set_container(
                readinessProbe={"tcpSocket": {}, "periodSeconds": -1, "initialDelaySeconds": -2}
            ),
        ),
        [
            S + f"expected 0 <= -1 <= 2147483647: {C0}.readinessProbe.periodSeconds",
            S + f"expected 0 <= -2 <= 2147483647: {C0}.readinessProbe.initialDelaySeconds",
        ],
        id="probe-negative",
    ),
    # -- names and annotations -------------------------------------------------------------
    pytest.param(
        with_(service, lambda d: d["spec"]["template"].update(metadata={"name": "other-v1"})),
        [S + 'invalid value: "other-v1" must have prefix "hello-": spec.template.metadata.name'],
        id="template-name-prefix",
    ),
    pytest.param(
        with_(service, lambda d: d["metadata"].update(name="Hello")),
        [f"Service default/Hello: not a DNS 1035 label: [{DNS1035}]: metadata.name"],
        id="name-not-dns-1035",
    ),
    pytest.param(
        with_(service, lambda d: d["metadata"].update(name="a" * 64)),
        [
            f"Service default/{'a' * 64}: "
            "not a DNS 1035 label: [must be no more than 63 characters]: metadata.name"
        ],
        id="name-too-long",
    ),
    pytest.param(
        with_(service, lambda d: d["metadata"].pop("name")),
        ["Service default/<no name>: name or generateName is required: metadata.name"],
        id="name-missing",
    ),
    pytest.param(
        with_(service, lambda d: d["metadata"].update(namespace="Team_A")),
        [
            "Service Team_A/hello: invalid value: Team_A: metadata.namespace",
            "  a namespace is a DNS-1123 label: lower case letters, digits and '-'",
        ],
        id="namespace",
    ),
    pytest.param(
        with_(
            service,
            lambda d: d["metadata"].update(annotations={"autoscaling.knative.dev/min-scale": "1"}),
        ),
        [
            S + 'invalid key name "autoscaling.knative.dev/min-scale": metadata.annotations',
            "  autoscaling annotations must be put under "
            '"spec.template.metadata.annotations" to work',
        ],
        id="autoscaling-annotation-on-service",
    ),
]


@pytest.mark.parametrize("doc, expected", CASES)
def test_refused_with_path(doc: Doc, expected: list[str]) -> None:
    assert sorted(errors_of(doc)) == sorted(expected)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(service(), id="service-defaults"),
        pytest.param(
            with_(
                service,
                set_traffic(
                    {"percent": 80}, {"revisionName": "hello-00001", "percent": 20, "tag": "old"}
                ),
            ),
            id="split",
        ),
        pytest.param(
            with_(
                service, set_traffic({"percent": 100}, {"tag": "staging", "latestRevision": True})
            ),
            id="tag-at-zero",
        ),
        pytest.param(
            with_(service, set_template(containerConcurrency=1000, timeoutSeconds=600)),
            id="limits-inclusive",
        ),
        pytest.param(
            with_(service, lambda d: d["spec"]["template"].update(metadata={"name": "hello-v1"})),
            id="template-name",
        ),
        pytest.param(
            with_(service, set_container(ports=[{"containerPort": 8080, "name": "h2c"}])), id="h2c"
        ),
        pytest.param(
            with_(
                service,
                set_container(
                    readinessProbe={
                        "httpGet": {"path": "/ready", "port": "http"},
                        "periodSeconds": 1,
                    }
                ),
            ),
            id="probe",
        ),
        pytest.param(route(), id="route"),
    ],
)
def test_accepted(doc: Doc) -> None:
    validate(from_dict(doc))


def test_limits_follow_config_defaults() -> None:
    ctx = ValidationContext(
        defaults=DefaultsConfig.from_configmap(
            {
                "container-concurrency-max-limit": "10",
                "max-revision-timeout-seconds": "900",
                "allow-container-concurrency-zero": "false",
                "container-concurrency": "1",
            }
        )
    )
    doc = with_(service, set_template(containerConcurrency=0, timeoutSeconds=900))
    assert errors_of(doc, ctx) == [
        S + "expected 1 <= 0 <= 10: spec.template.spec.containerConcurrency"
    ]


def test_autoscaling_annotations_go_to_the_autoscalers_check() -> None:
    seen: list[tuple[dict[str, str], int, dict[str, str]]] = []

    def check(annotations: Any, cc: int, data: Any) -> None:
        seen.append((dict(annotations), cc, dict(data)))
        if annotations.get("autoscaling.knative.dev/min-scale") == "-1":
            raise ConfigError("autoscaling.knative.dev/min-scale", "expected 0 <= -1 <= 2147483647")

    ctx = ValidationContext(
        autoscaler_data={"stable-window": "30s"}, check_autoscaling_annotations=check
    )
    doc = with_(
        service,
        lambda d: d["spec"]["template"].update(
            metadata={"annotations": {"autoscaling.knative.dev/min-scale": "-1"}}
        ),
    )
    doc["spec"]["template"]["spec"]["containerConcurrency"] = 5
    assert errors_of(doc, ctx) == [
        S + "expected 0 <= -1 <= 2147483647: "
        "spec.template.metadata.annotations.autoscaling.knative.dev/min-scale"
    ]
    assert seen == [({"autoscaling.knative.dev/min-scale": "-1"}, 5, {"stable-window": "30s"})]


@pytest.mark.parametrize(
    "data, expected",
    [
        pytest.param(
            {"revision-timeout-seconds": "700"},
            "700 is above max-revision-timeout-seconds 600: data.revision-timeout-seconds",
            id="timeout-above-max",
        ),
        pytest.param(
            {"container-concurrency": "x"},
            'must be an integer, got "x": data.container-concurrency',
            id="not-a-number",
        ),
        pytest.param(
            {"container-concurrency-max-limit": "0"},
            "must be at least 1, got 0: data.container-concurrency-max-limit",
            id="max-limit",
        ),
    ],
)
def test_config_defaults_refused(data: dict[str, str], expected: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-defaults", "namespace": "knative-serving"},
        "data": data,
    }
    assert errors_of(doc) == [f"ConfigMap knative-serving/config-defaults: {expected}"]


def test_configmap_name_and_namespace() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-network", "namespace": "default"},
    }
    assert errors_of(doc) == [
        "ConfigMap default/config-network: invalid value: config-network: metadata.name",
        "  knpy reads the ConfigMaps config-defaults and config-autoscaler",
        "ConfigMap default/config-network: invalid value: default: metadata.namespace",
        "  Knative reads its ConfigMaps in the namespace knative-serving",
    ]


def test_config_autoscaler_goes_to_the_autoscalers_check() -> None:
    def check(data: Any) -> None:
        raise ConfigError("stable-window", "must be between 6s and 1h")

    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"},
        "data": {"stable-window": "1s"},
    }
    ctx = ValidationContext(check_autoscaler_config=check)
    assert errors_of(doc, ctx) == [
        "ConfigMap knative-serving/config-autoscaler: must be between 6s and 1h: data.stable-window"
    ]


def test_fixed_template_name_may_not_change_its_template() -> None:
    old = with_(service, lambda d: d["spec"]["template"].update(metadata={"name": "hello-v1"}))
    new = copy.deepcopy(old)
    container(new)["args"] = ["--fast"]
    with pytest.raises(ValidationError) as e:
        validate_update(from_dict(new), from_dict(old))
    assert str(e.value).splitlines() == [
        S + "Saw the following changes without a name change (-old +new): "
        "spec.template.metadata.name",
        '  +spec.containers[0].args[0]: "--fast"',
    ]
    new["spec"]["template"]["metadata"]["name"] = "hello-v2"
    validate_update(from_dict(new), from_dict(old))


def test_revision_spec_is_immutable() -> None:
    rev = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": "r-1"},
        "spec": {"containers": [{"command": ["a"]}]},
    }
    changed = copy.deepcopy(rev)
    changed["spec"]["containerConcurrency"] = 3
    with pytest.raises(ValidationError) as e:
        validate_update(from_dict(changed), from_dict(rev))
    assert str(e.value).splitlines() == [
        "Revision default/r-1: Immutable fields changed (-old +new): spec",
        "  -containerConcurrency: 0",
        "  +containerConcurrency: 3",
    ]


def test_field_error_via_flattens_like_knative() -> None:
    e = FieldError.out_of_bounds(101, 0, 100, "percent").via(1).via("spec.traffic")
    assert e.paths == ("spec.traffic[1].percent",)
    assert FieldError("sum", ("",)).via("traffic").via("spec").paths == ("spec.traffic",)
    assert field_errors(from_dict(service())) == []


def test_autoscalers_own_rules_by_default() -> None:
    annotations = {
        "autoscaling.knative.dev/min-scale": "-1",
        "autoscaling.knative.dev/max-scale": "x",
        "autoscaling.knative.dev/target": "5",
    }
    doc = with_(
        service, lambda d: d["spec"]["template"].update(metadata={"annotations": annotations})
    )
    prefix = "spec.template.metadata.annotations.autoscaling.knative.dev"
    assert errors_of(doc) == [
        S + f"expected 0 <= -1 <= 2147483647: {prefix}/min-scale",
        S + f"invalid value: x: {prefix}/max-scale",
    ]
    validate(from_dict(doc), ValidationContext(check_autoscaling_annotations=None))
