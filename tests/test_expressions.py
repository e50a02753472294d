"""The flow expression language: parsing, evaluation, whitelists and resource caps."""

from __future__ import annotations

import contextlib
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confab.runtime.flows.language.expressions import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_SIZE,
    ExpressionError,
    ExpressionEvalError,
    parse_expression,
    to_text,
)

ENV: dict[str, Any] = {
    "slots": {"size": "large", "quantity": 3, "email": None, "tags": ["a", "b"], "name": "Ana"},
    "variables": {"total": 28.5, "nested": {"deep": {"value": 7}}, "zero": 0},
    "user_profile": {"name": "Ana", "address": {"city": "Lisbon"}},
    "intent": "order",
    "confidence": 0.87,
    "message": "I want a LARGE pizza",
    "channel": "web",
    "message_count": 4,
    "error_count": 1,
    "state": "take_order",
}


def ev(text: str, env: dict[str, Any] | None = None) -> Any:
    return parse_expression(text).evaluate(ENV if env is None else env)


def parse_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    return info.value


def eval_error(text: str, env: dict[str, Any] | None = None) -> ExpressionEvalError:
    expression = parse_expression(text)
    with pytest.raises(ExpressionEvalError) as info:
        expression.evaluate(ENV if env is None else env)
    return info.value


# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("0", 0),
        ("3.5", 3.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-7", -7),
        ("'single'", "single"),
        ('"double"', "double"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'a\nb\tc\\d'", "a\nb\tc\\d"),
        (r"'\u00e9'", "é"),
        ("''", ""),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[]", []),
        ("[1, 'two', null, [3]]", [1, "two", None, [3]]),
        ("[1, 2,]", [1, 2]),
    ],
)
def test_literals(text: str, value: Any) -> None:
    result = ev(text)
    assert result == value
    assert type(result) is type(value)


def test_list_literals_are_fresh_each_evaluation() -> None:
    expression = parse_expression("[1, 2]")
    first = expression.evaluate(ENV)
    first.append(3)
    assert expression.evaluate(ENV) == [1, 2]


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("'abc", 0, "unterminated string"),
        ('1 + "abc', 4, "unterminated string"),
        (r"'a\qb'", 2, "unknown escape"),
        (r"'\u12'", 1, "4 hexadecimal digits"),
        ("12abc", 0, "invalid number"),
        ("1 $ 2", 2, "unexpected character '$'"),
        ("", 0, "empty expression"),
        ("   ", 3, "empty expression"),
        ("True", 0, "did you mean true"),
        ("None", 0, "did you mean null"),
    ],
)
def test_literal_errors(text: str, position: int, fragment: str) -> None:
    error = parse_error(text)
    assert fragment in error.message
    assert error.position == position
    assert f"position {position}" in str(error)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("slots.size", "large"),
        ("slots.quantity", 3),
        ("variables.total", 28.5),
        ("variables.nested.deep.value", 7),
        ("user_profile.name", "Ana"),
        ("user_profile.address.city", "Lisbon"),
        ("intent", "order"),
        ("confidence", 0.87),
        ("message", "I want a LARGE pizza"),
        ("channel", "web"),
        ("message_count", 4),
        ("error_count", 1),
        ("state", "take_order"),
        ("slots", ENV["slots"]),
    ],
)
def test_names(text: str, value: Any) -> None:
    assert ev(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "slots.missing",
        "variables.nope",
        "user_profile.address.street",
        "user_profile.address.city.more",  # a field of a string
        "slots.size.length",
        "variables.nested.deep.value.x",
        "slots.email",  # present, null
    ],
)
def test_missing_names_are_null(text: str) -> None:
    assert ev(text) is None


def test_root_names_missing_from_the_environment_are_null() -> None:
    assert ev("intent", {}) is None
    assert ev("slots.size", {}) is None
    assert ev("slots.size", {"slots": None}) is None
    assert ev("slots.size", {"slots": ["not", "a", "mapping"]}) is None


def test_names_and_paths() -> None:
    expression = parse_expression("slots.size == 'large' and variables.total > 10 or filled('email')")
    assert expression.names == {"slots", "variables"}
    assert expression.paths == {"slots.size", "variables.total", "slots.email"}
    assert parse_expression("1 + 2").names == frozenset()
    assert parse_expression("intent == 'x' and channel != 'sms'").names == {"intent", "channel"}
    assert parse_expression("filled(slots.size)").paths == {"slots.size"}
    assert parse_expression("filled(intent)").paths == {"slots", "intent"}
    assert parse_expression("[user_profile.name, -message_count]").names == {"user_profile", "message_count"}


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("size", 0, "unknown name 'size'"),
        ("slots.size + price", 13, "unknown name 'price'"),
        ("intent.name", 6, "'intent' has no fields"),
        ("slots.", 6, "expected a field name"),
        ("slots.1", 6, "expected a field name"),
        ("slots._hidden", 6, "may not start with '_'"),
        ("slots.__class__", 6, "may not start with '_'"),
        ("variables.x.__dict__", 12, "may not start with '_'"),
        ("user_profile.__class__.__mro__", 13, "may not start with '_'"),
        ("len", 0, "len is a function"),
    ],
)
def test_name_errors(text: str, position: int, fragment: str) -> None:
    error = parse_error(text)
    assert fragment in error.message
    assert error.position == position


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),  # left associative
        ("2 * 3 % 4", 2),  # (2 * 3) % 4
        ("20 / 5 / 2", 2.0),
        ("7 / 2", 3.5),
        ("7 % 3", 1),
        ("-7 % 3", 2),  # Python's sign rule
        ("7.5 % 2", 1.5),
        ("-2 * 3", -6),
        ("- (2 + 3)", -5),
        ("--2", 2),
        ("+3", 3),
        ("-slots.quantity", -3),
        ("slots.quantity * 9.5", 28.5),
        ("1 + 2 == 3", True),
        ("2 * 3 > 5 and 1 < 2", True),
        ("'ab' + 'cd'", "abcd"),
        ("'ab' * 3", "ababab"),
        ("3 * 'ab'", "ababab"),
        ("'ab' * 0", ""),
        ("'ab' * -1", ""),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("[0] * 3", [0, 0, 0]),
        ("variables.total + 1.5", 30.0),
    ],
)
def test_arithmetic_and_precedence(text: str, value: Any) -> None:
    assert ev(text) == value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1 / 0", "division by zero"),
        ("1 / variables.zero", "division by zero"),
        ("1.5 / 0.0", "division by zero"),
        ("5 % 0", "modulo by zero"),
        ("'a' * [1]", "cannot multiply a string by a list"),
        ("'a' + 1", "cannot add a string and a number"),
        ("1 + 'a'", "use str()"),
        ("[1] + 'a'", "cannot add a list and a string"),
        ("true + 1", "cannot add a boolean and a number"),
        ("slots.missing + 1", "cannot add a null and a number"),
        ("'a' - 'b'", "cannot subtract"),
        ("'a' / 2", "cannot divide"),
        ("'%s' % 1", "modulo"),  # no string formatting
        ("-'a'", "unary -"),
        ("+null", "unary +"),
        ("'a' * 1.5", "cannot multiply"),
        ("'a' * true", "cannot multiply"),
    ],
)
def test_arithmetic_type_errors(text: str, fragment: str) -> None:
    assert fragment in eval_error(text).message


def test_eval_error_position_points_at_the_failing_operator() -> None:
    error = eval_error("1 + (2 / 0)")
    assert error.position == 7
    assert str(error) == "division by zero"


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("'a' == 'a'", True),
        ("'a' != 'b'", True),
        ("null == null", True),
        ("slots.missing == null", True),
        ("slots.size != null", True),
        ("[1, 2] == [1, 2]", True),
        ("1 == '1'", False),
        ("2 < 3", True),
        ("3 <= 3", True),
        ("4 > 3.5", True),
        ("3 >= 4", False),
        ("'apple' < 'banana'", True),
        ("[1, 2] < [1, 3]", True),
        ("slots.quantity >= 3", True),
        ("slots.missing > 5", False),  # ordering with null is false...
        ("slots.missing < 5", False),
        ("null <= null", False),
        ("not slots.missing > 5", True),
    ],
)
def test_comparisons(text: str, value: bool) -> None:
    assert ev(text) is value


@pytest.mark.parametrize("text", ["1 < 'a'", "'a' >= 2", "[1] < 'a'", "true < 2", "[1, 'a'] < [1, 2]"])
def test_ordering_mixed_types_fails(text: str) -> None:
    assert "compare" in eval_error(text).message


def test_comparisons_cannot_be_chained() -> None:
    error = parse_error("1 < 2 < 3")
    assert "cannot be chained" in error.message
    assert error.position == 6


# --------------------------------------------------------------------------- logic


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true and true", True),
        ("true and false", False),
        ("false or true", True),
        ("not true", False),
        ("not null", True),
        ("not ''", True),
        ("not []", True),
        ("not 0", True),
        ("not 'x'", False),
        ("not not 5", True),
        ("slots.name or 'friend'", "Ana"),
        ("slots.missing or 'friend'", "friend"),
        ("'' or 0 or null", None),
        ("slots.size and slots.quantity", 3),
        ("0 and 1 / 0", 0),  # short-circuit: the division is never evaluated
        ("1 or 1 / 0", 1),
        ("false and 1 / 0", False),
        ("true or false and false", True),  # and binds tighter than or
        ("not 1 == 2", True),  # not binds looser than ==
        ("not false and false", False),  # (not false) and false
    ],
)
def test_logic_and_truthiness(text: str, value: Any) -> None:
    assert ev(text) == value
    assert type(ev(text)) is type(value)


def test_short_circuit_still_fails_when_the_right_side_runs() -> None:
    assert "division by zero" in eval_error("1 and 1 / 0").message


# --------------------------------------------------------------------------- in


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'LARGE' in message", True),
        ("'large' in message", False),
        ("'pizza' not in message", False),
        ("'a' in slots.tags", True),
        ("'c' in slots.tags", False),
        ("'c' not in slots.tags", True),
        ("slots.size in ['small', 'large']", True),
        ("3 in [1, 2, 3]", True),
        ("'size' in slots", True),
        ("'colour' in slots", False),
        ("'x' in slots.missing", False),  # null haystack
        ("'x' not in slots.missing", True),
        ("[1] in [[1], [2]]", True),
        ("[1] in slots", False),  # unhashable key: not there
        ("'' in 'abc'", True),
        ("not 'a' in slots.tags", False),
    ],
)
def test_in(text: str, value: bool) -> None:
    assert ev(text) is value


@pytest.mark.parametrize(
    ("text", "fragment"), [("1 in 'abc'", "number in a string"), ("1 in 2", "in a number")]
)
def test_in_type_errors(text: str, fragment: str) -> None:
    assert fragment in eval_error(text).message


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("filled('size')", True),
        ("filled('email')", False),  # present but null
        ("filled('missing')", False),
        ("filled(slots.size)", True),  # means filled('size')
        ("filled(slots.email)", False),
        ("filled('si' + 'ze')", True),
        ("len('abc')", 3),
        ("len([1, 2])", 2),
        ("len(slots)", 5),
        ("len(slots.missing)", 0),
        ("len('')", 0),
        ("lower('AbC')", "abc"),
        ("upper(slots.size)", "LARGE"),
        ("lower(slots.missing)", None),
        ("upper(null)", None),
        ("contains(message, 'LARGE')", True),
        ("contains(lower(message), 'large')", True),
        ("contains(slots.tags, 'b')", True),
        ("contains(slots.missing, 'b')", False),
        ("contains(slots, 'size')", True),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("min([4, 2.5])", 2.5),
        ("max(['a', 'c', 'b'])", "c"),
        ("max(slots.quantity, 10)", 10),
        ("round(2.567, 2)", 2.57),
        ("round(2.4)", 2),
        ("round(1234, -2)", 1200),
        ("round(null)", None),
        ("int('42')", 42),
        ("int(' 7 ')", 7),
        ("int('3.9')", 3),
        ("int(3.9)", 3),
        ("int(-3.9)", -3),
        ("int(true)", 1),
        ("int(null)", None),
        ("float('2.5')", 2.5),
        ("float(2)", 2.0),
        ("float(null)", None),
        ("str(42)", "42"),
        ("str(2.5)", "2.5"),
        ("str(null)", ""),
        ("str(true)", "true"),
        ("str('x')", "x"),
        ("str([1, 'a', null])", '[1, "a", null]'),
        ("str(user_profile.address)", '{"city": "Lisbon"}'),
        ("'Total: ' + str(variables.total)", "Total: 28.5"),
    ],
)
def test_functions(text: str, value: Any) -> None:
    result = ev(text)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("filled(3)", "slot name"),
        ("len(3)", "len() of a number"),
        ("lower(3)", "lower() of a number"),
        ("upper([1])", "upper() of a list"),
        ("min([])", "empty list"),
        ("min(5)", "single number"),
        ("max(1, 'a')", "all numbers or all strings"),
        ("min(1, null)", "all numbers or all strings"),
        ("round('a')", "round() of a string"),
        ("round(1.5, 'x')", "digits"),
        ("round(1.5, 99)", "digits"),
        ("int('abc')", "not a number"),
        ("int([1])", "int() of a list"),
        ("float('1,5')", "not a number"),
        ("float('inf')", "not a finite number"),
        ("float('nan')", "not a finite number"),
        ("int('" + "9" * 200 + "')", "too long"),
        ("contains(5, 1)", "in a number"),
    ],
)
def test_function_errors(text: str, fragment: str) -> None:
    assert fragment in eval_error(text).message


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("__import__('os')", 0, "unknown function '__import__'"),
        ("eval('1')", 0, "unknown function 'eval'"),
        ("open('/etc/passwd')", 0, "unknown function 'open'"),
        ("getattr(slots, 'x')", 0, "unknown function 'getattr'"),
        ("1 + exec('x')", 4, "unknown function 'exec'"),
        ("len()", 0, "takes 1 argument(s), got 0"),
        ("len(1, 2)", 0, "takes 1 argument(s), got 2"),
        ("contains('a')", 0, "takes 2 argument(s)"),
        ("round(1, 2, 3)", 0, "takes 1 to 2 argument(s)"),
        ("min()", 0, "at least 1"),
        ("filled(size)", 7, "unknown name 'size'"),
        ("len(1", 5, "expected ')'"),
        ("slots.size(1)", 10, "only the functions"),
        ("(len)(1)", 1, "len is a function"),
    ],
)
def test_call_errors(text: str, position: int, fragment: str) -> None:
    error = parse_error(text)
    assert fragment in error.message
    assert error.position == position


# --------------------------------------------------------------------------- rejected syntax


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("lambda: 1", 6, "unexpected character ':'"),
        ("lambda x: x", 8, "unexpected character ':'"),
        ("[x for x in slots]", 1, "unknown name 'x'"),
        ("[s for s in slots.tags]", 1, "unknown name 's'"),
        ("slots['size']", 5, "subscripts are not supported"),
        ("slots.tags[0]", 10, "subscripts are not supported"),
        ("'abc'[0]", 5, "subscripts are not supported"),
        ("'abc'.upper()", 5, "only slots, variables and user_profile have fields"),
        ("(slots).size", 7, "only slots, variables and user_profile have fields"),
        ("().__class__", 1, "unexpected ')'"),
        ("2 ** 10", 2, "'**' is not supported"),
        ("7 // 2", 2, "'//' is not supported"),
        ("a == 1", 0, "unknown name 'a'"),
        ("slots.x = 1", 8, "use '=='"),
        ("!true", 0, "use 'not'"),
        ("true && false", 5, "use 'and'"),
        ("true || false", 5, "use 'or'"),
        ("1 if true else 2", 2, "unexpected 'if'"),
        ("1 2", 2, "unexpected the number 2"),
        ("(1 + 2", 6, "to close the '(' at position 0"),
        ("[1, 2", 5, "to close the list"),
        ("1 +", 3, "unexpected end"),
        ("and 1", 0, "unexpected 'and'"),
        ("1 + not 2", 4, "unexpected 'not'"),
        ("{'a': 1}", 0, "unexpected character '{'"),
        ("x.y", 0, "unknown name 'x'"),
        ("`ls`", 0, "unexpected character '`'"),
        ("slots.size; 1", 10, "unexpected character ';'"),
    ],
)
def test_rejected_syntax(text: str, position: int, fragment: str) -> None:
    error = parse_error(text)
    assert fragment in error.message, error.message
    assert error.position == position
    assert error.text == text


def test_non_string_expression() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        parse_expression(True)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="must be a string"):
        parse_expression(["x"])  # type: ignore[arg-type]


def test_no_python_evaluation_is_used() -> None:
    # The module must not reach for eval/exec/compile (the whole point of the language).
    import inspect
    import re

    import confab.runtime.flows.language.expressions as module

    source = inspect.getsource(module)
    assert not re.search(r"(?<![\w.])(eval|exec|compile|__import__)\(", source)
    assert not re.search(r"^\s*(import|from) (ast|builtins)\b", source, re.MULTILINE)


# --------------------------------------------------------------------------- caps


def test_expression_length_is_capped() -> None:
    parse_expression("1" + " " * (MAX_EXPRESSION_LENGTH - 1))
    error = parse_error("1" + " " * MAX_EXPRESSION_LENGTH)
    assert "longer than" in error.message


def test_nesting_is_capped() -> None:
    assert ev("(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1)) == 1
    error = parse_error("(" * 200 + "1" + ")" * 200)
    assert "too deeply nested" in error.message
    assert "too deeply nested" in parse_error("[" * 200 + "]" * 200).message
    assert "too deeply nested" in parse_error("not " * 200 + "true").message
    assert "too deeply nested" in parse_error("- " * 300 + "1").message
    assert "too deeply nested" in parse_error("len(" * 100 + "'x'" + ")" * 100).message


def test_long_operator_chains_are_capped() -> None:
    # Flat in the source but a deep tree: bounded so evaluation cannot exhaust the stack.
    assert ev(" + ".join(["1"] * 50)) == 50
    assert "too deeply nested" in parse_error("+".join(["1"] * 400)).message
    assert "too deeply nested" in parse_error("and".join(["[]"] * 150)).message


def test_string_and_list_growth_fails_fast() -> None:
    # Refused before the result is built: a gigabyte string would need a gigabyte of memory,
    # so the memory the refusals take bounds the work done (on any machine, at any speed).
    tracemalloc.start()
    try:
        assert "longer than" in eval_error("'x' * 1000000000").message
        assert "longer than" in eval_error("[1] * 1000000000").message
        assert "longer than" in eval_error("1000000000 * 'xy'").message
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert len(ev(f"'x' * {MAX_SIZE}")) == MAX_SIZE
    assert "longer than" in eval_error(f"'x' * {MAX_SIZE} + 'y'").message
    assert "longer than" in eval_error(f"[0] * {MAX_SIZE} + [1]").message
    assert ev("'' * 100000000000000000000000000000000") == ""


def test_growth_through_the_environment_is_capped() -> None:
    # A value a previous `set` stored cannot be doubled without bound, one turn at a time.
    env = {"variables": {"s": "x" * 6000, "n": 2**200}}
    assert "longer than" in eval_error("variables.s + variables.s", env).message
    assert "too large" in eval_error("variables.n * variables.n", env).message


def test_numbers_are_capped() -> None:
    assert "too large" in parse_error("9" * 100).message
    assert "too large" in parse_error("1e999").message
    assert "too large" in eval_error(" * ".join(["1000000000000"] * 10)).message
    assert "too large" in eval_error("1e300 * 1e300").message
    assert "too large" in eval_error("round(1e300)").message
    assert "too large" in eval_error("int(1e300)").message


def test_long_message_functions_do_not_fail() -> None:
    # lower()/len()/contains() only mirror their input: a long user message is not an error.
    env = {"message": "Pizza " * 5000}
    assert ev("contains(lower(message), 'pizza')", env) is True
    assert ev("len(message)", env) == 30000


def test_evaluation_never_raises_anything_but_eval_errors() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise TypeError("no comparing me")

        __hash__ = object.__hash__

    env = {"slots": {"w": Weird()}}
    error = eval_error("slots.w == 1", env)
    assert "TypeError" in error.message


# --------------------------------------------------------------------------- misc


def test_parsing_is_cached_and_expressions_are_reusable() -> None:
    first = parse_expression("slots.quantity * 2")
    assert parse_expression("slots.quantity * 2") is first
    assert first.evaluate({"slots": {"quantity": 2}}) == 4
    assert first.evaluate({"slots": {"quantity": 5}}) == 10
    assert repr(first) == "Expression('slots.quantity * 2')"


def test_docs_examples() -> None:
    # The expressions docs/flows.md shows.
    assert ev("slots.quantity * 9.5", {"slots": {"quantity": 2}}) == 19.0


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (2.5, "2.5"),
        ("s", "s"),
        ([1, None], "[1, null]"),
    ],
)
def test_to_text(value: Any, text: str) -> None:
    assert to_text(value) == text


def test_whitespace_and_newlines_are_ignored() -> None:
    assert ev("\n  slots.quantity\n  *\t2\n") == 6


# --------------------------------------------------------------------------- fuzzing

_PIECES = [
    "slots.size", "slots.quantity", "variables.total", "user_profile.name", "intent", "message",
    "1", "0", "2.5", "'a'", '"b"', "true", "null", "[", "]", "(", ")", ",", ".", "+", "-", "*",
    "/", "%", "==", "<", ">=", "and", "or", "not", "in", "len(", "filled(", "min(", "str(",
    "round(", "int(", "contains(", "'x' * ", "__class__", "[1, 2]", "\\", "'", " ",
]  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.text(max_size=20))
@settings(max_examples=400, deadline=None)
def test_fuzz_only_expression_errors(pieces: list[str], noise: str) -> None:
    for text in (" ".join(pieces), "".join(pieces), noise):
        try:
            expression = parse_expression(text)
        except ExpressionError as error:
            assert 0 <= error.position <= len(text)
            continue
        with contextlib.suppress(ExpressionEvalError):
            expression.evaluate(ENV)
