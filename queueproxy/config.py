"""The queue-proxy's configuration, from the environment Knative gives its sidecar.

Variable names, meanings and required-ness are those of Knative's queue-proxy ``config``
struct (pkg/queue/sharedmain/main.go), which the reconciler fills in
(pkg/reconciler/revision/resources/queue.go). knpy adds a few with Knative's values as
defaults, so that many pods can share one host in the local platform and tests can shorten
the periods: QUEUE_ADMIN_PORT, QUEUE_METRICS_PORT, USER_METRICS_PORT, USER_HOST,
QUEUE_BIND_HOST, QUEUE_DEPTH, QUEUE_DRAIN_PERIOD_SECONDS and QUEUE_STATS_PERIOD_SECONDS.

Knative requires CONTAINER_CONCURRENCY, USER_PORT and REVISION_TIMEOUT_SECONDS; knpy gives
them Knative's revision defaults (0, 8080, 300) so a hand-run queue-proxy needs less typing.
Everything is validated here, once: a bad value stops the process at start-up with the
variable's name, instead of surfacing as odd behaviour under load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.breaker import MAX_BREAKER_CAPACITY
from shared.envconfig import ConfigError, env_float, env_int, env_port, env_str
from shared.gosyntax import quote
from shared.observability import ObservabilityConfig

__all__ = ["QueueProxyConfig"]

# Knative's buildBreaker: queue depth = 10 x containerConcurrency, "to allow the autoscaler
# time to react". E.g. CC=2 admits 2 into the app and holds 20 more; the 23rd gets a 503.
QUEUE_DEPTH_PER_CONCURRENCY = 10
# Knative's drainSleepDuration: how long /wait-for-drain and shutdown wait for the pod's
# removal from load balancers to propagate.
DEFAULT_DRAIN_PERIOD_S = 30.0
# Knative's reportingPeriod: one Stat per second for the autoscaler.
DEFAULT_STATS_PERIOD_S = 1.0
# Knative's revision-timeout-seconds default (config-defaults).
DEFAULT_REVISION_TIMEOUT_S = 300.0

# Every port this pod listens on, with its default. The queue-proxy binds the first four;
# the app binds USER_PORT; any two equal would fail to bind or proxy to itself.
_PORTS = (
    ("QUEUE_SERVING_PORT", 8012),
    ("QUEUE_ADMIN_PORT", 8022),
    ("QUEUE_METRICS_PORT", 9090),
    ("USER_METRICS_PORT", 9091),
    ("USER_PORT", 8080),
)


@dataclass(frozen=True, slots=True)
class QueueProxyConfig:
    """Everything the queue-proxy needs, resolved and checked once at start-up."""

    # Identity of the pod (Knative's Env struct, passed to request logs and metrics).
    namespace: str
    service: str  # "" when the revision does not belong to a Service
    configuration: str
    revision: str
    pod: str
    pod_ip: str

    # Ports and addresses.
    serving_port: int = 8012
    admin_port: int = 8022
    metrics_port: int = 9090
    user_metrics_port: int = 9091
    user_port: int = 8080
    user_host: str = "127.0.0.1"
    bind_host: str = "0.0.0.0"

    # Concurrency: 0 = unlimited, no breaker (Knative builds none when CC < 1).
    container_concurrency: int = 0
    queue_depth: int = 0  # breaker queue; 10 x container_concurrency unless QUEUE_DEPTH

    # Timeouts in seconds; 0 turns the optional ones off.
    revision_timeout_s: float = DEFAULT_REVISION_TIMEOUT_S
    response_start_timeout_s: float = 0.0
    idle_timeout_s: float = 0.0

    readiness_probe: str = ""  # SERVING_READINESS_PROBE's JSON, parsed by the prober
    drain_period_s: float = DEFAULT_DRAIN_PERIOD_S
    stats_period_s: float = DEFAULT_STATS_PERIOD_S
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QueueProxyConfig:
        """Read and validate Knative's queue-proxy variables (and knpy's additions).

        Raises:
            ConfigError: a required variable is missing or any value is invalid; the
                message names the variable.
        """
        cc = env_int(env, "CONTAINER_CONCURRENCY", 0, minimum=0, maximum=MAX_BREAKER_CAPACITY)
        # Knative's NewBreaker wants a queue depth >= 1 whenever there is a breaker.
        depth = env_int(
            env,
            "QUEUE_DEPTH",
            QUEUE_DEPTH_PER_CONCURRENCY * cc,
            minimum=1,
            maximum=MAX_BREAKER_CAPACITY,
        )
        serving_port, admin_port, metrics_port, user_metrics_port, user_port = _ports(env)
        return cls(
            namespace=env_str(env, "SERVING_NAMESPACE", required=True),
            service=env_str(env, "SERVING_SERVICE", ""),
            configuration=env_str(env, "SERVING_CONFIGURATION", required=True),
            revision=env_str(env, "SERVING_REVISION", required=True),
            pod=env_str(env, "SERVING_POD", required=True),
            pod_ip=env_str(env, "SERVING_POD_IP", required=True),
            serving_port=serving_port,
            admin_port=admin_port,
            metrics_port=metrics_port,
            user_metrics_port=user_metrics_port,
            user_port=user_port,
            user_host=env_str(env, "USER_HOST", "127.0.0.1"),
            bind_host=env_str(env, "QUEUE_BIND_HOST", "0.0.0.0"),
            container_concurrency=cc,
            queue_depth=depth if cc > 0 else 0,
            revision_timeout_s=_seconds(
                env, "REVISION_TIMEOUT_SECONDS", DEFAULT_REVISION_TIMEOUT_S, positive=True
            ),
            response_start_timeout_s=_seconds(env, "REVISION_RESPONSE_START_TIMEOUT_SECONDS", 0),
            idle_timeout_s=_seconds(env, "REVISION_IDLE_TIMEOUT_SECONDS", 0),
            readiness_probe=_json_text(env, "SERVING_READINESS_PROBE"),
            drain_period_s=_seconds(env, "QUEUE_DRAIN_PERIOD_SECONDS", DEFAULT_DRAIN_PERIOD_S),
            stats_period_s=_seconds(
                env, "QUEUE_STATS_PERIOD_SECONDS", DEFAULT_STATS_PERIOD_S, positive=True
            ),
            observability=ObservabilityConfig.from_env(env),
        )


def _seconds(env: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    value = env_float(env, name, default, minimum=0)
    if positive and value == 0:
        raise ConfigError(name, f"must be a number > 0, got {quote(env[name])}")
    return value


def _ports(env: Mapping[str, str]) -> list[int]:
    ports: dict[int, str] = {}
    for name, default in _PORTS:
        port = env_port(env, name, default)
        if port in ports:
            raise ConfigError(name, f"must differ from {ports[port]}, both are {port}")
        ports[port] = name
    return list(ports)


def _json_text(env: Mapping[str, str], name: str) -> str:
    # Parsed elsewhere (the readiness prober); checked here so a typo fails at start-up.
    text = env_str(env, name, "")
    if text:
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(name, f"invalid JSON: {err}") from None
    return text
