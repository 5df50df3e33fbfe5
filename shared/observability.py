"""Tracing and request-log settings, read the way Knative's queue-proxy reads them.

Knative's reconciler serialises its observability config to JSON into the queue-proxy's
OBSERVABILITY_CONFIG variable (pkg/reconciler/revision/resources/queue.go), and the
queue-proxy unmarshals it over its defaults (pkg/queue/sharedmain/main.go). The JSON is
serving's observability.Config (pkg/observability/config.go) embedding knative.dev/pkg's:

    {"tracing": {"protocol": "grpc", "endpoint": "otel:4317", "samplingRate": 0.1},
     "metrics": {...}, "runtime": {...}, "requestMetrics": {...},
     "enableRequestLog": true, "requestLogTemplate": "...", "enableProbeRequestLog": false}

Only the tracing and request-log keys matter here; the others are accepted and ignored. As
Go's encoding/json does, keys match case-insensitively (the last match wins), unknown keys
are ignored, ``null`` leaves the default, and a value of the wrong JSON type is an error.

Then, in order, each overriding what came before:

1. SERVING_ENABLE_REQUEST_LOG, SERVING_REQUEST_LOG_TEMPLATE, SERVING_ENABLE_PROBE_REQUEST_LOG:
   the individual variables of Knative releases before OBSERVABILITY_CONFIG.
2. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL) or OTEL_EXPORTER_OTLP_ENDPOINT (a base
   URL, to which "/v1/traces" is added as the OTLP/HTTP spec says): Knative prefers these
   over the config's endpoint (knative.dev/pkg observability/tracing/provider.go,
   endpointFor). As a knpy convenience they also turn tracing on: the protocol becomes
   "http/protobuf" unless the config chose "grpc", and the sampling rate defaults to 1.
3. OTEL_TRACES_SAMPLER_ARG: the sampling rate, as in Knative's sampleFor.

Knative's own default sampling rate is 0 (knative.dev/pkg tracing.DefaultConfig sets only
the protocol), which samples nothing with "grpc"/"http/protobuf" and everything with
"stdout"; that is kept for a config that names a protocol but no rate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, cast, get_args

from shared.envconfig import ConfigError, env_bool, env_float, env_str
from shared.gosyntax import quote

__all__ = [
    "DEFAULT_REQUEST_LOG_TEMPLATE",
    "ObservabilityConfig",
    "TracingProtocol",
    "from_configmap",
]

TracingProtocol = Literal["none", "grpc", "http/protobuf", "stdout"]
_PROTOCOLS: Final = get_args(TracingProtocol)
_NEEDS_ENDPOINT: Final = ("grpc", "http/protobuf")

# Knative's DefaultRequestLogTemplate (serving pkg/observability/config.go), verbatim: a Go
# text/template over the request, the response and the revision.
DEFAULT_REQUEST_LOG_TEMPLATE: Final = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", '
    '"requestUrl": "{{js .Request.RequestURI}}", '
    '"requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, '
    '"responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", '
    '"remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", '
    '"referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", '
    '"protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}'
)

OBSERVABILITY_CONFIG = "OBSERVABILITY_CONFIG"
# The OTLP/HTTP path for traces, added to OTEL_EXPORTER_OTLP_ENDPOINT (OTel exporter spec).
_OTLP_TRACES_PATH = "/v1/traces"

_JsonObject = dict[str, object]
_T = TypeVar("_T", str, bool, float)


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    """What a data-plane component needs to trace requests and write request logs."""

    tracing_protocol: TracingProtocol = "none"
    tracing_endpoint: str = ""  # a URL; "host:port" means https, as in Knative
    tracing_sampling_rate: float = 0.0  # in [0, 1]; Knative's default (see module docstring)
    enable_request_log: bool = False
    request_log_template: str = DEFAULT_REQUEST_LOG_TEMPLATE
    enable_probe_request_log: bool = False

    def __post_init__(self) -> None:
        """Check the combination as Knative's Validate methods do (tracing, then request log).

        Raises:
            ConfigError: named after Knative's config-observability key at fault.
        """
        if self.tracing_protocol not in _PROTOCOLS:
            raise ConfigError(
                "tracing-protocol",
                f"must be one of {', '.join(_PROTOCOLS)}, got {quote(self.tracing_protocol)}",
            )
        if self.tracing_protocol in _NEEDS_ENDPOINT and not self.tracing_endpoint:
            raise ConfigError(
                "tracing-endpoint", f"must be set for protocol {quote(self.tracing_protocol)}"
            )
        if self.tracing_protocol not in _NEEDS_ENDPOINT and self.tracing_endpoint:
            raise ConfigError(
                "tracing-endpoint",
                f"must not be set for protocol {quote(self.tracing_protocol)}, "
                f"got {quote(self.tracing_endpoint)}",
            )
        if not 0.0 <= self.tracing_sampling_rate <= 1.0:
            raise ConfigError(
                "tracing-sampling-rate", f"must be in [0, 1], got {self.tracing_sampling_rate}"
            )
        if self.enable_request_log and not self.request_log_template:
            raise ConfigError(
                "logging.request-log-template",
                "must be set when logging.enable-request-log is true",
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ObservabilityConfig:
        """Build from OBSERVABILITY_CONFIG and the variables that override it (see module doc).

        Raises:
            ConfigError: bad JSON, a bad value, or a bad combination; the message names the
                variable and, inside the JSON, the key.
        """
        doc = _load_json(env_str(env, OBSERVABILITY_CONFIG, ""))
        tracing = _section(doc, "tracing")
        protocol = _json_str(tracing, "tracing.protocol", "none")
        endpoint = _json_str(tracing, "tracing.endpoint", "")
        rate = _json_field(tracing, "tracing.samplingRate", float)
        enable_log = _json_bool(doc, "enableRequestLog", False)
        template = _json_str(doc, "requestLogTemplate", DEFAULT_REQUEST_LOG_TEMPLATE)
        enable_probe_log = _json_bool(doc, "enableProbeRequestLog", False)

        # Knative's individual variables from before OBSERVABILITY_CONFIG.
        enable_log = env_bool(env, "SERVING_ENABLE_REQUEST_LOG", enable_log)
        template = env_str(env, "SERVING_REQUEST_LOG_TEMPLATE", template)
        enable_probe_log = env_bool(env, "SERVING_ENABLE_PROBE_REQUEST_LOG", enable_probe_log)

        otlp_endpoint = _otlp_endpoint(env)
        if otlp_endpoint is not None:
            if protocol != "grpc":
                protocol = "http/protobuf"
            endpoint = otlp_endpoint
            if rate is None:
                rate = 1.0
        sampling_rate = env_float(
            env, "OTEL_TRACES_SAMPLER_ARG", 0.0 if rate is None else rate, minimum=0, maximum=1
        )

        if protocol not in _PROTOCOLS:
            raise ConfigError(
                OBSERVABILITY_CONFIG,
                f"tracing.protocol: must be one of {', '.join(_PROTOCOLS)}, got {quote(protocol)}",
            )
        try:
            return cls(
                tracing_protocol=cast(TracingProtocol, protocol),  # checked just above
                tracing_endpoint=endpoint,
                tracing_sampling_rate=sampling_rate,
                enable_request_log=enable_log,
                request_log_template=template,
                enable_probe_request_log=enable_probe_log,
            )
        except ConfigError as err:
            # The combination is wrong; say which variable carried it.
            raise ConfigError(OBSERVABILITY_CONFIG, str(err)) from None


_TRUE: Final = ("true", "1", "t", "yes")  # Go's strconv.ParseBool, as configmap.As does
_FALSE: Final = ("false", "0", "f", "no")


def _bool(data: Mapping[str, str], key: str, default: bool) -> bool:
    raw = data.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(key, f"must be a boolean, got {quote(raw)}")


def from_configmap(data: Mapping[str, str]) -> ObservabilityConfig:
    """config-observability's tracing and request-log keys (serving's NewFromMap and
    knative.dev/pkg observability's), over Knative's defaults: what the activator and the
    local ingress follow, and what the Deployment controller turns into OBSERVABILITY_CONFIG.

    Raises:
        ConfigError: a bad value or combination, named by its key.
    """
    protocol = data.get("tracing-protocol", "none").strip() or "none"
    if protocol not in get_args(TracingProtocol):
        raise ConfigError(
            "tracing-protocol",
            f"must be one of {', '.join(get_args(TracingProtocol))}, got {quote(protocol)}",
        )
    raw_rate = data.get("tracing-sampling-rate", "").strip()
    try:
        rate = float(raw_rate) if raw_rate else 0.0
    except ValueError:
        raise ConfigError(
            "tracing-sampling-rate", f"must be a number, got {quote(raw_rate)}"
        ) from None
    return ObservabilityConfig(
        tracing_protocol=cast(TracingProtocol, protocol),
        tracing_endpoint=data.get("tracing-endpoint", "").strip(),
        tracing_sampling_rate=rate,
        enable_request_log=_bool(data, "logging.enable-request-log", False),
        request_log_template=data.get("logging.request-log-template", DEFAULT_REQUEST_LOG_TEMPLATE),
        enable_probe_request_log=_bool(data, "logging.enable-probe-request-log", False),
    )


def _otlp_endpoint(env: Mapping[str, str]) -> str | None:
    # The traces-specific variable is the full URL; the generic one is a base URL.
    traces = env_str(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces is not None:
        return traces
    base = env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if base is None:
        return None
    return base.rstrip("/") + _OTLP_TRACES_PATH


def _load_json(text: str) -> _JsonObject:
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(OBSERVABILITY_CONFIG, f"invalid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(OBSERVABILITY_CONFIG, f"must be a JSON object, got {_kind(doc)}")
    return doc


def _lookup(obj: _JsonObject, key: str) -> object:
    # Go's encoding/json: a key matches a field case-insensitively, keys are applied in
    # order so the last match wins, and null leaves the field as it was.
    folded = key.casefold()
    found: object = None
    for name, value in obj.items():
        if value is not None and name.casefold() == folded:
            found = value
    return found


def _section(doc: _JsonObject, key: str) -> _JsonObject:
    value = _lookup(doc, key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(OBSERVABILITY_CONFIG, f"{key}: must be an object, got {_kind(value)}")
    return value


def _json_field(obj: _JsonObject, path: str, kind: type[_T]) -> _T | None:
    """The value at the last part of ``path``, or None; type-checked like Go's Unmarshal."""
    value = _lookup(obj, path.rpartition(".")[2])
    if value is None:
        return None
    if kind is float:
        # A JSON number may be an integer; bool is an int to Python but not a number to Go.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return kind(value)
    elif isinstance(value, kind):
        return value
    raise ConfigError(
        OBSERVABILITY_CONFIG, f"{path}: must be a {_JSON_KINDS[kind]}, got {_kind(value)}"
    )


def _json_str(obj: _JsonObject, path: str, default: str) -> str:
    value = _json_field(obj, path, str)
    return default if value is None else value


def _json_bool(obj: _JsonObject, path: str, default: bool) -> bool:
    value = _json_field(obj, path, bool)
    return default if value is None else value


_JSON_KINDS: Final[Mapping[type, str]] = {str: "string", bool: "boolean", float: "number"}


def _kind(value: object) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:40]}"
