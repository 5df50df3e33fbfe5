"""Knative Eventing's webhook: defaulting and validation of Brokers, Triggers, Channels,
Subscriptions, PingSources, SinkBindings and ContainerSources, as admission hooks.

Each hook matches the ``SetDefaults``/``Validate`` of knative/eventing's types
(pkg/apis/eventing/v1, messaging/v1, sources/v1) and answers with the same messages at the same
field paths, so ``kubectl apply`` of a bad file prints what a cluster would, and stores nothing.
What knpy decides differently (each written down in docs/eventing.md):

- Broker: the class annotation defaults to knpy's ``MTChannelBasedBroker`` (the durable store in
  the state dir; Knative's default class name, so Knative manifests apply unchanged) and an
  absent ``spec.delivery`` to config-br-defaults' (10 retries, exponential, PT0.2S), as
  Knative's defaulting writes it. ``spec.config`` is left unset: knpy has no channel ConfigMap.
- Delivery specs are validated by eventing.delivery (the data plane's own reader), with the
  ``delivery-timeout`` and ``delivery-retryafter`` features on.
- Trigger ``filter`` and ``filters`` are checked by eventing.filters (the data plane's own
  compiler; CESQL expressions are parsed there).
- Channel: ``channelTemplate`` is optional. knpy's Channel is durable whatever the template
  names (it is backed by a Broker of the default class; docs/eventing.md).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from eventing.delivery import validate_delivery
from eventing.errors import FieldError as EventingFieldError
from eventing.filters import validate_trigger_filters
from shared.kube.resources import (
    BROKER_CLASS_ANNOTATION,
    BROKERS,
    CHANNELS,
    CONTAINERSOURCES,
    DEFAULT_BROKER_CLASS,
    PINGSOURCES,
    SINKBINDINGS,
    SUBSCRIPTIONS,
    TRIGGERS,
    Obj,
    Resource,
)

from .cron import CronError, parse_schedule
from .kubeapi.admission import AdmissionHook, ObjectReader, Operation
from .model import FieldError
from .webhook import _where, denied

__all__ = [
    "BROKER_LABEL",
    "DEFAULT_SCHEDULE",
    "defaulted",
    "destination_errors",
    "eventing_hooks",
]

BROKER_LABEL: Final = "eventing.knative.dev/broker"  # Knative's trigger label (setLabels)
DEFAULT_SCHEDULE: Final = "* * * * *"  # ping_defaults.go
_EXTENSION_NAME: Final = re.compile(r"^[a-zA-Z0-9]+$")
_IMMUTABLE: Final = "Immutable fields changed (-old +new)"
# config-br-defaults (config/core/configmaps/default-broker.yaml) as Knative's defaulting copies
# it into a Broker without a delivery.
_DEFAULT_DELIVERY: Final = {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}

def _from_eventing(errors: Sequence[EventingFieldError]) -> list[FieldError]:
    return [FieldError(e.message, (e.path,)) for e in errors]


def _diff(old: object, new: object) -> str:
    """A short -old +new for Knative's immutability errors (kmp.ShortDiff's role)."""
    return f"-: {json.dumps(old, sort_keys=True)}\n+: {json.dumps(new, sort_keys=True)}"


# -- shared pieces: KReference, Destination, SourceSpec -------------------------------------


def kreference_errors(ref: object, path: str, namespace: str) -> list[FieldError]:
    """knative.dev/pkg's KReference.Validate: name, apiVersion and kind; a namespace only if
    it is the parent's."""
    if not isinstance(ref, Mapping):
        return [FieldError.missing(f"{path}.name", f"{path}.apiVersion", f"{path}.kind")]
    errs: list[FieldError] = []
    for key in ("name", "apiVersion", "kind"):
        if not ref.get(key):
            errs.append(FieldError.missing(f"{path}.{key}"))
    if ref.get("group"):
        errs.append(FieldError.disallowed(f"{path}.group"))
    ref_ns = ref.get("namespace")
    if ref_ns and namespace and ref_ns != namespace:
        details = f'parent namespace: "{namespace}" does not match ref: "{ref_ns}"'
        errs.append(FieldError("mismatched namespaces", (f"{path}.namespace",), details))
    return errs


def destination_errors(dest: object, path: str, namespace: str) -> list[FieldError]:
    """knative.dev/pkg's ValidateDestination: a ``ref``, an absolute ``uri``, or a ref with a
    relative uri."""
    if not isinstance(dest, Mapping) or (dest.get("ref") is None and not dest.get("uri")):
        return [FieldError("expected at least one, got none", (f"{path}.ref", f"{path}.uri"))]
    ref, uri = dest.get("ref"), dest.get("uri")
    absolute = isinstance(uri, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]+", uri)
    if ref is not None and uri and absolute:
        message = "Absolute URI is not allowed when Ref or [apiVersion, kind, name] is present"
        return [FieldError(message, (f"{path}.ref", f"{path}.uri"))]
    if ref is None:
        if not absolute:
            details = "Relative URI is not allowed when Ref and [apiVersion, kind, name] is absent"
            return [FieldError.invalid(details, f"{path}.uri")]
        return []
    return kreference_errors(ref, f"{path}.ref", namespace)


def _default_destination(dest: object, namespace: str) -> None:
    """Destination.SetDefaults: a ref without a namespace is in the parent's."""
    if isinstance(dest, dict) and isinstance(dest.get("ref"), dict):
        dest["ref"].setdefault("namespace", namespace)


def _source_spec_errors(spec: Mapping[str, object], namespace: str) -> list[FieldError]:
    """duckv1.SourceSpec.Validate: a sink, and ceOverrides' extension names."""
    errs = destination_errors(spec.get("sink"), "spec.sink", namespace)
    overrides = spec.get("ceOverrides")
    if isinstance(overrides, Mapping):
        extensions = overrides.get("extensions") or {}
        if not isinstance(extensions, Mapping):
            errs.append(FieldError.invalid(extensions, "spec.ceOverrides.extensions"))
        else:
            for key in extensions:
                if not key:
                    errs.append(
                        FieldError(
                            'invalid key name ""', ("spec.ceOverrides.extensions",),
                            "keys MUST NOT be empty",
                        )
                    )
                elif not _EXTENSION_NAME.match(str(key)):
                    errs.append(
                        FieldError(
                            f'invalid key name "{key}"', (f"spec.ceOverrides.extensions[{key}]",),
                            "keys are expected to be alphanumeric",
                        )
                    )
    elif overrides is not None:
        errs.append(FieldError.invalid(overrides, "spec.ceOverrides"))
    return errs


def _delivery_errors(spec: Mapping[str, object], path: str = "spec.delivery") -> list[FieldError]:
    return _from_eventing(validate_delivery(spec.get("delivery"), path))


def _spec(obj: Obj) -> dict[str, object]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _namespace(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def _metadata_errors(obj: Obj) -> list[FieldError]:
    if not (obj.get("metadata") or {}).get("name"):
        return [FieldError("name or generateName is required", ("metadata.name",))]
    return []


@dataclass(frozen=True, slots=True)
class _Hook:
    """One kind's defaults and checks; ``admit`` runs them and raises ``Denied``."""

    default: Callable[[Obj], None]
    validate: Callable[[Obj, Obj | None], list[FieldError]]

    def admit(self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader) -> Obj:
        out = copy.deepcopy(obj)
        self.default(out)
        errors = _metadata_errors(out) + self.validate(out, old if operation == "UPDATE" else None)
        if errors:
            raise denied(_where(out), errors)
        return out


# -- eventing.knative.dev/v1 -----------------------------------------------------------------


def _default_broker(obj: Obj) -> None:
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    if BROKER_CLASS_ANNOTATION not in annotations:
        annotations[BROKER_CLASS_ANNOTATION] = DEFAULT_BROKER_CLASS
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if spec.get("delivery") is None:
        spec["delivery"] = dict(_DEFAULT_DELIVERY)
    if isinstance(spec.get("delivery"), dict):
        _default_destination(spec["delivery"].get("deadLetterSink"), _namespace(obj))


def _validate_broker(obj: Obj, old: Obj | None) -> list[FieldError]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    errs: list[FieldError] = []
    if not annotations.get(BROKER_CLASS_ANNOTATION):
        errs.append(FieldError.missing(BROKER_CLASS_ANNOTATION))
    spec = _spec(obj)
    if spec.get("config") is not None:
        errs += kreference_errors(spec["config"], "spec.config", _namespace(obj))
    errs += _delivery_errors(spec)
    if old is not None:
        before = {k: v for k, v in _spec(old).items() if k != "delivery"}
        after = {k: v for k, v in spec.items() if k != "delivery"}
        if before != after:  # only delivery may change (CheckImmutableFields)
            errs.append(FieldError(_IMMUTABLE, ("spec",), _diff(before, after)))
        was = ((old.get("metadata") or {}).get("annotations") or {}).get(BROKER_CLASS_ANNOTATION)
        if was and was != annotations.get(BROKER_CLASS_ANNOTATION):
            path = f"metadata.annotations[{BROKER_CLASS_ANNOTATION}]"
            errs.append(
                FieldError(
                    "Immutable annotations changed (-old +new)", (path,),
                    _diff(was, annotations.get(BROKER_CLASS_ANNOTATION)),
                )
            )
    return errs


def _default_trigger(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if spec.get("filter") is None:
        spec["filter"] = {}
    ns = _namespace(obj)
    _default_destination(spec.get("subscriber"), ns)
    if isinstance(spec.get("delivery"), dict):
        _default_destination(spec["delivery"].get("deadLetterSink"), ns)
    broker = spec.get("broker")
    if isinstance(broker, str) and broker:
        obj.setdefault("metadata", {}).setdefault("labels", {})[BROKER_LABEL] = broker


def _validate_trigger(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = _spec(obj)
    ns = _namespace(obj)
    errs: list[FieldError] = []
    broker, broker_ref = spec.get("broker"), spec.get("brokerRef")
    if not broker and broker_ref is None:
        errs.append(FieldError.missing("spec.broker"))
    elif broker and broker_ref is not None:
        errs.append(FieldError("expected exactly one, got both", ("spec.broker", "spec.brokerRef")))
    elif broker is not None and not isinstance(broker, str):
        errs.append(FieldError.invalid(broker, "spec.broker"))
    if isinstance(broker_ref, Mapping) and broker_ref.get("namespace"):
        details = (
            "only name, apiVersion and kind are supported fields when "
            "feature.CrossNamespaceEventLinks is disabled"
        )
        errs.append(FieldError.disallowed("spec.brokerRef.namespace", details=details))
    errs += _from_eventing(validate_trigger_filters(spec))
    errs += destination_errors(spec.get("subscriber"), "spec.subscriber", ns)
    errs += _delivery_errors(spec)
    if old is not None and _spec(old).get("broker") != broker:
        errs.append(
            FieldError(_IMMUTABLE, ("spec.broker",), _diff(_spec(old).get("broker"), broker))
        )
    return errs


# -- messaging.knative.dev/v1 ----------------------------------------------------------------


def _default_channel(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict) and isinstance(spec.get("delivery"), dict):
        _default_destination(spec["delivery"].get("deadLetterSink"), _namespace(obj))


def _validate_channel(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = _spec(obj)
    errs: list[FieldError] = []
    template = spec.get("channelTemplate")
    if template is not None:
        if not isinstance(template, Mapping):
            errs.append(FieldError.invalid(template, "spec.channelTemplate"))
        else:
            keys = ("kind", "apiVersion")
            missing = [f"spec.channelTemplate.{k}" for k in keys if not template.get(k)]
            if missing:
                errs.append(FieldError.missing(*missing))
    if spec.get("subscribers"):
        errs.append(FieldError.disallowed("spec.subscribable.subscribers"))
    errs += _delivery_errors(spec)
    if old is not None:
        keep = ("subscribers",)
        before = {k: v for k, v in _spec(old).items() if k not in keep}
        after = {k: v for k, v in spec.items() if k not in keep}
        if before != after:
            errs.append(FieldError(_IMMUTABLE, ("spec",), _diff(before, after)))
    return errs


def _default_subscription(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    ns = _namespace(obj)
    _default_destination(spec.get("subscriber"), ns)
    _default_destination(spec.get("reply"), ns)
    if isinstance(spec.get("delivery"), dict):
        _default_destination(spec["delivery"].get("deadLetterSink"), ns)


def _validate_subscription(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = _spec(obj)
    ns = _namespace(obj)
    channel = spec.get("channel")
    if not channel:
        return [FieldError("missing field(s)", ("spec.channel",),
                           "the Subscription must reference a channel")]
    errs = kreference_errors(channel, "spec.channel", ns)
    if not spec.get("subscriber"):
        errs.append(
            FieldError("missing field(s)", ("spec.subscriber",),
                       "the Subscription must reference a subscriber")
        )
    else:
        errs += destination_errors(spec["subscriber"], "spec.subscriber", ns)
    if spec.get("reply"):
        errs += destination_errors(spec["reply"], "spec.reply", ns)
    errs += _delivery_errors(spec)
    if old is not None and _spec(old).get("channel") != channel:
        errs.append(FieldError(_IMMUTABLE, ("spec",), _diff(_spec(old).get("channel"), channel)))
    return errs


# -- sources.knative.dev/v1 ------------------------------------------------------------------


def _default_source(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        _default_destination(spec.get("sink"), _namespace(obj))


def _default_ping(obj: Obj) -> None:
    _default_source(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict) and not spec.get("schedule"):
        spec["schedule"] = DEFAULT_SCHEDULE


def _validate_ping(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = _spec(obj)
    errs: list[FieldError] = []
    schedule, timezone = spec.get("schedule", ""), spec.get("timezone", "")
    if not isinstance(schedule, str):
        errs.append(FieldError.invalid(schedule, "spec.schedule"))
    elif not isinstance(timezone, str):
        errs.append(FieldError.invalid(timezone, "spec.timezone"))
    else:
        if "@every" in schedule:  # validateDescriptor, before (and besides) the parse
            errs.append(FieldError.invalid("unsupported descriptor @every", "spec.schedule"))
            schedule = DEFAULT_SCHEDULE  # still check the timezone
        try:
            parse_schedule(schedule, timezone)
        except CronError as e:
            errs.append(FieldError.invalid(str(e), f"spec.{e.field}"))
    errs += _source_spec_errors(spec, _namespace(obj))
    data, data64 = spec.get("data"), spec.get("dataBase64")
    json_type = spec.get("contentType") == "application/json"
    if data and data64:
        errs.append(FieldError("expected exactly one, got both", ("spec.data", "spec.dataBase64")))
    elif data64:
        try:
            decoded = base64.b64decode(str(data64), validate=True)
        except (binascii.Error, ValueError) as e:
            errs.append(FieldError.invalid(f"illegal base64 data: {e}", "spec.dataBase64"))
        else:
            if json_type and (problem := _json_problem(decoded.decode("utf-8", "replace"))):
                errs.append(FieldError.invalid(problem, "spec.dataBase64"))
    elif data:
        if not isinstance(data, str):
            errs.append(FieldError.invalid(data, "spec.data"))
        elif json_type and (problem := _json_problem(data)):
            errs.append(FieldError.invalid(problem, "spec.data"))
    return errs


def _json_problem(text: str) -> str:
    """Why ``text`` is not a JSON object ("" if it is): ping_validation's validateJSON."""
    try:
        value = json.loads(text)
    except ValueError as e:
        return f"invalid JSON: {e}"
    return "" if isinstance(value, dict) else "expected a JSON object"


def _default_sinkbinding(obj: Obj) -> None:
    """SinkBinding.SetDefaults: the subject is in the binding's namespace."""
    _default_source(obj)
    subject = _spec(obj).get("subject")
    if isinstance(subject, dict) and not subject.get("namespace"):
        subject["namespace"] = _namespace(obj)


def _validate_sinkbinding(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = _spec(obj)
    ns = _namespace(obj)
    errs = _source_spec_errors(spec, ns)
    subject = spec.get("subject")
    if not isinstance(subject, Mapping):
        return [*errs, FieldError.missing("spec.subject")]
    for key in ("apiVersion", "kind"):
        if not subject.get(key):
            errs.append(FieldError.missing(f"spec.subject.{key}"))
    name, selector = subject.get("name"), subject.get("selector")
    if not name and selector is None:
        errs.append(FieldError("expected exactly one, got neither",
                               ("spec.subject.name", "spec.subject.selector")))
    elif name and selector is not None:
        errs.append(FieldError("expected exactly one, got both",
                               ("spec.subject.name", "spec.subject.selector")))
    if subject.get("namespace") and subject["namespace"] != ns:
        errs.append(FieldError.invalid(subject["namespace"], "spec.subject.namespace"))
    return errs


def _validate_containersource(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = _spec(obj)
    errs = _source_spec_errors(spec, _namespace(obj))
    template = spec.get("template") if isinstance(spec.get("template"), Mapping) else {}
    assert isinstance(template, Mapping)
    pod = template.get("spec") if isinstance(template.get("spec"), Mapping) else {}
    assert isinstance(pod, Mapping)
    containers = pod.get("containers")
    if not containers or not isinstance(containers, list):
        errs.append(FieldError.missing("spec.template.spec.containers"))
        return errs
    for i, c in enumerate(containers):
        c = c if isinstance(c, Mapping) else {}
        for key in ("name", "image"):
            if not c.get(key):
                errs.append(FieldError.missing(f"spec.template.spec.containers[{i}].{key}"))
    return errs


def defaulted(resource: Resource, obj: Obj) -> Obj:
    """``obj`` with the webhook's defaults, as it will be stored (for controllers comparing
    what they want with what is stored)."""
    out = copy.deepcopy(obj)
    hook = eventing_hooks().get(resource)
    if isinstance(hook, _Hook):
        hook.default(out)
    return out


def eventing_hooks() -> dict[Resource, AdmissionHook]:
    """Knative Eventing's webhook for every resource it admits."""
    return {
        BROKERS: _Hook(_default_broker, _validate_broker),
        TRIGGERS: _Hook(_default_trigger, _validate_trigger),
        CHANNELS: _Hook(_default_channel, _validate_channel),
        SUBSCRIPTIONS: _Hook(_default_subscription, _validate_subscription),
        PINGSOURCES: _Hook(_default_ping, _validate_ping),
        SINKBINDINGS: _Hook(_default_sinkbinding, _validate_sinkbinding),
        CONTAINERSOURCES: _Hook(_default_source, _validate_containersource),
    }
