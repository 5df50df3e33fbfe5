"""config-defaults and Knative's SetDefaults for the local subset."""

from __future__ import annotations

import pytest

from controlplane.defaults import DefaultsConfig, default_traffic, set_defaults
from controlplane.model import (
    ConfigMap,
    Container,
    ContainerPort,
    HTTPGetAction,
    Probe,
    RevisionSpec,
    RevisionTemplateSpec,
    Service,
    ServiceSpec,
    TCPSocketAction,
    TrafficTarget,
)
from shared.envconfig import ConfigError


@pytest.mark.parametrize(
    "data, expected",
    [
        pytest.param({}, DefaultsConfig(), id="knative-defaults"),
        pytest.param(
            {"revision-timeout-seconds": "100"},
            DefaultsConfig(
                revision_timeout_seconds=100, revision_response_start_timeout_seconds=100
            ),
            id="response-start-follows-timeout",
        ),
        pytest.param(
            {"container-concurrency": "10", "container-concurrency-max-limit": "50"},
            DefaultsConfig(container_concurrency=10, container_concurrency_max_limit=50),
            id="concurrency",
        ),
        pytest.param(
            {"revision-cpu-request": "100m", "enable-service-links": "true"},
            DefaultsConfig(),
            id="cluster-only-keys-ignored",
        ),
    ],
)
def test_from_configmap(data: dict[str, str], expected: DefaultsConfig) -> None:
    assert DefaultsConfig.from_configmap(data) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        pytest.param(
            {"revision-idle-timeout-seconds": "400"},
            "revision-idle-timeout-seconds: 400 is above revision-timeout-seconds 300",
            id="idle-above-timeout",
        ),
        pytest.param(
            {"container-concurrency": "1001"},
            "container-concurrency: must be in [0, 1000], got 1001",
            id="cc-above-limit",
        ),
        pytest.param(
            {"container-name-template": "{{.Namespace}}"},
            "container-name-template: knpy supports plain names and {{.Name}} only",
            id="template",
        ),
    ],
)
def test_from_configmap_refused(data: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        DefaultsConfig.from_configmap(data)
    assert str(e.value) == message


def test_service_defaults() -> None:
    svc = Service(
        spec=ServiceSpec(
            template=RevisionTemplateSpec(
                spec=RevisionSpec(containers=(Container(command=("a",)),))
            )
        )
    )
    cfg = DefaultsConfig(
        revision_idle_timeout_seconds=60, revision_response_start_timeout_seconds=30
    )
    out = set_defaults(svc, cfg)
    assert out.metadata.namespace == "default"
    assert out.spec.traffic == (TrafficTarget(latest_revision=True, percent=100),)
    assert out.spec.template.spec == RevisionSpec(
        containers=(
            Container(
                name="user-container",
                command=("a",),
                readiness_probe=Probe(tcp_socket=TCPSocketAction(), success_threshold=1),
            ),
        ),
        container_concurrency=0,
        timeout_seconds=300,
        response_start_timeout_seconds=30,
        idle_timeout_seconds=60,
    )
    assert set_defaults(out, cfg) == out  # idempotent


@pytest.mark.parametrize(
    "target, expected",
    [
        pytest.param(
            TrafficTarget(percent=50), TrafficTarget(latest_revision=True, percent=50), id="latest"
        ),
        pytest.param(
            TrafficTarget(revision_name="r-1"),
            TrafficTarget(revision_name="r-1", latest_revision=False, percent=0),
            id="pinned-percent-0",
        ),
        pytest.param(
            TrafficTarget(revision_name="r-1", latest_revision=True, percent=5),
            TrafficTarget(revision_name="r-1", latest_revision=True, percent=5),
            id="explicit-kept-for-validation",
        ),
    ],
)
def test_traffic_target_defaults(target: TrafficTarget, expected: TrafficTarget) -> None:
    assert default_traffic([target], in_service=False) == (expected,)


def test_periodic_probe_gets_kubernetes_thresholds() -> None:
    spec = RevisionSpec(
        containers=(
            Container(
                command=("a",),
                ports=(ContainerPort(8080),),
                readiness_probe=Probe(http_get=HTTPGetAction(path="/"), period_seconds=5),
            ),
        ),
        timeout_seconds=0,
    )
    svc = set_defaults(
        Service(spec=ServiceSpec(template=RevisionTemplateSpec(spec=spec))), DefaultsConfig()
    )
    out = svc.spec.template.spec
    assert out.timeout_seconds == 300  # 0 means "unset" for Knative
    assert out.containers[0].readiness_probe == Probe(
        http_get=HTTPGetAction(path="/"),
        period_seconds=5,
        success_threshold=1,
        failure_threshold=3,
        timeout_seconds=1,
    )


def test_configmap_namespace_defaults_to_knative_serving() -> None:
    cm = set_defaults(ConfigMap(), DefaultsConfig())
    assert cm.metadata.namespace == "knative-serving"
