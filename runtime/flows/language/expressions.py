"""The small expression language of flow files (``when:`` conditions and ``set:`` values).

Never Python's ``eval``: an expression is tokenized and parsed here, by a hand-written
recursive-descent parser, into a tree of the few node types below, and that tree is
walked by their ``evaluate`` methods. Nothing is ever compiled to Python code.

Why a parser of our own rather than ``ast.parse(mode="eval")`` plus a node whitelist:
the language is not Python (``true``/``false``/``null``, dotted names that are mapping
lookups, functions whose argument checks happen at load time), the whitelist would have
to reject most of Python's grammar node by node (a new Python version can add nodes),
``ast.parse`` itself recurses in C on deeply nested input before any whitelist can
look at it, and error positions for our own rules (unknown name, wrong arity) come
for free from our tokens. The whole grammar is ~20 lines of EBNF; the parser is short.

Grammar (lowest precedence first)::

    expression := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") sum]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := ("-" | "+") unary | atom
    atom       := NUMBER | STRING | "true" | "false" | "null" | "[" [expression ("," expression)* [","]] "]"
                | "(" expression ")" | NAME ("." FIELD)* | FUNCTION "(" [expression ("," expression)*] ")"

Semantics, decided once here so flow authors can rely on them:

* ``slots.size``, ``variables.total``, ``user_profile.address.city`` look keys up in
  mappings. A missing key, a root name the caller did not supply, or a field of
  something that is not a mapping is ``null``: never an exception. Field names may not
  start with ``_`` (rejected when parsed), and no Python attribute is ever read.
* Only the root names in :data:`ROOT_NAMES` exist; only ``slots``, ``variables`` and
  ``user_profile`` have fields. Anything else is an :class:`ExpressionError` at parse
  time, as are unknown functions, wrong argument counts, subscripts, ``**`` and ``=``.
* ``and``/``or`` short-circuit and return an operand, as in Python (``slots.name or
  'friend'`` is a default); ``not`` returns a boolean. Truthiness is Python's.
* ``+`` adds numbers, or concatenates two strings or two lists; ``*`` multiplies
  numbers, or repeats a string or list an integer number of times; ``- / %`` take
  numbers only; ``/`` is true division (``7 / 2 == 3.5``). Booleans are not numbers.
  Any other mix, **division or modulo by zero**, a number too large
  (:data:`MAX_INT_BITS`) or not finite, or a string/list longer than :data:`MAX_SIZE`
  raises :class:`ExpressionEvalError` (the interpreter records the failure and treats
  the value as ``null``). Oversized results are refused before they are built, so
  ``'x' * 1000000000`` fails at once.
* ``==``/``!=`` are Python's equality (so ``1 == 1.0`` and ``true == 1``). Ordering
  compares two numbers, two strings or two lists; an ordering with ``null`` on either
  side is ``false`` (so ``slots.quantity > 5`` is simply false while the slot is
  empty); any other mix raises :class:`ExpressionEvalError`.
* ``x in y``: substring when ``y`` is a string (``x`` must be one too), membership in a
  list, key membership in a mapping, ``false`` when ``y`` is ``null``.
* Functions: ``filled(name)`` (is ``slots[name]`` set and not null; ``filled(slots.x)``
  is accepted as ``filled('x')``), ``len(x)`` (null: 0), ``lower(x)``, ``upper(x)``,
  ``contains(haystack, needle)`` (same as ``needle in haystack``), ``min``/``max``
  (of several arguments or of one list), ``round(x[, digits])``, ``int(x)``,
  ``float(x)`` (numbers or numeric strings), ``str(x)`` (null: ``""``, booleans
  ``true``/``false``, lists and mappings as JSON). ``lower``, ``upper``, ``round``,
  ``int`` and ``float`` return ``null`` for ``null``, so an unset slot stays unset.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_INT_BITS",
    "MAX_SIZE",
    "ROOT_NAMES",
    "Expression",
    "ExpressionError",
    "ExpressionEvalError",
    "parse_expression",
    "to_text",
]

MAX_EXPRESSION_LENGTH = 1000  # characters of source
MAX_DEPTH = 32  # nesting of brackets, calls and unary operators; operator trees may be 2x deeper
MAX_SIZE = 10_000  # characters of a string, items of a list, built by an expression
MAX_INT_BITS = 256  # integers beyond ~1e77 are someone's attempt at a bomb, not a price
_MAX_NUMERIC_TEXT = 100  # int("...")/float("..."): longer strings are not numbers we want

# The names an expression can start with; the interpreter supplies them (see docs/flows.md).
ROOT_NAMES = frozenset(
    {
        "slots",
        "variables",
        "user_profile",
        "intent",
        "confidence",
        "message",
        "channel",
        "message_count",
        "error_count",
        "fallback_count",
        "state",
        "language",
        "value",
    }
)
# Only these hold mappings, so only these may be followed by ".field".
MAPPING_ROOTS = frozenset({"slots", "variables", "user_profile"})
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
# Python spellings people will type; a hint beats "unknown name".
_HINTS = {
    "True": "true",
    "False": "false",
    "None": "null",
    "none": "null",
    "nil": "null",
}


class ExpressionError(ValueError):
    """An expression that cannot be parsed; ``position`` is a 0-based offset in ``text``."""

    def __init__(self, message: str, position: int, text: str = "") -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        return f"{self.message} (at position {self.position})"


class ExpressionEvalError(ValueError):
    """An expression that failed while being evaluated (a type error, division by zero...).

    ``position`` is the offset of the sub-expression that failed.
    """

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python; in flows ``true + 1`` is a mistake, not 2.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """The flow author's name for a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def _checked(value: Any, position: int, sizes: bool = True) -> Any:
    """Refuse numbers (and, with ``sizes``, strings and lists) too large to be anything but abuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise ExpressionEvalError("number too large", position)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionEvalError("number too large (or not a number)", position)
    elif sizes and isinstance(value, str | list | tuple) and len(value) > MAX_SIZE:
        raise ExpressionEvalError(f"result longer than {MAX_SIZE}", position)
    return value


def to_text(value: Any) -> str:
    """A value as flow text: null is empty, booleans are true/false, containers are JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value, ensure_ascii=False, default=str, sort_keys=False)
    return str(value)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "op", "end"
    value: Any
    position: int


_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", "[", "]", ",", ".")
# Operators of other languages: refused with a pointer to ours.
_FOREIGN_OPERATORS = {
    "**": "'**' is not supported",
    "//": "'//' is not supported; use int(a / b)",
    "&&": "use 'and' instead of '&&'",
    "||": "use 'or' instead of '||'",
}
# ASCII only: str.isdigit() also accepts "¹", which int() refuses.
_DIGITS = "0123456789"
_DIGITS_SET = frozenset(_DIGITS)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _DIGITS or (c == "." and text[i + 1 : i + 2] in _DIGITS_SET and not _follows_value(tokens)):
            i = _number(text, i, tokens)
        elif c in "'\"":
            i = _string(text, i, tokens)
        elif c.isalpha() or c == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append(_Token("name", text[start:i], start))
        else:
            two = text[i : i + 2]
            if two in _FOREIGN_OPERATORS:
                raise ExpressionError(_FOREIGN_OPERATORS[two], i, text)
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                if two in ("=>", "=<"):
                    meant = ">=" if two == "=>" else "<="
                    raise ExpressionError(f"'{two}' is not an operator; did you mean '{meant}'?", i, text)
                if c == "=":
                    raise ExpressionError("use '==' to compare ('=' is not an operator)", i, text)
                if c == "!":
                    raise ExpressionError("use 'not' instead of '!'", i, text)
                raise ExpressionError(f"unexpected character {c!r}", i, text)
            tokens.append(_Token("op", op, i))
            i += len(op)
    tokens.append(_Token("end", None, n))
    return tokens


def _follows_value(tokens: list[_Token]) -> bool:
    # ".5" is a number, but in "slots.1" the dot is a field access (rejected by the parser
    # with a clear message rather than read as "slots" followed by the number 0.1).
    if not tokens:
        return False
    last = tokens[-1]
    return last.kind in ("name", "number", "string") or (last.kind == "op" and last.value in (")", "]"))


def _number(text: str, i: int, tokens: list[_Token]) -> int:
    start, n = i, len(text)
    while i < n and text[i] in _DIGITS:
        i += 1
    is_float = False
    if i < n and text[i] == "." and text[i + 1 : i + 2] in _DIGITS_SET:
        is_float = True
        i += 1
        while i < n and text[i] in _DIGITS:
            i += 1
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        if j < n and text[j] in _DIGITS:
            is_float = True
            i = j
            while i < n and text[i] in _DIGITS:
                i += 1
    if i < n and (text[i].isalpha() or text[i] == "_"):
        raise ExpressionError(f"invalid number {text[start : i + 1]!r}", start, text)
    literal = text[start:i]
    value: int | float = float(literal) if is_float else int(literal)
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("number too large", start, text)
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError("number too large", start, text)
    tokens.append(_Token("number", value, start))
    return i


def _string(text: str, i: int, tokens: list[_Token]) -> int:
    quote, start, n = text[i], i, len(text)
    i += 1
    chars: list[str] = []
    while True:
        if i >= n:
            raise ExpressionError("unterminated string", start, text)
        c = text[i]
        if c == quote:
            break
        if c == "\\":
            if i + 1 >= n:
                raise ExpressionError("unterminated string", start, text)
            e = text[i + 1]
            if e in _ESCAPES:
                chars.append(_ESCAPES[e])
                i += 2
            elif e == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise ExpressionError("\\u needs 4 hexadecimal digits", i, text)
                chars.append(chr(int(digits, 16)))
                i += 6
            else:
                raise ExpressionError(f"unknown escape '\\{e}'", i, text)
        else:
            chars.append(c)
            i += 1
    tokens.append(_Token("string", "".join(chars), start))
    return i + 1


# --------------------------------------------------------------------------- tree


class _Node:
    """A parsed sub-expression; ``depth`` bounds the evaluator's recursion."""

    __slots__ = ("depth", "position")
    depth: int
    position: int

    def __init__(self, position: int, *children: _Node) -> None:
        self.position = position
        self.depth = 1 + max((child.depth for child in children), default=0)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def fail(self, message: str) -> NoReturn:
        raise ExpressionEvalError(message, self.position)


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, position: int, value: Any) -> None:
        super().__init__(position)
        self.value = value

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        return self.value


class _List(_Node):
    __slots__ = ("items",)

    def __init__(self, position: int, items: tuple[_Node, ...]) -> None:
        super().__init__(position, *items)
        self.items = items

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        # A fresh list each time: the caller may store it in a slot and change it.
        return [item.evaluate(env) for item in self.items]


class _Path(_Node):
    __slots__ = ("fields", "root")

    def __init__(self, position: int, root: str, fields: tuple[str, ...]) -> None:
        super().__init__(position)
        self.root = root
        self.fields = fields

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        value = env.get(self.root)
        for name in self.fields:
            # Only mapping keys, never attributes: nothing of the Python object is reachable.
            if not isinstance(value, Mapping):
                return None
            value = value.get(name)
        return value

    @property
    def dotted(self) -> str:
        return ".".join((self.root, *self.fields))


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, position: int, operand: _Node) -> None:
        super().__init__(position, operand)
        self.operand = operand

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        return not self.operand.evaluate(env)


class _Sign(_Node):
    __slots__ = ("negative", "operand")

    def __init__(self, position: int, negative: bool, operand: _Node) -> None:
        super().__init__(position, operand)
        self.negative = negative
        self.operand = operand

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        value = self.operand.evaluate(env)
        if not _is_number(value):
            self.fail(f"cannot apply unary {'-' if self.negative else '+'} to a {_kind(value)}")
        return -value if self.negative else value


class _BoolOp(_Node):
    __slots__ = ("is_and", "left", "right")

    def __init__(self, position: int, is_and: bool, left: _Node, right: _Node) -> None:
        super().__init__(position, left, right)
        self.is_and = is_and
        self.left = left
        self.right = right

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        value = self.left.evaluate(env)
        # Short-circuit: the right side is not evaluated (so it cannot fail) when decided.
        if bool(value) != self.is_and:
            return value
        return self.right.evaluate(env)


class _Binary(_Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, position: int, op: str, left: _Node, right: _Node) -> None:
        super().__init__(position, left, right)
        self.op = op
        self.left = left
        self.right = right

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        a = self.left.evaluate(env)
        b = self.right.evaluate(env)
        return _checked(_ARITHMETIC[self.op](self, a, b), self.position)


class _Compare(_Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, position: int, op: str, left: _Node, right: _Node) -> None:
        super().__init__(position, left, right)
        self.op = op
        self.left = left
        self.right = right

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        a = self.left.evaluate(env)
        b = self.right.evaluate(env)
        op = self.op
        if op == "==":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if op == "in":
            return _contains(self, b, a)
        if op == "not in":
            return not _contains(self, b, a)
        return _order(self, op, a, b)


class _Call(_Node):
    __slots__ = ("args", "name")

    def __init__(self, position: int, name: str, args: tuple[_Node, ...]) -> None:
        super().__init__(position, *args)
        self.name = name
        self.args = args

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        values = [arg.evaluate(env) for arg in self.args]
        function = FUNCTIONS[self.name]
        return _checked(function.impl(self, env, *values), self.position, function.builds)


# --------------------------------------------------------------------------- operators


def _add(node: _Node, a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        return a + b
    both_text = isinstance(a, str) and isinstance(b, str)
    if both_text or (isinstance(a, list) and isinstance(b, list)):
        if len(a) + len(b) > MAX_SIZE:
            node.fail(f"result longer than {MAX_SIZE}")
        return a + b
    hint = " (use str() to turn a value into text)" if isinstance(a, str) or isinstance(b, str) else ""
    node.fail(f"cannot add a {_kind(a)} and a {_kind(b)}{hint}")


def _subtract(node: _Node, a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        return a - b
    node.fail(f"cannot subtract a {_kind(b)} from a {_kind(a)}")


def _multiply(node: _Node, a: Any, b: Any) -> Any:
    if _is_number(a) and _is_number(b):
        # Bound the operands' size first: the product of two MAX_INT_BITS ints is cheap,
        # but only because they were checked on the way in.
        return a * b
    sequence, count = (a, b) if isinstance(a, str | list) else (b, a)
    if isinstance(sequence, str | list) and isinstance(count, int) and not isinstance(count, bool):
        # Checked before building: 'x' * 10**9 must fail now, not after allocating a gigabyte.
        if count > 0 and len(sequence) * count > MAX_SIZE:
            node.fail(f"result longer than {MAX_SIZE}")
        # min(): '' * 10**70 is empty, but Python refuses a count that large.
        return sequence * min(count, MAX_SIZE)
    node.fail(f"cannot multiply a {_kind(a)} by a {_kind(b)}")


def _divide(node: _Node, a: Any, b: Any) -> Any:
    if not (_is_number(a) and _is_number(b)):
        node.fail(f"cannot divide a {_kind(a)} by a {_kind(b)}")
    if b == 0:
        node.fail("division by zero")
    return a / b


def _modulo(node: _Node, a: Any, b: Any) -> Any:
    # Numbers only: Python's "%s" % x string formatting is deliberately not reachable.
    if not (_is_number(a) and _is_number(b)):
        node.fail(f"cannot take a {_kind(a)} modulo a {_kind(b)}")
    if b == 0:
        node.fail("modulo by zero")
    return a % b


_ARITHMETIC: dict[str, Callable[[_Node, Any, Any], Any]] = {
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "%": _modulo,
}


def _contains(node: _Node, haystack: Any, needle: Any) -> bool:
    if haystack is None:
        return False
    if isinstance(haystack, str):
        if not isinstance(needle, str):
            node.fail(f"cannot look for a {_kind(needle)} in a string")
        return needle in haystack
    if isinstance(haystack, list | tuple | set | frozenset | Mapping):
        try:
            return needle in haystack
        except TypeError:  # an unhashable needle in a mapping or set
            return False
    node.fail(f"cannot look for a value in a {_kind(haystack)}")


def _order(node: _Node, op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False  # an empty slot is neither more nor less than anything
    comparable = (_is_number(a) and _is_number(b)) or (
        type(a) is type(b) and isinstance(a, str | list | tuple)
    )
    if not comparable:
        node.fail(f"cannot compare a {_kind(a)} with a {_kind(b)}")
    try:
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:  # lists whose items cannot be ordered
        node.fail(f"cannot compare these lists ({op})")


# --------------------------------------------------------------------------- functions


@dataclass(frozen=True, slots=True)
class _Function:
    min_args: int
    max_args: int | None  # None: any number
    impl: Callable[..., Any]  # (node, env, *values) -> value
    # Builds a new string or list that must respect MAX_SIZE. lower(message) of a long
    # message only mirrors its input: refusing it would make a long message break a flow.
    builds: bool = False


def _fn_filled(node: _Node, env: Mapping[str, Any], name: Any) -> bool:
    if not isinstance(name, str):
        node.fail(f"filled() needs a slot name, not a {_kind(name)}")
    slots = env.get("slots")
    return isinstance(slots, Mapping) and slots.get(name) is not None


def _fn_len(node: _Node, env: Mapping[str, Any], value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    node.fail(f"len() of a {_kind(value)}")


def _fn_lower(node: _Node, env: Mapping[str, Any], value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None if value is None else value.lower()
    node.fail(f"lower() of a {_kind(value)}")


def _fn_upper(node: _Node, env: Mapping[str, Any], value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None if value is None else value.upper()
    node.fail(f"upper() of a {_kind(value)}")


def _fn_contains(node: _Node, env: Mapping[str, Any], haystack: Any, needle: Any) -> bool:
    return _contains(node, haystack, needle)


def _extreme(node: _Node, name: str, pick: Callable[..., Any], values: tuple[Any, ...]) -> Any:
    items: Any = values
    if len(values) == 1:
        items = values[0]
        if not isinstance(items, list | tuple):
            node.fail(f"{name}() of a single {_kind(items)}: give a list or several values")
    if not items:
        node.fail(f"{name}() of an empty list")
    if not (all(_is_number(v) for v in items) or all(isinstance(v, str) for v in items)):
        node.fail(f"{name}() needs all numbers or all strings")
    return pick(items)


def _fn_min(node: _Node, env: Mapping[str, Any], *values: Any) -> Any:
    return _extreme(node, "min", min, values)


def _fn_max(node: _Node, env: Mapping[str, Any], *values: Any) -> Any:
    return _extreme(node, "max", max, values)


def _fn_round(node: _Node, env: Mapping[str, Any], value: Any, digits: Any = None) -> Any:
    if value is None:
        return None
    if not _is_number(value):
        node.fail(f"round() of a {_kind(value)}")
    if digits is None:
        return round(value)
    if not (isinstance(digits, int) and not isinstance(digits, bool)) or not -15 <= digits <= 15:
        node.fail("round() digits must be an integer from -15 to 15")
    return round(value, digits)


def _numeric_text(node: _Node, name: str, value: str) -> float:
    text = value.strip()
    if len(text) > _MAX_NUMERIC_TEXT:
        node.fail(f"{name}() of a string too long to be a number")
    try:
        number = float(text)
    except ValueError:
        node.fail(f"{name}(): {value!r} is not a number")
    if not math.isfinite(number):
        node.fail(f"{name}(): {value!r} is not a finite number")
    return number


def _fn_int(node: _Node, env: Mapping[str, Any], value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            node.fail("int() of a number that is not finite")
        return int(value)  # towards zero, as Python
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _MAX_NUMERIC_TEXT:
            try:
                return int(text)  # exact for long integers that float() would round
            except ValueError:
                pass
        return int(_numeric_text(node, "int", value))
    node.fail(f"int() of a {_kind(value)}")


def _fn_float(node: _Node, env: Mapping[str, Any], value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        return _numeric_text(node, "float", value)
    node.fail(f"float() of a {_kind(value)}")


def _fn_str(node: _Node, env: Mapping[str, Any], value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        node.fail("number too large")  # also keeps Python's int->str digit limit out of reach
    return to_text(value)


FUNCTIONS: dict[str, _Function] = {
    "filled": _Function(1, 1, _fn_filled),
    "len": _Function(1, 1, _fn_len),
    "lower": _Function(1, 1, _fn_lower),
    "upper": _Function(1, 1, _fn_upper),
    "contains": _Function(2, 2, _fn_contains),
    "min": _Function(1, None, _fn_min),
    "max": _Function(1, None, _fn_max),
    "round": _Function(1, 2, _fn_round),
    "int": _Function(1, 1, _fn_int),
    "float": _Function(1, 1, _fn_float),
    "str": _Function(1, 1, _fn_str, builds=True),
}


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0

    # -- token helpers

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at_op(self, *ops: str) -> bool:
        return self.token.kind == "op" and self.token.value in ops

    def at_word(self, word: str) -> bool:
        return self.token.kind == "name" and self.token.value == word

    def error(self, message: str, position: int | None = None) -> NoReturn:
        raise ExpressionError(message, self.token.position if position is None else position, self.text)

    def expect_op(self, op: str, what: str) -> _Token:
        if not self.at_op(op):
            self.error(f"expected '{op}' {what}, found {self.describe(self.token)}")
        return self.advance()

    @staticmethod
    def describe(token: _Token) -> str:
        if token.kind == "end":
            return "the end of the expression"
        if token.kind == "string":
            return "a string"
        if token.kind == "number":
            return f"the number {token.value!r}"
        return f"'{token.value}'"

    def node(self, node: _Node) -> _Node:
        # The tree's depth bounds the evaluator's recursion (e.g. a + a + a + ... is a deep
        # left-leaning tree even though nothing is nested in brackets).
        if node.depth > 2 * MAX_DEPTH:
            self.error("expression too deeply nested", node.position)
        return node

    def nest(self, position: int) -> None:
        # Bounds the parser's own recursion: "((((..." or "- - - -...".
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            self.error("expression too deeply nested", position)

    # -- grammar

    def parse(self) -> _Node:
        if self.token.kind == "end":
            self.error("empty expression")
        node = self.parse_or()
        if self.token.kind != "end":
            token = self.token
            if token.kind == "op" and token.value == "(":
                self.error("only the functions " + ", ".join(FUNCTIONS) + " can be called")
            self.error(f"unexpected {self.describe(token)}")
        return node

    def parse_or(self) -> _Node:
        self.nest(self.token.position)
        left = self.parse_and()
        while self.at_word("or"):
            position = self.advance().position
            left = self.node(_BoolOp(position, False, left, self.parse_and()))
        self.nesting -= 1
        return left

    def parse_and(self) -> _Node:
        left = self.parse_not()
        while self.at_word("and"):
            position = self.advance().position
            left = self.node(_BoolOp(position, True, left, self.parse_not()))
        return left

    def parse_not(self) -> _Node:
        if self.at_word("not"):
            position = self.advance().position
            self.nest(position)
            operand = self.parse_not()
            self.nesting -= 1
            return self.node(_Not(position, operand))
        return self.parse_comparison()

    def comparison_op(self) -> str | None:
        token = self.token
        if token.kind == "op" and token.value in ("==", "!=", "<", "<=", ">", ">="):
            return str(token.value)
        if self.at_word("in"):
            return "in"
        if self.at_word("not"):
            following = self.tokens[self.index + 1]
            if following.kind == "name" and following.value == "in":
                return "not in"
        return None

    def parse_comparison(self) -> _Node:
        left = self.parse_sum()
        op = self.comparison_op()
        if op is None:
            return left
        position = self.advance().position
        if op == "not in":
            self.advance()
        right = self.parse_sum()
        if self.comparison_op() is not None:
            self.error("comparisons cannot be chained; combine them with 'and'")
        return self.node(_Compare(position, op, left, right))

    def parse_sum(self) -> _Node:
        left = self.parse_product()
        while self.at_op("+", "-"):
            token = self.advance()
            left = self.node(_Binary(token.position, token.value, left, self.parse_product()))
        return left

    def parse_product(self) -> _Node:
        left = self.parse_unary()
        while self.at_op("*", "/", "%"):
            token = self.advance()
            left = self.node(_Binary(token.position, token.value, left, self.parse_unary()))
        return left

    def parse_unary(self) -> _Node:
        if self.at_op("-", "+"):
            token = self.advance()
            self.nest(token.position)
            operand = self.parse_unary()
            self.nesting -= 1
            # Fold "-5" into a literal so negative numbers cost no node (and no depth).
            if isinstance(operand, _Literal) and _is_number(operand.value):
                value = -operand.value if token.value == "-" else operand.value
                return _Literal(token.position, value)
            return self.node(_Sign(token.position, token.value == "-", operand))
        node = self.parse_atom()
        if self.at_op("["):
            self.error("subscripts are not supported; use dotted names such as slots.size")
        if self.at_op("."):
            self.error("only slots, variables and user_profile have fields")
        return node

    def parse_atom(self) -> _Node:
        token = self.token
        if token.kind in ("number", "string"):
            self.advance()
            return _Literal(token.position, token.value)
        if token.kind == "op":
            if token.value == "(":
                self.advance()
                node = self.parse_or()
                self.expect_op(")", "to close the '(' at position " + str(token.position))
                return node
            if token.value == "[":
                return self.parse_list()
            self.error(f"unexpected {self.describe(token)}")
        if token.kind == "end":
            self.error("unexpected end of the expression")
        return self.parse_name()

    def parse_list(self) -> _Node:
        start = self.advance().position
        items: list[_Node] = []
        while not self.at_op("]"):
            items.append(self.parse_or())
            if not self.at_op(","):
                break
            self.advance()
        self.expect_op("]", f"to close the list at position {start}")
        return self.node(_List(start, tuple(items)))

    def parse_name(self) -> _Node:
        token = self.advance()
        name: str = token.value
        if name == "true":
            return _Literal(token.position, True)
        if name == "false":
            return _Literal(token.position, False)
        if name == "null":
            return _Literal(token.position, None)
        if name in _KEYWORDS:
            self.error(f"unexpected '{name}'", token.position)
        if self.at_op("("):
            return self.parse_call(token)
        if name in FUNCTIONS:
            self.error(f"{name} is a function: call it as {name}(...)", token.position)
        if name not in ROOT_NAMES:
            hint = f"; did you mean {_HINTS[name]}?" if name in _HINTS else ""
            known = ", ".join(sorted(ROOT_NAMES))
            self.error(f"unknown name '{name}'{hint} (names: {known})", token.position)
        fields: list[str] = []
        while self.at_op("."):
            dot = self.advance()
            if name not in MAPPING_ROOTS:
                self.error(
                    f"'{name}' has no fields (only slots, variables and user_profile do)", dot.position
                )
            field = self.token
            if field.kind != "name":
                self.error(f"expected a field name after '.', found {self.describe(field)}")
            if field.value.startswith("_"):
                self.error(f"field names may not start with '_': '{field.value}'")
            self.advance()
            fields.append(field.value)
        return _Path(token.position, name, tuple(fields))

    def parse_call(self, token: _Token) -> _Node:
        name: str = token.value
        function = FUNCTIONS.get(name)
        if function is None:
            self.error(f"unknown function '{name}' (functions: {', '.join(FUNCTIONS)})", token.position)
        self.advance()  # "("
        args: list[_Node] = []
        while not self.at_op(")"):
            args.append(self.parse_or())
            if not self.at_op(","):
                break
            self.advance()
        self.expect_op(")", f"to close the call of {name}()")
        count = len(args)
        if count < function.min_args or (function.max_args is not None and count > function.max_args):
            if function.max_args is None:
                wanted = f"at least {function.min_args}"
            elif function.min_args == function.max_args:
                wanted = str(function.min_args)
            else:
                wanted = f"{function.min_args} to {function.max_args}"
            self.error(f"{name}() takes {wanted} argument(s), got {count}", token.position)
        first = args[0] if args else None
        if name == "filled" and isinstance(first, _Path) and first.root == "slots" and len(first.fields) == 1:
            # filled(slots.size) reads naturally; it means filled('size'), not "is the
            # slot named after size's value filled".
            args[0] = _Literal(first.position, first.fields[0])
        return self.node(_Call(token.position, name, tuple(args)))


# --------------------------------------------------------------------------- public


class Expression:
    """A parsed expression: immutable, cached, and safe to evaluate any number of times."""

    __slots__ = ("_root", "names", "paths", "text")

    def __init__(self, text: str, root: _Node) -> None:
        self.text = text
        self._root = root
        paths = _paths(root)
        #: The dotted references it reads, e.g. {"slots.size", "intent"} (filled('x') reads "slots.x").
        self.paths: frozenset[str] = frozenset(paths)
        #: The root names it reads, e.g. {"slots", "intent"}.
        self.names: frozenset[str] = frozenset(path.partition(".")[0] for path in paths)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """The expression's value with ``env`` supplying the root names (missing ones are null).

        Raises :class:`ExpressionEvalError` when it fails; never anything else.
        """
        try:
            return self._root.evaluate(env)
        except ExpressionEvalError:
            raise
        except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
            # A safety net: every operation checks its operands, but values from the
            # environment can be anything, and a failing turn is worse than a failed expression.
            raise ExpressionEvalError(f"{type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def _paths(node: _Node) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, _Path):
            found.add(current.dotted)
        elif isinstance(current, _Call):
            if current.name == "filled":
                argument = current.args[0]
                if isinstance(argument, _Literal) and isinstance(argument.value, str):
                    found.add(f"slots.{argument.value}")
                else:
                    found.add("slots")
            stack.extend(current.args)
        elif isinstance(current, _List):
            stack.extend(current.items)
        elif isinstance(current, _Not | _Sign):
            stack.append(current.operand)
        elif isinstance(current, _BoolOp | _Binary | _Compare):
            stack.extend((current.left, current.right))
    return found


def parse_expression(text: str) -> Expression:
    """Parse ``text``; raises :class:`ExpressionError` (with a position) when it is not valid.

    Results are cached by text, so the interpreter can call this on every evaluation.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}", 0)
    return _parse_cached(text)


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str) -> Expression:
    # lru_cache does not cache exceptions: an invalid expression is re-parsed (and
    # re-rejected) each time, which only happens when a flow was not validated on load.
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters", 0, text)
    return Expression(text, _Parser(text).parse())
