"""The SQLite store: revisions by template change, immutability, all-or-nothing apply, restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.model import Revision, ValidationError, to_dict
from controlplane.store import Outcome, Store, child_name
from shared.seams import RevisionKey


def service(
    name: str = "hello",
    target: str = "one",
    *,
    template_name: str = "",
    traffic: str = "",
    extra: str = "",
) -> str:
    meta = f"\n    metadata: {{name: {template_name}}}" if template_name else ""
    return f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  template:{meta}
    spec:{extra}
      containers:
        - command: [python, app.py]
          env: [{{name: TARGET, value: {target}}}]
{traffic}"""


SPLIT = """\
  traffic:
    - {latestRevision: true, percent: 80}
    - {revisionName: hello-00001, percent: 20, tag: old}
"""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state", clock=lambda: 1_700_000_000.0)


def names(store: Store) -> list[str]:
    return [r.metadata.name for r in store.list_revisions()]


def test_template_changes_make_numbered_revisions(store: Store) -> None:
    first = store.apply_text(service())
    assert first.lines() == ["service.serving.knative.dev/hello created"]
    assert first.revisions_created == (RevisionKey("default", "hello-00001"),)

    again = store.apply_text(service())
    assert again.applied[0].outcome is Outcome.UNCHANGED
    assert again.revisions_created == ()

    second = store.apply_text(service(target="two"))
    assert second.lines() == ["service.serving.knative.dev/hello configured"]
    assert second.revisions_created == (RevisionKey("default", "hello-00002"),)

    store.set_revision_status("default", "hello-00001", ready=True)
    traffic_only = store.apply_text(service(target="two", traffic=SPLIT))
    assert traffic_only.revisions_created == ()  # the template did not change

    # Back to the first template: a new generation, so a new revision, as in Knative.
    assert store.apply_text(service()).revisions_created == (RevisionKey("default", "hello-00003"),)
    assert names(store) == ["hello-00001", "hello-00002", "hello-00003"]

    svc = store.get_service("default", "hello")
    assert svc is not None
    assert svc.metadata.generation == 4
    assert svc.status.latest_created_revision_name == "hello-00003"


def test_revision_carries_the_template_and_knatives_labels(store: Store) -> None:
    store.apply_text(service(extra="\n      containerConcurrency: 7"))
    rev = store.get_revision("default", "hello-00001")
    assert rev is not None
    assert dict(rev.metadata.labels) == {
        "serving.knative.dev/configuration": "hello",
        "serving.knative.dev/configurationGeneration": "1",
        "serving.knative.dev/service": "hello",
    }
    assert rev.spec.container_concurrency == 7
    assert rev.spec.timeout_seconds == 300  # config-defaults' revision-timeout-seconds
    assert rev.spec.containers[0].name == "user-container"
    assert rev.status.conditions[0].status == "Unknown"
    assert rev.metadata.creation_timestamp == "2023-11-14T22:13:20Z"


def test_fixed_template_name_is_honoured_and_guarded(store: Store) -> None:
    store.apply_text(service(template_name="hello-v1"))
    assert names(store) == ["hello-v1"]
    assert store.apply_text(service(template_name="hello-v1")).revisions_created == ()

    with pytest.raises(ValidationError) as e:
        store.apply_text(service(target="two", template_name="hello-v1"))
    assert str(e.value).splitlines()[0] == (
        "Service default/hello: Saw the following changes without a name change (-old +new): "
        "spec.template.metadata.name"
    )

    store.apply_text(service(target="two", template_name="hello-v2"))
    assert names(store) == ["hello-v1", "hello-v2"]

    # hello-v1 names the first template for good: another template may not take it.
    with pytest.raises(ValidationError) as e:
        store.apply_text(service(target="three", template_name="hello-v1"))
    assert str(e.value).splitlines() == [
        'Service default/hello: revisions.serving.knative.dev "hello-v1" already exists: '
        "spec.template.metadata.name",
        "  a revision never changes: name the changed template anew",
    ]
    # ... but the same template may come back under its name.
    store.apply_text(service(template_name="hello-v1"))
    svc = store.get_service("default", "hello")
    assert svc is not None and svc.status.latest_created_revision_name == "hello-v1"


def test_revision_applied_directly_is_immutable(store: Store) -> None:
    rev = """\
apiVersion: serving.knative.dev/v1
kind: Revision
metadata: {name: solo-1}
spec: {containers: [{command: [./run]}]}
"""
    assert store.apply_text(rev).revisions_created == (RevisionKey("default", "solo-1"),)
    assert store.apply_text(rev).applied[0].outcome is Outcome.UNCHANGED
    with pytest.raises(ValidationError, match=r"Immutable fields changed \(-old \+new\): spec"):
        store.apply_text(rev.replace("./run", "./other"))


def test_bad_multi_document_apply_applies_nothing(store: Store) -> None:
    config_defaults = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: config-defaults, namespace: knative-serving}
data: {revision-timeout-seconds: "120"}
"""
    bad = service("other", traffic="  traffic: [{latestRevision: true, percent: 90}]\n")
    with pytest.raises(ValidationError) as e:
        store.apply_text("---\n".join([config_defaults, service(), bad]))
    assert str(e.value) == (
        "Service default/other: Traffic targets sum to 90, want 100: spec.traffic"
    )
    assert store.list_services() == []
    assert store.list_revisions() == []
    assert store.configmap("config-defaults") is None
    assert repr(store) == f"<Store {store.path}>"


def test_every_bad_document_is_reported(store: Store) -> None:
    with pytest.raises(ValidationError) as e:
        store.apply_text(
            service("a", extra="\n      timeoutSeconds: 601")
            + "---\n"
            + service("b", extra="\n      containerConcurrency: 1001")
        )
    assert str(e.value).splitlines() == [
        "Service default/a: expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds",
        "Service default/b: expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency",
    ]


def test_config_defaults_apply_to_later_documents(store: Store) -> None:
    config_defaults = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: config-defaults}
data: {revision-timeout-seconds: "700", max-revision-timeout-seconds: "900"}
"""
    result = store.apply_text(
        config_defaults + "---\n" + service(extra="\n      timeoutSeconds: 800")
    )
    assert result.lines() == [
        "configmap/config-defaults created",
        "service.serving.knative.dev/hello created",
    ]
    assert store.defaults_config().max_revision_timeout_seconds == 900
    store.apply_text(service("b"))
    rev = store.get_revision("default", "b-00001")
    assert rev is not None and rev.spec.timeout_seconds == 700


def test_status_and_traffic_follow_readiness(store: Store) -> None:
    store.apply_text(service())
    svc = store.get_service("default", "hello")
    assert svc is not None
    assert svc.status.url == "http://hello.default.localhost"
    assert svc.status.traffic == ()  # nothing ready yet
    assert [c.status for c in svc.status.conditions] == ["Unknown", "Unknown", "Unknown"]

    store.set_revision_status(
        "default", "hello-00001", ready=True, actual_replicas=1, desired_replicas=1
    )
    store.apply_text(service(target="two"))
    store.set_revision_status("default", "hello-00002", ready=True)
    store.apply_text(service(target="two", traffic=SPLIT))
    svc = store.get_service("default", "hello")
    assert svc is not None
    assert to_dict(svc)["status"] == {
        "observedGeneration": 3,
        "conditions": [
            {"type": "ConfigurationsReady", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "RoutesReady", "status": "True"},
        ],
        "latestCreatedRevisionName": "hello-00002",
        "latestReadyRevisionName": "hello-00002",
        "url": "http://hello.default.localhost",
        "traffic": [
            {"revisionName": "hello-00002", "latestRevision": True, "percent": 80},
            {
                "tag": "old",
                "revisionName": "hello-00001",
                "latestRevision": False,
                "percent": 20,
                "url": "http://old-hello.default.localhost",
            },
        ],
    }
    rev = store.get_revision("default", "hello-00001")
    assert rev is not None
    assert (rev.status.actual_replicas, rev.status.desired_replicas) == (1, 1)
    assert set(store.hosts()) == {"hello.default.localhost", "old-hello.default.localhost"}


def test_restart_restores_everything(tmp_path: Path) -> None:
    with Store(tmp_path) as first:
        first.apply_text(service())
        first.set_revision_status("default", "hello-00001", ready=True, actual_replicas=2)
        first.apply_text(service(target="two"))
        before = [json.dumps(to_dict(s)) for s in first.list_services()]
        revisions = first.list_revisions()
    with Store(tmp_path) as second:
        assert [json.dumps(to_dict(s)) for s in second.list_services()] == before
        assert second.list_revisions() == revisions
        # The next revision continues the history.
        assert second.apply_text(service(target="three")).revisions_created == (
            RevisionKey("default", "hello-00003"),
        )


def test_delete_service_cascades(store: Store) -> None:
    store.apply_text(service())
    store.apply_text(service(target="two"))
    store.apply_text(service("keep"))
    assert store.delete_service("default", "hello")
    assert not store.delete_service("default", "hello")
    assert store.get_configuration("default", "hello") is None
    assert store.get_route("default", "hello") is None
    assert names(store) == ["keep-00001"]
    # A new Service of the same name starts its history afresh.
    assert store.apply_text(service()).revisions_created == (RevisionKey("default", "hello-00001"),)


def test_owned_configuration_may_not_be_applied_directly(store: Store) -> None:
    store.apply_text(service())
    configuration = """\
apiVersion: serving.knative.dev/v1
kind: Configuration
metadata: {name: hello}
spec:
  template:
    spec:
      containers: [{command: [./other]}]
"""
    with pytest.raises(ValidationError) as e:
        store.apply_text(configuration)
    assert str(e.value) == (
        'Configuration default/hello: Configuration "hello" is owned by Service "hello"; '
        "change the Service: metadata.name"
    )


def test_standalone_configuration_and_route(store: Store) -> None:
    result = store.apply_text(
        """\
apiVersion: serving.knative.dev/v1
kind: Configuration
metadata: {name: worker}
spec:
  template:
    spec:
      containers: [{command: [./worker]}]
---
apiVersion: serving.knative.dev/v1
kind: Route
metadata: {name: front}
spec:
  traffic: [{configurationName: worker, percent: 100, tag: canary}]
"""
    )
    assert result.revisions_created == (RevisionKey("default", "worker-00001"),)
    route = store.get_route("default", "front")
    assert route is not None and route.status.conditions[0].status == "Unknown"
    store.set_revision_status("default", "worker-00001", ready=True)
    resolved = store.resolve_route("default", "front")
    assert resolved is not None
    assert set(resolved.hosts("front", "default")) == {
        "front.default.localhost",
        "canary-front.default.localhost",
    }
    assert store.delete("Configuration", "default", "worker")
    assert store.list_revisions() == []


def test_failed_revision_marks_the_service(store: Store) -> None:
    store.apply_text(service())
    rev = store.set_revision_status("default", "hello-00001", ready=False, reason="ExitCode1")
    assert isinstance(rev, Revision)
    assert rev.status.conditions[0].reason == "ExitCode1"
    svc = store.get_service("default", "hello")
    assert svc is not None
    ready = {c.type: c.status for c in svc.status.conditions}
    # A configuration whose revision failed fails its route too (Knative's ConfigurationFailed).
    assert ready == {"ConfigurationsReady": "False", "Ready": "False", "RoutesReady": "False"}
    assert store.set_revision_status("default", "nope", ready=True) is None


def test_crash_loop_fails_the_revision_until_a_pod_is_ready(tmp_path: Path) -> None:
    now = [1000.0]
    store = Store(tmp_path, clock=lambda: now[0])
    store.apply_text(service())
    message = "Container failed with: no DATABASE_URL"

    def conditions() -> dict[str, tuple[str, str, str, str]]:
        rev = store.get_revision("default", "hello-00001")
        assert rev is not None
        return {
            c.type: (c.status, c.reason, c.message, c.last_transition_time)
            for c in rev.status.conditions
        }

    now[0] = 1010.0
    store.set_revision_status(
        "default", "hello-00001", ready=False, reason="ExitCode1", message=message,
        container_healthy=False,
    )  # fmt: skip
    failed = conditions()
    assert failed["Ready"][:3] == ("False", "ExitCode1", message)
    assert failed["ContainerHealthy"][:3] == ("False", "ExitCode1", message)
    # The same failure again (each further crash) keeps the transition time.
    now[0] = 1020.0
    store.set_revision_status(
        "default", "hello-00001", ready=False, reason="ExitCode1", message=message,
        container_healthy=False,
    )  # fmt: skip
    assert conditions() == failed
    svc = store.get_service("default", "hello")
    assert svc is not None and svc.status.latest_ready_revision_name == ""
    # A pod turned ready: the revision recovers, and its route follows.
    now[0] = 1030.0
    store.set_revision_status("default", "hello-00001", ready=True, container_healthy=True)
    recovered = conditions()
    assert recovered["Ready"][:3] == recovered["ContainerHealthy"][:3] == ("True", "", "")
    assert recovered["Ready"][3] != failed["Ready"][3]
    rev = store.get_revision("default", "hello-00001")
    assert rev is not None and rev.status.conditions[0].type == "Ready"
    svc = store.get_service("default", "hello")
    assert svc is not None and svc.status.latest_ready_revision_name == "hello-00001"
    store.close()


@pytest.mark.parametrize(
    "parent, suffix, expected",
    [
        pytest.param("hello", "-00001", "hello-00001", id="short"),
        pytest.param(
            "a" * 60,
            "-00001",
            "a" * 25 + "cc7ed669cf88f201c3297c6a91e1d18d-00001",  # 25 + 32 + 6 = 63
            id="hashed",
        ),
    ],
)
def test_child_name(parent: str, suffix: str, expected: str) -> None:
    name = child_name(parent, suffix)
    assert name == expected
    assert len(name) <= 63 and name.endswith(suffix)


def test_config_autoscaler_limits_later_annotations(store: Store) -> None:
    config_autoscaler = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {max-scale-limit: "5", max-scale: "5"}
---
"""
    annotated = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    metadata:
      annotations: {autoscaling.knative.dev/max-scale: "10"}
    spec:
      containers: [{command: [./run]}]
"""
    with pytest.raises(ValidationError) as e:
        store.apply_text(config_autoscaler + annotated)
    assert str(e.value) == (
        "Service default/hello: expected 1 <= 10 <= 5: "
        "spec.template.metadata.annotations.autoscaling.knative.dev/max-scale"
    )
    assert store.configmap("config-autoscaler") is None  # refused with the Service
