"""activator.configmaps: config-network, config-logging and config-observability keys."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from activator.configmaps import log_level, network_warnings, observability_config
from shared.envconfig import ConfigError
from shared.observability import ObservabilityConfig


@pytest.mark.parametrize(
    ("data", "want"),
    [
        pytest.param({}, ObservabilityConfig(), id="defaults"),
        pytest.param(
            {
                "tracing-protocol": "grpc",
                "tracing-endpoint": "otel:4317",
                "tracing-sampling-rate": "0.25",
            },
            ObservabilityConfig(
                tracing_protocol="grpc", tracing_endpoint="otel:4317", tracing_sampling_rate=0.25
            ),
            id="tracing",
        ),
        pytest.param(
            {"logging.enable-request-log": "true"},
            ObservabilityConfig(enable_request_log=True),
            id="request log with Knative's default template",
        ),
        pytest.param(
            {
                "logging.enable-request-log": "True",
                "logging.request-log-template": "{{.Request.Method}}",
                "logging.enable-probe-request-log": "1",
            },
            ObservabilityConfig(
                enable_request_log=True,
                request_log_template="{{.Request.Method}}",
                enable_probe_request_log=True,
            ),
            id="request log template and probes",
        ),
        pytest.param(
            {"metrics-protocol": "prometheus", "runtime-profiling": "enabled"},
            ObservabilityConfig(),
            id="other keys ignored",
        ),
    ],
)
def test_observability_config(data: dict[str, str], want: ObservabilityConfig) -> None:
    assert observability_config(data) == want


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"tracing-protocol": "zipkin"}, "tracing-protocol", id="protocol"),
        pytest.param({"tracing-protocol": "grpc"}, "tracing-endpoint", id="grpc needs endpoint"),
        pytest.param({"tracing-sampling-rate": "lots"}, "tracing-sampling-rate", id="rate nan"),
        pytest.param({"tracing-sampling-rate": "2"}, "tracing-sampling-rate", id="rate > 1"),
        pytest.param(
            {"logging.enable-request-log": "sure"}, "logging.enable-request-log", id="bool"
        ),
        pytest.param(
            {"logging.enable-request-log": "true", "logging.request-log-template": ""},
            "logging.request-log-template",
            id="enabled without template",
        ),
    ],
)
def test_observability_config_errors(data: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        observability_config(data)
    assert str(err.value).startswith(key), str(err.value)


@pytest.mark.parametrize(
    ("data", "want"),
    [
        pytest.param({}, None, id="unset"),
        pytest.param({"loglevel.activator": "debug"}, logging.DEBUG, id="debug"),
        pytest.param({"loglevel.activator": "warn"}, logging.WARNING, id="warn"),
        pytest.param({"loglevel.activator": " Error "}, logging.ERROR, id="error, spaced"),
        pytest.param({"loglevel.autoscaler": "debug"}, None, id="another component's"),
    ],
)
def test_log_level(data: dict[str, str], want: int | None) -> None:
    assert log_level(data) == want


def test_log_level_unknown() -> None:
    with pytest.raises(ConfigError, match=r"^loglevel\.activator: unknown level"):
        log_level({"loglevel.activator": "chatty"})


@pytest.mark.parametrize(
    ("data", "want"),
    [
        pytest.param({}, [], id="defaults"),
        pytest.param({"mesh-compatibility-mode": "auto"}, [], id="mesh auto"),
        pytest.param(
            {"mesh-compatibility-mode": "Enabled"}, ["mesh-compatibility-mode"], id="mesh"
        ),
        pytest.param({"system-internal-tls": "enabled"}, ["system-internal-tls"], id="tls"),
    ],
)
def test_network_warnings(data: dict[str, Any], want: list[str]) -> None:
    got = network_warnings(data)
    assert [w.split(":")[0] for w in got] == want
