"""Tests for shared.observability: OBSERVABILITY_CONFIG as Knative writes it, and overrides."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.envconfig import ConfigError
from shared.observability import DEFAULT_REQUEST_LOG_TEMPLATE, ObservabilityConfig

OC = "OBSERVABILITY_CONFIG"
# What Knative's reconciler writes with config-observability left at its defaults
# (pkg/reconciler/revision/resources/queue_test.go).
KNATIVE_DEFAULT = '{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{}}'


def cfg(**overrides: Any) -> ObservabilityConfig:
    return ObservabilityConfig(**overrides)


@pytest.mark.parametrize(
    ("env", "want"),
    [
        pytest.param({}, cfg(), id="nothing-set"),
        pytest.param({OC: ""}, cfg(), id="empty-variable"),
        pytest.param({OC: KNATIVE_DEFAULT}, cfg(), id="knative-defaults"),
        pytest.param(
            {
                OC: '{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{},'
                '"requestLogTemplate":"test template","enableProbeRequestLog":true}'
            },
            cfg(request_log_template="test template", enable_probe_request_log=True),
            id="knative-queue-test-request-log",
        ),
        pytest.param(
            {
                OC: json.dumps(
                    {
                        "tracing": {
                            "protocol": "grpc",
                            "endpoint": "otel-collector:4317",
                            "samplingRate": 0.25,
                        },
                        "enableRequestLog": True,
                    }
                )
            },
            cfg(
                tracing_protocol="grpc",
                tracing_endpoint="otel-collector:4317",
                tracing_sampling_rate=0.25,
                enable_request_log=True,
            ),
            id="tracing-grpc-and-request-log",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"http/protobuf","endpoint":"http://j:4318/v1/traces"}}'},
            cfg(tracing_protocol="http/protobuf", tracing_endpoint="http://j:4318/v1/traces"),
            id="no-rate-is-knative-zero",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"stdout","samplingRate":1}}'},
            cfg(tracing_protocol="stdout", tracing_sampling_rate=1.0),
            id="stdout-integer-rate",
        ),
        pytest.param(
            {
                OC: '{"Tracing":{"PROTOCOL":"stdout"},'
                '"EnableRequestLog":false,"enablerequestlog":true}'
            },
            cfg(tracing_protocol="stdout", enable_request_log=True),
            id="keys-case-insensitive-last-wins-as-go",
        ),
        pytest.param(
            {
                OC: '{"tracing":null,"enableProbeRequestLog":true,"ENABLEPROBEREQUESTLOG":null,'
                '"requestLogTemplate":null,"x":[1]}'
            },
            cfg(enable_probe_request_log=True),
            id="null-and-unknown-keys-ignored",
        ),
        pytest.param(
            {
                OC: '{"enableRequestLog":false,"requestLogTemplate":"a"}',
                "SERVING_ENABLE_REQUEST_LOG": "true",
                "SERVING_REQUEST_LOG_TEMPLATE": "b",
                "SERVING_ENABLE_PROBE_REQUEST_LOG": "1",
            },
            cfg(enable_request_log=True, request_log_template="b", enable_probe_request_log=True),
            id="individual-variables-override-json",
        ),
        pytest.param(
            {"SERVING_ENABLE_REQUEST_LOG": "True"},
            cfg(enable_request_log=True),
            id="older-variables-alone-default-template",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"},
            cfg(
                tracing_protocol="http/protobuf",
                tracing_endpoint="http://127.0.0.1:4318/v1/traces",
                tracing_sampling_rate=1.0,
            ),
            id="otlp-endpoint-turns-tracing-on",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
            },
            cfg(
                tracing_protocol="http/protobuf",
                tracing_endpoint="http://traces:4318/custom",
                tracing_sampling_rate=1.0,
            ),
            id="otlp-traces-endpoint-wins-and-is-used-as-is",
        ),
        pytest.param(
            {
                OC: '{"tracing":{"protocol":"grpc","endpoint":"a:4317","samplingRate":0.1}}',
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317",
            },
            cfg(
                tracing_protocol="grpc", tracing_endpoint="http://b:4317", tracing_sampling_rate=0.1
            ),
            id="otlp-endpoint-keeps-grpc-and-the-rate",
        ),
        pytest.param(
            {
                OC: '{"tracing":{"protocol":"stdout"}}',
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            },
            cfg(
                tracing_protocol="http/protobuf",
                tracing_endpoint="http://c:4318/v1/traces",
                tracing_sampling_rate=1.0,
            ),
            id="otlp-endpoint-replaces-stdout",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://d:4318", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
            cfg(
                tracing_protocol="http/protobuf",
                tracing_endpoint="http://d:4318/v1/traces",
                tracing_sampling_rate=0.5,
            ),
            id="sampler-arg-sets-the-rate",
        ),
    ],
)
def test_from_env(env: dict[str, str], want: ObservabilityConfig) -> None:
    assert ObservabilityConfig.from_env(env) == want


def test_default_template_is_knatives() -> None:
    # serving pkg/observability/config.go DefaultRequestLogTemplate, verbatim.
    knative = (
        '{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js '
        '.Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": '
        '{{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js '
        '.Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": '
        '"{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": '
        '"{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}'
    )
    assert knative == DEFAULT_REQUEST_LOG_TEMPLATE
    assert ObservabilityConfig().request_log_template == knative


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({OC: "{"}, "OBSERVABILITY_CONFIG: invalid JSON: ", id="truncated-json"),
        pytest.param(
            {OC: "[]"}, "OBSERVABILITY_CONFIG: must be a JSON object, got list", id="list"
        ),
        pytest.param(
            {OC: '{"tracing":"grpc"}'},
            "OBSERVABILITY_CONFIG: tracing: must be an object, got str",
            id="section-not-object",
        ),
        pytest.param(
            {OC: '{"tracing":{"samplingRate":"0.5"}}'},
            "OBSERVABILITY_CONFIG: tracing.samplingRate: must be a number, got str",
            id="rate-as-string",
        ),
        pytest.param(
            {OC: '{"tracing":{"samplingRate":true}}'},
            "OBSERVABILITY_CONFIG: tracing.samplingRate: must be a number, got bool",
            id="rate-as-bool",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"stdout","samplingRate":1.5}}'},
            "OBSERVABILITY_CONFIG: tracing-sampling-rate: must be in [0, 1], got 1.5",
            id="rate-above-one",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"stdout","samplingRate":NaN}}'},
            "OBSERVABILITY_CONFIG: tracing-sampling-rate: must be in [0, 1], got nan",
            id="rate-nan",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"zipkin"}}'},
            "OBSERVABILITY_CONFIG: tracing.protocol: must be one of none, grpc, http/protobuf, "
            'stdout, got "zipkin"',
            id="unknown-protocol",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"grpc"}}'},
            'OBSERVABILITY_CONFIG: tracing-endpoint: must be set for protocol "grpc"',
            id="grpc-without-endpoint",
        ),
        pytest.param(
            {OC: '{"tracing":{"protocol":"none","endpoint":"x:1"}}'},
            'OBSERVABILITY_CONFIG: tracing-endpoint: must not be set for protocol "none"',
            id="endpoint-without-protocol",
        ),
        pytest.param(
            {OC: '{"enableRequestLog":"yes"}'},
            "OBSERVABILITY_CONFIG: enableRequestLog: must be a boolean, got str",
            id="flag-as-string",
        ),
        pytest.param(
            {OC: '{"enableRequestLog":true,"requestLogTemplate":""}'},
            "OBSERVABILITY_CONFIG: logging.request-log-template: must be set when "
            "logging.enable-request-log is true",
            id="request-log-without-template",
        ),
        pytest.param(
            {"SERVING_ENABLE_REQUEST_LOG": "yes"},
            'SERVING_ENABLE_REQUEST_LOG: must be a boolean (true/false/1/0/t/f), got "yes"',
            id="older-variable-not-a-bool",
        ),
        pytest.param(
            {"OTEL_TRACES_SAMPLER_ARG": "2"},
            'OTEL_TRACES_SAMPLER_ARG: must be a number in [0, 1], got "2"',
            id="sampler-arg-out-of-range",
        ),
    ],
)
def test_from_env_invalid(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig.from_env(env)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        pytest.param({"tracing_protocol": "zipkin"}, "tracing-protocol", id="protocol"),
        pytest.param({"tracing_protocol": "grpc"}, "tracing-endpoint", id="endpoint"),
        pytest.param({"tracing_sampling_rate": -0.1}, "tracing-sampling-rate", id="rate"),
        pytest.param(
            {"enable_request_log": True, "request_log_template": ""},
            "logging.request-log-template",
            id="template",
        ),
    ],
)
def test_constructor_validates(overrides: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        ObservabilityConfig(**overrides)
    assert info.value.name == name
