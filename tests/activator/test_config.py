"""Tests for activator.config: Knative's activator variables, knpy's knobs, defaults, errors.

Knative's cmd/activator/main.go reads POD_NAME and POD_IP (required),
MAX_IDLE_PROXY_CONNS_PER_HOST (100), PROBE_TIMEOUT ("300ms") and PROBE_FREQUENCY ("200ms"),
SYSTEM_NAMESPACE and CLUSTER_DOMAIN (the autoscaler's address); the rest are knpy's variables
whose defaults are Knative's hard-coded values (8012, 9090, queue depth 10,000, 45 s drain,
1 s reports). Every bad value must fail at start-up with the variable's name first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from activator.config import ActivatorConfig
from shared.envconfig import ConfigError
from shared.observability import ObservabilityConfig

POD = {"POD_NAME": "activator", "POD_IP": "127.0.0.1"}


def test_defaults_are_knatives() -> None:
    cfg = ActivatorConfig.from_env(POD)
    assert cfg == ActivatorConfig()
    assert (cfg.serving_port, cfg.metrics_port) == (8012, 9090)
    assert cfg.queue_depth == 10_000  # pkg/activator/net/throttler.go breakerQueueDepth
    assert (cfg.probe_timeout_s, cfg.probe_frequency_s) == (0.3, 0.2)  # main.go defaults
    assert cfg.drain_timeout_s == 45.0  # knative.dev/pkg network.DefaultDrainTimeout
    assert cfg.stats_period_s == 1.0  # concurrency_reporter.go reportInterval
    assert cfg.max_idle_conns_per_host == 100  # main.go MaxIdleProxyConnsPerHost
    assert cfg.reconnect_max_s == pytest.approx(14.6, abs=0.1)  # 100 ms x 1.3^19
    assert cfg.cluster_domain == "cluster.local"
    assert cfg.system_namespace == "knative-serving"
    assert cfg.autoscaler_url == "ws://autoscaler.knative-serving.svc.cluster.local:8080"
    assert (cfg.logging_configmap, cfg.observability_configmap) == (
        "config-logging",
        "config-observability",
    )
    assert cfg.observability == ObservabilityConfig()


@pytest.mark.parametrize(
    ("env", "changes"),
    [
        pytest.param({"POD_NAME": "activator-7f"}, {"pod_name": "activator-7f"}, id="pod-name"),
        pytest.param({"POD_IP": "10.1.2.3"}, {"pod_ip": "10.1.2.3"}, id="pod-ip"),
        pytest.param(
            {"ACTIVATOR_SERVING_PORT": "18012"}, {"serving_port": 18012}, id="serving-port"
        ),
        pytest.param(
            {"SYSTEM_NAMESPACE": "kn-system"},
            {
                "system_namespace": "kn-system",
                "autoscaler_url": "ws://autoscaler.kn-system.svc.cluster.local:8080",
            },
            id="system-namespace-names-the-autoscaler",
        ),
        pytest.param(
            {"SYSTEM_NAMESPACE": "kn-system", "CLUSTER_DOMAIN": "corp.internal"},
            {
                "system_namespace": "kn-system",
                "cluster_domain": "corp.internal",
                "autoscaler_url": "ws://autoscaler.kn-system.svc.corp.internal:8080",
            },
            id="cluster-domain-in-the-autoscaler-url",
        ),
        pytest.param(
            {"CONFIG_LOGGING_NAME": "log-cm", "CONFIG_OBSERVABILITY_NAME": "obs-cm"},
            {"logging_configmap": "log-cm", "observability_configmap": "obs-cm"},
            id="configmap-names",
        ),
        pytest.param(
            {"ACTIVATOR_BIND_HOST": "127.0.0.1"}, {"bind_host": "127.0.0.1"}, id="bind-host"
        ),
        pytest.param(
            {"ACTIVATOR_METRICS_PORT": "19090"}, {"metrics_port": 19090}, id="metrics-port"
        ),
        pytest.param(
            {"ACTIVATOR_AUTOSCALER_URL": "wss://autoscaler.knative-serving:8080"},
            {"autoscaler_url": "wss://autoscaler.knative-serving:8080"},
            id="autoscaler-url",
        ),
        pytest.param({"ACTIVATOR_QUEUE_DEPTH": "1"}, {"queue_depth": 1}, id="queue-depth"),
        pytest.param(
            {"PROBE_TIMEOUT": "1m30s", "PROBE_FREQUENCY": "50ms"},
            {"probe_timeout_s": 90.0, "probe_frequency_s": 0.05},
            id="probe-go-durations",
        ),
        pytest.param(
            {"ACTIVATOR_DRAIN_TIMEOUT_SECONDS": "0"}, {"drain_timeout_s": 0.0}, id="no-drain"
        ),
        pytest.param(
            {"ACTIVATOR_STATS_PERIOD_SECONDS": "0.1"}, {"stats_period_s": 0.1}, id="stats-period"
        ),
        pytest.param(
            {"ACTIVATOR_RECONNECT_MAX_SECONDS": "0.5"}, {"reconnect_max_s": 0.5}, id="reconnect"
        ),
        pytest.param(
            {"MAX_IDLE_PROXY_CONNS_PER_HOST": "0"}, {"max_idle_conns_per_host": 0}, id="idle-0"
        ),
        pytest.param({"ACTIVATOR_QUEUE_DEPTH": ""}, {}, id="empty-means-default"),
        pytest.param(
            {"SERVING_ENABLE_REQUEST_LOG": "true"},
            {"observability": ObservabilityConfig(enable_request_log=True)},
            id="observability",
        ),
    ],
)
def test_each_variable(env: dict[str, str], changes: dict[str, Any]) -> None:
    expected = dataclasses.replace(ActivatorConfig(), **changes)
    assert ActivatorConfig.from_env({**POD, **env}) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"POD_NAME": ""}, "POD_NAME: required but not set", id="no-pod-name"),
        pytest.param({"POD_IP": ""}, "POD_IP: required but not set", id="no-pod-ip"),
        pytest.param(
            {"ACTIVATOR_SERVING_PORT": "0"}, "ACTIVATOR_SERVING_PORT: must be", id="port-0"
        ),
        pytest.param(
            {"ACTIVATOR_METRICS_PORT": "65536"}, "ACTIVATOR_METRICS_PORT: must be", id="port-big"
        ),
        pytest.param(
            {"ACTIVATOR_METRICS_PORT": "8012"},
            "ACTIVATOR_METRICS_PORT: must differ from the serving port 8012",
            id="ports-clash",
        ),
        pytest.param(
            {"ACTIVATOR_AUTOSCALER_URL": "http://autoscaler:8080"},
            'ACTIVATOR_AUTOSCALER_URL: must be a ws:// or wss:// URL, got "http://autoscaler',
            id="url-not-ws",
        ),
        pytest.param(
            {"ACTIVATOR_AUTOSCALER_URL": "ws://"},
            "ACTIVATOR_AUTOSCALER_URL: must be a ws://",
            id="url-no-host",
        ),
        pytest.param(
            {"ACTIVATOR_QUEUE_DEPTH": "0"},
            'ACTIVATOR_QUEUE_DEPTH: must be an integer >= 1, got "0"',
            id="queue-depth-0",
        ),
        pytest.param(
            {"ACTIVATOR_QUEUE_DEPTH": "1_000"}, "ACTIVATOR_QUEUE_DEPTH:", id="queue-depth-_"
        ),
        pytest.param(
            {"PROBE_TIMEOUT": "300"},
            'PROBE_TIMEOUT: must be a Go duration such as "300ms", got "300"',
            id="probe-no-unit",
        ),
        pytest.param({"PROBE_FREQUENCY": "-1s"}, "PROBE_FREQUENCY: must be", id="probe-negative"),
        pytest.param({"PROBE_FREQUENCY": "1s "}, "PROBE_FREQUENCY: must be", id="probe-trailing"),
        pytest.param(
            {"ACTIVATOR_DRAIN_TIMEOUT_SECONDS": "-1"},
            "ACTIVATOR_DRAIN_TIMEOUT_SECONDS: must be a number >= 0",
            id="drain-negative",
        ),
        pytest.param(
            {"ACTIVATOR_STATS_PERIOD_SECONDS": "0"},
            "ACTIVATOR_STATS_PERIOD_SECONDS: must be a number >= 0.01",
            id="stats-period-0",
        ),
        pytest.param(
            {"ACTIVATOR_RECONNECT_MAX_SECONDS": "nan"},
            "ACTIVATOR_RECONNECT_MAX_SECONDS:",
            id="reconnect-nan",
        ),
        pytest.param(
            {"MAX_IDLE_PROXY_CONNS_PER_HOST": "-1"},
            "MAX_IDLE_PROXY_CONNS_PER_HOST: must be an integer >= 0",
            id="idle-negative",
        ),
        pytest.param({"OBSERVABILITY_CONFIG": "{"}, "OBSERVABILITY_CONFIG", id="observability"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ActivatorConfig.from_env({**POD, **env})
    assert str(err.value).startswith(message), str(err.value)
