"""Go's value syntax: strconv's integers, floats and booleans, time.ParseDuration, and %q/%v.

Knative reads its environment variables, ConfigMaps and annotations with Go's parsers, so a
value knpy accepts must be one Knative accepts and the other way round: the same YAML has to
behave the same on both. Python's own parsers are wider (``int`` takes "1_000", " 7 " and
Arabic-Indic digits, ``float`` takes "inf" and "nan", a bool is anything truthy), so every
component parses through here instead.

Each parser raises ``ValueError`` with a short message and no name: the caller knows which
variable or key it read and wraps the error in its own vocabulary (``ConfigError``,
``AnnotationError``). Durations come back as whole nanoseconds, Go's ``time.Duration``, so that
"at most second precision" checks are exact; ``parse_seconds`` is the float form.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from typing import Final

__all__ = [
    "NS_PER_S",
    "RangeError",
    "format_number",
    "parse_bool",
    "parse_duration",
    "parse_float",
    "parse_int",
    "parse_int32",
    "parse_seconds",
    "quote",
]

NS_PER_S: Final = 1_000_000_000
_INT64_MAX: Final = 2**63 - 1

# ASCII digits only, as strconv.ParseInt.
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
# strconv.ParseFloat's decimal forms; hex floats and inf/nan are refused (see parse_float).
_FLOAT_RE: Final = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# strconv.ParseBool: the only spellings it accepts.
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})
# One "<number><unit>" of time.ParseDuration; "ms" is tried before "m" and "s".
_DURATION_PART_RE: Final = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ, micro sign
    "\u03bcs": 1_000,  # μ, Greek mu
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
}


class RangeError(ValueError):
    """A well-formed integer out of its type's range (Go's strconv.ErrRange)."""


def quote(value: str) -> str:
    """A raw value quoted for an error message the way Go's %q would, roughly."""
    return json.dumps(value)


def format_number(value: float) -> str:
    """A float as Go's %v prints it: 100.0 as "100", 0.5 as "0.5"."""
    return str(int(value)) if value.is_integer() else repr(value)


def parse_int(text: str, bits: int = 64) -> int:
    """strconv.ParseInt(text, 10, bits).

    Raises:
        RangeError: a well-formed number out of the signed ``bits``-bit range.
        ValueError: not a decimal integer.
    """
    if _INT_RE.fullmatch(text) is None:
        raise ValueError(f"invalid syntax {quote(text)}")
    value = int(text)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise RangeError(f"value out of range {quote(text)}")
    return value


def parse_int32(text: str) -> int:
    """strconv.ParseInt(text, 10, 32), for Go's int32 fields (replica counts).

    Raises:
        RangeError, ValueError: see parse_int.
    """
    return parse_int(text, bits=32)


def parse_float(text: str) -> float:
    """strconv.ParseFloat for decimal numbers, finite only (Go also takes "inf" and "NaN").

    Raises:
        ValueError: not a decimal number, or too large for a float.
    """
    if _FLOAT_RE.fullmatch(text) is None:
        raise ValueError(f"invalid syntax {quote(text)}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"value out of range {quote(text)}")
    return value


def parse_bool(text: str) -> bool:
    """strconv.ParseBool.

    Raises:
        ValueError: not one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
    """
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid syntax {quote(text)}")


def parse_duration(text: str) -> int:
    """time.ParseDuration ("1h2m3.5s", "300ms", "-42s", "0") in nanoseconds.

    Raises:
        ValueError: not a Go duration, or beyond Go's 292 years.
    """
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {quote(text)}")
    total = Fraction(0)
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART_RE.match(rest, pos)
        if match is None or not any(c.isdigit() for c in match.group(1)):
            raise ValueError(f"invalid duration {quote(text)}")
        number = match.group(1)
        # Exact arithmetic, as Go's: "0.1s" is 100,000,000 ns, not a float's approximation.
        total += Fraction(number + "0" if number.endswith(".") else number) * _DURATION_UNIT_NS[
            match.group(2)
        ]
        pos = match.end()
    ns = int(total)
    if ns > _INT64_MAX:
        raise ValueError(f"invalid duration {quote(text)}")
    return -ns if negative else ns


def parse_seconds(text: str) -> float:
    """time.ParseDuration in (float) seconds: "1m30s" is 90.0.

    Raises:
        ValueError: see parse_duration.
    """
    return parse_duration(text) / NS_PER_S
