"""The activator's ConfigMaps in the system namespace, as Knative's activator reads them.

- ``config-network`` (knative/networking pkg/config): read once at start-up, and its absence
  is fatal (cmd/activator/main.go fetches it before serving). knpy's activator always probes
  and addresses pods directly, over plain HTTP/1.1; the settings that would need something
  else (``mesh-compatibility-mode: enabled``, ``system-internal-tls: enabled``) are reported.
- ``config-logging`` (knative.dev/pkg logging): ``loglevel.activator`` sets the level of the
  ``activator`` logger; followed.
- ``config-observability`` (serving pkg/observability): the tracing keys and the request-log
  keys; followed, so a change applies to the requests that start after it. Until it exists,
  the environment's settings (OBSERVABILITY_CONFIG and friends) stand.

Parsing is pure; ``ConfigMaps`` only follows one informer and calls back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

from shared.envconfig import ConfigError
from shared.gosyntax import quote
from shared.kube.informer import EventType, InformerFactory
from shared.kube.resources import CONFIGMAPS, Obj, key_of
from shared.observability import ObservabilityConfig
from shared.observability import from_configmap as observability_config

__all__ = [
    "LOGGING_CONFIGMAP",
    "NETWORK_CONFIGMAP",
    "OBSERVABILITY_CONFIGMAP",
    "ConfigMaps",
    "log_level",
    "network_warnings",
    "observability_config",
]

NETWORK_CONFIGMAP: Final = "config-network"
LOGGING_CONFIGMAP: Final = "config-logging"
OBSERVABILITY_CONFIGMAP: Final = "config-observability"
COMPONENT: Final = "activator"

# zap's level names (knative.dev/pkg logging levelFromString) to Python's.
_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

_log = logging.getLogger(COMPONENT)


def data_of(obj: Obj | None) -> dict[str, str]:
    """A ConfigMap's ``data`` (empty when absent)."""
    data = obj.get("data") if obj is not None else None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def network_warnings(data: Mapping[str, str]) -> list[str]:
    """What in config-network knpy's activator does not do (it always goes to pod IPs)."""
    warnings = []
    mesh = data.get("mesh-compatibility-mode", "auto").strip().lower()
    if mesh == "enabled":
        warnings.append(
            "mesh-compatibility-mode: enabled is not supported; pods are addressed directly"
        )
    tls = data.get("system-internal-tls", "disabled").strip().lower()
    if tls == "enabled":
        warnings.append("system-internal-tls: enabled is not supported; pods get plain HTTP")
    return warnings


def log_level(data: Mapping[str, str], component: str = COMPONENT) -> int | None:
    """The level ``loglevel.<component>`` asks for, None when unset.

    Raises:
        ConfigError: an unknown level name.
    """
    raw = data.get(f"loglevel.{component}")
    if raw is None or not raw.strip():
        return None
    level = _LEVELS.get(raw.strip().lower())
    if level is None:
        raise ConfigError(f"loglevel.{component}", f"unknown level {quote(raw)}")
    return level


class ConfigMaps:
    """Follows config-logging and config-observability in the system namespace.

    A bad update is logged and ignored (the last good settings stay), as Knative's configmap
    watcher callbacks do.
    """

    def __init__(
        self,
        informers: InformerFactory,
        namespace: str,
        on_observability: Callable[[], None],
        *,
        logging_name: str = LOGGING_CONFIGMAP,
        observability_name: str = OBSERVABILITY_CONFIGMAP,
    ) -> None:
        self.namespace = namespace
        self.logging_name = logging_name
        self.observability_name = observability_name
        self.informer = informers.informer(CONFIGMAPS, namespace=namespace)
        self.observability: ObservabilityConfig | None = None
        self.log_level: int | None = None
        self._on_observability = on_observability

    def __repr__(self) -> str:
        return f"<ConfigMaps {self.namespace} level={self.log_level} obs={self.observability}>"

    def start(self) -> None:
        self.informer.add_handler(self._changed)

    def _changed(self, event: EventType, obj: Obj) -> None:
        namespace, name = key_of(obj)
        if namespace != self.namespace:
            return
        data = data_of(self.informer.get(namespace, name))
        if name == self.logging_name:
            try:
                level = log_level(data)
            except ConfigError as err:
                _log.error("activator: ignoring %s: %s", name, err)
                return
            self.log_level = level
            _log.setLevel(logging.INFO if level is None else level)
        elif name == self.observability_name:
            try:
                obs = observability_config(data)
            except ConfigError as err:
                _log.error("activator: ignoring %s: %s", name, err)
                return
            if obs != self.observability:
                self.observability = obs
                self._on_observability()
