"""Trigger filters: every dialect, nesting, the legacy attributes, the override, validation.

Cases follow Knative's (pkg/eventfilter/**/*_test.go and the rekt features in
test/rekt/features/new_trigger_filters), written as our own tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from eventing.filters import (
    EventFilter,
    FieldError,
    FilterResult,
    TriggerFilterError,
    attribute_text,
    compile_trigger_filter,
    validate_trigger_filters,
)

FULL = {
    "specversion": "1.0",
    "id": "1234",
    "type": "com.example.FullEvent",
    "source": "http://example.com/source",
    "subject": "topic",
    "datacontenttype": "application/json; charset=utf-8",
    "dataschema": "http://example.com/schema",
    "time": "2026-12-01T04:00:00Z",
    "extname1": "extval1",
    "count": 10,
    "flag": True,
    "emptyext": "",
}
WRONG = {**FULL, "type": "org.wrong.type", "source": "org.wrong.source"}
MINIMAL = {"specversion": "1.0", "id": "1", "type": "t", "source": "s"}


def event(**overrides: object) -> dict[str, object]:
    out: dict[str, object] = {**MINIMAL}
    out.update(overrides)
    return out


def matches(spec: Mapping[str, object], ev: Mapping[str, object]) -> bool:
    compiled = compile_trigger_filter(spec)
    passed = compiled(ev)
    if passed:  # what a filter says it requires, every event it passes has
        for name, value in compiled.required.items():
            assert attribute_text(ev, name) == value, (name, value)
    return passed


# -- legacy filter.attributes --------------------------------------------------------------------

LEGACY_CASES = [
    pytest.param({"type": "com.example.FullEvent"}, FULL, True, id="exact-type"),
    pytest.param({"type": "com.example.fullevent"}, FULL, False, id="case-sensitive"),
    pytest.param({"type": "com.example.FullEvent", "source": "x"}, FULL, False, id="all-keys"),
    pytest.param({"type": ""}, FULL, True, id="any-value-present"),
    pytest.param({"subject": ""}, MINIMAL, False, id="any-value-absent-core-attribute"),
    pytest.param({"extname1": ""}, FULL, True, id="any-value-extension-present"),
    pytest.param({"extname1": ""}, MINIMAL, False, id="any-value-extension-absent"),
    pytest.param({"emptyext": ""}, FULL, False, id="any-value-needs-non-empty"),
    pytest.param({"extname1": "extval1"}, FULL, True, id="extension-value"),
    pytest.param({"extname1": "extval2"}, FULL, False, id="extension-other-value"),
    pytest.param({"count": "10"}, FULL, True, id="integer-extension-string-form"),
    pytest.param({"flag": "true"}, FULL, True, id="boolean-extension-string-form"),
    pytest.param({"schemaurl": "http://example.com/schema"}, FULL, True, id="schemaurl-alias"),
    pytest.param({"datamediatype": "application/json"}, FULL, True, id="datamediatype"),
    pytest.param({"time": ""}, MINIMAL, False, id="absent-time-is-absent"),
    pytest.param({}, MINIMAL, True, id="empty-map-passes"),
    pytest.param({"data": ""}, event(data="payload"), False, id="data-is-no-attribute"),
]


@pytest.mark.parametrize(("attributes", "ev", "want"), LEGACY_CASES)
def test_legacy_attributes(attributes: dict[str, str], ev: dict[str, object], want: bool) -> None:
    assert matches({"filter": {"attributes": attributes}}, ev) is want


# The digest's scenario 17 (Knative's ManyTriggers): each trigger gets exactly its events.
def test_legacy_matrix_of_triggers_and_events() -> None:
    triggers = {
        "any": {},
        "type1": {"type": "type1"},
        "source1": {"source": "http://source1.com"},
        "both": {"type": "type1", "source": "http://source1.com"},
        "ext1": {"extname1": "extval1"},
        "ext1-any": {"extname1": ""},
    }
    events = {
        "t1s1": event(type="type1", source="http://source1.com"),
        "t1s2": event(type="type1", source="http://source2.com"),
        "t2s1-ext": event(type="type2", source="http://source1.com", extname1="extval1"),
        "t2s2-other-ext": event(type="type2", source="http://source2.com", extname1="other"),
    }
    got = {
        name: sorted(e for e, ev in events.items() if matches({"filter": {"attributes": a}}, ev))
        for name, a in triggers.items()
    }
    assert got == {
        "any": ["t1s1", "t1s2", "t2s1-ext", "t2s2-other-ext"],
        "type1": ["t1s1", "t1s2"],
        "source1": ["t1s1", "t2s1-ext"],
        "both": ["t1s1"],
        "ext1": ["t2s1-ext"],
        "ext1-any": ["t2s1-ext", "t2s2-other-ext"],
    }


# -- the Subscriptions API dialects ------------------------------------------------------------

DIALECT_CASES = [
    # The digest's scenario 15: each dialect lets FullEvent through and stops the wrong one.
    pytest.param(
        {"exact": {"type": "com.example.FullEvent", "source": "http://example.com/source"}},
        id="exact",
    ),
    pytest.param({"prefix": {"type": "com.", "source": "http"}}, id="prefix"),
    pytest.param(
        {"suffix": {"type": "xample.FullEvent", "source": "//example.com/source"}}, id="suffix"
    ),
    pytest.param(
        {"cesql": "type = 'com.example.FullEvent' AND source = 'http://example.com/source'"},
        id="cesql",
    ),
    pytest.param(
        {"all": [{"exact": {"type": "com.example.FullEvent"}}, {"prefix": {"source": "http"}}]},
        id="all",
    ),
    pytest.param(
        {"any": [{"exact": {"type": "nope"}}, {"suffix": {"type": "FullEvent"}}]}, id="any"
    ),
    pytest.param({"not": {"exact": {"type": "org.wrong.type"}}}, id="not"),
]


@pytest.mark.parametrize("element", DIALECT_CASES)
def test_dialect_passes_full_event_and_stops_wrong_one(element: dict[str, object]) -> None:
    compiled = compile_trigger_filter({"filters": [element]})
    assert compiled(FULL) is True
    assert compiled(WRONG) is False


STRING_MATCH_CASES = [
    pytest.param({"exact": {"extname1": "extval1"}}, FULL, True, id="exact-extension"),
    pytest.param({"exact": {"count": "10"}}, FULL, True, id="exact-integer-as-text"),
    pytest.param({"exact": {"flag": "true"}}, FULL, True, id="exact-boolean-as-text"),
    pytest.param({"exact": {"extname1": "extval1"}}, MINIMAL, False, id="exact-missing-fails"),
    pytest.param({"exact": {"type": "com.example.fullevent"}}, FULL, False, id="exact-case"),
    pytest.param({"prefix": {"extname1": "ext"}}, FULL, True, id="prefix-extension"),
    pytest.param({"prefix": {"extname1": "ext"}}, MINIMAL, False, id="prefix-missing-fails"),
    pytest.param({"prefix": {"type": "com.example.FullEvent"}}, FULL, True, id="prefix-whole"),
    pytest.param({"prefix": {"type": "Com."}}, FULL, False, id="prefix-case"),
    pytest.param({"suffix": {"extname1": "val1"}}, FULL, True, id="suffix-extension"),
    pytest.param({"suffix": {"count": "0"}}, FULL, True, id="suffix-integer-as-text"),
    pytest.param({"suffix": {"subject": "x"}}, MINIMAL, False, id="suffix-missing-fails"),
    pytest.param(
        {"exact": {"type": "com.example.FullEvent", "subject": "other"}},
        FULL,
        False,
        id="exact-every-key-must-match",
    ),
    pytest.param({"exact": {"type": "ü"}}, event(type="ü"), True, id="exact-unicode"),
    pytest.param(
        {"exact": {"schemaurl": "http://example.com/schema"}}, FULL, True, id="exact-alias"
    ),
    pytest.param({"exact": {"datamediatype": "application/json"}}, FULL, True, id="exact-media"),
    pytest.param({"exact": {"count": "11"}}, FULL, False, id="exact-integer-other-value"),
    pytest.param({"exact": {"subject": "topic"}}, FULL, True, id="exact-one-string"),
    pytest.param({"exact": {"data": "x"}}, event(data="x"), False, id="exact-data-never"),
    pytest.param({"prefix": {"data": "x"}}, event(data="x"), False, id="prefix-data-never"),
]


@pytest.mark.parametrize(("element", "ev", "want"), STRING_MATCH_CASES)
def test_string_dialects(element: dict[str, object], ev: dict[str, object], want: bool) -> None:
    assert matches({"filters": [element]}, ev) is want


CESQL_CASES = [
    pytest.param("type LIKE 'com.%'", FULL, True, id="like"),
    pytest.param("count > 5 AND flag", FULL, True, id="typed-extensions"),
    pytest.param("missing = 'x'", FULL, False, id="missing-attribute-error-fails"),
    pytest.param("NOT (missing = 'x')", FULL, False, id="error-under-not-still-fails"),
    pytest.param("1 / 0 = 0", FULL, False, id="math-error-fails"),
    pytest.param("subject", FULL, False, id="string-result-fails"),
    pytest.param("count", FULL, False, id="integer-result-fails"),
    pytest.param("TRUE", MINIMAL, True, id="true-literal"),
    pytest.param("NOPE(type)", FULL, False, id="missing-function-fails"),
    # Knative's cesql_filter_test.go, in our words.
    pytest.param("ttl < 30", event(ttl=20), True, id="numeric-extension"),
    pytest.param("(type = 't') OR (source = 'other')", MINIMAL, True, id="type-or-source"),
    pytest.param("missingattribute < 5", MINIMAL, False, id="missing-less-than"),
    pytest.param("missingattribute = missingvalue", MINIMAL, False, id="missing-both-sides"),
]


@pytest.mark.parametrize(("expression", "ev", "want"), CESQL_CASES)
def test_cesql_dialect(expression: str, ev: dict[str, object], want: bool) -> None:
    assert matches({"filters": [{"cesql": expression}]}, ev) is want


# The digest's scenario 16 (Knative's AnyFilterFeature / AllFilterFeature / flat list).
ANY_OF_FIVE = {
    "any": [
        {"exact": {"type": "exact.event.type"}},
        {"prefix": {"type": "prefix"}},
        {"suffix": {"type": "suffix"}},
        {"not": {"cesql": "type LIKE '%event.type%'"}},
        {"cesql": "type = 'cesql.event.type'"},
    ]
}
FOUR_TOGETHER = [
    {"exact": {"type": "exact.prefix.suffix.event.type"}},
    {"prefix": {"type": "exact.prefix"}},
    {"suffix": {"type": "suffix.event.type"}},
    {"cesql": "type LIKE 'exact.prefix.suffix%'"},
]


@pytest.mark.parametrize(
    ("event_type", "want"),
    [
        pytest.param("exact.event.type", True, id="exact"),
        pytest.param("prefix.event.type", True, id="prefix"),
        pytest.param("event.type.suffix", True, id="suffix"),
        pytest.param("not.type.event", True, id="not"),
        pytest.param("cesql.event.type", True, id="cesql"),
        pytest.param("not.event.type", False, id="none"),
    ],
)
def test_any_of_five_dialects(event_type: str, want: bool) -> None:
    assert matches({"filters": [ANY_OF_FIVE]}, event(type=event_type)) is want


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"filters": [{"all": FOUR_TOGETHER}]}, id="all"),
        pytest.param({"filters": FOUR_TOGETHER}, id="flat-list"),
    ],
)
def test_all_of_four_dialects(spec: dict[str, object]) -> None:
    compiled = compile_trigger_filter(spec)
    assert compiled(event(type="exact.prefix.suffix.event.type")) is True
    for other in ("exact.prefix.other", "other.suffix.event.type", "exact.prefix.suffix"):
        assert compiled(event(type=other)) is False, other


def test_all_on_a_missing_extension() -> None:
    spec = {
        "filters": [
            {
                "all": [
                    {"exact": {"extensionattribute": "extensionvalue"}},
                    {"prefix": {"extensionattribute": "extension"}},
                    {"suffix": {"extensionattribute": "value"}},
                    {"cesql": "extensionattribute = 'extensionvalue'"},
                ]
            }
        ]
    }
    compiled = compile_trigger_filter(spec)
    assert compiled(event()) is False
    assert compiled(event(extensionattribute="extensionvalue")) is True


def test_nesting_three_levels() -> None:
    spec = {
        "filters": [
            {
                "any": [
                    {"all": [{"prefix": {"type": "a."}}, {"not": {"suffix": {"type": ".x"}}}]},
                    {"not": {"any": [{"exact": {"source": "s"}}, {"cesql": "EXISTS subject"}]}},
                ]
            }
        ]
    }
    compiled = compile_trigger_filter(spec)
    assert compiled(event(type="a.y")) is True  # first branch
    assert compiled(event(type="a.x")) is False  # first branch fails, source is "s"
    assert compiled(event(type="b", source="other")) is True  # second branch
    assert compiled(event(type="b", source="other", subject="z")) is False


# -- three-way outcomes, the override and the defaults --------------------------------------


RESULT_CASES = [
    pytest.param({}, FilterResult.NO_FILTER, id="no-filter-at-all"),
    pytest.param({"filters": []}, FilterResult.NO_FILTER, id="empty-filters-no-legacy"),
    pytest.param({"filters": [{}]}, FilterResult.NO_FILTER, id="element-without-dialect"),
    pytest.param({"filters": [{"not": {}}]}, FilterResult.NO_FILTER, id="not-of-nothing"),
    pytest.param({"filters": [{"exact": {"type": "t"}}, {}]}, FilterResult.PASS, id="{}-dropped"),
    pytest.param({"filters": [{"not": {"exact": {"type": "t"}}}]}, FilterResult.FAIL, id="not"),
    pytest.param({"filter": {"attributes": {"type": "t"}}}, FilterResult.PASS, id="legacy-pass"),
    pytest.param({"filter": {"attributes": {"type": "u"}}}, FilterResult.FAIL, id="legacy-fail"),
    pytest.param({"filter": {}}, FilterResult.NO_FILTER, id="legacy-without-attributes"),
]


@pytest.mark.parametrize(("spec", "want"), RESULT_CASES)
def test_three_way_result(spec: dict[str, object], want: FilterResult) -> None:
    compiled = compile_trigger_filter(spec)
    assert compiled.result(MINIMAL) is want
    assert compiled(MINIMAL) is (want is not FilterResult.FAIL)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        pytest.param(
            {"filter": {"attributes": {"type": "t"}}, "filters": [{"exact": {"type": "u"}}]},
            False,
            id="filters-override-filter",
        ),
        pytest.param(
            {"filter": {"attributes": {"type": "u"}}, "filters": [{"exact": {"type": "t"}}]},
            True,
            id="filters-override-filter-the-other-way",
        ),
        pytest.param(
            {"filter": {"attributes": {"type": "u"}}, "filters": []},
            False,
            id="empty-filters-do-not-override",
        ),
    ],
)
def test_filters_override_filter(spec: dict[str, object], want: bool) -> None:
    assert matches(spec, MINIMAL) is want


def test_compiled_filter_is_reusable_and_describes_itself() -> None:
    compiled = compile_trigger_filter(
        {"filters": [{"exact": {"type": "t"}}, {"not": {"cesql": "source = 'x'"}}]}
    )
    assert isinstance(compiled, EventFilter)
    assert repr(compiled) == "EventFilter(all[exact{type='t'}, not[cesql(\"source = 'x'\")]])"
    results = [compiled(event(source=s)) for s in ("s", "x", "s", "x")]
    assert results == [True, False, True, False]


REQUIRED_CASES = [
    pytest.param({}, {}, id="no-filter"),
    pytest.param({"filter": {"attributes": {"type": "t", "ext": ""}}}, {"type": "t"}, id="legacy"),
    pytest.param(
        {"filters": [{"exact": {"type": "t", "source": "s"}}, {"prefix": {"id": "x"}}]},
        {"type": "t", "source": "s"},
        id="exact-and-prefix",
    ),
    pytest.param(
        {"filters": [{"all": [{"exact": {"type": "t"}}, {"all": [{"exact": {"ext": "e"}}]}]}]},
        {"type": "t", "ext": "e"},
        id="nested-all",
    ),
    pytest.param(
        {"filters": [{"cesql": "TYPE = 't' AND source LIKE 'h%' AND 's' = subject"}]},
        {"type": "t"},
        id="cesql-and-chain",
    ),
    pytest.param({"filters": [{"cesql": "type = 't' OR TRUE"}]}, {}, id="cesql-or"),
    pytest.param({"filters": [{"cesql": "type = 't' AND b OR c"}]}, {}, id="cesql-mixed"),
    pytest.param({"filters": [{"cesql": "sequence = 5"}]}, {}, id="cesql-integer"),
    pytest.param({"filters": [{"any": [{"exact": {"type": "t"}}]}]}, {}, id="any"),
    pytest.param({"filters": [{"not": {"exact": {"type": "t"}}}]}, {}, id="not"),
    pytest.param(
        {"filters": [{"exact": {"type": "a"}}, {"exact": {"type": "b"}}]},
        {"type": "a"},
        id="contradiction-keeps-the-first",
    ),
    pytest.param(
        {"filter": {"attributes": {"type": "t"}}, "filters": [{"exact": {"type": "u"}}]},
        {"type": "u"},
        id="from-the-filters-that-override",
    ),
]


@pytest.mark.parametrize(("spec", "want"), REQUIRED_CASES)
def test_required_attributes_for_indexing(spec: dict[str, object], want: dict[str, str]) -> None:
    assert dict(compile_trigger_filter(spec).required) == want


# -- validation ---------------------------------------------------------------------------------

NAME_DETAILS = "Attribute name must start with a letter and can only contain lowercase alphanumeric"
MULTIPLE = "multiple dialects found, filters can have only one dialect set"

VALIDATION_CASES = [
    pytest.param({"filter": {"attributes": {"type": "t", "ext1": ""}}}, [], id="valid-legacy"),
    pytest.param(
        {"filters": [{"exact": {"type": "t"}}, {"cesql": "EXISTS subject"}]}, [], id="valid-new"
    ),
    pytest.param(
        {"filter": {"attributes": {"Type": "t"}}},
        [FieldError("spec.filter.attributes[Type]", f'invalid key name "Type": {NAME_DETAILS}')],
        id="legacy-uppercase-name",
    ),
    pytest.param(
        {"filter": {"attributes": {"1abc": "t"}}},
        [FieldError("spec.filter.attributes[1abc]", f'invalid key name "1abc": {NAME_DETAILS}')],
        id="legacy-digit-first",
    ),
    pytest.param(
        {"filters": [{"exact": {"type": "t"}}, {"prefix": {"my-ext": "x"}}]},
        [
            FieldError(
                "spec.filters[1].prefix[my-ext]", f'invalid key name "my-ext": {NAME_DETAILS}'
            )
        ],
        id="prefix-dash",
    ),
    pytest.param(
        {"filters": [{"suffix": {"my_ext": "x"}}]},
        [
            FieldError(
                "spec.filters[0].suffix[my_ext]", f'invalid key name "my_ext": {NAME_DETAILS}'
            )
        ],
        id="suffix-underscore",
    ),
    pytest.param(
        {"filters": [{"exact": {"type": "t"}, "cesql": "TRUE"}]},
        [FieldError("spec.filters[0]", MULTIPLE)],
        id="two-dialects",
    ),
    pytest.param(
        {"filters": [{"exact": {}, "cesql": "TRUE"}]},
        [],
        id="an-empty-dialect-does-not-count",
    ),
    pytest.param(
        {"filters": [{"exact": {"type": "t"}}, {"cesql": "type = "}]},
        [
            FieldError(
                "spec.filters[1].cesql",
                "invalid value: type = : unexpected end of expression (at offset 7)",
            )
        ],
        id="cesql-parse-error",
    ),
    pytest.param(
        {"filters": [{"any": [{"all": [{"not": {"cesql": "x LIKE 1"}}]}]}]},
        [
            FieldError(
                "spec.filters[0].any[0].all[0].not.cesql",
                "invalid value: x LIKE 1: the LIKE pattern must be a string literal (at offset 7)",
            )
        ],
        id="nested-path",
    ),
    pytest.param(
        {"filters": [{"exact": {"type": ""}}]},
        [
            FieldError(
                "spec.filters[0].exact[type]", 'invalid value: "": exact needs a non-empty value'
            )
        ],
        id="empty-exact-value",
    ),
    pytest.param(
        {"filters": [{"sql": "TRUE"}]},
        [FieldError("spec.filters[0].sql", "must not set the field(s)")],
        id="unknown-dialect",
    ),
    pytest.param(
        {"filters": {"exact": {"type": "t"}}},
        [
            FieldError(
                "spec.filters",
                'invalid value: {"exact": {"type": "t"}}: expected a list of filters',
            )
        ],
        id="filters-not-a-list",
    ),
    pytest.param(
        {"filters": [{"exact": {"count": 10}}]},
        [FieldError("spec.filters[0].exact[count]", "invalid value: 10: expected a string")],
        id="non-string-value",
    ),
    pytest.param(
        {"filter": {"attribute": {"type": "t"}}},
        [FieldError("spec.filter.attribute", "must not set the field(s)")],
        id="legacy-misspelt",
    ),
]


@pytest.mark.parametrize(("spec", "want"), VALIDATION_CASES)
def test_validation(spec: dict[str, object], want: list[FieldError]) -> None:
    assert validate_trigger_filters(spec) == want


def test_compile_refuses_what_validation_refuses() -> None:
    with pytest.raises(TriggerFilterError) as info:
        compile_trigger_filter({"filters": [{"cesql": "(("}, {"exact": {"Bad": "x"}}]})
    assert [e.path for e in info.value.errors] == [
        "spec.filters[0].cesql",
        "spec.filters[1].exact[Bad]",
    ]
    assert 'invalid key name "Bad"' in str(info.value)


def test_errors_print_as_kubectl_shows_a_webhook_refusal() -> None:
    (error,) = validate_trigger_filters({"filters": [{"cesql": "(("}]})
    assert str(error) == (
        "invalid value: ((: unexpected end of expression (at offset 2): spec.filters[0].cesql"
    )
