"""The Knative resource model: serving.knative.dev/v1 Service, Configuration, Revision, Route.

Theory of operation
-------------------
Every resource is a tree of frozen dataclasses whose field names are the snake_case of
Knative's JSON names (``container_port`` is ``containerPort``), so one generic codec reads and
writes them all:

- ``parse_documents(text)`` reads multi-document YAML or JSON (a ``kind: List`` or a JSON array
  is flattened), checks apiVersion and kind, and decodes each document against the dataclass
  types. A wrong type or an unknown field is a ``FieldError`` with Knative's path
  (``spec.template.spec.containers[0].ports[0].containerPort``), and every document's errors
  are reported together in one ``ValidationError``. Unknown fields are refused, not dropped:
  the local platform would silently ignore them otherwise.
- ``to_dict(resource)`` writes the Knative-shaped object (apiVersion, kind, metadata, spec,
  status) with Go's ``omitempty`` rules: an absent optional (``None``) is left out, a plain
  int that is 0, a plain bool that is false, and an empty string, list or map are left out,
  so a round trip through ``knpy get -o yaml`` gives back what was applied.

This module knows nothing of defaults, validation rules or storage; ``FieldError`` and
``ValidationError`` live here because decoding already needs them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeAlias, TypeVar

import yaml

from shared.documents import load_documents

__all__ = [
    "API_VERSION",
    "CONFIGMAP_NAMESPACE",
    "CONFIGURATION_GENERATION_LABEL",
    "CONFIGURATION_LABEL",
    "CONFIG_AUTOSCALER",
    "CONFIG_DEFAULTS",
    "GROUP",
    "SERVICE_LABEL",
    "Condition",
    "ConfigMap",
    "Configuration",
    "ConfigurationSpec",
    "ConfigurationStatus",
    "Container",
    "ContainerPort",
    "EnvVar",
    "FieldError",
    "HTTPGetAction",
    "HTTPHeader",
    "ObjectMeta",
    "Probe",
    "Problem",
    "Resource",
    "Revision",
    "RevisionSpec",
    "RevisionStatus",
    "RevisionTemplateSpec",
    "Route",
    "RouteSpec",
    "RouteStatus",
    "Service",
    "ServiceSpec",
    "ServiceStatus",
    "TCPSocketAction",
    "TemplateMeta",
    "TrafficTarget",
    "ValidationError",
    "canonical",
    "describe",
    "from_dict",
    "parse_documents",
    "render_field_errors",
    "to_dict",
    "via",
]

GROUP: Final = "serving.knative.dev"
API_VERSION: Final = f"{GROUP}/v1"
# Knative's labels on what a Service and a Configuration own (pkg/apis/serving/register.go).
SERVICE_LABEL: Final = f"{GROUP}/service"
CONFIGURATION_LABEL: Final = f"{GROUP}/configuration"
CONFIGURATION_GENERATION_LABEL: Final = f"{GROUP}/configurationGeneration"
# The two ConfigMaps of Knative's that change the local platform's settings.
CONFIGMAP_NAMESPACE: Final = "knative-serving"
CONFIG_DEFAULTS: Final = "config-defaults"
CONFIG_AUTOSCALER: Final = "config-autoscaler"


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


# -- errors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem at one or more field paths, as knative.dev/pkg/apis.FieldError.

    Paths are relative to the object being checked; ``via`` prefixes them the way Go's
    ``ViaField``/``ViaIndex`` do, so a check written for a container can be reported at
    ``spec.template.spec.containers[0]``. An empty path means "this very field".
    """

    message: str
    paths: tuple[str, ...] = ("",)
    details: str = ""

    def via(self, *prefix: str | int) -> FieldError:
        """The same error seen from a parent: ints are list indexes, strings field names."""
        parts = [f"[{p}]" if isinstance(p, int) else p for p in prefix]
        return dataclasses.replace(self, paths=tuple(_flatten([*parts, p]) for p in self.paths))

    @staticmethod
    def missing(*paths: str) -> FieldError:
        return FieldError("missing field(s)", paths)

    @staticmethod
    def disallowed(*paths: str, details: str = "") -> FieldError:
        return FieldError("must not set the field(s)", paths, details)

    @staticmethod
    def invalid(value: object, path: str = "", details: str = "") -> FieldError:
        return FieldError(f"invalid value: {_show(value)}", (path,), details)

    @staticmethod
    def out_of_bounds(value: object, lower: object, upper: object, path: str = "") -> FieldError:
        return FieldError(f"expected {lower} <= {value} <= {upper}", (path,))


def via(errors: Sequence[FieldError], *prefix: str | int) -> list[FieldError]:
    """Every error of ``errors`` seen from a parent (``FieldError.via`` over a list)."""
    return [e.via(*prefix) for e in errors]


def _flatten(parts: Sequence[str]) -> str:
    # Go's apis.flatten: split on dots, drop empty parts, glue "[i]" onto the part before it.
    out: list[str] = []
    for part in parts:
        for p in part.split("."):
            if not p:
                continue
            if out and p.startswith("[") and p.endswith("]"):
                out[-1] += p
            else:
                out.append(p)
    return ".".join(out)


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render_field_errors(errors: Sequence[FieldError]) -> list[str]:
    """Knative's ``FieldError.Error()`` lines: one per distinct message, its paths joined.

    Errors with the same message and details merge (paths sorted), and the lines are sorted
    by message, as Go's ``merge`` does, so the output is stable whatever order checks ran in.
    """
    merged: dict[tuple[str, str], list[str]] = {}
    for e in errors:
        paths = merged.setdefault((e.message, e.details), [])
        paths.extend(p for p in e.paths if p not in paths)
    lines = []
    for (message, details), paths in sorted(merged.items()):
        line = f"{message}: {', '.join(sorted(paths))}"
        lines.append(f"{line}\n{details}" if details else line)
    return lines


@dataclass(frozen=True, slots=True)
class Problem:
    """The field errors of one document or resource, ``where`` naming it for a person."""

    where: str
    errors: tuple[FieldError, ...]

    def lines(self) -> list[str]:
        out = []
        for line in render_field_errors(self.errors):
            first, _, details = line.partition("\n")
            out.append(f"{self.where}: {first}")
            out.extend(f"  {line}" for line in details.splitlines())
        return out


class ValidationError(ValueError):
    """A document or resource was refused; ``problems`` say which fields and why.

    The message has one line per distinct error, prefixed with the resource, e.g.
    ``Service default/hello: expected 0 <= 101 <= 100: spec.traffic[1].percent``.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(line for p in self.problems for line in p.lines()))

    @property
    def field_errors(self) -> list[FieldError]:
        return [e for p in self.problems for e in p.errors]


# -- metadata ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str = ""
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty)
    generation: int = 0
    uid: str = ""
    creation_timestamp: str = ""  # RFC 3339, set by the store


@dataclass(frozen=True, slots=True)
class TemplateMeta:
    """A revision template's metadata: the subset Knative copies onto the Revision."""

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class Condition:
    type: str = ""
    status: str = "Unknown"  # "True", "False" or "Unknown", as Kubernetes spells them
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""
    severity: str = ""


# -- the revision template -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int = 0
    name: str = ""
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class HTTPHeader:
    name: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class HTTPGetAction:
    path: str = ""
    port: int | str | None = None  # Kubernetes' IntOrString
    host: str = ""
    scheme: str = ""
    http_headers: tuple[HTTPHeader, ...] = ()


@dataclass(frozen=True, slots=True)
class TCPSocketAction:
    port: int | str | None = None
    host: str = ""


@dataclass(frozen=True, slots=True)
class Probe:
    """A readiness probe; as in Kubernetes a 0 means "not set" for the numbers."""

    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    initial_delay_seconds: int = 0
    timeout_seconds: int = 0
    period_seconds: int = 0
    success_threshold: int = 0
    failure_threshold: int = 0


@dataclass(frozen=True, slots=True)
class Container:
    name: str = ""
    image: str = ""  # kept for a cluster; the local platform runs ``command``
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    readiness_probe: Probe | None = None


@dataclass(frozen=True, slots=True)
class RevisionSpec:
    containers: tuple[Container, ...] = ()
    container_concurrency: int | None = None
    timeout_seconds: int | None = None
    response_start_timeout_seconds: int | None = None
    idle_timeout_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class RevisionTemplateSpec:
    metadata: TemplateMeta = field(default_factory=TemplateMeta)
    spec: RevisionSpec = field(default_factory=RevisionSpec)


# -- traffic -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    tag: str = ""
    revision_name: str = ""
    configuration_name: str = ""
    latest_revision: bool | None = None
    percent: int | None = None
    url: str = ""  # status only: the tag's own URL


# -- statuses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    latest_created_revision_name: str = ""
    latest_ready_revision_name: str = ""
    url: str = ""
    traffic: tuple[TrafficTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigurationStatus:
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    latest_created_revision_name: str = ""
    latest_ready_revision_name: str = ""


@dataclass(frozen=True, slots=True)
class RouteStatus:
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    url: str = ""
    traffic: tuple[TrafficTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class RevisionStatus:
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    actual_replicas: int | None = None
    desired_replicas: int | None = None


# -- resources -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    template: RevisionTemplateSpec = field(default_factory=RevisionTemplateSpec)
    traffic: tuple[TrafficTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigurationSpec:
    template: RevisionTemplateSpec = field(default_factory=RevisionTemplateSpec)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    traffic: tuple[TrafficTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Service"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: ServiceSpec = field(default_factory=ServiceSpec)
    status: ServiceStatus = field(default_factory=ServiceStatus)


@dataclass(frozen=True, slots=True)
class Configuration:
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Configuration"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: ConfigurationSpec = field(default_factory=ConfigurationSpec)
    status: ConfigurationStatus = field(default_factory=ConfigurationStatus)


@dataclass(frozen=True, slots=True)
class Revision:
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Revision"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: RevisionSpec = field(default_factory=RevisionSpec)
    status: RevisionStatus = field(default_factory=RevisionStatus)


@dataclass(frozen=True, slots=True)
class Route:
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Route"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: RouteSpec = field(default_factory=RouteSpec)
    status: RouteStatus = field(default_factory=RouteStatus)


@dataclass(frozen=True, slots=True)
class ConfigMap:
    """Knative's ``config-defaults`` or ``config-autoscaler`` (namespace knative-serving)."""

    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "ConfigMap"
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    data: Mapping[str, str] = field(default_factory=_empty)


Resource: TypeAlias = Service | Configuration | Revision | Route | ConfigMap
R = TypeVar("R", Service, Configuration, Revision, Route, ConfigMap)

_KINDS: Final[Mapping[tuple[str, str], type[Resource]]] = MappingProxyType(
    {(c.API_VERSION, c.KIND): c for c in (Service, Configuration, Revision, Route, ConfigMap)}
)


def describe(resource: Resource) -> str:
    """``Service default/hello``: how errors and logs name a resource."""
    meta = resource.metadata
    name = meta.name or "<no name>"
    if meta.namespace:
        name = f"{meta.namespace}/{name}"
    return f"{resource.KIND} {name}"


# -- encoding ------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    """(python name, JSON name, type) of each field of a model dataclass."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, _camel(f.name), hints[f.name]) for f in dataclasses.fields(cls))


def _encode(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {}
        for name, key, _ in _fields(type(value)):
            v = getattr(value, name)
            # Go's omitempty. Optional numbers and booleans are pointers in Go, so an
            # explicit 0 or false is kept (``percent: 0``, ``latestRevision: false``), and
            # only None is left out; a plain int or bool is left out at 0 or false.
            optional = _optional(type(value), name)
            if v is None or (v in ("", 0) and type(v) in (str, int, bool) and not optional):
                continue
            encoded = _encode(v)
            if encoded in ({}, []) and not optional:
                continue  # an optional object is a Go pointer: ``tcpSocket: {}`` is kept
            out[key] = encoded
        return out
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: value[k] for k in sorted(value)}
    return value


@functools.cache
def _optional(cls: type, name: str) -> bool:
    tp = dict((n, t) for n, _, t in _fields(cls))[name]
    return typing.get_origin(tp) in (types.UnionType, typing.Union)


def to_dict(resource: Resource) -> dict[str, object]:
    """The Knative-shaped object: apiVersion, kind, then metadata, spec/data and status."""
    body = _encode(resource)
    assert isinstance(body, dict)
    return {"apiVersion": resource.API_VERSION, "kind": resource.KIND, **body}


def canonical(value: object) -> str:
    """A stable text of any model value: equal values, equal texts (for change detection)."""
    return json.dumps(_encode(value), sort_keys=True, separators=(",", ":"))


# -- decoding ------------------------------------------------------------------------------

_UNSUPPORTED: Final = "knpy's local platform does not support these fields"


class _Decoder:
    """Builds one dataclass tree from plain data, collecting errors instead of stopping."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, value: object, path: str, expected: str) -> None:
        # JSON text of the value, so that the string "80" reads apart from the number 80.
        shown = json.dumps(value, default=str)
        self.errors.append(FieldError(f"invalid value: {shown}", (path,), f"expected {expected}"))

    def decode(self, tp: Any, value: object, path: str) -> object:
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            return self._union(typing.get_args(tp), value, path)
        if origin is tuple:
            return self._list(typing.get_args(tp)[0], value, path)
        if origin is Mapping:
            return self._string_map(value, path)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, path)
        if tp is bool:
            if isinstance(value, bool):
                return value
            self.fail(value, path, "true or false")
            return False
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            self.fail(value, path, "an integer")
            return 0
        if tp is str:
            if isinstance(value, str):
                return value
            self.fail(value, path, "a string")
            return ""
        raise TypeError(f"no decoder for {tp!r}")  # a programming error in the model

    def _union(self, options: tuple[Any, ...], value: object, path: str) -> object:
        if value is None:
            return None
        concrete = [o for o in options if o is not type(None)]
        if len(concrete) == 1:
            return self.decode(concrete[0], value, path)
        # int | str (Kubernetes' IntOrString): take the value as it comes.
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        self.fail(value, path, "an integer or a string")
        return None

    def _list(self, item: Any, value: object, path: str) -> tuple[object, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(value, path, "a list")
            return ()
        return tuple(self.decode(item, v, f"{path}[{i}]") for i, v in enumerate(value))

    def _string_map(self, value: object, path: str) -> Mapping[str, str]:
        if value is None:
            return _empty()
        if not isinstance(value, dict):
            self.fail(value, path, "a map of strings")
            return _empty()
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(k, str) and isinstance(v, str):
                out[k] = v
            else:
                self.fail(v, _join(path, str(k)), "a string (quote numbers and booleans)")
        return MappingProxyType(out)

    def dataclass(self, cls: Any, value: object, path: str) -> object:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(value, path, "an object")
            return cls()
        known = {key: (name, tp) for name, key, tp in _fields(cls)}
        kwargs: dict[str, object] = {}
        unknown: list[str] = []
        for key, raw in value.items():
            spec = known.get(key) if isinstance(key, str) else None
            if spec is None:
                unknown.append(_join(path, str(key)))
            elif raw is not None:  # null is absent, as the Kubernetes API server reads it
                kwargs[spec[0]] = self.decode(spec[1], raw, _join(path, key))
        if unknown:
            self.errors.append(FieldError.disallowed(*unknown, details=_UNSUPPORTED))
        return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def from_dict(document: object, where: str = "document") -> Resource:
    """Decode one object (apiVersion, kind, metadata, ...) into its resource type.

    Raises:
        ValidationError: an unknown apiVersion or kind, a wrong type or an unknown field.
    """
    if not isinstance(document, dict):
        problem = Problem(where, (FieldError.invalid(document, "", "expected an object"),))
        raise ValidationError([problem])
    api_version, kind = document.get("apiVersion"), document.get("kind")
    cls = _KINDS.get((str(api_version), str(kind)))
    if cls is None:
        raise ValidationError([Problem(where, (_unknown_kind(api_version, kind),))])
    decoder = _Decoder()
    body = {k: v for k, v in document.items() if k not in ("apiVersion", "kind")}
    resource = typing.cast(Resource, decoder.dataclass(cls, body, ""))
    if decoder.errors:
        raise ValidationError([Problem(f"{where} ({describe(resource)})", tuple(decoder.errors))])
    return resource


def _unknown_kind(api_version: object, kind: object) -> FieldError:
    known = ", ".join(f"{a} {k}" for a, k in _KINDS)
    if not any(api_version == a for a, _ in _KINDS):
        return FieldError.invalid(api_version, "apiVersion", f"knpy serves {known}")
    return FieldError.invalid(kind, "kind", f"knpy serves {known}")


def parse_documents(text: str) -> list[Resource]:
    """Every resource of a multi-document YAML or JSON text, in order.

    A ``kind: List`` (what ``knpy get -o json`` prints for many objects) or a top-level
    array contributes its items; empty documents are skipped.

    Raises:
        ValidationError: the text is not YAML, or any document is bad; the errors of every
            bad document are reported together.
    """
    try:
        documents = load_documents(text)
    except yaml.YAMLError as e:
        problem = Problem("input", (FieldError(f"not YAML or JSON: {e}", ()),))
        raise ValidationError([problem]) from None
    resources: list[Resource] = []
    problems: list[Problem] = []
    for i, doc in enumerate(documents):
        try:
            resources.append(from_dict(doc, f"document {i + 1}"))
        except ValidationError as e:
            problems.extend(e.problems)
    if problems:
        raise ValidationError(problems)
    return resources
