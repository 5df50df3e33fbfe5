"""CESQL syntax: the lexer, the syntax tree and a precedence-climbing parser.

The grammar is the spec's (CESQL v1 §2) with the precedence of its ANTLR grammar
(``cesql/CESQLParser.g4``), strongest first:

    function call, EXISTS, literal, identifier, ( ... )    primaries
    NOT x, -x                                             prefix; the operand is a primary
    x [NOT] LIKE 'pattern'                                postfix
    x [NOT] IN (a, b, ...)                                postfix
    * / %                                                 left-associative
    + -                                                   left-associative
    = != <> < <= > >=                                     left-associative
    AND OR XOR                                            one level, right-associative

Two consequences people trip on, both as the grammar (and so sdk-go, Knative's engine) has
them: ``NOT a LIKE 'x%'`` is ``(NOT a) LIKE 'x%'``; and ``a AND b OR c`` is
``a AND (b OR c)``. Parenthesize.

Keywords and function names are case-insensitive; attribute names are lowercased (the TCK's
``EXISTS SOURCE``). An integer's sign belongs to the literal when it touches the digits
(``-2147483648`` is a valid literal, ``- 2147483648`` a negation of an out-of-range one);
unlike sdk-go's lexer, ``4 -1`` and ``4-1`` both parse as a subtraction.

A chain of AND/OR/XOR is read in a loop into one ``Logic`` node, so thousands of terms
cost no stack; anything else that nests deeper than ``MAX_DEPTH`` levels (parentheses,
prefix operators, a 300-term sum) is refused as a parse error rather than left to
Python's recursion limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from eventing.cesql.values import INT32_MAX, INT32_MIN, Value

KEYWORDS: Final = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "EXISTS", "IN", "TRUE", "FALSE"})
# §2.2: identifiers are lowercase letters and digits (we accept uppercase and lowercase them);
# §2.4: function names are letters and underscores.
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9]+")
_FUNCTION_NAME: Final = re.compile(r"[A-Za-z][A-Za-z_]*")
# The lexer (CESQLLexer.g4): blanks are space, tab, CR and LF; a word is letters, digits and
# underscores (an integer, a keyword, an attribute or a function name, told apart later); a
# string pairs a backslash with the next character.
_TOKEN: Final = re.compile(
    r"""[ \t\r\n]+
    |(?P<word>[A-Za-z0-9_]+)
    |(?P<string>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
    |(?P<op>!=|<>|<=|>=|[=<>+\-*/%(),])""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)
# A nesting bound, so a hostile expression gets a parse error, not a RecursionError: the
# parser and the evaluator recurse once or twice a level, well inside Python's 1,000.
MAX_DEPTH: Final = 200


class CesqlParseError(ValueError):
    """An expression that is not CESQL: where (0-based character offset) and why."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"{message} (at offset {position})")
        self.position = position
        self.message = message


TokenKind = Literal["int", "str", "word", "op", "eof"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # the operator, the word, the digits, or the string's decoded value
    pos: int
    end: int


def tokenize(source: str) -> list[Token]:
    """Split an expression into tokens; a CesqlParseError at the first bad character."""
    out: list[Token] = []
    pos, n = 0, len(source)
    match = _TOKEN.match
    while pos < n:
        m = match(source, pos)
        if m is None:
            c = source[pos]
            if c in "'\"":
                raise CesqlParseError(pos, "unterminated string literal")
            raise CesqlParseError(pos, f"unexpected character {c!r}")
        end = m.end()
        kind = m.lastgroup
        if kind == "word":
            word = m.group()
            out.append(Token("int" if word.isdigit() else "word", word, pos, end))
        elif kind == "string":
            out.append(Token("str", _decode_string(m.group()), pos, end))
        elif kind == "op":
            out.append(Token("op", m.group(), pos, end))
        pos = end
    out.append(Token("eof", "", n, n))
    return out


def _decode_string(literal: str) -> str:
    # §2.2: inside a string, a backslash before the delimiter escapes it. Any other backslash
    # is an ordinary character (so 'a\c' is the 3 characters a\c, as sdk-go reads it), but
    # it pairs with the next character when the lexer looks for the end, so a backslash
    # before the delimiter never ends the string.
    quote, body = literal[0], literal[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPE_PAIR.sub(lambda m: quote if m[1] == quote else m[0], body)


# -- the syntax tree ------------------------------------------------------------------------
# Each node prints as an S-expression, which is how tests check the parse (precedence).


@dataclass(frozen=True, slots=True)
class Constant:
    value: Value

    def __str__(self) -> str:
        v = self.value
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        return repr(v)


@dataclass(frozen=True, slots=True)
class Identifier:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Exists:
    name: str

    def __str__(self) -> str:
        return f"(EXISTS {self.name})"


@dataclass(frozen=True, slots=True)
class Unary:
    op: Literal["NOT", "-"]
    operand: Node

    def __str__(self) -> str:
        return f"({self.op} {self.operand})"


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # = != <> < <= > >= + - * / %
    left: Node
    right: Node

    def __str__(self) -> str:
        return f"({self.op} {self.left} {self.right})"


@dataclass(frozen=True, slots=True)
class Logic:
    """``a op1 b op2 c ...`` with AND, OR and XOR, which share one precedence level and
    associate to the right: ``a AND b OR c`` is ``a AND (b OR c)`` (CESQLParser.g4)."""

    operands: tuple[Node, ...]
    ops: tuple[str, ...]  # one fewer than operands

    def __str__(self) -> str:
        text = str(self.operands[-1])
        for op, operand in zip(reversed(self.ops), reversed(self.operands[:-1]), strict=True):
            text = f"({op} {operand} {text})"
        return text


@dataclass(frozen=True, slots=True)
class Like:
    operand: Node
    pattern: str
    negated: bool

    def __str__(self) -> str:
        return f"({'NOT LIKE' if self.negated else 'LIKE'} {self.operand} {self.pattern!r})"


@dataclass(frozen=True, slots=True)
class In:
    operand: Node
    items: tuple[Node, ...]
    negated: bool

    def __str__(self) -> str:
        items = " ".join(str(i) for i in self.items)
        return f"({'NOT IN' if self.negated else 'IN'} {self.operand} [{items}])"


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # uppercased
    args: tuple[Node, ...]

    def __str__(self) -> str:
        return f"({self.name}{''.join(' ' + str(a) for a in self.args)})"


Node = Constant | Identifier | Exists | Unary | Binary | Logic | Like | In | Call

# Binding powers of the infix and postfix operators (higher binds tighter), and which
# associate to the right. A prefix operator's operand is parsed above every one of them.
_LOGIC: Final = 10
_LOGIC_OPS: Final = ("AND", "OR", "XOR")
_INFIX_POWER: Final = {
    "AND": _LOGIC, "OR": _LOGIC, "XOR": _LOGIC,
    "=": 20, "!=": 20, "<>": 20, "<": 20, "<=": 20, ">": 20, ">=": 20,
    "+": 30, "-": 30,
    "*": 40, "/": 40, "%": 40,
    "IN": 50,
    "LIKE": 60,
}  # fmt: skip
_PREFIX_OPERAND_POWER: Final = 70


def parse(source: str) -> Node:
    """Parse a whole expression; CesqlParseError if it is not CESQL."""
    return _Parser(tokenize(source)).parse_all()


class _Parser:
    __slots__ = ("depth", "i", "tokens")

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def expect_op(self, op: str, what: str) -> Token:
        tok = self.take()
        if tok.kind != "op" or tok.text != op:
            raise CesqlParseError(tok.pos, f"expected {op!r} {what}, found {_show(tok)}")
        return tok

    def parse_all(self) -> Node:
        if self.peek().kind == "eof":
            raise CesqlParseError(0, "empty expression")
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise CesqlParseError(tok.pos, f"unexpected {_show(tok)} after a complete expression")
        # A tree has fewer levels than the expression has tokens: count only when it could.
        if len(self.tokens) > MAX_DEPTH and tree_depth(node) > MAX_DEPTH:
            # e.g. 1 + 1 + ... read in a loop, but nested in the tree, which evaluation recurses
            raise CesqlParseError(0, f"expression nested deeper than {MAX_DEPTH}")
        return node

    def expression(self, min_power: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CesqlParseError(self.peek().pos, f"expression nested deeper than {MAX_DEPTH}")
        left = self.prefix()
        while True:
            tok = self.peek()
            op = _infix_name(tok)
            negated = False
            if op == "NOT":
                # x NOT LIKE 'p', x NOT IN (...)
                follow = _infix_name(self.peek(1))
                if follow not in ("LIKE", "IN"):
                    raise CesqlParseError(tok.pos, "expected LIKE or IN after NOT")
                op, negated = follow, True
            if op is None or _INFIX_POWER[op] < min_power:
                break
            power = _INFIX_POWER[op]
            self.take()
            if negated:
                self.take()
            if op == "LIKE":
                pat = self.take()
                if pat.kind != "str":
                    # §3.4.3: the pattern must be a string literal, never a cast value.
                    raise CesqlParseError(pat.pos, "the LIKE pattern must be a string literal")
                left = Like(left, pat.text, negated)
            elif op == "IN":
                left = In(left, self.set_items(), negated)
            elif power == _LOGIC:
                left = self.logic_chain(left, op)
            else:
                left = Binary(op, left, self.expression(power + 1))
        self.depth -= 1
        return left

    def logic_chain(self, first: Node, first_op: str) -> Node:
        # a AND b OR c XOR d: read in a loop, not by recursion, so a long chain costs no stack.
        operands, ops = [first, self.expression(_LOGIC + 1)], [first_op]
        while True:
            op = _infix_name(self.peek())
            if op is None or op not in _LOGIC_OPS:
                break
            self.take()
            ops.append(op)
            operands.append(self.expression(_LOGIC + 1))
        return Logic(tuple(operands), tuple(ops))

    def set_items(self) -> tuple[Node, ...]:
        self.expect_op("(", "to open the IN set")
        items = [self.expression(0)]
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            items.append(self.expression(0))
        self.expect_op(")", "to close the IN set")
        return tuple(items)

    def prefix(self) -> Node:
        tok = self.take()
        if tok.kind == "int":
            return Constant(_int_literal(tok.text, tok.pos))
        if tok.kind == "str":
            return Constant(tok.text)
        if tok.kind == "op":
            if tok.text == "(":
                node = self.expression(0)
                self.expect_op(")", "to close the sub-expression")
                return node
            if tok.text in ("-", "+"):
                nxt = self.peek()
                if nxt.kind == "int" and nxt.pos == tok.end:
                    self.take()
                    return Constant(_int_literal(tok.text + nxt.text, tok.pos))
                if tok.text == "-":
                    return Unary("-", self.expression(_PREFIX_OPERAND_POWER))
            raise CesqlParseError(tok.pos, f"unexpected {_show(tok)}")
        if tok.kind == "word":
            upper = tok.text.upper()
            if upper in KEYWORDS:
                return self.keyword(upper, tok)
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text == "(":
                return self.call(tok)
            if _IDENTIFIER.fullmatch(tok.text) is None:
                raise CesqlParseError(tok.pos, f"invalid attribute name {tok.text!r}")
            return Identifier(tok.text.lower())
        raise CesqlParseError(tok.pos, "unexpected end of expression")

    def keyword(self, upper: str, tok: Token) -> Node:
        if upper == "TRUE":
            return Constant(True)
        if upper == "FALSE":
            return Constant(False)
        if upper == "NOT":
            return Unary("NOT", self.expression(_PREFIX_OPERAND_POWER))
        if upper == "EXISTS":
            name = self.take()
            if (
                name.kind != "word"
                or name.text.upper() in KEYWORDS
                or _IDENTIFIER.fullmatch(name.text) is None
            ):
                raise CesqlParseError(name.pos, "expected an attribute name after EXISTS")
            return Exists(name.text.lower())
        raise CesqlParseError(tok.pos, f"unexpected keyword {upper}")

    def call(self, name: Token) -> Node:
        if _FUNCTION_NAME.fullmatch(name.text) is None:
            raise CesqlParseError(name.pos, f"invalid function name {name.text!r}")
        self.expect_op("(", "to open the argument list")
        args: list[Node] = []
        if not (self.peek().kind == "op" and self.peek().text == ")"):
            args.append(self.expression(0))
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                args.append(self.expression(0))
        self.expect_op(")", f"to close the arguments of {name.text}")
        return Call(name.text.upper(), tuple(args))


def children(node: Node) -> tuple[Node, ...]:
    """The sub-expressions of a node."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Logic):
        return node.operands
    if isinstance(node, Like):
        return (node.operand,)
    if isinstance(node, In):
        return (node.operand, *node.items)
    if isinstance(node, Call):
        return node.args
    return ()


def tree_depth(root: Node) -> int:
    """How deeply the tree nests (a logic chain is one level), without recursing."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children(node))
    return deepest


def _infix_name(tok: Token) -> str | None:
    if tok.kind == "op":
        return tok.text if tok.text in _INFIX_POWER else None
    if tok.kind == "word":
        upper = tok.text.upper()
        if upper in ("AND", "OR", "XOR", "LIKE", "IN", "NOT"):
            return upper
    return None


def _int_literal(text: str, pos: int) -> int:
    n = int(text)
    if not INT32_MIN <= n <= INT32_MAX:
        # §2.2: integer literals MUST be valid 32-bit signed integers.
        raise CesqlParseError(pos, f"integer literal {text} is outside the 32-bit range")
    return n


def _show(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the expression"
    if tok.kind == "str":
        return "a string literal"
    return repr(tok.text)
