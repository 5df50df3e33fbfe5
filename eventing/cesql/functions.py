"""The built-in CESQL functions (CESQL v1 §3.5) and the casting functions of the TCK.

A function is found by its uppercased name and its number of arguments (§3.5 allows
overloading by arity, e.g. SUBSTRING with 2 or 3). Each argument is cast to the parameter
type first (``None`` = any type, no cast); a failed cast gives the function's zero value
and a CastError. Lengths and positions count characters (code points), not bytes.

INT, BOOL, STRING, IS_INT and IS_BOOL are not in the spec's tables, but the spec refers to
"the same semantics of INT/STRING" (§3.7) and its TCK tests them
(``cesql_tck/casting_functions.yaml``); we define them as sdk-go, Knative's engine, does:
the explicit form of the §3.7 casts, and whether that cast would succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from eventing.cesql.values import (
    INT32_MAX,
    INT32_MIN,
    CesqlError,
    CesqlType,
    Value,
    to_bool,
    to_int,
    to_str,
)

# §3.5.1 TRIM: Unicode's White_Space property (PropList.txt), not Python's str.isspace,
# which also takes the control characters U+001C..U+001F that the spec says stay.
_UNICODE_WHITE_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True, slots=True)
class Function:
    """One overload: parameter types, a variadic tail type, the return type and the code."""

    name: str
    params: tuple[CesqlType | None, ...]
    variadic: CesqlType | None
    returns: CesqlType
    run: Callable[[Sequence[Value]], Value]
    is_variadic: bool = False

    def param_type(self, index: int) -> CesqlType | None:
        return self.params[index] if index < len(self.params) else self.variadic


def _fail(value: Value, message: str) -> CesqlError:
    return CesqlError("functionEvaluation", value, message)


def _length(a: Sequence[Value]) -> Value:
    return len(str(a[0]))


def _concat(a: Sequence[Value]) -> Value:
    return "".join(str(x) for x in a)


def _concat_ws(a: Sequence[Value]) -> Value:
    return str(a[0]).join(str(x) for x in a[1:])


def _lower(a: Sequence[Value]) -> Value:
    return str(a[0]).lower()


def _upper(a: Sequence[Value]) -> Value:
    return str(a[0]).upper()


def _trim(a: Sequence[Value]) -> Value:
    return str(a[0]).strip(_UNICODE_WHITE_SPACE)


def _left(a: Sequence[Value]) -> Value:
    x, y = str(a[0]), int(a[1])
    if y < 0:
        raise _fail(x, f"LEFT: the length {y} is negative")
    return x[:y]


def _right(a: Sequence[Value]) -> Value:
    x, y = str(a[0]), int(a[1])
    if y < 0:
        raise _fail(x, f"RIGHT: the length {y} is negative")
    return x[len(x) - y :] if y < len(x) else x


def _substring_start(x: str, pos: int) -> int:
    # 1-based from the start, or counted back from the end when negative.
    if pos > len(x) or pos < -len(x):
        raise _fail("", f"SUBSTRING: position {pos} is outside a string of length {len(x)}")
    return pos - 1 if pos > 0 else len(x) + pos


def _substring(a: Sequence[Value]) -> Value:
    x, pos = str(a[0]), int(a[1])
    if pos == 0:
        return ""
    return x[_substring_start(x, pos) :]


def _substring_len(a: Sequence[Value]) -> Value:
    x, pos, length = str(a[0]), int(a[1]), int(a[2])
    if pos == 0:
        return ""
    start = _substring_start(x, pos)
    if length < 0:
        raise _fail("", f"SUBSTRING: the length {length} is negative")
    return x[start : start + length]


def _abs(a: Sequence[Value]) -> Value:
    x = int(a[0])
    if x == INT32_MIN:
        # §3.5.2: the one input whose absolute value is not a 32-bit integer.
        raise CesqlError("math", INT32_MAX, "ABS(-2147483648) overflows 32 bits")
    return abs(x)


def _succeeds(cast: Callable[[Value], Value]) -> Callable[[Sequence[Value]], Value]:
    # IS_INT / IS_BOOL: whether the §3.7 cast of the argument would succeed.
    def check(a: Sequence[Value]) -> Value:
        try:
            cast(a[0])
        except CesqlError:
            return False
        return True

    return check


def _int(a: Sequence[Value]) -> Value:
    return to_int(a[0])


def _bool(a: Sequence[Value]) -> Value:
    return to_bool(a[0])


def _string(a: Sequence[Value]) -> Value:
    return to_str(a[0])


_S, _I, _B = str, int, bool
BUILTINS: Final[tuple[Function, ...]] = (
    Function("LENGTH", (_S,), None, _I, _length),
    Function("CONCAT", (), _S, _S, _concat, is_variadic=True),
    Function("CONCAT_WS", (_S,), _S, _S, _concat_ws, is_variadic=True),
    Function("LOWER", (_S,), None, _S, _lower),
    Function("UPPER", (_S,), None, _S, _upper),
    Function("TRIM", (_S,), None, _S, _trim),
    Function("LEFT", (_S, _I), None, _S, _left),
    Function("RIGHT", (_S, _I), None, _S, _right),
    Function("SUBSTRING", (_S, _I), None, _S, _substring),
    Function("SUBSTRING", (_S, _I, _I), None, _S, _substring_len),
    Function("ABS", (_I,), None, _I, _abs),
    Function("INT", (None,), None, _I, _int),
    Function("BOOL", (None,), None, _B, _bool),
    Function("STRING", (None,), None, _S, _string),
    Function("IS_INT", (None,), None, _B, _succeeds(to_int)),
    Function("IS_BOOL", (None,), None, _B, _succeeds(to_bool)),
)


def resolve(name: str, arity: int) -> Function | None:
    """The overload of ``name`` for ``arity`` arguments: a fixed one first, else a variadic
    one whose fixed parameters are all given (§3.5); None if there is none."""
    variadic: Function | None = None
    for fn in BUILTINS:
        if fn.name != name:
            continue
        if not fn.is_variadic and len(fn.params) == arity:
            return fn
        if fn.is_variadic and arity >= len(fn.params):
            variadic = fn
    return variadic
