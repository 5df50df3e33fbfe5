"""The broker process's configuration, read once from its environment.

Knative's names where Knative has them (SYSTEM_NAMESPACE, MAX_TTL: cmd/broker/ingress); knpy's
own knobs are BROKER_*. Nothing below ``main`` reads ``os.environ``.

    SYSTEM_NAMESPACE              knative-eventing   where the data plane runs
    MAX_TTL                       255                knativebrokerttl of a new event
    BROKER_BACKEND                sqlite             sqlite (the state dir's log) or rabbitmq
    BROKER_ROLE                   all                all, ingress or dispatcher (this process's)
    BROKER_STATE_DIR              (required: sqlite) where the event log lives
    RABBITMQ_URL                  amqp://guest:guest@127.0.0.1:5672/  the rabbitmq backend's
    RABBITMQ_URL_FILE             (none)             a file holding RABBITMQ_URL instead (knpy
                                                     serve's: the URL's password stays out of
                                                     the Deployment, as a mounted Secret would)
    BROKER_RABBITMQ_PREFIX        (none)             before every exchange and queue name
    BROKER_BIND_HOST              0.0.0.0
    INGRESS_PORT                  8080               POST /<ns>/<broker>, GET /healthz
    BROKER_METRICS_PORT           9092               GET /metrics (Prometheus text); Knative
                                                     eventing's DefaultMetricsPort
    CONFIG_OBSERVABILITY_NAME     config-observability  the ConfigMap followed for tracing
    OBSERVABILITY_CONFIG, OTEL_EXPORTER_OTLP_ENDPOINT, ...  tracing until that ConfigMap
                                                     exists (shared/observability.py)
    BROKER_CLASS                  MTChannelBasedBroker  the class served (RabbitMQBroker when
                                                     BROKER_BACKEND=rabbitmq); brokers without
                                                     the annotation are the default class's
    BROKER_MAX_BODY_BYTES         4194304            larger requests: 413
    BROKER_TRIGGER_CONCURRENCY    100                deliveries in flight per trigger
    BROKER_ATTEMPT_TIMEOUT        5m                 an attempt without delivery.timeout
    BROKER_SQLITE_SYNCHRONOUS     FULL               FULL: fsync per commit; NORMAL: no fsync
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from eventing.broker.dispatcher import DEFAULT_ATTEMPT_TIMEOUT_S, DEFAULT_CONCURRENCY
from eventing.broker.ingress import MAX_BODY_BYTES
from shared.cloudevent import MAX_TTL
from shared.envconfig import ConfigError, env_duration, env_int, env_port, env_str
from shared.kube.resources import (
    DEFAULT_BROKER_CLASS,
    EVENTING_NAMESPACE,
    RABBITMQ_BROKER_CLASS,
)
from shared.observability import ObservabilityConfig

__all__ = ["BrokerConfig"]

Backend = Literal["sqlite", "rabbitmq"]
Role = Literal["all", "ingress", "dispatcher"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "rabbitmq")
ROLES: tuple[Role, ...] = ("all", "ingress", "dispatcher")
RABBITMQ_DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Knative eventing's DefaultMetricsPort (pkg/observability/config.go), its brokers' metrics.
DEFAULT_METRICS_PORT = 9092


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    state_dir: Path
    system_namespace: str = EVENTING_NAMESPACE
    max_ttl: int = MAX_TTL
    bind_host: str = "0.0.0.0"
    ingress_port: int = 8080
    broker_class: str = DEFAULT_BROKER_CLASS
    max_body_bytes: int = MAX_BODY_BYTES
    concurrency: int = DEFAULT_CONCURRENCY
    attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    backend: Backend = "sqlite"
    role: Role = "all"
    rabbitmq_url: str = RABBITMQ_DEFAULT_URL
    rabbitmq_prefix: str = ""
    # None: no metrics listener (what tests and embedders get unless they ask); 0: any port.
    metrics_port: int | None = None
    observability_configmap: str = "config-observability"
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        state_dir: str | None = None,
        *,
        backend: str | None = None,
        role: str | None = None,
        rabbitmq_url: str | None = None,
    ) -> BrokerConfig:
        """Raises ConfigError naming the variable at fault (the arguments win over it)."""
        sync = env_str(env, "BROKER_SQLITE_SYNCHRONOUS", "FULL").upper()
        if sync not in ("FULL", "NORMAL"):
            raise ConfigError("BROKER_SQLITE_SYNCHRONOUS", f"must be FULL or NORMAL, got {sync!r}")
        be = backend or env_str(env, "BROKER_BACKEND", "sqlite")
        if be not in BACKENDS:
            raise ConfigError("BROKER_BACKEND", f"must be sqlite or rabbitmq, got {be!r}")
        ro = role or env_str(env, "BROKER_ROLE", "all")
        if ro not in ROLES:
            raise ConfigError("BROKER_ROLE", f"must be all, ingress or dispatcher, got {ro!r}")
        if ro != "all" and be != "rabbitmq":
            # The SQLite log wakes its readers from within its own process only.
            raise ConfigError(
                "BROKER_ROLE", f"{ro} alone needs BROKER_BACKEND=rabbitmq (sqlite runs all)"
            )
        directory = state_dir or env_str(env, "BROKER_STATE_DIR", "", required=be == "sqlite")
        default_class = RABBITMQ_BROKER_CLASS if be == "rabbitmq" else DEFAULT_BROKER_CLASS
        return cls(
            state_dir=Path(directory),
            system_namespace=env_str(env, "SYSTEM_NAMESPACE", EVENTING_NAMESPACE),
            max_ttl=env_int(env, "MAX_TTL", MAX_TTL, minimum=1, maximum=2**31 - 1),
            bind_host=env_str(env, "BROKER_BIND_HOST", "0.0.0.0"),
            ingress_port=env_port(env, "INGRESS_PORT", 8080),
            broker_class=env_str(env, "BROKER_CLASS", default_class),
            max_body_bytes=env_int(env, "BROKER_MAX_BODY_BYTES", MAX_BODY_BYTES, minimum=1024),
            concurrency=env_int(env, "BROKER_TRIGGER_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1),
            attempt_timeout_s=env_duration(
                env, "BROKER_ATTEMPT_TIMEOUT", DEFAULT_ATTEMPT_TIMEOUT_S
            ),
            synchronous="FULL" if sync == "FULL" else "NORMAL",
            backend="rabbitmq" if be == "rabbitmq" else "sqlite",
            role="ingress" if ro == "ingress" else "dispatcher" if ro == "dispatcher" else "all",
            rabbitmq_url=rabbitmq_url
            or _url_file(env)
            or env_str(env, "RABBITMQ_URL", RABBITMQ_DEFAULT_URL),
            rabbitmq_prefix=env_str(env, "BROKER_RABBITMQ_PREFIX", ""),
            metrics_port=env_port(env, "BROKER_METRICS_PORT", DEFAULT_METRICS_PORT),
            observability_configmap=env_str(
                env, "CONFIG_OBSERVABILITY_NAME", "config-observability"
            ),
            observability=ObservabilityConfig.from_env(env),
        )


def _url_file(env: Mapping[str, str]) -> str:
    """RABBITMQ_URL_FILE's content ("" when unset); unreadable or empty is a ConfigError."""
    path = env_str(env, "RABBITMQ_URL_FILE", "")
    if not path:
        return ""
    try:
        url = Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError("RABBITMQ_URL_FILE", f"cannot read {path}: {err.strerror}") from None
    if not url:
        raise ConfigError("RABBITMQ_URL_FILE", f"{path} is empty")
    return url
