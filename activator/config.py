"""The activator's configuration, from the environment Knative gives its Deployment.

Knative's activator reads POD_NAME and POD_IP (both required), PROBE_TIMEOUT and
PROBE_FREQUENCY (Go durations), SYSTEM_NAMESPACE (default knative-serving), CLUSTER_DOMAIN
(default cluster.local), CONFIG_LOGGING_NAME and CONFIG_OBSERVABILITY_NAME
(cmd/activator/main.go, knative.dev/pkg system and network), and hard-codes the rest: serving
port 8012, metrics port 9090, the autoscaler's WebSocket at
``ws://autoscaler.<system namespace>.svc.<cluster domain>:8080``, a revision breaker queue depth
of 10,000 (pkg/activator/net/throttler.go ``breakerQueueDepth``), 45 s of drain
(knative.dev/pkg network.DefaultDrainTimeout). knpy makes those knobs ``ACTIVATOR_*``
variables with Knative's values as defaults, so that several activators share one host in the
local platform (which has no cluster DNS: ACTIVATOR_AUTOSCALER_URL) and tests can shorten the
periods. Validated once; nothing below ``main`` reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.envconfig import ConfigError, env_duration, env_float, env_int, env_port, env_str
from shared.gosyntax import quote
from shared.observability import ObservabilityConfig

__all__ = ["ActivatorConfig"]

# Knative's breakerQueueDepth: requests a revision may hold in one activator before 503s.
DEFAULT_QUEUE_DEPTH = 10_000
# Knative's probeTimeout and probeFrequency (pkg/activator/net/revision_backends.go).
DEFAULT_PROBE_TIMEOUT_S = 0.3
DEFAULT_PROBE_FREQUENCY_S = 0.2
# knative.dev/pkg network.DefaultDrainTimeout: how long a SIGTERMed activator keeps serving
# while its non-readiness propagates to the load balancers.
DEFAULT_DRAIN_TIMEOUT_S = 45.0
# Knative's reportInterval (pkg/activator/handler/concurrency_reporter.go).
DEFAULT_STATS_PERIOD_S = 1.0
# Knative's MaxIdleProxyConnsPerHost default.
DEFAULT_MAX_IDLE_CONNS_PER_HOST = 100
# knative.dev/pkg websocket's connection back-off: 100 ms x 1.3 per step, 20 steps, so the
# longest wait is 0.1 x 1.3^19 = 14.6 s; knpy can cap it lower (ACTIVATOR_RECONNECT_MAX_SECONDS).
DEFAULT_RECONNECT_MAX_S = 0.1 * 1.3**19
DEFAULT_SYSTEM_NAMESPACE = "knative-serving"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# The autoscaler's stat server port (cmd/activator/main.go autoscalerPort).
AUTOSCALER_PORT = 8080


@dataclass(frozen=True, slots=True)
class ActivatorConfig:
    """Everything the activator process needs, resolved and checked once at start-up."""

    pod_name: str = "activator"
    pod_ip: str = "127.0.0.1"  # with the serving port, how the public Endpoints list us
    bind_host: str = "0.0.0.0"
    serving_port: int = 8012
    metrics_port: int = 9090
    system_namespace: str = DEFAULT_SYSTEM_NAMESPACE
    logging_configmap: str = "config-logging"
    observability_configmap: str = "config-observability"
    autoscaler_url: str = (
        f"ws://autoscaler.{DEFAULT_SYSTEM_NAMESPACE}.svc.{DEFAULT_CLUSTER_DOMAIN}:{AUTOSCALER_PORT}"
    )
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    probe_frequency_s: float = DEFAULT_PROBE_FREQUENCY_S
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    stats_period_s: float = DEFAULT_STATS_PERIOD_S
    reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S
    max_idle_conns_per_host: int = DEFAULT_MAX_IDLE_CONNS_PER_HOST
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    # ``--workers N`` (activator/workers.py): this process is worker ``worker_index`` of
    # ``workers``, all serving one SO_REUSEPORT port; 1 is the single-process activator.
    workers: int = 1
    worker_index: int = 0

    def __post_init__(self) -> None:
        """Raises: ConfigError when the autoscaler URL is not ws:// or wss://, or ports clash."""
        url = urlsplit(self.autoscaler_url)
        if url.scheme not in ("ws", "wss") or not url.hostname:
            raise ConfigError(
                "ACTIVATOR_AUTOSCALER_URL",
                f"must be a ws:// or wss:// URL, got {quote(self.autoscaler_url)}",
            )
        if self.serving_port and self.serving_port == self.metrics_port:
            raise ConfigError(
                "ACTIVATOR_METRICS_PORT", f"must differ from the serving port {self.serving_port}"
            )
        if not 0 <= self.worker_index < self.workers:
            raise ConfigError(
                "ACTIVATOR_WORKER_INDEX", f"must be in [0, {self.workers}), got {self.worker_index}"
            )
        if self.workers > 1 and not self.serving_port:
            raise ConfigError("ACTIVATOR_SERVING_PORT", "must be set (not 0) with workers")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ActivatorConfig:
        """Raises: ConfigError naming the variable at fault."""
        namespace = env_str(env, "SYSTEM_NAMESPACE", DEFAULT_SYSTEM_NAMESPACE)
        domain = env_str(env, "CLUSTER_DOMAIN", DEFAULT_CLUSTER_DOMAIN)
        # Knative's GetServiceHostname("autoscaler", system.Namespace()) + ":8080".
        autoscaler = f"ws://autoscaler.{namespace}.svc.{domain}:{AUTOSCALER_PORT}"
        return cls(
            pod_name=env_str(env, "POD_NAME", required=True),
            pod_ip=env_str(env, "POD_IP", required=True),
            bind_host=env_str(env, "ACTIVATOR_BIND_HOST", "0.0.0.0"),
            serving_port=env_port(env, "ACTIVATOR_SERVING_PORT", 8012),
            metrics_port=env_port(env, "ACTIVATOR_METRICS_PORT", 9090),
            system_namespace=namespace,
            logging_configmap=env_str(env, "CONFIG_LOGGING_NAME", "config-logging"),
            observability_configmap=env_str(
                env, "CONFIG_OBSERVABILITY_NAME", "config-observability"
            ),
            autoscaler_url=env_str(env, "ACTIVATOR_AUTOSCALER_URL", autoscaler),
            queue_depth=env_int(env, "ACTIVATOR_QUEUE_DEPTH", DEFAULT_QUEUE_DEPTH, minimum=1),
            probe_timeout_s=env_duration(env, "PROBE_TIMEOUT", DEFAULT_PROBE_TIMEOUT_S),
            probe_frequency_s=env_duration(env, "PROBE_FREQUENCY", DEFAULT_PROBE_FREQUENCY_S),
            drain_timeout_s=env_float(
                env, "ACTIVATOR_DRAIN_TIMEOUT_SECONDS", DEFAULT_DRAIN_TIMEOUT_S, minimum=0
            ),
            stats_period_s=env_float(
                env, "ACTIVATOR_STATS_PERIOD_SECONDS", DEFAULT_STATS_PERIOD_S, minimum=0.01
            ),
            reconnect_max_s=env_float(
                env, "ACTIVATOR_RECONNECT_MAX_SECONDS", DEFAULT_RECONNECT_MAX_S, minimum=0.01
            ),
            max_idle_conns_per_host=env_int(
                env, "MAX_IDLE_PROXY_CONNS_PER_HOST", DEFAULT_MAX_IDLE_CONNS_PER_HOST, minimum=0
            ),
            cluster_domain=domain,
            observability=ObservabilityConfig.from_env(env),
            workers=env_int(env, "ACTIVATOR_WORKERS", 1, minimum=1),
            worker_index=env_int(env, "ACTIVATOR_WORKER_INDEX", 0, minimum=0),
        )
