"""CESQL values, casts and errors: the spec's type system (CESQL v1 §3.1, §3.3, §3.7).

A CESQL value is a Python ``bool``, ``int`` (always inside the signed 32-bit range) or ``str``.
``bool`` is a subclass of ``int`` in Python, so every type test here is ``type(v) is ...``,
never ``isinstance``.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from typing import Final, Literal

Value = bool | int | str
# The error kinds, spelled as the CESQL TCK spells them (cesql_tck/README.md).
ErrorKind = Literal[
    "parse", "math", "cast", "missingFunction", "functionEvaluation", "missingAttribute", "generic"
]
# A value's type as the spec names it; None where the spec cannot tell (an attribute).
CesqlType = type[bool] | type[int] | type[str]

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
# The spec's String -> Integer cast: base 10, an optional sign, ASCII digits only (Python's
# int() would also take spaces, underscores and non-ASCII digits, which the spec does not).
_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")


class CesqlError(Exception):
    """An evaluation error: the kind, and the value the failing sub-expression gives.

    Raised inside the evaluator only; every operator that sees one from an operand replaces
    ``value`` with the zero value of its own return type and re-raises it, so the value that
    reaches the top is the one the spec asks for (§3.3, fail-fast mode of §4.1).
    """

    __slots__ = ("kind", "message", "value")

    def __init__(self, kind: ErrorKind, value: Value, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.value: Value = value
        self.message = message


def zero_of(t: CesqlType | None) -> Value:
    """The zero value of a return type (§3.1); Boolean when the type is unknown (§3.2)."""
    if t is int:
        return 0
    if t is str:
        return ""
    return False


def type_name(v: Value) -> str:
    """The spec's name of a value's type, for error messages."""
    if isinstance(v, bool):
        return "Boolean"
    return "Integer" if isinstance(v, int) else "String"


def wrap_int32(n: int, what: str) -> int:
    """``n`` if it fits 32 bits; else a MathError carrying the two's-complement wrap.

    The spec's Integer is 32-bit (§3.1) and names no rule for overflow but ABS's (§3.5.2,
    a MathError). We raise a MathError with the wrapped value, which is what sdk-go (and so
    Knative) computes silently: a filter that overflows does not pass.
    """
    if INT32_MIN <= n <= INT32_MAX:
        return n
    wrapped = (n - INT32_MIN) % 2**32 + INT32_MIN
    raise CesqlError("math", wrapped, f"integer overflow in {what}: {n} is not a 32-bit integer")


def parse_int32(text: str) -> int | None:
    """The spec's String -> Integer reading, or None when the text is not one."""
    if _INTEGER_TEXT.fullmatch(text) is None:
        return None
    n = int(text)
    return n if INT32_MIN <= n <= INT32_MAX else None


def to_int(v: Value) -> int:
    """Cast to Integer (§3.7): a CastError with value 0 where the spec says it fails."""
    if isinstance(v, bool):
        return 1 if v else 0
    if isinstance(v, int):
        return v
    n = parse_int32(v)
    if n is None:
        raise CesqlError("cast", 0, f"cannot cast String {v!r} to Integer")
    return n


def to_bool(v: Value) -> bool:
    """Cast to Boolean (§3.7): only "true"/"false" in any case read as a Boolean."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    low = v.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise CesqlError("cast", False, f"cannot cast String {v!r} to Boolean")


def to_str(v: Value) -> str:
    """Cast to String (§3.7); never fails."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def cast_to(v: Value, t: CesqlType) -> Value:
    """Cast ``v`` to the type ``t`` (the implicit casts of §3.7)."""
    if t is str:
        return to_str(v)
    if t is int:
        return to_int(v)
    return to_bool(v)


def from_event(raw: object) -> Value | None:
    """An event attribute's JSON value as a CESQL value (§3.2); None when it is absent.

    Strings, booleans and 32-bit integers are themselves; anything else is represented by a
    String, as the spec asks: an integer outside 32 bits in base 10, a timestamp in RFC 3339,
    binary in base64 (the CloudEvents JSON format's spelling), other JSON as compact JSON.
    A JSON ``null`` is an absent attribute, as in the CloudEvents JSON format.
    """
    if raw is None:
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return raw if type(raw) is str else str(raw)
    if isinstance(raw, int):
        return int(raw) if INT32_MIN <= raw <= INT32_MAX else str(int(raw))
    if isinstance(raw, datetime.datetime):
        return raw.isoformat().replace("+00:00", "Z")
    if isinstance(raw, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(raw)).decode("ascii")
    if isinstance(raw, float):
        return repr(raw)
    try:
        return json.dumps(raw, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        return str(raw)
