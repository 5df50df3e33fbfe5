"""Knative's validating webhook for the local subset of serving.knative.dev/v1.

``validate(resource)`` defaults the resource (Knative's webhook defaults before it validates)
and raises ``ValidationError`` listing every bad field at once, each with Knative's path and,
where Knative has one, Knative's message, e.g.::

    Service default/hello: expected 0 <= 101 <= 100: spec.traffic[1].percent
    Service default/hello: Traffic targets sum to 111, want 100: spec.traffic

The checks follow pkg/apis/serving/v1/*_validation.go and pkg/apis/serving/k8s_validation.go:
object names are DNS-1035 labels, a template's name starts with its parent's name and '-',
traffic targets pin a revision xor follow the latest, percents are 0..100 and sum to 100,
tags are unique DNS-1035 labels, containerConcurrency is 0..container-concurrency-max-limit
and timeoutSeconds 0..max-revision-timeout-seconds (config-defaults), one container port that
is not one of the queue-proxy's, readiness probes as Kubernetes bounds them. The local
platform adds one rule: a container needs a ``command`` (knpy runs it; it pulls no image).

``validate_update(new, old)`` adds the checks against what is stored: a Revision's spec is
immutable, and a template whose name the user fixed may not change without a new name.

Autoscaling annotations and config-autoscaler belong to the autoscaler
(autoscaler/annotations.py and autoscaler/configmap.py, Knative's rules):
``ValidationContext`` calls its parsers through two plain functions raising
``ConfigError(name, reason)`` and reports their errors at
``spec.template.metadata.annotations.<key>`` and ``data.<key>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from autoscaler.annotations import RevisionAutoscaling
from autoscaler.configmap import AutoscalerConfig
from shared.envconfig import ConfigError

from .defaults import DefaultsConfig, set_defaults
from .model import (
    CONFIG_AUTOSCALER,
    CONFIG_DEFAULTS,
    CONFIGMAP_NAMESPACE,
    ConfigMap,
    Configuration,
    Container,
    FieldError,
    ObjectMeta,
    Probe,
    Problem,
    Resource,
    Revision,
    RevisionSpec,
    RevisionTemplateSpec,
    Route,
    Service,
    TrafficTarget,
    ValidationError,
    canonical,
    describe,
    via,
)

__all__ = [
    "AnnotationCheck",
    "ConfigMapCheck",
    "FieldError",
    "ValidationContext",
    "ValidationError",
    "check_autoscaler_config",
    "check_autoscaling_annotations",
    "diff",
    "dns1035_problems",
    "field_errors",
    "update_errors",
    "validate",
    "validate_update",
    "verify_name_change",
]

AUTOSCALING_GROUP: Final = "autoscaling.knative.dev"
# The ports of the queue-proxy and the profiler in a Knative pod (k8s_validation.go): a user
# container may not claim them, so that a knpy YAML stays valid on a cluster.
RESERVED_PORTS: Final = frozenset({8008, 8012, 8013, 8022, 9090, 9091})
RESERVED_ENV: Final = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_CONTAINER_NAMES: Final = frozenset({"queue-proxy"})
PORT_NAMES: Final = frozenset({"", "h2c", "http1"})
_MAX_INT32: Final = 2**31 - 1
_MAX_PORT: Final = 65535
_MAX_LABEL: Final = 63

_DNS1035: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

# Raises ConfigError(annotation key, reason) for bad autoscaling annotations, given the
# template's annotations, its containerConcurrency and config-autoscaler's data; an error with
# an ``errors`` tuple of (key, reason) pairs reports each of them.
AnnotationCheck = Callable[[Mapping[str, str], int, Mapping[str, str]], object]
# Raises ConfigError(key, reason) for bad config-autoscaler data.
ConfigMapCheck = Callable[[Mapping[str, str]], object]


def check_autoscaling_annotations(
    annotations: Mapping[str, str], container_concurrency: int, autoscaler_data: Mapping[str, str]
) -> None:
    """The autoscaler's own validation of ``autoscaling.knative.dev/*`` annotations."""
    try:
        cfg = AutoscalerConfig.from_configmap(autoscaler_data)
    except ConfigError:
        cfg = AutoscalerConfig()  # config-autoscaler is checked where it is applied
    RevisionAutoscaling.from_annotations(annotations, container_concurrency, cfg)


def check_autoscaler_config(data: Mapping[str, str]) -> None:
    """The autoscaler's own validation of config-autoscaler's data."""
    AutoscalerConfig.from_configmap(data)


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """What validation depends on beyond the resource: the platform's current settings."""

    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)
    autoscaler_data: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    check_autoscaling_annotations: AnnotationCheck | None = check_autoscaling_annotations
    check_autoscaler_config: ConfigMapCheck | None = check_autoscaler_config


def validate(resource: Resource, ctx: ValidationContext | None = None) -> None:
    """Refuse a resource as Knative's webhook would (after Knative's defaults).

    Raises:
        ValidationError: one ``Problem`` naming the resource, with every bad field.
    """
    ctx = ctx or ValidationContext()
    errors = field_errors(resource, ctx)
    if errors:
        where = describe(set_defaults(resource, ctx.defaults))
        raise ValidationError([Problem(where, tuple(errors))])


def validate_update(new: Resource, old: Resource, ctx: ValidationContext | None = None) -> None:
    """``validate``, plus the checks of an update against the stored ``old``.

    Raises:
        ValidationError: as ``validate``.
    """
    ctx = ctx or ValidationContext()
    errors = field_errors(new, ctx) + update_errors(new, old, ctx)
    if errors:
        where = describe(set_defaults(new, ctx.defaults))
        raise ValidationError([Problem(where, tuple(errors))])


def field_errors(resource: Resource, ctx: ValidationContext | None = None) -> list[FieldError]:
    """Every field error of ``resource`` (defaulted first), paths from the object's root."""
    ctx = ctx or ValidationContext()
    r = set_defaults(resource, ctx.defaults)
    if isinstance(r, ConfigMap):
        return _configmap(r, ctx)
    errors = via(_metadata(r.metadata), "metadata")
    if isinstance(r, Service):
        errors += via(_no_autoscaling_annotations(r.metadata.annotations), "metadata.annotations")
        errors += via(_template(r.spec.template, r.metadata.name, ctx), "spec.template")
        errors += via(_traffic(r.spec.traffic, in_service=True), "spec.traffic")
    elif isinstance(r, Configuration):
        errors += via(_no_autoscaling_annotations(r.metadata.annotations), "metadata.annotations")
        errors += via(_template(r.spec.template, r.metadata.name, ctx), "spec.template")
    elif isinstance(r, Route):
        errors += via(_no_autoscaling_annotations(r.metadata.annotations), "metadata.annotations")
        errors += via(_traffic(r.spec.traffic, in_service=False), "spec.traffic")
    else:
        errors += via(_annotations(r.metadata.annotations, r.spec, ctx), "metadata.annotations")
        errors += via(_revision_spec(r.spec, ctx), "spec")
    return errors


def update_errors(
    new: Resource, old: Resource, ctx: ValidationContext | None = None
) -> list[FieldError]:
    """The errors of replacing stored ``old`` by ``new`` (both defaulted here)."""
    ctx = ctx or ValidationContext()
    new, old = set_defaults(new, ctx.defaults), set_defaults(old, ctx.defaults)
    if isinstance(new, Revision) and isinstance(old, Revision):
        if canonical(new.spec) != canonical(old.spec):
            return [
                FieldError(
                    "Immutable fields changed (-old +new)", ("spec",), diff(old.spec, new.spec)
                )
            ]
        return []
    if isinstance(new, Service | Configuration) and isinstance(old, Service | Configuration):
        return via(verify_name_change(new.spec.template, old.spec.template), "spec.template")
    return []


def verify_name_change(new: RevisionTemplateSpec, old: RevisionTemplateSpec) -> list[FieldError]:
    """Knative's VerifyNameChange: a template kept under the same fixed name may not change."""
    if not new.metadata.name or new.metadata.name != old.metadata.name:
        return []
    if canonical(new) == canonical(old):
        return []
    message = "Saw the following changes without a name change (-old +new)"
    return [FieldError(message, ("metadata.name",), diff(old, new))]


def diff(old: object, new: object) -> str:
    """The changed leaves of two model values, one ``-path: old`` / ``+path: new`` per line."""
    a, b = _leaves(json.loads(canonical(old))), _leaves(json.loads(canonical(new)))
    lines = []
    for path in sorted(a.keys() | b.keys()):
        if a.get(path) != b.get(path):
            if path in a:
                lines.append(f"-{path}: {a[path]}")
            if path in b:
                lines.append(f"+{path}: {b[path]}")
    return "\n".join(lines)


def _leaves(value: object, path: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{path}.{k}" if path else k))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{path}[{i}]"))
        return out
    return {path: json.dumps(value)}


# -- names ---------------------------------------------------------------------------------


def dns1035_problems(value: str) -> list[str]:
    """Why ``value`` is not a DNS-1035 label (Kubernetes' IsDNS1035Label), if it is not."""
    problems = []
    if len(value) > _MAX_LABEL:
        problems.append(f"must be no more than {_MAX_LABEL} characters")
    if not _DNS1035.fullmatch(value):
        problems.append(
            "a DNS-1035 label is lower case letters, digits and '-', starting with a letter "
            "and ending with a letter or digit (regex '[a-z]([-a-z0-9]*[a-z0-9])?')"
        )
    return problems


def _not_dns1035(value: str) -> str:
    problems = dns1035_problems(value)
    return f"not a DNS 1035 label: [{' '.join(problems)}]" if problems else ""


def _metadata(meta: ObjectMeta) -> list[FieldError]:
    # knative.dev/pkg apis.ValidateObjectMetadata, without generateName (knpy has no use).
    errors = []
    if not meta.name:
        errors.append(FieldError("name or generateName is required", ("name",)))
    elif message := _not_dns1035(meta.name):
        errors.append(FieldError(message, ("name",)))
    if len(meta.namespace) > _MAX_LABEL or not _DNS1123.fullmatch(meta.namespace):
        details = "a namespace is a DNS-1123 label: lower case letters, digits and '-'"
        errors.append(FieldError.invalid(meta.namespace, "namespace", details))
    return errors


def _no_autoscaling_annotations(annotations: Mapping[str, str]) -> list[FieldError]:
    # Autoscaling annotations act on revisions only; on a Service they would do nothing.
    details = (
        'autoscaling annotations must be put under "spec.template.metadata.annotations" to work'
    )
    return [
        FieldError(f"invalid key name {json.dumps(key)}", ("",), details)
        for key in sorted(annotations)
        if key.startswith(AUTOSCALING_GROUP)
    ]


def _qualified_name(value: str, path: str) -> list[FieldError]:
    # Kubernetes' IsQualifiedName without the optional "prefix/" (no revision has one).
    if len(value) <= _MAX_LABEL and _QUALIFIED.fullmatch(value):
        return []
    details = (
        "a qualified name is at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit"
    )
    return [FieldError(f"invalid key name {json.dumps(value)}", (path,), details)]


# -- the revision template -----------------------------------------------------------------


def _template(t: RevisionTemplateSpec, parent: str, ctx: ValidationContext) -> list[FieldError]:
    errors = via(_revision_spec(t.spec, ctx), "spec")
    errors += via(_annotations(t.metadata.annotations, t.spec, ctx), "metadata.annotations")
    name = t.metadata.name
    if name:
        if message := _not_dns1035(name):
            errors.append(FieldError.invalid(message, "metadata.name"))
        elif not name.startswith(prefix := f"{parent}-"):
            value = f"{json.dumps(name)} must have prefix {json.dumps(prefix)}"
            errors.append(FieldError.invalid(value, "metadata.name"))
    return errors


def _annotations(
    annotations: Mapping[str, str], spec: RevisionSpec, ctx: ValidationContext
) -> list[FieldError]:
    check = ctx.check_autoscaling_annotations
    if check is None:
        return []
    try:
        check(annotations, spec.container_concurrency or 0, ctx.autoscaler_data)
    except ConfigError as e:
        pairs: Sequence[tuple[str, str]] = getattr(e, "errors", ((e.name, e.reason),))
        # containerConcurrency is the spec's own check; every other key is an annotation's.
        return [
            FieldError(reason, (key if key in annotations else "",))
            for key, reason in pairs
            if key != "containerConcurrency"
        ]
    return []


def _revision_spec(spec: RevisionSpec, ctx: ValidationContext) -> list[FieldError]:
    cfg = ctx.defaults
    errors: list[FieldError] = []
    ports = [p for c in spec.containers for p in c.ports]
    if len(ports) > 1:
        details = "Only a single port is allowed across all containers"
        errors.append(
            FieldError("more than one container port is set", ("containers[*].ports",), details)
        )
    if not spec.containers:
        errors.append(FieldError.missing("containers"))
    elif len(spec.containers) > 1:
        message = f"knpy runs one container per revision, but found {len(spec.containers)}"
        errors.append(FieldError(message, ("containers",)))
    else:
        errors += via(_container(spec.containers[0]), "containers", 0)
    timeout = spec.timeout_seconds or 0
    limit = cfg.max_revision_timeout_seconds
    if not 0 <= timeout <= limit:
        errors.append(FieldError.out_of_bounds(timeout, 0, limit, "timeoutSeconds"))
    for path, value in (
        ("responseStartTimeoutSeconds", spec.response_start_timeout_seconds),
        ("idleTimeoutSeconds", spec.idle_timeout_seconds),
    ):
        if value is not None and not 0 <= value <= limit:
            errors.append(FieldError.out_of_bounds(value, 0, limit, path))
    cc = spec.container_concurrency
    lowest = 0 if cfg.allow_container_concurrency_zero else 1
    if cc is not None and not lowest <= cc <= cfg.container_concurrency_max_limit:
        bounds = FieldError.out_of_bounds(cc, lowest, cfg.container_concurrency_max_limit)
        errors.append(bounds.via("containerConcurrency"))
    return errors


def _container(c: Container) -> list[FieldError]:
    errors = []
    if c.name in RESERVED_CONTAINER_NAMES:
        errors.append(FieldError(f"{json.dumps(c.name)} is a reserved container name", ("name",)))
    if not c.command:
        details = (
            "knpy starts the container's command (and args) as a local process; it pulls no image"
        )
        errors.append(FieldError("a local run needs a command", ("command",), details))
    for i, env in enumerate(c.env):
        if not env.name:
            errors.append(FieldError.missing("name").via("env", i))
        elif env.name in RESERVED_ENV:
            message = f"{json.dumps(env.name)} is a reserved environment variable"
            errors.append(FieldError(message, ("name",)).via("env", i))
    port_name = "http"
    if c.ports:
        port = c.ports[0]
        port_name = port.name or port_name
        errors += via(_port(port.container_port, port.name, port.protocol), "ports", 0)
    if c.readiness_probe is not None:
        errors += via(_readiness_probe(c.readiness_probe, port_name), "readinessProbe")
    return errors


def _port(number: int, name: str, protocol: str) -> list[FieldError]:
    errors = []
    if number in RESERVED_PORTS:
        details = f"{number} is reserved for the queue-proxy; use another port"
        errors.append(FieldError.invalid(f"{number} is a reserved port", "containerPort", details))
    if not 0 <= number <= _MAX_PORT:
        errors.append(FieldError.out_of_bounds(number, 0, _MAX_PORT, "containerPort"))
    if protocol not in ("", "TCP"):
        errors.append(FieldError.invalid(protocol, "protocol"))
    if name not in PORT_NAMES:
        details = "Name must be empty, or one of: 'h2c', 'http1'"
        errors.append(FieldError(f"Port name {name} is not allowed", ("",), details))
    return errors


def _readiness_probe(p: Probe, port_name: str) -> list[FieldError]:
    # k8s_validation.go's validateProbe and validateReadinessProbe, for httpGet and tcpSocket.
    errors = []
    handlers = [
        (key, action.port)
        for key, action in (("httpGet", p.http_get), ("tcpSocket", p.tcp_socket))
        if action is not None
    ]
    if not handlers:
        errors.append(FieldError("expected exactly one, got neither", ("httpGet", "tcpSocket")))
    elif len(handlers) > 1:
        errors.append(FieldError("expected exactly one, got both", ("httpGet", "tcpSocket")))
    for key, port in handlers:
        if isinstance(port, str) and port != port_name:
            details = "Probe port must match container port"
            errors.append(FieldError.invalid(port, f"{key}.port", details))
    for path, value, lowest in (
        ("periodSeconds", p.period_seconds, 0),
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("successThreshold", p.success_threshold, 1),
    ):
        if value < lowest:
            errors.append(FieldError.out_of_bounds(value, lowest, _MAX_INT32, path))
    if p.period_seconds == 0:
        # Knative's aggressive probing (every 50 ms until ready) has no period to time out in.
        for path, value in (
            ("failureThreshold", p.failure_threshold),
            ("timeoutSeconds", p.timeout_seconds),
        ):
            if value != 0:
                errors.append(
                    FieldError(f"{path} is disallowed when periodSeconds is zero", (path,))
                )
    else:
        for path, value in (
            ("timeoutSeconds", p.timeout_seconds),
            ("failureThreshold", p.failure_threshold),
        ):
            if value < 1:
                errors.append(FieldError.out_of_bounds(value, 1, _MAX_INT32, path))
    return errors


# -- traffic -------------------------------------------------------------------------------


def _traffic(traffic: Sequence[TrafficTarget], *, in_service: bool) -> list[FieldError]:
    """Knative's validateTrafficList; paths are relative to ``spec.traffic``."""
    errors: list[FieldError] = []
    first_with_tag: dict[str, int] = {}
    total = 0
    for i, t in enumerate(traffic):
        errors += via(_target(t, in_service=in_service), i)
        total += t.percent or 0
        if not t.tag:
            continue
        if message := _not_dns1035(t.tag):
            errors.append(FieldError.invalid(message, "tag").via(i))
        if t.tag in first_with_tag:
            paths = (f"[{i}].tag", f"[{first_with_tag[t.tag]}].tag")
            errors.append(FieldError(f"Multiple definitions for {json.dumps(t.tag)}", paths))
        else:
            first_with_tag[t.tag] = i
    if total != 100:
        errors.append(FieldError(f"Traffic targets sum to {total}, want 100"))
    return errors


def _target(t: TrafficTarget, *, in_service: bool) -> list[FieldError]:
    errors = []
    if t.latest_revision is not None and (t.revision_name != "") == t.latest_revision:
        latest = "true" if t.latest_revision else "false"
        name = json.dumps(t.revision_name)
        message = f"may not set revisionName {name} when latestRevision is {latest}"
        errors.append(FieldError(message, ("latestRevision",)))
    if in_service and t.configuration_name:
        # A Service's targets name its own configuration implicitly.
        errors.append(FieldError.disallowed("configurationName"))
    elif t.revision_name and t.configuration_name:
        errors.append(
            FieldError("expected exactly one, got both", ("revisionName", "configurationName"))
        )
    elif t.revision_name:
        errors += _qualified_name(t.revision_name, "revisionName")
    elif t.configuration_name:
        errors += _qualified_name(t.configuration_name, "configurationName")
    elif not in_service:
        errors.append(
            FieldError("expected exactly one, got neither", ("revisionName", "configurationName"))
        )
    if t.percent is not None and not 0 <= t.percent <= 100:
        errors.append(FieldError.out_of_bounds(t.percent, 0, 100, "percent"))
    if t.url:
        errors.append(FieldError.disallowed("url"))
    return errors


# -- ConfigMaps ----------------------------------------------------------------------------


def _configmap(cm: ConfigMap, ctx: ValidationContext) -> list[FieldError]:
    errors = []
    name = cm.metadata.name
    if name not in (CONFIG_DEFAULTS, CONFIG_AUTOSCALER):
        details = f"knpy reads the ConfigMaps {CONFIG_DEFAULTS} and {CONFIG_AUTOSCALER}"
        errors.append(FieldError.invalid(name or '""', "metadata.name", details))
    if cm.metadata.namespace != CONFIGMAP_NAMESPACE:
        details = f"Knative reads its ConfigMaps in the namespace {CONFIGMAP_NAMESPACE}"
        errors.append(FieldError.invalid(cm.metadata.namespace, "metadata.namespace", details))
    check: ConfigMapCheck | None = None
    if name == CONFIG_DEFAULTS:
        check = DefaultsConfig.from_configmap
    elif name == CONFIG_AUTOSCALER:
        check = ctx.check_autoscaler_config
    if check is not None:
        try:
            check(cm.data)
        except ConfigError as e:
            errors.append(FieldError(e.reason, (f"data.{e.name}",)))
    return errors
