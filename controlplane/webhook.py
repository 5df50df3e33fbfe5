"""Knative's webhook as admission hooks of ``knpy serve``'s API server.

Theory of operation
-------------------
kube-apiserver calls Knative's defaulting webhook, then its validating webhook, before it stores
a create or an update of a serving.knative.dev object, a PodAutoscaler, a Metric, a
ServerlessService, or one of Knative's ConfigMaps. Here the API server calls ``admit`` of the
hook registered for the resource (``admission_hooks()``), with the object as it came on the
wire and, for an update, the stored one:

- **Service, Configuration, Route, Revision**: the object's spec (and the metadata the model
  knows) is decoded with ``model.from_dict``, defaulted with ``defaults.set_defaults`` and
  checked with ``validation.field_errors`` (plus ``update_errors`` against the stored object:
  a fixed template name may not keep a changed template). A Revision is validated in full when
  it is created; an update is only checked for an unchanged spec, as Knative's. The
  limits come from the ``config-defaults`` ConfigMap and the autoscaling annotation checks from
  ``config-autoscaler``, both read through the ``ObjectReader`` at the moment of the write, as
  Knative's webhook reads its ConfigMap informers. What is stored is the wire object with the
  defaulted spec; every other field (metadata the model does not model, status) is kept.
- **ConfigMaps**: ``config-defaults`` and ``config-autoscaler`` in ``knative-serving`` must
  parse (Knative's configmap validation webhook); every other ConfigMap passes untouched.
- **PodAutoscaler, Metric, ServerlessService**: Knative's checks of what the controller and
  the autoscaler write (pa_validation.go, metric_validation.go, serverlessservice_validation.go)
  and the PodAutoscaler's defaults (the class and metric annotations).

A refusal is ``Denied``: the message has today's lines (``Service default/hello: expected 0 <=
101 <= 100: spec.traffic[1].percent``), one ``Cause`` per bad field path.

Knative's defaulting also writes ``serving.knative.dev/creator`` and ``lastModifier`` from the
admission request's user. The API server of ``knpy serve`` has one bearer token and no user
names, so the hooks write neither: an invented name would tell a reader nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from autoscaler.configmap import AutoscalerConfig
from autoscaler.register import KPA
from shared.envconfig import ConfigError
from shared.kube.resources import (
    CONFIGMAPS,
    CONFIGURATIONS,
    KSERVICES,
    METRICS,
    PODAUTOSCALERS,
    REVISIONS,
    ROUTES,
    SERVERLESSSERVICES,
    Obj,
    Resource,
)

from .defaults import DefaultsConfig, set_defaults
from .kubeapi.admission import AdmissionHook, Cause, Denied, ObjectReader, Operation
from .model import (
    CONFIG_AUTOSCALER,
    CONFIG_DEFAULTS,
    CONFIGMAP_NAMESPACE,
    FieldError,
    Revision,
    ValidationError,
    describe,
    from_dict,
    render_field_errors,
    to_dict,
    via,
)
from .model import Resource as ModelResource
from .validation import (
    ValidationContext,
    check_autoscaler_config,
    check_autoscaling_annotations,
    dns1035_problems,
    field_errors,
    update_errors,
)

__all__ = [
    "ConfigMapHook",
    "KnativeHook",
    "PodAutoscalerHook",
    "admission_hooks",
    "denied",
]

# The metadata fields the model decodes; the rest (resourceVersion, ownerReferences,
# managedFields, finalizers...) belongs to the API server and passes through untouched.
_MODEL_METADATA: Final = ("name", "namespace", "labels", "annotations", "generation", "uid")
_PROTOCOLS: Final = ("http1", "h2c")  # Knative's networking.ProtocolType values
_SKS_MODES: Final = ("Serve", "Proxy")
METRIC_ANNOTATION: Final = "autoscaling.knative.dev/metric"
CLASS_ANNOTATION: Final = "autoscaling.knative.dev/class"
HPA: Final = "hpa.autoscaling.knative.dev"


def denied(where: str, errors: Sequence[FieldError]) -> Denied:
    """``Denied`` with today's lines (``<Kind> <ns>/<name>: <message>: <paths>``) and one
    cause per bad field path."""
    lines: list[str] = []
    for line in render_field_errors(errors):
        first, _, details = line.partition("\n")
        lines.append(f"{where}: {first}")
        lines.extend(f"  {d}" for d in details.splitlines())
    causes = [Cause(path, e.message) for e in errors for path in e.paths]
    return Denied("\n".join(lines), causes)


def _where(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or "<no name>"
    if ns := meta.get("namespace"):
        name = f"{ns}/{name}"
    return f"{obj.get('kind', 'object')} {name}"


def _configmap_data(reader: ObjectReader, name: str) -> Mapping[str, str]:
    cm = reader.get(CONFIGMAPS, CONFIGMAP_NAMESPACE, name)
    data = cm.get("data") if cm else None
    return data if isinstance(data, dict) else {}


def _defaults(reader: ObjectReader) -> DefaultsConfig:
    try:
        return DefaultsConfig.from_configmap(_configmap_data(reader, CONFIG_DEFAULTS))
    except ConfigError:
        return DefaultsConfig()  # a bad config-defaults was refused when it was written


def _decodable(obj: Obj) -> Obj:
    """The part of a wire object the model decodes: no status, the modelled metadata only."""
    meta = obj.get("metadata") or {}
    body: Obj = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in _MODEL_METADATA if k in meta},
    }
    if "spec" in obj:
        spec = copy.deepcopy(obj["spec"])
        template = spec.get("template") if isinstance(spec, dict) else None
        tmeta = template.get("metadata") if isinstance(template, dict) else None
        if isinstance(tmeta, dict) and tmeta.get("creationTimestamp", "") is None:
            # Go clients serialise an unset template timestamp as null; it means nothing.
            del tmeta["creationTimestamp"]
        body["spec"] = spec
    return body


def _metadata_only(resource: ModelResource) -> list[FieldError]:
    name = resource.metadata.name
    if problems := dns1035_problems(name):
        return [FieldError(f"not a DNS 1035 label: [{' '.join(problems)}]", ("name",))]
    return []


@dataclass(frozen=True, slots=True)
class KnativeHook:
    """Defaulting and validation of Service, Configuration, Route or Revision objects."""

    kind: str
    check_autoscaling_annotations: Callable[..., object] | None = check_autoscaling_annotations

    def admit(self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader) -> Obj:
        ctx = ValidationContext(
            defaults=_defaults(reader),
            autoscaler_data=_configmap_data(reader, CONFIG_AUTOSCALER),
            check_autoscaling_annotations=self.check_autoscaling_annotations,
        )
        resource = self._decode(obj)
        previous: ModelResource | None = None
        if operation == "UPDATE" and old is not None:
            try:
                previous = from_dict(_decodable(old))
            except ValidationError:
                previous = None  # stored before a rule existed: judge the new object alone
        if isinstance(resource, Revision) and previous is not None:
            # Knative validates a Revision's spec when it is created; an update (the labeler's
            # routing state, say) is only checked for an unchanged spec, so a config-defaults
            # tightened later cannot lock existing revisions.
            errors = via(_metadata_only(resource), "metadata") + update_errors(
                resource, previous, ctx
            )
        else:
            errors = field_errors(resource, ctx)
            if previous is not None and not errors:
                errors += update_errors(resource, previous, ctx)
        defaulted = set_defaults(resource, ctx.defaults)
        if errors:
            raise denied(describe(defaulted), errors)
        out = copy.deepcopy(obj)
        if not (isinstance(resource, Revision) and previous is not None):
            # A stored Revision keeps its spec as created: defaults that config-defaults gained
            # since must not change a running revision (and so its Deployment).
            out["spec"] = to_dict(defaulted).get("spec", {})
        return out

    def _decode(self, obj: Obj) -> ModelResource:
        try:
            return from_dict(_decodable(obj), _where(obj))
        except ValidationError as e:
            problem = e.problems[0]
            raise denied(_where(obj), problem.errors) from None


@dataclass(frozen=True, slots=True)
class ConfigMapHook:
    """Knative's ConfigMap validation: config-defaults and config-autoscaler must parse."""

    check_autoscaler_config: Callable[[Mapping[str, str]], object] | None = check_autoscaler_config

    def admit(self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader) -> Obj:
        meta = obj.get("metadata") or {}
        if meta.get("namespace") != CONFIGMAP_NAMESPACE:
            return obj
        check: Callable[[Mapping[str, str]], object] | None = None
        if meta.get("name") == CONFIG_DEFAULTS:
            check = DefaultsConfig.from_configmap
        elif meta.get("name") == CONFIG_AUTOSCALER:
            check = self.check_autoscaler_config
        if check is None:
            return obj
        data = obj.get("data") or {}
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            errors = [FieldError.invalid(data[k], f"data.{k}", "expected a string") for k in bad]
            raise denied(_where(obj), errors)
        try:
            check(data)
        except ConfigError as e:
            raise denied(_where(obj), [FieldError(e.reason, (f"data.{e.name}",))]) from None
        return obj


def _metadata_errors(obj: Obj) -> list[FieldError]:
    # knative.dev/serving's ValidateObjectMetadata: a DNS-1035 name.
    name = (obj.get("metadata") or {}).get("name") or ""
    if not name:
        return [FieldError("name or generateName is required", ("metadata.name",))]
    if problems := dns1035_problems(name):
        message = f"not a DNS 1035 label: [{' '.join(problems)}]"
        return [FieldError(message, ("metadata.name",))]
    return []


def _object_reference(ref: object) -> list[FieldError]:
    # Knative's ValidateNamespacedObjectReference: apiVersion, kind and name are required.
    if not isinstance(ref, dict):
        return [FieldError.missing("apiVersion", "kind", "name")]
    missing = [k for k in ("apiVersion", "kind", "name") if not ref.get(k)]
    return [FieldError.missing(*missing)] if missing else []


def _protocol(value: object) -> list[FieldError]:
    return [] if value in _PROTOCOLS else [FieldError.invalid(value if value else '""')]


def _annotation_errors(obj: Obj, reader: ObjectReader) -> list[FieldError]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    cc = (obj.get("spec") or {}).get("containerConcurrency") or 0
    try:
        check_autoscaling_annotations(
            annotations, int(cc), _configmap_data(reader, CONFIG_AUTOSCALER)
        )
    except ConfigError as e:
        pairs: Sequence[tuple[str, str]] = getattr(e, "errors", ((e.name, e.reason),))
        return [
            FieldError(reason, (key if key in annotations else "",)).via("metadata.annotations")
            for key, reason in pairs
            if key != "containerConcurrency"
        ]
    return []


@dataclass(frozen=True, slots=True)
class PodAutoscalerHook:
    """Knative's PodAutoscaler defaults (class, metric annotations) and validation."""

    def admit(self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader) -> Obj:
        out = copy.deepcopy(obj)
        meta = out.setdefault("metadata", {})
        annotations = meta.get("annotations") or {}
        try:
            cfg = AutoscalerConfig.from_configmap(_configmap_data(reader, CONFIG_AUTOSCALER))
        except ConfigError:
            cfg = AutoscalerConfig()
        annotations.setdefault(CLASS_ANNOTATION, cfg.pod_autoscaler_class)
        metric = {KPA: "concurrency", HPA: "cpu"}.get(annotations[CLASS_ANNOTATION], "")
        annotations.setdefault(METRIC_ANNOTATION, metric)
        meta["annotations"] = annotations
        errors = _metadata_errors(out) + _annotation_errors(out, reader)
        spec = out.get("spec")
        if not spec:
            errors.append(FieldError.missing("spec"))
        else:
            errors += via(_object_reference(spec.get("scaleTargetRef")), "spec.scaleTargetRef")
            cc = spec.get("containerConcurrency", 0)
            limit = _defaults(reader).container_concurrency_max_limit
            if not isinstance(cc, int) or not 0 <= cc <= limit:
                errors.append(FieldError.out_of_bounds(cc, 0, limit, "spec.containerConcurrency"))
            errors += via(_protocol(spec.get("protocolType")), "spec.protocolType")
            reachability = spec.get("reachability", "")
            if reachability not in ("", "Reachable", "Unreachable"):
                errors.append(FieldError.invalid(reachability, "spec.reachability"))
        if errors:
            raise denied(_where(out), errors)
        return out


@dataclass(frozen=True, slots=True)
class MetricHook:
    """Knative's Metric validation: a name and a spec."""

    def admit(self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader) -> Obj:
        errors = _metadata_errors(obj)
        if not obj.get("spec"):
            errors.append(FieldError.missing("spec"))
        if errors:
            raise denied(_where(obj), errors)
        return obj


@dataclass(frozen=True, slots=True)
class ServerlessServiceHook:
    """Knative's ServerlessService validation: mode, numActivators, objectRef, protocolType."""

    def admit(self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader) -> Obj:
        errors = _metadata_errors(obj)
        spec = obj.get("spec")
        if not spec:
            errors.append(FieldError.missing("spec"))
        else:
            mode = spec.get("mode", "")
            if not mode:
                errors.append(FieldError.missing("spec.mode"))
            elif mode not in _SKS_MODES:
                errors.append(FieldError.invalid(mode, "spec.mode"))
            n = spec.get("numActivators", 0)
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                errors.append(FieldError.invalid(json.dumps(n), "spec.numActivators"))
            errors += via(_object_reference(spec.get("objectRef")), "spec.objectRef")
            errors += via(_protocol(spec.get("protocolType")), "spec.protocolType")
        if errors:
            raise denied(_where(obj), errors)
        return obj


def admission_hooks(
    *, check_autoscaling_annotations: Callable[..., object] | None = check_autoscaling_annotations
) -> dict[Resource, AdmissionHook]:
    """Knative's webhook for every resource it admits, for ``KubeApiServer(admission=...)``.

    Args:
        check_autoscaling_annotations: the autoscaler's checks of ``autoscaling.knative.dev/*``
            annotations on revision templates; None skips them.
    """
    from .eventing_webhook import eventing_hooks  # it reuses ``denied`` from here

    check = check_autoscaling_annotations
    return {
        KSERVICES: KnativeHook("Service", check),
        CONFIGURATIONS: KnativeHook("Configuration", check),
        ROUTES: KnativeHook("Route", check),
        REVISIONS: KnativeHook("Revision", check),
        CONFIGMAPS: ConfigMapHook(),
        PODAUTOSCALERS: PodAutoscalerHook(),
        METRICS: MetricHook(),
        SERVERLESSSERVICES: ServerlessServiceHook(),
        **eventing_hooks(),
    }
