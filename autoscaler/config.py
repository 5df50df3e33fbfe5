"""The autoscaler process's configuration, from Knative's environment and knpy's port variables.

Resolved once at start, as the queue-proxy's and the activator's (queueproxy/config.py,
activator/config.py); nothing below ``__main__`` reads ``os.environ``. The cluster-wide
autoscaling defaults are not environment but the ``config-autoscaler`` ConfigMap
(configmap.py), followed while the process runs; ``EngineConfig`` carries the current one.

Environment:
    POD_NAME, POD_IP         required: the lease identity is POD_NAME_POD_IP, and POD_IP is
                             published in the bucket EndpointSlice for stat forwarding
    SYSTEM_NAMESPACE         where the ConfigMaps, Leases and bucket objects live
                             (default knative-serving)
    CLUSTER_DOMAIN           default cluster.local
    AUTOSCALER_STAT_PORT     the activators' stat WebSocket (default 8080; 0 = any free port)
    AUTOSCALER_METRICS_PORT  Prometheus metrics at /metrics (default 9090)
    AUTOSCALER_BIND_HOST     address to bind both (default 0.0.0.0)
    AUTOSCALER_MAX_SCRAPES_IN_FLIGHT   pod scrapes at once (default 100)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from autoscaler.configmap import AutoscalerConfig
from shared.envconfig import ConfigError, env_int, env_port, env_str
from shared.kube.resources import SYSTEM_NAMESPACE

__all__ = ["EngineConfig", "ProcessConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's listeners and scrape limit, and the config-autoscaler it decides with."""

    autoscaler: AutoscalerConfig = field(
        default_factory=lambda: AutoscalerConfig.from_configmap({})
    )
    bind_host: str = "0.0.0.0"
    stat_port: int = 8080  # 0: any free port (tests)
    metrics_port: int = 9090
    max_scrapes_in_flight: int = 100

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], configmap: Mapping[str, str] = MappingProxyType({})
    ) -> EngineConfig:
        """Build from the environment and the config-autoscaler data.

        Raises:
            ConfigError: a variable or ConfigMap key is invalid.
        """
        return cls(
            autoscaler=AutoscalerConfig.from_configmap(dict(configmap)),
            bind_host=env_str(env, "AUTOSCALER_BIND_HOST", "0.0.0.0"),
            stat_port=env_port(env, "AUTOSCALER_STAT_PORT", 8080),
            metrics_port=env_port(env, "AUTOSCALER_METRICS_PORT", 9090),
            max_scrapes_in_flight=env_int(
                env, "AUTOSCALER_MAX_SCRAPES_IN_FLIGHT", 100, minimum=1, maximum=10_000
            ),
        )


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """The process's identity and ports (Knative's env contract plus knpy's port variables)."""

    pod_name: str
    pod_ip: str
    system_namespace: str = SYSTEM_NAMESPACE
    cluster_domain: str = "cluster.local"
    engine: EngineConfig = field(default_factory=EngineConfig)

    @property
    def identity(self) -> str:
        """The Lease holderIdentity, Knative's ``<POD_NAME>_<POD_IP>``."""
        return f"{self.pod_name}_{self.pod_ip}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProcessConfig:
        """Raises: ConfigError: POD_NAME or POD_IP missing, or a port variable invalid."""
        for name in ("POD_NAME", "POD_IP"):
            if not env.get(name):
                raise ConfigError(name, "required (the lease identity is POD_NAME_POD_IP)")
        return cls(
            pod_name=env["POD_NAME"],
            pod_ip=env["POD_IP"],
            system_namespace=env_str(env, "SYSTEM_NAMESPACE", SYSTEM_NAMESPACE),
            cluster_domain=env_str(env, "CLUSTER_DOMAIN", "cluster.local"),
            engine=EngineConfig.from_env(env),
        )
