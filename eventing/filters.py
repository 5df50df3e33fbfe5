"""Trigger filters with Knative's semantics, compiled once per Trigger.

Theory of operation
-------------------
A Trigger's ``spec`` filters events in one of two ways (knative/eventing
``pkg/broker/filter/filter_handler.go`` ``filterEvent``):

* a non-empty ``filters`` list (the CloudEvents Subscriptions API dialects), all of whose
  elements must match; it overrides ``filter`` entirely, but an empty ``filters: []`` does
  not (Knative's ``FilterAttributeWithEmptyFiltersFeature``);
* else the legacy ``filter.attributes`` map (``pkg/eventfilter/attributes/filter.go``):
  each attribute must exist on the event; ``""`` means "any non-empty value", anything else
  an exact, case-sensitive match;
* neither: every event passes.

Dialects (``pkg/eventfilter/subscriptionsapi``): ``exact``, ``prefix``, ``suffix`` (maps of
attribute to string, all must match, a missing attribute fails), ``all`` (and), ``any``
(or), ``not``, and ``cesql`` (a CESQL expression that must give ``true`` with no error; any
error or other value is no match, CESQL §1.2). Non-string attribute values are compared by
their CESQL string form (``true``, ``10``), as Knative compares ``fmt.Sprintf("%v")``.

Knative evaluates to three outcomes, Pass, Fail and NoFilter, and only Fail stops an event;
``not`` swaps Pass and Fail and keeps NoFilter; ``all`` gives Fail at the first Fail, else
its last element's outcome; ``any`` gives Pass at the first Pass, else its last element's
outcome; an element with no dialect (``{}``) is dropped. We keep that (``FilterResult``).
Knative's all/any also reorder themselves by observed selectivity in a goroutine; that is an
optimisation we do not copy, so our order is the declared one.

``compile_trigger_filter`` validates and compiles a spec into an ``EventFilter``, a plain
callable ``event -> bool`` with nothing to parse per event. ``validate_trigger_filters``
gives Knative's webhook errors (``pkg/apis/eventing/v1/trigger_validation.go``) with their
field paths, for apply time. Deliberate differences, each stricter than Knative:

* an empty attribute value in ``exact``/``prefix``/``suffix`` is refused at apply time
  (Knative's webhook accepts it and its data plane then silently drops that filter);
* a value that is not a string, or a field no dialect has (``sql:``), is refused with its
  path instead of Kubernetes' decoding error;
* ``time`` absent from an event is absent for the legacy ``time: ""`` filter (Knative
  reads an absent time as year 1 and passes it).

An event is a mapping of attribute name to JSON value, extensions included; ``schemaurl``
(CloudEvents 0.3) and ``dataschema`` stand for each other, and ``datamediatype`` is the
media type of ``datacontenttype`` without parameters, as sdk-go's accessors give them;
``data`` and ``data_base64``, if the mapping carries them, are never attributes.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from eventing import cesql
from eventing.cesql.evaluator import DATA_MEMBERS
from eventing.cesql.syntax import Binary, Constant, Identifier, Logic, Node
from eventing.cesql.values import from_event, to_str
from eventing.errors import FieldError

__all__ = [
    "EventFilter",
    "FieldError",
    "FilterResult",
    "TriggerFilterError",
    "attribute_text",
    "compile_trigger_filter",
    "validate_trigger_filters",
]

Event = Mapping[str, object]


class FilterResult(enum.Enum):
    """Knative's eventfilter.FilterResult: only FAIL keeps an event from a trigger."""

    PASS = "pass"
    FAIL = "fail"
    NO_FILTER = "no_filter"


_PASS: Final = FilterResult.PASS
_FAIL: Final = FilterResult.FAIL
_NO_FILTER: Final = FilterResult.NO_FILTER
_Run = Callable[[Event], FilterResult]

# trigger_validation.go validAttributeName: lowercase alphanumeric, starting with a letter.
_VALID_ATTRIBUTE_NAME: Final = re.compile(r"[a-z][a-z0-9]*")
_NAME_DETAILS: Final = (
    "Attribute name must start with a letter and can only contain lowercase alphanumeric"
)
_MULTIPLE_DIALECTS: Final = "multiple dialects found, filters can have only one dialect set"
_MAP_DIALECTS: Final = ("exact", "prefix", "suffix")
_DIALECTS: Final = frozenset({*_MAP_DIALECTS, "all", "any", "not", "cesql"})


class TriggerFilterError(ValueError):
    """A Trigger spec whose filters do not validate; ``errors`` says where and why."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = tuple(errors)


class EventFilter:
    """A Trigger's compiled filter: call it with an event to learn whether it matches.

    ``required`` maps attributes to the value (in its string form, ``attribute_text``) that
    every event this filter lets through has: the exact matches it ANDs at its top, from
    ``exact``, ``all``, the legacy attributes and ``attr = 'text'`` terms ANDed in a CESQL
    expression. A broker with many triggers can index them by, say, ``required["type"]``
    and call only the candidates; it still calls them, as the condition is necessary, not
    sufficient. Empty when nothing is certain (``any``, ``not``, ``prefix``...).
    """

    __slots__ = ("_run", "description", "required")

    def __init__(
        self, run: _Run, description: str, required: Mapping[str, str] | None = None
    ) -> None:
        self._run = run
        self.description = description
        self.required: Mapping[str, str] = MappingProxyType(dict(required or {}))

    def __call__(self, event: Event) -> bool:
        return self._run(event) is not _FAIL

    def result(self, event: Event) -> FilterResult:
        """Knative's three-way outcome, for tests and debugging."""
        return self._run(event)

    def __repr__(self) -> str:
        return f"EventFilter({self.description})"


# -- attribute lookup -------------------------------------------------------------------------


def attribute_text(event: Event, name: str) -> str | None:
    """The string form of an attribute of ``event``, or None when it is absent."""
    if name in DATA_MEMBERS:  # a structured event's data is no attribute
        return None
    raw = event.get(name)
    if type(raw) is str:
        return raw
    if raw is None:
        if name == "schemaurl":
            raw = event.get("dataschema")
        elif name == "dataschema":
            raw = event.get("schemaurl")
        elif name == "datamediatype":
            content_type = event.get("datacontenttype")
            if isinstance(content_type, str):
                raw = content_type.split(";", 1)[0].strip().lower()
    value = from_event(raw)
    return None if value is None else to_str(value)


# -- compilation --------------------------------------------------------------------------------


def compile_trigger_filter(spec: Mapping[str, object]) -> EventFilter:
    """Compile the filter of a Trigger ``spec`` once, for every event after.

    Raises:
        TriggerFilterError: the spec does not pass ``validate_trigger_filters``.
    """
    errors = validate_trigger_filters(spec)
    if errors:
        raise TriggerFilterError(errors)
    filters = spec.get("filters")
    if isinstance(filters, list) and filters:
        run, description = _all_of(_compile_list(filters))
        return EventFilter(run, description, _required_by_all(filters))
    legacy = spec.get("filter")
    if isinstance(legacy, Mapping):
        attributes = legacy.get("attributes")
        if isinstance(attributes, Mapping):
            run, description = _attributes(attributes)
            required = {str(k): str(v) for k, v in attributes.items() if v}
            return EventFilter(run, description, required)
    return EventFilter(_no_filter, "no filter")


def _required_by_all(elements: Sequence[object]) -> dict[str, str]:
    # What an all-of list requires: the union of what each element requires. Where two
    # disagree nothing passes, and keeping the first is still a necessary condition.
    required: dict[str, str] = {}
    for element in elements:
        if not isinstance(element, Mapping):
            continue
        found: Mapping[str, object] = {}
        exact, children, expression = (element.get(k) for k in ("exact", "all", "cesql"))
        if isinstance(exact, Mapping):
            found = exact
        elif isinstance(children, list):
            found = _required_by_all(children)
        elif isinstance(expression, str) and expression:
            found = _required_by_cesql(cesql.compile(expression).tree)
        for name, value in found.items():
            if name not in DATA_MEMBERS:
                required.setdefault(str(name), str(value))
    return required


def _required_by_cesql(tree: Node) -> dict[str, str]:
    # attr = 'text' alone, or among terms joined by AND only (a mixed chain nests to the
    # right, so a AND b OR c requires nothing of a). An Integer or Boolean constant is left
    # out: 'sequence = 5' also passes "05".
    if isinstance(tree, Logic):
        if any(op != "AND" for op in tree.ops):
            return {}
        required: dict[str, str] = {}
        for operand in tree.operands:
            for name, value in _required_by_cesql(operand).items():
                required.setdefault(name, value)
        return required
    if (
        isinstance(tree, Binary)
        and tree.op == "="
        and isinstance(tree.left, Identifier)
        and isinstance(tree.right, Constant)
        and isinstance(tree.right.value, str)
    ):
        return {tree.left.name: tree.right.value}
    return {}


def _no_filter(event: Event) -> FilterResult:
    return _NO_FILTER


def _fail(event: Event) -> FilterResult:
    return _FAIL


_Compiled = tuple[_Run, str]


def _attributes(attributes: Mapping[str, object]) -> _Compiled:
    pairs = tuple((str(k), str(v)) for k, v in attributes.items())

    def legacy(event: Event) -> FilterResult:
        for name, want in pairs:
            got = attribute_text(event, name)
            if got is None or (got != want if want else got == ""):
                return _FAIL
        return _PASS

    shown = ", ".join(f"{k}={v!r}" if v else f"{k}=<any>" for k, v in pairs)
    return legacy, f"attributes{{{shown}}}"


def _compile_list(elements: Sequence[object]) -> list[_Compiled]:
    out = []
    for element in elements:
        compiled = _compile_element(element)
        if compiled is not None:  # no dialect: dropped, as Knative's MaterializeFiltersList
            out.append(compiled)
    return out


def _compile_element(element: object) -> _Compiled | None:
    if not isinstance(element, Mapping):
        return None
    for dialect in _MAP_DIALECTS:
        pairs = element.get(dialect)
        if isinstance(pairs, Mapping) and pairs:
            return _string_match(dialect, pairs)
    for dialect in ("all", "any"):
        children = element.get(dialect)
        if isinstance(children, list) and children:
            compiled = _compile_list(children)
            return _all_of(compiled) if dialect == "all" else _any_of(compiled)
    negated = element.get("not")
    if negated is not None:
        return _not(_compile_element(negated))
    expression = element.get("cesql")
    if isinstance(expression, str) and expression:
        return _cesql(expression)
    return None


def _string_match(dialect: str, pairs: Mapping[str, object]) -> _Compiled:
    items = tuple((str(k), str(v)) for k, v in pairs.items())
    shown = f"{dialect}{{{', '.join(f'{k}={v!r}' for k, v in items)}}}"
    if dialect == "exact" and len(items) == 1:
        # The filter most triggers have (one type): no loop, and a string compared as is.
        ((name, want),) = items
        if name in DATA_MEMBERS:
            return _fail, shown

        def exact_one(event: Event) -> FilterResult:
            got = event.get(name)
            if got == want:
                return _PASS
            if type(got) is str:
                return _FAIL
            return _PASS if attribute_text(event, name) == want else _FAIL

        return exact_one, shown
    if dialect == "exact":

        def exact(event: Event) -> FilterResult:
            for name, want in items:
                got = event.get(name)
                if type(got) is not str:
                    got = attribute_text(event, name)
                if got != want:
                    return _FAIL
            return _PASS

        return exact, shown

    test = str.startswith if dialect == "prefix" else str.endswith

    def affix(event: Event) -> FilterResult:
        for name, want in items:
            got = attribute_text(event, name)
            if got is None or not test(got, want):
                return _FAIL
        return _PASS

    return affix, shown


def _all_of(children: Sequence[_Compiled]) -> _Compiled:
    return _combine("all", _FAIL, children)


def _any_of(children: Sequence[_Compiled]) -> _Compiled:
    return _combine("any", _PASS, children)


def _combine(name: str, decisive: FilterResult, children: Sequence[_Compiled]) -> _Compiled:
    # all stops at the first FAIL and any at the first PASS; otherwise both give the last
    # child's outcome (NO_FILTER when there is none), as Knative's allFilter/anyFilter.
    if len(children) == 1:
        return children[0]
    runs = tuple(run for run, _ in children)

    def combined(event: Event) -> FilterResult:
        result = _NO_FILTER
        for run in runs:
            result = run(event)
            if result is decisive:
                return result
        return result

    return combined, f"{name}[{', '.join(d for _, d in children)}]"


def _not(child: _Compiled | None) -> _Compiled:
    if child is None:
        return _no_filter, "not[no filter]"
    run, shown = child

    def not_(event: Event) -> FilterResult:
        result = run(event)
        if result is _PASS:
            return _FAIL
        return _PASS if result is _FAIL else _NO_FILTER

    return not_, f"not[{shown}]"


def _cesql(source: str) -> _Compiled:
    matches = cesql.compile(source).matches

    def cesql_(event: Event) -> FilterResult:
        return _PASS if matches(event) else _FAIL

    return cesql_, f"cesql({source!r})"


# -- validation ---------------------------------------------------------------------------------


def validate_trigger_filters(spec: Mapping[str, object]) -> list[FieldError]:
    """The webhook's errors for a Trigger spec's ``filter`` and ``filters``; [] if valid."""
    errors: list[FieldError] = []
    legacy = spec.get("filter")
    if legacy is not None:
        if not isinstance(legacy, Mapping):
            errors.append(_invalid("spec.filter", legacy, "expected an object"))
        else:
            for key in legacy:
                if key != "attributes":
                    errors.append(FieldError(f"spec.filter.{key}", "must not set the field(s)"))
            attributes = legacy.get("attributes")
            if attributes is not None:
                errors += _check_map(attributes, "spec.filter.attributes", allow_empty=True)
    filters = spec.get("filters")
    if filters is not None:
        errors += _check_list(filters, "spec.filters")
    return errors


def _check_list(filters: object, path: str) -> list[FieldError]:
    if not isinstance(filters, list):
        return [_invalid(path, filters, "expected a list of filters")]
    errors: list[FieldError] = []
    for i, element in enumerate(filters):
        errors += _check_element(element, f"{path}[{i}]")
    return errors


def _check_element(element: object, path: str) -> list[FieldError]:
    if not isinstance(element, Mapping):
        return [_invalid(path, element, "expected a filter object")]
    errors: list[FieldError] = []
    for key in element:
        if key not in _DIALECTS:
            errors.append(FieldError(f"{path}.{key}", "must not set the field(s)"))
    # trigger_validation.go hasMultipleDialects: a dialect counts when it is non-empty.
    present = [d for d in ("exact", "prefix", "suffix", "all", "any") if element.get(d)]
    if element.get("not") is not None:
        present.append("not")
    if element.get("cesql"):
        present.append("cesql")
    if len(present) > 1:
        # Knative's ErrGeneric carries no path at all; we name the element.
        errors.append(FieldError(path, _MULTIPLE_DIALECTS))
    for dialect in _MAP_DIALECTS:
        pairs = element.get(dialect)
        if pairs is not None:
            errors += _check_map(pairs, f"{path}.{dialect}", allow_empty=False)
    for dialect in ("all", "any"):
        children = element.get(dialect)
        if children is not None:
            errors += _check_list(children, f"{path}.{dialect}")
    negated = element.get("not")
    if negated is not None:
        errors += _check_element(negated, f"{path}.not")
    expression = element.get("cesql")
    if expression is not None:
        if not isinstance(expression, str):
            errors.append(_invalid(f"{path}.cesql", expression, "expected a string"))
        elif expression:
            try:
                cesql.compile(expression)
            except cesql.CesqlParseError as e:
                errors.append(_invalid(f"{path}.cesql", expression, str(e)))
    return errors


def _check_map(pairs: object, path: str, *, allow_empty: bool) -> list[FieldError]:
    if not isinstance(pairs, Mapping):
        return [_invalid(path, pairs, "expected a map of attribute name to string")]
    errors: list[FieldError] = []
    for name, value in pairs.items():
        where = f"{path}[{name}]"
        if not isinstance(name, str) or _VALID_ATTRIBUTE_NAME.fullmatch(name) is None:
            errors.append(_error(where, f"invalid key name {_go_quote(name)}", _NAME_DETAILS))
        if not isinstance(value, str):
            errors.append(_invalid(where, value, "expected a string"))
        elif not value and not allow_empty:
            dialect = path.rsplit(".", 1)[-1]
            errors.append(_invalid(where, value, f"{dialect} needs a non-empty value"))
    return errors


def _invalid(path: str, value: object, details: str) -> FieldError:
    # apis.ErrInvalidValue: "invalid value: %v".
    shown = value if isinstance(value, str) and value else json.dumps(value, default=str)
    return _error(path, f"invalid value: {shown}", details)


def _error(path: str, message: str, details: str) -> FieldError:
    # Knative's FieldError keeps details apart and kubectl prints them after the path; the
    # shared FieldError has one message, so they follow Knative's message after a colon.
    return FieldError(path, f"{message}: {details}")


def _go_quote(name: object) -> str:
    # Go's %q for the ASCII names this sees; JSON's quoting is the same there.
    return json.dumps(str(name))
