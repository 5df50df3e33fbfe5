"""CloudEvents SQL Expression Language (CESQL) v1.0.0, pure Python.

Theory of operation
-------------------
An expression goes through three steps, the first two once per expression:

1. ``syntax.tokenize`` and ``syntax.parse`` turn the text into a syntax tree, with the
   precedence of the spec's ANTLR grammar (see ``syntax``). A bad expression raises
   ``CesqlParseError`` with the 0-based offset of the problem; integer literals outside 32
   bits and a LIKE pattern that is not a string literal are parse errors too.
2. ``evaluator.compile_node`` turns the tree into nested closures, resolving functions
   and LIKE patterns (to regular expressions) up front.
3. ``Expression.evaluate(event)`` runs the closures on one event: a mapping of attribute
   name to its JSON value, extensions included. It never raises: it returns the value and
   either ``None`` or the first error's kind, fail-fast as §4.1 of the spec describes, with
   the value the spec gives on that error (the zero value of the failing operator's type,
   or the function's own value, e.g. ``ABS(-2147483648)`` is ``2147483647`` and ``math``).

Values are ``bool``, ``int`` (32-bit) and ``str``; casts follow §3.7 (see ``values``).
The expression never sees the event's data, only its context attributes (§1).

Use ``compile`` once per filter and ``Expression.evaluate`` (or ``matches``, the filter
dialect's yes/no) per event; ``evaluate(expression, event)`` does both, for one-offs.

Where the spec leaves room, we chose (and the tests pin):

* Integer overflow in ``+ - * /`` and unary minus is a MathError carrying the 32-bit
  two's-complement result, the value sdk-go (Knative's engine) computes without an error.
* ``NOT 10`` is ``false``: NOT is unambiguous, so 10 is cast to Boolean (§3.7). The spec's
  TCK expects ``true`` and a CastError, against its own casting table; sdk-go agrees with us.
* ``AND``/``OR``/``XOR`` share a level and associate to the right, as the grammar says
  (``FALSE AND TRUE OR TRUE`` is false); operands are still evaluated left to right.
* INT, BOOL, STRING, IS_INT, IS_BOOL exist (the TCK tests them; the text only names them).
* No user-defined functions (a SHOULD of §3.5); an unknown name is a MissingFunctionError.

The TCK's 275 cases (cloudevents/spec ``cesql/cesql_tck``) agree with this engine but for
``NOT 10`` above; ``tests/eventing/test_cesql.py`` has them, in our own tables.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventing.cesql.evaluator import Compiled, compile_node, static_type
from eventing.cesql.syntax import MAX_DEPTH, CesqlParseError, Node, parse
from eventing.cesql.values import CesqlError, ErrorKind, zero_of

__all__ = ["CesqlParseError", "ErrorKind", "Expression", "compile", "evaluate"]


class Expression:
    """A parsed and compiled CESQL expression, safe to share and reuse across events."""

    __slots__ = ("_run", "source", "tree", "type")

    def __init__(self, source: str, tree: Node) -> None:
        self.source = source
        self.tree = tree
        # The expression's return type, the one whose zero value an error gives.
        self.type = static_type(tree)
        self._run: Compiled = compile_node(tree)

    def evaluate(self, event: Mapping[str, object]) -> tuple[object, str | None]:
        """The value of the expression on ``event`` and None, or the value and an error kind."""
        try:
            return self._run(event), None
        except CesqlError as e:
            return e.value, e.kind
        except Exception:
            # Not CESQL's doing (an event mapping that raises, a bug): §3.3's GenericError,
            # so that one bad event cannot take down the caller.
            return zero_of(self.type), "generic"

    def matches(self, event: Mapping[str, object]) -> bool:
        """Whether an event passes this expression as a filter: true and no error (§1.2)."""
        try:
            return self._run(event) is True
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile(expression: str) -> Expression:
    """Parse and compile ``expression`` once; ``CesqlParseError`` if it is not CESQL."""
    try:
        tree = parse(expression)
    except RecursionError:
        raise CesqlParseError(0, f"expression nested deeper than {MAX_DEPTH}") from None
    return Expression(expression, tree)


def evaluate(expression: str, event: Mapping[str, object]) -> tuple[object, str | None]:
    """Evaluate ``expression`` on ``event``: (value, None) or (value, error kind).

    A parse error gives ``(False, "parse")``, the TCK's expectation.
    """
    try:
        compiled = compile(expression)
    except CesqlParseError:
        return False, "parse"
    return compiled.evaluate(event)
