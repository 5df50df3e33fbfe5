"""Tests for shared.gosyntax: Go's strconv and time.ParseDuration, accepted and refused."""

from __future__ import annotations

import pytest

from shared.gosyntax import (
    NS_PER_S,
    RangeError,
    format_number,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    parse_int32,
    parse_seconds,
    quote,
)


@pytest.mark.parametrize(
    ("text", "want_ns"),
    [
        pytest.param("0", 0, id="bare zero"),
        pytest.param("15m", 900_000_000_000, id="minutes"),
        pytest.param("2m3s", 123_000_000_000, id="two units"),
        pytest.param("1m9s82ms", 69_082_000_000, id="three units"),
        pytest.param("-42s", -42_000_000_000, id="negative"),
        pytest.param("1.5h", 5_400_000_000_000, id="fraction"),
        pytest.param(".5s", 500_000_000, id="leading point"),
        pytest.param("1\u00b5s", 1_000, id="micro sign"),
        pytest.param("3ns", 3, id="nanoseconds"),
    ],
)
def test_parse_duration(text: str, want_ns: int) -> None:
    assert parse_duration(text) == want_ns


@pytest.mark.parametrize("text", ["", "5", "s", "1d", "1h 2m", "jerry-was-a-racecar-driver", "."])
def test_parse_duration_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_seconds() -> None:
    assert parse_seconds("1m30s") == 90.0
    assert parse_seconds("100ms") == 0.1
    assert parse_duration("0.1s") == NS_PER_S // 10  # exact, as Go's, not 99,999,999


@pytest.mark.parametrize(
    ("text", "bits", "want"),
    [
        pytest.param("42", 64, 42, id="plain"),
        pytest.param("+7", 64, 7, id="plus"),
        pytest.param("-2147483648", 32, -(2**31), id="int32-min"),
        pytest.param("9223372036854775807", 64, 2**63 - 1, id="int64-max"),
    ],
)
def test_parse_int(text: str, bits: int, want: int) -> None:
    assert parse_int(text, bits) == want


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("2147483648", RangeError, id="int32-overflow"),
        pytest.param("-2147483649", RangeError, id="int32-underflow"),
        pytest.param("1_000", ValueError, id="underscore"),
        pytest.param(" 7", ValueError, id="space"),
        pytest.param("\u0667", ValueError, id="arabic-indic-digit"),
        pytest.param("1.0", ValueError, id="fraction"),
        pytest.param("", ValueError, id="empty"),
    ],
)
def test_parse_int32_refused(text: str, error: type[ValueError]) -> None:
    with pytest.raises(error):
        parse_int32(text)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("1.5", 1.5, id="decimal"),
        pytest.param(".5", 0.5, id="leading-point"),
        pytest.param("5.", 5.0, id="trailing-point"),
        pytest.param("-2e3", -2000.0, id="exponent"),
    ],
)
def test_parse_float(text: str, want: float) -> None:
    assert parse_float(text) == want


@pytest.mark.parametrize("text", ["inf", "NaN", "1e999", "0x1p3", "1_0", " 1", "", "."])
def test_parse_float_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"syntax|range"):
        parse_float(text)


@pytest.mark.parametrize(
    ("text", "want"),
    [(t, True) for t in ("1", "t", "T", "TRUE", "true", "True")]
    + [(f, False) for f in ("0", "f", "F", "FALSE", "false", "False")],
)
def test_parse_bool(text: str, want: bool) -> None:
    assert parse_bool(text) is want


@pytest.mark.parametrize("text", ["yes", "on", "tRUE", "", " true"])
def test_parse_bool_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid syntax"):
        parse_bool(text)


def test_go_formatting() -> None:
    assert (format_number(100.0), format_number(0.5)) == ("100", "0.5")
    assert quote('a "b"') == '"a \\"b\\""'
