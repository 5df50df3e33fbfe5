"""CESQL evaluation: a syntax tree compiled once into nested Python closures.

Each node becomes a function ``event -> value`` that raises ``CesqlError`` on an error. An
operator that gets an error from an operand sets the error's value to its own zero value and
lets it go on up (try blocks cost nothing on Python >= 3.11 until something raises), so what
reaches the top is the spec's answer: ``true AND (missing = "")`` gives ``false`` with a
MissingAttributeError, ``LEFT('abc', -2)`` gives ``'abc'`` with a FunctionEvaluationError.
This is the fail-fast mode of §4.1, as sdk-go (Knative's engine) evaluates: the first error
ends the evaluation and is the one reported. Operands are evaluated left to right; AND and
OR skip their right operand when the left one decides (§3.6).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Final

from eventing.cesql import functions
from eventing.cesql.syntax import (
    Binary,
    Call,
    Constant,
    Exists,
    Identifier,
    In,
    Like,
    Logic,
    Node,
    Unary,
)
from eventing.cesql.values import (
    CesqlError,
    CesqlType,
    Value,
    cast_to,
    from_event,
    to_bool,
    to_int,
    to_str,
    wrap_int32,
    zero_of,
)

Event = Mapping[str, object]
Compiled = Callable[[Event], Value]

# §3.4.4: EXISTS is true for the REQUIRED attributes, the input event being assumed valid.
REQUIRED_ATTRIBUTES: Final = frozenset({"specversion", "id", "source", "type"})
# §1: an expression never sees the event's data, even when the caller's mapping carries it
# (a structured-mode JSON event); ``data_base64`` cannot even be spelled (no underscores).
DATA_MEMBERS: Final = frozenset({"data", "data_base64"})
_ARITHMETIC_OPS: Final = frozenset({"+", "-", "*", "/", "%"})


def static_type(node: Node) -> CesqlType | None:
    """The return type of a node, known without an event; None for an attribute."""
    if isinstance(node, Constant):
        return type(node.value)
    if isinstance(node, Identifier):
        return None
    if isinstance(node, Unary):
        return bool if node.op == "NOT" else int
    if isinstance(node, Binary):
        return int if node.op in _ARITHMETIC_OPS else bool
    if isinstance(node, Logic):
        return bool
    if isinstance(node, Call):
        fn = functions.resolve(node.name, len(node.args))
        return fn.returns if fn is not None else bool
    return bool  # EXISTS, LIKE, IN


def compile_node(node: Node) -> Compiled:
    """The closure that evaluates ``node``."""
    if isinstance(node, Constant):
        return _constant(node.value)
    if isinstance(node, Identifier):
        return _identifier(node.name)
    if isinstance(node, Exists):
        return _exists(node.name)
    if isinstance(node, Unary):
        return _not(compile_node(node.operand)) if node.op == "NOT" else _negate(node)
    if isinstance(node, Binary):
        return _binary(node)
    if isinstance(node, Logic):
        return _logic(node)
    if isinstance(node, Like):
        return _like(node)
    if isinstance(node, In):
        return _in(node)
    return _call(node)


def _constant(value: Value) -> Compiled:
    def constant(event: Event) -> Value:
        return value

    return constant


def _identifier(name: str) -> Compiled:
    if name in DATA_MEMBERS:
        return _missing(name)

    def identifier(event: Event) -> Value:
        raw = event.get(name)
        if type(raw) is str:  # the common case first
            return raw
        value = from_event(raw)
        if value is None:
            # §3.2: the zero value of an unknown type, i.e. false.
            raise CesqlError("missingAttribute", False, f"missing attribute {name!r}")
        return value

    return identifier


def _missing(name: str) -> Compiled:
    def missing(event: Event) -> Value:
        raise CesqlError("missingAttribute", False, f"missing attribute {name!r}")

    return missing


def _exists(name: str) -> Compiled:
    if name in REQUIRED_ATTRIBUTES:
        return _constant(True)
    if name in DATA_MEMBERS:
        return _constant(False)

    def exists(event: Event) -> Value:
        return event.get(name) is not None

    return exists


def _not(operand: Compiled) -> Compiled:
    # NOT is not ambiguous (Boolean only), so its operand is cast to Boolean (§3.7 rule 1.1):
    # NOT 10 is false, as sdk-go has it. (The spec's TCK expects true and a CastError
    # there, which contradicts its own casting table, where Integer -> Boolean is a MUST.)
    def not_(event: Event) -> Value:
        try:
            return not to_bool(operand(event))
        except CesqlError as e:
            e.value = False
            raise

    return not_


def _negate(node: Unary) -> Compiled:
    operand = compile_node(node.operand)

    def negate(event: Event) -> Value:
        try:
            x = to_int(operand(event))
        except CesqlError as e:
            e.value = 0
            raise
        return wrap_int32(-x, "unary minus")

    return negate


def _binary(node: Binary) -> Compiled:
    op = node.op
    left, right = compile_node(node.left), compile_node(node.right)
    if op in ("=", "!=", "<>"):
        left_node, right_node = node.left, node.right
        if (
            isinstance(left_node, Identifier)
            and left_node.name not in DATA_MEMBERS
            and isinstance(right_node, Constant)
            # not an Integer: an attribute's int may be beyond 32 bits, and so a String
            and not isinstance(right_node.value, int | bool)
        ):
            return _attribute_equals(op == "=", left_node.name, right_node.value, left)
        return _equal(op == "=", left, right)
    if op in ("<", "<=", ">", ">="):
        return _order(op, left, right)
    return _arithmetic(op, left, right)


def _logic(node: Logic) -> Compiled:
    # a op1 (b op2 (c ...)) evaluated left to right in one loop. ``flip`` carries the XORs
    # met so far: x XOR rest is rest, or NOT rest when x is true. AND stops at a false
    # operand and OR at a true one, the rest unevaluated (§3.4.2); the chain's value is then
    # known: false for AND, true for OR, each seen through the pending flips.
    operands = tuple(compile_node(o) for o in node.operands)
    steps = tuple(zip(operands[:-1], node.ops, strict=True))
    last = operands[-1]

    def logic(event: Event) -> Value:
        flip = False
        try:
            for operand, op in steps:
                x = to_bool(operand(event))
                if op == "AND":
                    if not x:
                        return flip
                elif op == "OR":
                    if x:
                        return not flip
                elif x:
                    flip = not flip
            return to_bool(last(event)) is not flip
        except CesqlError as e:
            e.value = False
            raise

    return logic


def _equal(want: bool, left: Compiled, right: Compiled) -> Compiled:
    # '=' is ambiguous (Boolean, Integer and String overloads): the right operand's type
    # picks the overload and the left one is cast to it (§3.7 rule 2.2), so
    # TRUE = 'TRUE' is false (TRUE -> "true") while 'TRUE' = TRUE is true.
    def equal(event: Event) -> Value:
        try:
            x = left(event)
            y = right(event)
            if type(x) is not type(y):
                x = cast_to(x, type(y))
        except CesqlError as e:
            e.value = False
            raise
        return (x == y) is want

    return equal


def _attribute_equals(want: bool, name: str, constant: str, slow: Compiled) -> Compiled:
    # type = 'com.example': the commonest filter, without the two calls and the type dance
    # when the attribute is a string already; else the general path's casts.
    def attribute_equals(event: Event) -> Value:
        raw = event.get(name)
        if type(raw) is str:
            return (raw == constant) is want
        try:
            x = to_str(slow(event))
        except CesqlError as e:
            e.value = False
            raise
        return (x == constant) is want

    return attribute_equals


_ORDER: Final[dict[str, Callable[[int, int], bool]]] = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def _order(op: str, left: Compiled, right: Compiled) -> Compiled:
    # Only Integer x Integer exists for < <= > >=, so both sides are cast to Integer.
    compare = _ORDER[op]

    def order(event: Event) -> Value:
        try:
            x = to_int(left(event))
            y = to_int(right(event))
        except CesqlError as e:
            e.value = False
            raise
        return compare(x, y)

    return order


def _arithmetic(op: str, left: Compiled, right: Compiled) -> Compiled:
    def arithmetic(event: Event) -> Value:
        try:
            x = to_int(left(event))
            y = to_int(right(event))
        except CesqlError as e:
            # Also where y = 0: a missing attribute wins over the division (TCK
            # "missing / 0" is a MissingAttributeError), as it is met first.
            e.value = 0
            raise
        if op == "+":
            return wrap_int32(x + y, "+")
        if op == "-":
            return wrap_int32(x - y, "-")
        if op == "*":
            return wrap_int32(x * y, "*")
        if y == 0:
            raise CesqlError("math", 0, f"{'division' if op == '/' else 'modulo'} by zero")
        # §3.4.2: '/' truncates towards 0; '%' has the sign of x (Python's // and % floor).
        quotient = abs(x) // abs(y)
        if (x < 0) != (y < 0):
            quotient = -quotient
        if op == "/":
            return wrap_int32(quotient, "/")  # -2147483648 / -1
        return x - y * quotient

    return arithmetic


class Wildcard(enum.Enum):
    ANY = "%"  # any run of characters, the empty one included
    ONE = "_"  # exactly one character


def like_parts(pattern: str) -> list[str | Wildcard]:
    r"""A LIKE pattern (§3.4.3) as runs of literal characters and wildcards.

    ``\%`` and ``\_`` are the characters themselves; a backslash before anything else is an
    ordinary character, as sdk-go reads it. ``%%`` is one ``%``.
    """
    parts: list[str | Wildcard] = []
    literal: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n and pattern[i + 1] in "%_":
            literal.append(pattern[i + 1])
            i += 2
            continue
        if c == "%" or c == "_":
            if literal:
                parts.append("".join(literal))
                literal.clear()
            wildcard = Wildcard(c)
            if wildcard is Wildcard.ONE or not parts or parts[-1] is not Wildcard.ANY:
                parts.append(wildcard)
        else:
            literal.append(c)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def like_matcher(pattern: str) -> Callable[[str], bool]:
    """A test of whole strings against a LIKE pattern: the shapes filters use most (equal,
    prefix, suffix, contains) as str methods, anything else as a regular expression."""
    parts = like_parts(pattern)
    shape = tuple(p if isinstance(p, Wildcard) else "text" for p in parts)
    first = next((p for p in parts if isinstance(p, str)), "")
    any_, text = Wildcard.ANY, "text"
    if shape in ((), (text,)):
        return lambda s: s == first
    if shape == (any_,):
        return lambda s: True
    if shape == (text, any_):
        return lambda s: s.startswith(first)
    if shape == (any_, text):
        return lambda s: s.endswith(first)
    if shape == (any_, text, any_):
        return lambda s: first in s
    regex = "".join(
        ".*" if p is Wildcard.ANY else "." if p is Wildcard.ONE else re.escape(p) for p in parts
    )
    fullmatch = re.compile(regex, re.DOTALL).fullmatch
    return lambda s: fullmatch(s) is not None


def _like(node: Like) -> Compiled:
    operand = compile_node(node.operand)
    test = like_matcher(node.pattern)
    negated = node.negated

    def like(event: Event) -> Value:
        try:
            text = to_str(operand(event))
        except CesqlError as e:
            e.value = False
            raise
        return test(text) is not negated

    return like


def _in(node: In) -> Compiled:
    operand = compile_node(node.operand)
    items = tuple(compile_node(i) for i in node.items)
    negated = node.negated

    # §3.4.5: each element is cast to the left operand's type, then compared as '=' does.
    # The first equal element decides; the ones after it are not evaluated (as sdk-go).
    def in_(event: Event) -> Value:
        try:
            x = operand(event)
            target = type(x)
            for item in items:
                y = item(event)
                if type(y) is not target:
                    y = cast_to(y, target)
                if y == x:
                    return not negated
        except CesqlError as e:
            e.value = False
            raise
        return negated

    return in_


def _call(node: Call) -> Compiled:
    fn = functions.resolve(node.name, len(node.args))
    if fn is None:
        name, arity = node.name, len(node.args)

        def missing(event: Event) -> Value:
            # §3.5: an invocation that cannot be dispatched gives false.
            raise CesqlError("missingFunction", False, f"no function {name} of {arity} argument(s)")

        return missing
    args = tuple(compile_node(a) for a in node.args)
    types = tuple(fn.param_type(i) for i in range(len(args)))
    zero = zero_of(fn.returns)
    run = fn.run

    def call(event: Event) -> Value:
        try:
            values: list[Value] = []
            for arg, t in zip(args, types, strict=True):
                v = arg(event)
                values.append(v if t is None or type(v) is t else cast_to(v, t))
        except CesqlError as e:
            e.value = zero
            raise
        return run(values)

    return call
