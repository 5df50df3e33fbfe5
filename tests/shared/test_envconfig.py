"""Tests for shared.envconfig: typed reads that name the variable on error."""

from __future__ import annotations

import pytest

from shared.envconfig import (
    ConfigError,
    env_bool,
    env_duration,
    env_float,
    env_int,
    env_port,
    env_str,
)

NAME = "SOME_VAR"


@pytest.mark.parametrize(
    ("env", "default", "required", "want"),
    [
        pytest.param({NAME: "x"}, None, False, "x", id="set"),
        pytest.param({}, None, False, None, id="absent-no-default"),
        pytest.param({}, "d", False, "d", id="absent-default"),
        pytest.param({NAME: ""}, "d", False, "d", id="empty-means-absent"),
        pytest.param({NAME: "x"}, None, True, "x", id="required-set"),
        pytest.param({NAME: " x "}, None, False, " x ", id="kept-verbatim"),
    ],
)
def test_env_str(
    env: dict[str, str], default: str | None, required: bool, want: str | None
) -> None:
    assert env_str(env, NAME, default, required=required) == want


@pytest.mark.parametrize("env", [{}, {NAME: ""}], ids=["absent", "empty"])
def test_env_str_required_missing(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^SOME_VAR: required but not set$") as info:
        env_str(env, NAME, required=True)
    assert info.value.name == NAME


@pytest.mark.parametrize(
    ("raw", "minimum", "maximum", "want"),
    [
        pytest.param(None, None, None, 7, id="absent-default"),
        pytest.param("", 0, None, 7, id="empty-default"),
        pytest.param("0", 0, None, 0, id="zero-at-minimum"),
        pytest.param("42", None, None, 42, id="plain"),
        pytest.param("-3", None, None, -3, id="negative"),
        pytest.param("+3", None, None, 3, id="plus-sign"),
        pytest.param("10", 1, 10, 10, id="at-maximum"),
    ],
)
def test_env_int(raw: str | None, minimum: int | None, maximum: int | None, want: int) -> None:
    env = {} if raw is None else {NAME: raw}
    assert env_int(env, NAME, 7, minimum=minimum, maximum=maximum) == want


@pytest.mark.parametrize(
    ("raw", "minimum", "maximum", "message"),
    [
        pytest.param("abc", 0, None, 'SOME_VAR: must be an integer >= 0, got "abc"', id="word"),
        pytest.param("1.5", None, None, 'SOME_VAR: must be an integer, got "1.5"', id="float"),
        pytest.param(
            "1_000", None, None, 'SOME_VAR: must be an integer, got "1_000"', id="underscore"
        ),
        pytest.param(" 1", None, None, 'SOME_VAR: must be an integer, got " 1"', id="space"),
        pytest.param("-1", 0, None, 'SOME_VAR: must be an integer >= 0, got "-1"', id="below"),
        pytest.param("11", None, 10, 'SOME_VAR: must be an integer <= 10, got "11"', id="above"),
        pytest.param("0", 1, 5, 'SOME_VAR: must be an integer in [1, 5], got "0"', id="range"),
        pytest.param(
            "\u0661", None, None, 'SOME_VAR: must be an integer, got "\\u0661"', id="non-ascii"
        ),
    ],
)
def test_env_int_invalid(raw: str, minimum: int | None, maximum: int | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_int({NAME: raw}, NAME, 7, minimum=minimum, maximum=maximum)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        pytest.param(None, 2.5, id="absent-default"),
        pytest.param("300", 300.0, id="integer"),
        pytest.param("0.1", 0.1, id="fraction"),
        pytest.param(".5", 0.5, id="leading-dot"),
        pytest.param("1e2", 100.0, id="exponent"),
        pytest.param("0", 0.0, id="zero"),
    ],
)
def test_env_float(raw: str | None, want: float) -> None:
    env = {} if raw is None else {NAME: raw}
    assert env_float(env, NAME, 2.5, minimum=0) == want


@pytest.mark.parametrize(
    "raw",
    ["abc", "inf", "nan", "1e999", "-1", "1.2.3", "0x10", " 1"],
    ids=["word", "inf", "nan", "overflow", "negative", "two-dots", "hex", "space"],
)
def test_env_float_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^SOME_VAR: must be a number >= 0, got "):
        env_float({NAME: raw}, NAME, 1.0, minimum=0)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        *(pytest.param(s, True, id=f"true-{s}") for s in ["1", "t", "T", "TRUE", "true", "True"]),
        *(
            pytest.param(s, False, id=f"false-{s}")
            for s in ["0", "f", "F", "FALSE", "false", "False"]
        ),
        pytest.param(None, True, id="absent-default"),
        pytest.param("", True, id="empty-default"),
    ],
)
def test_env_bool(raw: str | None, want: bool) -> None:
    env = {} if raw is None else {NAME: raw}
    assert env_bool(env, NAME, True) is want


@pytest.mark.parametrize("raw", ["yes", "on", "tRuE", "2", " true"], ids=str)
def test_env_bool_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^SOME_VAR: must be a boolean"):
        env_bool({NAME: raw}, NAME, False)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        pytest.param(None, 8012, id="absent-default"),
        pytest.param("1", 1, id="lowest"),
        pytest.param("65535", 65535, id="highest"),
    ],
)
def test_env_port(raw: str | None, want: int) -> None:
    env = {} if raw is None else {NAME: raw}
    assert env_port(env, NAME, 8012) == want


@pytest.mark.parametrize("raw", ["0", "65536", "http"], ids=["zero", "too-big", "name"])
def test_env_port_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^SOME_VAR: must be an integer in \[1, 65535\]"):
        env_port({NAME: raw}, NAME, 8012)


def test_config_error_is_value_error() -> None:
    err = ConfigError("X", "bad")
    assert isinstance(err, ValueError)
    assert (str(err), err.name, err.reason) == ("X: bad", "X", "bad")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        pytest.param("300ms", 0.3, id="ms"),
        pytest.param("1m30s", 90.0, id="compound"),
        pytest.param("1.5h", 5400.0, id="fraction"),
        pytest.param(".5s", 0.5, id="leading-dot"),
        pytest.param("250us", 250e-6, id="us"),
        pytest.param("250µs", 250e-6, id="micro-sign"),
        pytest.param("0s", 0.0, id="zero"),
        pytest.param("0", 0.0, id="bare-zero"),
        pytest.param("+2s", 2.0, id="plus-sign"),
    ],
)
def test_env_duration(raw: str, seconds: float) -> None:
    assert env_duration({NAME: raw}, NAME, 9.0) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["5", "5 s", "s", "1d", "1s2", "+", "-1s", "1s-1s"])
def test_env_duration_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{NAME}: must be a Go duration"):
        env_duration({NAME: raw}, NAME, 9.0)


def test_env_duration_absent_or_empty_takes_the_default() -> None:
    assert env_duration({}, NAME, 9.0) == env_duration({NAME: ""}, NAME, 9.0) == 9.0
