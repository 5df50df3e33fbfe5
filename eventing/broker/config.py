"""The broker process's configuration, read once from its environment.

Knative's names where Knative has them (SYSTEM_NAMESPACE, MAX_TTL: cmd/broker/ingress); knpy's
own knobs are BROKER_*. Nothing below ``main`` reads ``os.environ``.

    SYSTEM_NAMESPACE              knative-eventing   where the data plane runs
    MAX_TTL                       255                knativebrokerttl of a new event
    BROKER_STATE_DIR              (required)         where the event log lives
    BROKER_BIND_HOST              0.0.0.0
    INGRESS_PORT                  8080               POST /<ns>/<broker>, GET /healthz
    BROKER_CLASS                  MTChannelBasedBroker  the class served (and brokers without one)
    BROKER_MAX_BODY_BYTES         4194304            larger requests: 413
    BROKER_TRIGGER_CONCURRENCY    100                deliveries in flight per trigger
    BROKER_ATTEMPT_TIMEOUT        5m                 an attempt without delivery.timeout
    BROKER_SQLITE_SYNCHRONOUS     FULL               FULL: fsync per commit; NORMAL: no fsync
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from eventing.broker.dispatcher import DEFAULT_ATTEMPT_TIMEOUT_S, DEFAULT_CONCURRENCY
from eventing.broker.event import MAX_TTL
from eventing.broker.ingress import MAX_BODY_BYTES
from shared.envconfig import ConfigError, env_duration, env_int, env_port, env_str
from shared.kube.resources import DEFAULT_BROKER_CLASS, EVENTING_NAMESPACE

__all__ = ["BrokerConfig"]


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

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: str | None = None) -> BrokerConfig:
        """Raises ConfigError naming the variable at fault."""
        sync = env_str(env, "BROKER_SQLITE_SYNCHRONOUS", "FULL").upper()
        if sync not in ("FULL", "NORMAL"):
            raise ConfigError("BROKER_SQLITE_SYNCHRONOUS", f"must be FULL or NORMAL, got {sync!r}")
        directory = state_dir or env_str(env, "BROKER_STATE_DIR", required=True)
        return cls(
            state_dir=Path(directory),
            system_namespace=env_str(env, "SYSTEM_NAMESPACE", EVENTING_NAMESPACE),
            max_ttl=env_int(env, "MAX_TTL", MAX_TTL, minimum=1, maximum=2**31 - 1),
            bind_host=env_str(env, "BROKER_BIND_HOST", "0.0.0.0"),
            ingress_port=env_port(env, "INGRESS_PORT", 8080),
            broker_class=env_str(env, "BROKER_CLASS", DEFAULT_BROKER_CLASS),
            max_body_bytes=env_int(env, "BROKER_MAX_BODY_BYTES", MAX_BODY_BYTES, minimum=1024),
            concurrency=env_int(env, "BROKER_TRIGGER_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1),
            attempt_timeout_s=env_duration(
                env, "BROKER_ATTEMPT_TIMEOUT", DEFAULT_ATTEMPT_TIMEOUT_S
            ),
            synchronous="FULL" if sync == "FULL" else "NORMAL",
        )
