"""Tests for queueproxy.config: Knative's queue-proxy variables, defaults and validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from queueproxy.config import QueueProxyConfig
from shared.envconfig import ConfigError
from shared.observability import ObservabilityConfig

# What Knative's reconciler always sets for a pod (pkg/reconciler/revision/resources/queue.go).
IDENTITY = {
    "SERVING_NAMESPACE": "default",
    "SERVING_SERVICE": "hello",
    "SERVING_CONFIGURATION": "hello",
    "SERVING_REVISION": "hello-00001",
    "SERVING_POD": "hello-00001-deployment-abc",
    "SERVING_POD_IP": "10.0.0.7",
}
BASE = QueueProxyConfig(
    namespace="default",
    service="hello",
    configuration="hello",
    revision="hello-00001",
    pod="hello-00001-deployment-abc",
    pod_ip="10.0.0.7",
)


@pytest.mark.parametrize(
    ("env", "changes"),
    [
        pytest.param({}, {}, id="defaults"),
        pytest.param({"SERVING_SERVICE": ""}, {"service": ""}, id="no-service"),
        pytest.param(
            {
                "QUEUE_SERVING_PORT": "18012",
                "QUEUE_ADMIN_PORT": "18022",
                "QUEUE_METRICS_PORT": "19090",
                "USER_METRICS_PORT": "19091",
                "USER_PORT": "18080",
                "USER_HOST": "::1",
                "QUEUE_BIND_HOST": "127.0.0.1",
            },
            {
                "serving_port": 18012,
                "admin_port": 18022,
                "metrics_port": 19090,
                "user_metrics_port": 19091,
                "user_port": 18080,
                "user_host": "::1",
                "bind_host": "127.0.0.1",
            },
            id="ports-and-hosts",
        ),
        pytest.param(
            {"CONTAINER_CONCURRENCY": "2"},
            {"container_concurrency": 2, "queue_depth": 20},
            id="queue-depth-is-10x-concurrency-as-buildBreaker",
        ),
        pytest.param(
            {"CONTAINER_CONCURRENCY": "2", "QUEUE_DEPTH": "3"},
            {"container_concurrency": 2, "queue_depth": 3},
            id="queue-depth-override",
        ),
        pytest.param(
            {"CONTAINER_CONCURRENCY": "0", "QUEUE_DEPTH": "3"},
            {},
            id="no-breaker-no-queue-when-unlimited",
        ),
        pytest.param(
            {
                "REVISION_TIMEOUT_SECONDS": "600",
                "REVISION_RESPONSE_START_TIMEOUT_SECONDS": "30",
                "REVISION_IDLE_TIMEOUT_SECONDS": "0",
            },
            {"revision_timeout_s": 600.0, "response_start_timeout_s": 30.0},
            id="timeouts-as-knative-writes-them",
        ),
        pytest.param(
            {"QUEUE_DRAIN_PERIOD_SECONDS": "0.2", "QUEUE_STATS_PERIOD_SECONDS": "0.05"},
            {"drain_period_s": 0.2, "stats_period_s": 0.05},
            id="short-periods-for-tests",
        ),
        pytest.param(
            {"QUEUE_DRAIN_PERIOD_SECONDS": "0"},
            {"drain_period_s": 0.0},
            id="no-drain-wait",
        ),
        pytest.param(
            {"SERVING_READINESS_PROBE": '{"tcpSocket":{"port":8080,"host":"127.0.0.1"}}'},
            {"readiness_probe": '{"tcpSocket":{"port":8080,"host":"127.0.0.1"}}'},
            id="readiness-probe-kept-raw",
        ),
        pytest.param(
            {"SERVING_ENABLE_REQUEST_LOG": "true"},
            {"observability": ObservabilityConfig(enable_request_log=True)},
            id="observability",
        ),
        pytest.param(
            {"SERVING_LOGGING_LEVEL": "debug", "ENABLE_HTTP2_AUTO_DETECTION": "false"},
            {},
            id="other-knative-variables-ignored",
        ),
    ],
)
def test_from_env(env: dict[str, str], changes: dict[str, Any]) -> None:
    got = QueueProxyConfig.from_env(IDENTITY | env)
    assert got == dataclasses.replace(BASE, **changes)


def test_defaults_are_knatives() -> None:
    got = QueueProxyConfig.from_env(IDENTITY)
    assert (got.serving_port, got.admin_port, got.metrics_port, got.user_metrics_port) == (
        8012,
        8022,
        9090,
        9091,
    )
    assert (got.user_port, got.container_concurrency, got.queue_depth) == (8080, 0, 0)
    assert (got.revision_timeout_s, got.drain_period_s, got.stats_period_s) == (300, 30, 1)
    assert (got.response_start_timeout_s, got.idle_timeout_s, got.readiness_probe) == (0, 0, "")


@pytest.mark.parametrize(
    "name",
    [
        "SERVING_NAMESPACE",
        "SERVING_CONFIGURATION",
        "SERVING_REVISION",
        "SERVING_POD",
        "SERVING_POD_IP",
    ],
)
def test_required(name: str) -> None:
    env = {k: v for k, v in IDENTITY.items() if k != name}
    with pytest.raises(ConfigError, match=f"^{name}: required but not set$"):
        QueueProxyConfig.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"CONTAINER_CONCURRENCY": "abc"},
            'CONTAINER_CONCURRENCY: must be an integer in [0, 2147483647], got "abc"',
            id="concurrency-not-a-number",
        ),
        pytest.param(
            {"CONTAINER_CONCURRENCY": "-1"},
            "CONTAINER_CONCURRENCY: must be an integer in [0, ",
            id="concurrency-negative",
        ),
        pytest.param(
            {"CONTAINER_CONCURRENCY": "1", "QUEUE_DEPTH": "0"},
            'QUEUE_DEPTH: must be an integer in [1, 2147483647], got "0"',
            id="queue-depth-zero-as-NewBreaker",
        ),
        pytest.param(
            {"QUEUE_SERVING_PORT": "70000"},
            'QUEUE_SERVING_PORT: must be an integer in [1, 65535], got "70000"',
            id="port-too-big",
        ),
        pytest.param(
            {"USER_PORT": "8012"},
            "USER_PORT: must differ from QUEUE_SERVING_PORT, both are 8012",
            id="user-port-is-serving-port",
        ),
        pytest.param(
            {"QUEUE_METRICS_PORT": "8022"},
            "QUEUE_METRICS_PORT: must differ from QUEUE_ADMIN_PORT, both are 8022",
            id="metrics-port-is-admin-port",
        ),
        pytest.param(
            {"REVISION_TIMEOUT_SECONDS": "0"},
            'REVISION_TIMEOUT_SECONDS: must be a number > 0, got "0"',
            id="revision-timeout-zero",
        ),
        pytest.param(
            {"REVISION_IDLE_TIMEOUT_SECONDS": "-5"},
            'REVISION_IDLE_TIMEOUT_SECONDS: must be a number >= 0, got "-5"',
            id="idle-timeout-negative",
        ),
        pytest.param(
            {"REVISION_RESPONSE_START_TIMEOUT_SECONDS": "10s"},
            'REVISION_RESPONSE_START_TIMEOUT_SECONDS: must be a number >= 0, got "10s"',
            id="timeout-with-unit",
        ),
        pytest.param(
            {"QUEUE_STATS_PERIOD_SECONDS": "0"},
            'QUEUE_STATS_PERIOD_SECONDS: must be a number > 0, got "0"',
            id="stats-period-zero",
        ),
        pytest.param(
            {"SERVING_READINESS_PROBE": '{"tcpSocket":'},
            "SERVING_READINESS_PROBE: invalid JSON: ",
            id="readiness-probe-not-json",
        ),
        pytest.param(
            {"OBSERVABILITY_CONFIG": "not json"},
            "OBSERVABILITY_CONFIG: invalid JSON: ",
            id="observability-not-json",
        ),
    ],
)
def test_from_env_invalid(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        QueueProxyConfig.from_env(IDENTITY | env)
    assert str(info.value).startswith(message)


def test_frozen_and_readable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.user_port = 1  # type: ignore[misc]
    text = repr(BASE)
    assert text.startswith("QueueProxyConfig(namespace='default', service='hello', ")
    assert "container_concurrency=0, queue_depth=0, revision_timeout_s=300.0" in text
