"""Knative's webhook as admission hooks: defaults stored, refusals with today's messages and
paths (the cases of test_validation.py, through the API server's seam), one cause per field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from controlplane.kubeapi.admission import Cause, Denied, Operation
from controlplane.webhook import admission_hooks
from shared.kube.resources import (
    BROKERS,
    CHANNELS,
    CONFIGMAPS,
    CONFIGURATIONS,
    CONTAINERSOURCES,
    KSERVICES,
    METRICS,
    PINGSOURCES,
    PODAUTOSCALERS,
    REVISIONS,
    ROUTES,
    SERVERLESSSERVICES,
    SINKBINDINGS,
    SUBSCRIPTIONS,
    TRIGGERS,
    Obj,
    Resource,
)

Doc = dict[str, Any]
HOOKS = admission_hooks()


class Reader:
    """The stored objects the webhook may read: here, ConfigMaps of knative-serving."""

    def __init__(self, **configmaps: dict[str, str]) -> None:
        self.configmaps = {name.replace("_", "-"): data for name, data in configmaps.items()}

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        if resource == CONFIGMAPS and namespace == "knative-serving" and name in self.configmaps:
            return {"metadata": {"name": name}, "data": self.configmaps[name]}
        return None

    def list(self, resource: Resource, namespace: str | None = None) -> list[Obj]:
        return []


def service() -> Doc:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": "hello",
            "namespace": "default",
            "uid": "u",
            "resourceVersion": "7",
            "generation": 1,
            "creationTimestamp": "2027-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "template": {
                "metadata": {"creationTimestamp": None},
                "spec": {
                    "containers": [
                        {"command": ["python", "app.py"], "ports": [{"containerPort": 8080}]}
                    ]
                },
            }
        },
    }


def route() -> Doc:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Route",
        "metadata": {"name": "front", "namespace": "default"},
        "spec": {"traffic": [{"configurationName": "hello", "percent": 100}]},
    }


def resource_of(doc: Doc) -> Resource:
    return {"Service": KSERVICES, "Route": ROUTES, "Configuration": CONFIGURATIONS}[doc["kind"]]


def admit(
    doc: Doc, reader: Reader | None = None, old: Doc | None = None, resource: Resource | None = None
) -> Obj:
    op: Operation = "UPDATE" if old else "CREATE"
    hook = HOOKS[resource or resource_of(doc)]
    return hook.admit(op, copy.deepcopy(doc), old, reader or Reader())


def refused(doc: Doc, reader: Reader | None = None, **kw: Any) -> Denied:
    with pytest.raises(Denied) as e:
        admit(doc, reader, **kw)
    return e.value


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
        d["spec"]["template"]["spec"]["containers"][0].update(fields)

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
        ["spec.traffic", "spec.traffic[1].percent"],
        id="percent-above-100",
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
        ["spec.traffic[1].tag", "spec.traffic[0].tag"],
        id="duplicate-tag",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "tag": "Blue_1"})),
        [S + f"invalid value: not a DNS 1035 label: [{DNS1035}]: spec.traffic[0].tag"],
        ["spec.traffic[0].tag"],
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
        ["spec.traffic[0].latestRevision"],
        id="revision-name-with-latest",
    ),
    pytest.param(
        with_(service, set_traffic({"percent": 100, "configurationName": "other"})),
        [S + "must not set the field(s): spec.traffic[0].configurationName"],
        ["spec.traffic[0].configurationName"],
        id="service-configuration-name",
    ),
    pytest.param(
        with_(route, set_traffic({"percent": 100})),
        [
            R + "expected exactly one, got neither: "
            "spec.traffic[0].configurationName, spec.traffic[0].revisionName"
        ],
        ["spec.traffic[0].revisionName", "spec.traffic[0].configurationName"],
        id="route-neither",
    ),
    pytest.param(
        with_(service, set_template(containerConcurrency=1001)),
        [S + "expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency"],
        ["spec.template.spec.containerConcurrency"],
        id="cc-above-limit",
    ),
    pytest.param(
        with_(service, set_template(timeoutSeconds=601)),
        [S + "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds"],
        ["spec.template.spec.timeoutSeconds"],
        id="timeout-above-max",
    ),
    pytest.param(
        with_(service, set_template(containers=[])),
        [S + "missing field(s): spec.template.spec.containers"],
        ["spec.template.spec.containers"],
        id="no-container",
    ),
    pytest.param(
        with_(service, set_container(command=[])),
        [
            S + f"a local run needs a command: {C0}.command",
            "  knpy starts the container's command (and args) as a local process; "
            "it pulls no image",
        ],
        [f"{C0}.command"],
        id="no-command",
    ),
    pytest.param(
        with_(service, set_container(ports=[{"containerPort": 8012}])),
        [
            S + f"invalid value: 8012 is a reserved port: {C0}.ports[0].containerPort",
            "  8012 is reserved for the queue-proxy; use another port",
        ],
        [f"{C0}.ports[0].containerPort"],
        id="port-reserved",
    ),
    pytest.param(
        with_(service, set_container(env=[{"name": "K_REVISION", "value": "x"}, {"value": "y"}])),
        [
            S + f'"K_REVISION" is a reserved environment variable: {C0}.env[0].name',
            S + f"missing field(s): {C0}.env[1].name",
        ],
        [f"{C0}.env[0].name", f"{C0}.env[1].name"],
        id="env",
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
        [f"{PROBE}.failureThreshold", f"{PROBE}.timeoutSeconds"],
        id="probe-aggressive-with-timeouts",
    ),
    pytest.param(
        with_(service, lambda d: d["spec"]["template"].update(metadata={"name": "other-v1"})),
        [S + 'invalid value: "other-v1" must have prefix "hello-": spec.template.metadata.name'],
        ["spec.template.metadata.name"],
        id="template-name-prefix",
    ),
    pytest.param(
        with_(service, lambda d: d["metadata"].update(name="Hello")),
        [f"Service default/Hello: not a DNS 1035 label: [{DNS1035}]: metadata.name"],
        ["metadata.name"],
        id="name-not-dns-1035",
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
        ["metadata.annotations"],
        id="autoscaling-annotation-on-service",
    ),
    pytest.param(
        with_(
            service,
            lambda d: d["spec"]["template"].update(
                metadata={"annotations": {"autoscaling.knative.dev/min-scale": "-1"}}
            ),
        ),
        [
            S + "expected 0 <= -1 <= 2147483647: "
            "spec.template.metadata.annotations.autoscaling.knative.dev/min-scale"
        ],
        ["spec.template.metadata.annotations.autoscaling.knative.dev/min-scale"],
        id="autoscaler-rules",
    ),
    pytest.param(
        with_(service, set_container(resources={"limits": {"cpu": "1"}})),
        [
            S + f"must not set the field(s): {C0}.resources",
            "  knpy's local platform does not support these fields",
        ],
        [f"{C0}.resources"],
        id="unsupported-field",
    ),
]


@pytest.mark.parametrize(("doc", "lines", "fields"), CASES)
def test_refused_with_knatives_message_and_one_cause_per_field(
    doc: Doc, lines: list[str], fields: list[str]
) -> None:
    e = refused(doc)
    assert sorted(e.message.splitlines()) == sorted(lines)
    assert sorted(c.field for c in e.causes) == sorted(fields)


def test_defaults_are_stored_and_the_rest_of_the_object_is_kept() -> None:
    doc = service()
    out = admit(doc)
    assert out["spec"] == {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "user-container",
                        "command": ["python", "app.py"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {}, "successThreshold": 1},
                    }
                ],
                "containerConcurrency": 0,
                "timeoutSeconds": 300,
            }
        },
        "traffic": [{"latestRevision": True, "percent": 100}],
    }
    assert out["metadata"] == doc["metadata"]  # no creator/lastModifier: there is no user
    assert "status" not in out
    assert admit(out) == out  # defaulting is idempotent


def test_limits_follow_config_defaults() -> None:
    reader = Reader(
        config_defaults={
            "container-concurrency-max-limit": "10",
            "max-revision-timeout-seconds": "900",
            "allow-container-concurrency-zero": "false",
            "container-concurrency": "1",
        }
    )
    doc = with_(service, set_template(containerConcurrency=0, timeoutSeconds=900))
    assert refused(doc, reader).causes == (
        Cause("spec.template.spec.containerConcurrency", "expected 1 <= 0 <= 10"),
    )
    out = admit(with_(service, set_template(timeoutSeconds=900)), reader)
    assert out["spec"]["template"]["spec"]["containerConcurrency"] == 1  # the new default


def test_fixed_template_name_may_not_change_its_template() -> None:
    old = admit(
        with_(service, lambda d: d["spec"]["template"].update(metadata={"name": "hello-v1"}))
    )
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["args"] = ["--fast"]
    e = refused(new, old=old)
    assert e.message.splitlines() == [
        S + "Saw the following changes without a name change (-old +new): "
        "spec.template.metadata.name",
        '  +spec.containers[0].args[0]: "--fast"',
    ]
    new["spec"]["template"]["metadata"]["name"] = "hello-v2"
    admit(new, old=old)


def test_revision_spec_is_immutable() -> None:
    rev = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": "r-1",
            "namespace": "default",
            "labels": {"serving.knative.dev/configuration": "r"},
            "ownerReferences": [{"kind": "Configuration", "name": "r", "uid": "u"}],
        },
        "spec": {"containers": [{"command": ["a"]}]},
    }
    stored = admit(rev, resource=REVISIONS)
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"]["serving.knative.dev/routingState"] = "active"
    admit(relabelled, old=stored, resource=REVISIONS)  # metadata may change
    changed = copy.deepcopy(stored)
    changed["spec"]["containerConcurrency"] = 3
    e = refused(changed, old=stored, resource=REVISIONS)
    assert e.message.splitlines() == [
        "Revision default/r-1: Immutable fields changed (-old +new): spec",
        "  -containerConcurrency: 0",
        "  +containerConcurrency: 3",
    ]


def test_revision_metadata_updates_pass_after_config_defaults_tightened() -> None:
    """The labeler must still be able to mark an old revision when its spec would no longer be
    accepted as new (Knative validates a Revision's spec on create only)."""
    rev = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": "r-1", "namespace": "default"},
        "spec": {"containers": [{"command": ["a"]}], "containerConcurrency": 50},
    }
    stored = admit(rev, resource=REVISIONS)
    tight = Reader(config_defaults={"container-concurrency-max-limit": "10"})
    assert refused(rev, tight, resource=REVISIONS).causes == (
        Cause("spec.containerConcurrency", "expected 0 <= 50 <= 10"),
    )
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"serving.knative.dev/routingState": "reserve"}
    assert admit(relabelled, tight, old=stored, resource=REVISIONS) == relabelled
    # Nor do defaults config-defaults gained since change the stored spec.
    later = Reader(config_defaults={"revision-idle-timeout-seconds": "100"})
    assert "idleTimeoutSeconds" in admit(rev, later, resource=REVISIONS)["spec"]
    assert admit(relabelled, later, old=stored, resource=REVISIONS) == relabelled


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        pytest.param(
            "config-defaults",
            {"revision-timeout-seconds": "700"},
            "700 is above max-revision-timeout-seconds 600: data.revision-timeout-seconds",
            id="timeout-above-max",
        ),
        pytest.param(
            "config-defaults",
            {"container-concurrency": "x"},
            'must be an integer, got "x": data.container-concurrency',
            id="not-a-number",
        ),
        pytest.param(
            "config-autoscaler",
            {"stable-window": "1s"},
            "= 1.0s, must be in [6s; 1h0m0s] range: data.stable-window",
            id="autoscaler",
        ),
    ],
)
def test_knative_configmaps_must_parse(name: str, data: dict[str, str], expected: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "knative-serving"},
        "data": data,
    }
    with pytest.raises(Denied) as e:
        HOOKS[CONFIGMAPS].admit("CREATE", doc, None, Reader())
    assert e.value.message == f"ConfigMap knative-serving/{name}: {expected}"


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        pytest.param("knative-serving", "config-network", id="other-knative-configmap"),
        pytest.param("default", "config-defaults", id="same-name-elsewhere"),
    ],
)
def test_other_configmaps_pass_untouched(namespace: str, name: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"revision-timeout-seconds": "nonsense"},
    }
    assert HOOKS[CONFIGMAPS].admit("CREATE", doc, None, Reader()) == doc


def pa(**spec: Any) -> Doc:
    base: Doc = {
        "containerConcurrency": 0,
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "r-deployment"},
        "protocolType": "http1",
        "reachability": "Reachable",
    }
    base.update(spec)
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": base,
    }


def test_podautoscaler_defaults_class_and_metric() -> None:
    out = HOOKS[PODAUTOSCALERS].admit("CREATE", pa(), None, Reader())
    assert out["metadata"]["annotations"] == {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "concurrency",
    }


@pytest.mark.parametrize(
    ("resource", "doc", "fields"),
    [
        pytest.param(
            PODAUTOSCALERS,
            pa(protocolType="", scaleTargetRef={"kind": "Deployment"}, containerConcurrency=-1),
            [
                "spec.containerConcurrency",
                "spec.protocolType",
                "spec.scaleTargetRef.apiVersion",
                "spec.scaleTargetRef.name",
            ],
            id="podautoscaler",
        ),
        pytest.param(
            SERVERLESSSERVICES,
            {
                "kind": "ServerlessService",
                "metadata": {"name": "r", "namespace": "default"},
                "spec": {"mode": "Sometimes", "numActivators": -1, "protocolType": "http3"},
            },
            [
                "spec.mode",
                "spec.numActivators",
                "spec.objectRef.apiVersion",
                "spec.objectRef.kind",
                "spec.objectRef.name",
                "spec.protocolType",
            ],
            id="serverlessservice",
        ),
        pytest.param(
            METRICS,
            {"kind": "Metric", "metadata": {"name": "R", "namespace": "default"}, "spec": {}},
            ["metadata.name", "spec"],
            id="metric",
        ),
    ],
)
def test_autoscaling_and_networking_objects_validated(
    resource: Resource, doc: Doc, fields: list[str]
) -> None:
    with pytest.raises(Denied) as e:
        HOOKS[resource].admit("CREATE", doc, None, Reader())
    assert sorted(c.field for c in e.value.causes) == fields


def test_what_the_autoscaler_writes_is_accepted() -> None:
    sks = {
        "kind": "ServerlessService",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "mode": "Proxy",
            "numActivators": 2,
            "protocolType": "http1",
            "objectRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "r-deployment"},
        },
    }
    metric = {
        "kind": "Metric",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"stableWindow": 60_000_000_000, "panicWindow": 6_000_000_000, "scrapeTarget": ""},
    }
    assert HOOKS[SERVERLESSSERVICES].admit("CREATE", sks, None, Reader()) == sks
    assert HOOKS[METRICS].admit("CREATE", metric, None, Reader()) == metric


def test_every_resource_knatives_webhook_admits_has_a_hook() -> None:
    assert set(HOOKS) == {
        KSERVICES,
        CONFIGURATIONS,
        ROUTES,
        REVISIONS,
        CONFIGMAPS,
        PODAUTOSCALERS,
        METRICS,
        SERVERLESSSERVICES,
        # Knative Eventing's (controlplane/eventing_webhook.py)
        BROKERS,
        TRIGGERS,
        CHANNELS,
        SUBSCRIPTIONS,
        PINGSOURCES,
        SINKBINDINGS,
        CONTAINERSOURCES,
    }
