"""Knative's ``config-defaults`` and the defaults its webhook sets on a resource.

``DefaultsConfig`` holds the keys of Knative's config-defaults ConfigMap that matter without a
cluster (pkg/apis/config/defaults.go), with Knative's defaults and cross-checks: a revision
timeout of 300 s within a maximum of 600 s, containerConcurrency 0 (unlimited) within a limit of
1000. Resource limits, service links and init-container names have no meaning for a local
process and are accepted and ignored, as Knative ignores keys it does not know.

``set_defaults(resource, cfg)`` is Knative's SetDefaults (the mutating webhook), run before
validation:

- a Service with no traffic gets 100 % to its latest revision; every traffic target gets
  ``latestRevision: true`` unless it names a revision, and ``percent: 0`` when it has none;
- a revision template gets ``timeoutSeconds`` (when unset or 0), ``containerConcurrency``,
  ``responseStartTimeoutSeconds``/``idleTimeoutSeconds`` (only when their configured default
  is non-zero and below the timeout), the container name ``user-container`` and, when it has no
  readiness probe, a TCP probe of the container port; a probe's successThreshold becomes 1,
  and a periodic probe's failureThreshold 3 and timeoutSeconds 1, as Kubernetes would;
- metadata gets the namespace ``default`` (``knative-serving`` for the two ConfigMaps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from shared.envconfig import ConfigError, env_bool, env_int, env_str

from .model import (
    CONFIGMAP_NAMESPACE,
    CONFIGURATION_LABEL,
    ConfigMap,
    Configuration,
    Container,
    ObjectMeta,
    Probe,
    Resource,
    RevisionSpec,
    RevisionTemplateSpec,
    Route,
    Service,
    TCPSocketAction,
    TrafficTarget,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DefaultsConfig",
    "default_traffic",
    "set_defaults",
    "set_revision_spec_defaults",
]

DEFAULT_NAMESPACE: Final = "default"

# A periodic readiness probe's Kubernetes defaults (k8s.io/api core/v1 Probe).
_PROBE_FAILURE_THRESHOLD: Final = 3
_PROBE_TIMEOUT_SECONDS: Final = 1

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True, slots=True)
class DefaultsConfig:
    """The config-defaults keys knpy uses; validated at construction.

    Raises:
        ConfigError: the values contradict each other (e.g. a default timeout above the
            maximum), named by their ConfigMap key.
    """

    revision_timeout_seconds: int = 300  # revision-timeout-seconds
    max_revision_timeout_seconds: int = 600  # max-revision-timeout-seconds
    # revision-response-start-timeout-seconds: follows revision-timeout-seconds when unset.
    revision_response_start_timeout_seconds: int = 300
    revision_idle_timeout_seconds: int = 0  # revision-idle-timeout-seconds (0 = none)
    container_concurrency: int = 0  # container-concurrency (0 = unlimited)
    container_concurrency_max_limit: int = 1000  # container-concurrency-max-limit
    allow_container_concurrency_zero: bool = True  # allow-container-concurrency-zero
    container_name_template: str = "user-container"  # container-name-template

    def __post_init__(self) -> None:
        timeout = self.revision_timeout_seconds
        if timeout > self.max_revision_timeout_seconds:
            raise ConfigError(
                "revision-timeout-seconds",
                f"{timeout} is above max-revision-timeout-seconds "
                f"{self.max_revision_timeout_seconds}",
            )
        for key, value in (
            (
                "revision-response-start-timeout-seconds",
                self.revision_response_start_timeout_seconds,
            ),
            ("revision-idle-timeout-seconds", self.revision_idle_timeout_seconds),
        ):
            if value > timeout:
                raise ConfigError(key, f"{value} is above revision-timeout-seconds {timeout}")
        if self.container_concurrency_max_limit < 1:
            raise ConfigError(
                "container-concurrency-max-limit",
                f"must be at least 1, got {self.container_concurrency_max_limit}",
            )
        if not 0 <= self.container_concurrency <= self.container_concurrency_max_limit:
            raise ConfigError(
                "container-concurrency",
                f"must be in [0, {self.container_concurrency_max_limit}], "
                f"got {self.container_concurrency}",
            )
        unknown = self.container_name_template.replace("{{.Name}}", "")
        if "{{" in unknown:
            raise ConfigError(
                "container-name-template", "knpy supports plain names and {{.Name}} only"
            )

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> DefaultsConfig:
        """Read config-defaults' data as Knative does (absent or empty keys keep defaults)."""
        d = cls()
        timeout = env_int(data, "revision-timeout-seconds", d.revision_timeout_seconds, 0)
        return cls(
            revision_timeout_seconds=timeout,
            max_revision_timeout_seconds=env_int(
                data, "max-revision-timeout-seconds", d.max_revision_timeout_seconds, 0
            ),
            revision_response_start_timeout_seconds=env_int(
                data, "revision-response-start-timeout-seconds", timeout, 0
            ),
            revision_idle_timeout_seconds=env_int(
                data, "revision-idle-timeout-seconds", d.revision_idle_timeout_seconds, 0
            ),
            container_concurrency=env_int(data, "container-concurrency", 0),
            container_concurrency_max_limit=env_int(
                data, "container-concurrency-max-limit", d.container_concurrency_max_limit
            ),
            allow_container_concurrency_zero=env_bool(
                data, "allow-container-concurrency-zero", d.allow_container_concurrency_zero
            ),
            container_name_template=env_str(
                data, "container-name-template", d.container_name_template
            ),
        )

    def user_container_name(self, parent_name: str) -> str:
        """The default container name; ``{{.Name}}`` is the Service's or Configuration's."""
        return self.container_name_template.replace("{{.Name}}", parent_name)


def set_defaults(resource: R, cfg: DefaultsConfig) -> R:
    """The resource as Knative's defaulting webhook would store it."""
    if isinstance(resource, ConfigMap):
        return dataclasses.replace(
            resource, metadata=_namespaced(resource.metadata, CONFIGMAP_NAMESPACE)
        )
    meta = _namespaced(resource.metadata, DEFAULT_NAMESPACE)
    if isinstance(resource, Service):
        spec = dataclasses.replace(
            resource.spec,
            template=_template_defaults(resource.spec.template, cfg, meta.name),
            traffic=default_traffic(resource.spec.traffic, in_service=True),
        )
        return dataclasses.replace(resource, metadata=meta, spec=spec)
    if isinstance(resource, Configuration):
        template = _template_defaults(resource.spec.template, cfg, meta.name)
        spec_c = dataclasses.replace(resource.spec, template=template)
        return dataclasses.replace(resource, metadata=meta, spec=spec_c)
    if isinstance(resource, Route):
        spec_r = dataclasses.replace(
            resource.spec, traffic=default_traffic(resource.spec.traffic, in_service=False)
        )
        return dataclasses.replace(resource, metadata=meta, spec=spec_r)
    parent = meta.labels.get(CONFIGURATION_LABEL, meta.name)
    return dataclasses.replace(
        resource, metadata=meta, spec=set_revision_spec_defaults(resource.spec, cfg, parent)
    )


def _namespaced(meta: ObjectMeta, namespace: str) -> ObjectMeta:
    return meta if meta.namespace else dataclasses.replace(meta, namespace=namespace)


def default_traffic(
    traffic: Sequence[TrafficTarget], *, in_service: bool
) -> tuple[TrafficTarget, ...]:
    """Knative's RouteSpec.SetDefaults; a Service's empty traffic is 100 % to its latest."""
    if not traffic and in_service:
        return (TrafficTarget(percent=100, latest_revision=True),)
    return tuple(
        dataclasses.replace(
            t,
            latest_revision=t.revision_name == ""
            if t.latest_revision is None
            else t.latest_revision,
            percent=0 if t.percent is None else t.percent,
        )
        for t in traffic
    )


def _template_defaults(
    template: RevisionTemplateSpec, cfg: DefaultsConfig, parent_name: str
) -> RevisionTemplateSpec:
    spec = set_revision_spec_defaults(template.spec, cfg, parent_name)
    return dataclasses.replace(template, spec=spec)


def set_revision_spec_defaults(
    spec: RevisionSpec, cfg: DefaultsConfig, parent_name: str
) -> RevisionSpec:
    """Knative's RevisionSpec.SetDefaults for the local subset (see the module docstring)."""
    timeout = spec.timeout_seconds or cfg.revision_timeout_seconds
    idle = spec.idle_timeout_seconds
    if idle is None and 0 < cfg.revision_idle_timeout_seconds < timeout:
        idle = cfg.revision_idle_timeout_seconds
    start = spec.response_start_timeout_seconds
    if start is None and 0 < cfg.revision_response_start_timeout_seconds < timeout:
        start = cfg.revision_response_start_timeout_seconds
    concurrency = spec.container_concurrency
    if concurrency is None:
        concurrency = cfg.container_concurrency
    only = len(spec.containers) == 1
    containers = tuple(
        _container_defaults(c, cfg.user_container_name(parent_name), i, only)
        for i, c in enumerate(spec.containers)
    )
    return dataclasses.replace(
        spec,
        containers=containers,
        container_concurrency=concurrency,
        timeout_seconds=timeout,
        response_start_timeout_seconds=start,
        idle_timeout_seconds=idle,
    )


def _container_defaults(c: Container, default_name: str, index: int, only: bool) -> Container:
    name = c.name or (default_name if only else f"{default_name}-{index}")
    probe = c.readiness_probe
    if only or c.ports:
        probe = probe or Probe()
        if probe.http_get is None and probe.tcp_socket is None:
            # The user container's default: a TCP connect to its port.
            probe = dataclasses.replace(probe, tcp_socket=TCPSocketAction())
    if probe is not None:
        periodic = probe.period_seconds != 0
        probe = dataclasses.replace(
            probe,
            success_threshold=probe.success_threshold or 1,
            failure_threshold=probe.failure_threshold
            or (_PROBE_FAILURE_THRESHOLD if periodic else 0),
            timeout_seconds=probe.timeout_seconds or (_PROBE_TIMEOUT_SECONDS if periodic else 0),
        )
    return dataclasses.replace(c, name=name, readiness_probe=probe)
