"""Typed readers of YAML nodes, the primitives every section of a flow file is read with.

The YAML is composed into nodes (``yaml.compose``), not loaded into plain Python
values, and records are built from the nodes: that way every error names the line it
is about, and the schema decides how a scalar is read. Where the format expects text,
a scalar is taken as written, so YAML 1.1's ``yes``/``no``/``on``/``off`` and numbers
stay text; where it expects a number or a boolean, only those are accepted.

:class:`NodeReader` collects errors and warnings instead of raising, so one pass
reports every problem of a file; each reader returns ``None`` on a problem it reported.
:func:`compose` parses the text and turns the YAML parser's own messages into ones that
say what is likely wrong (indentation, a tab, an unquoted colon).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

T = TypeVar("T")

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT = (_TAG + t for t in ("null", "bool", "int", "float"))
# libyaml's composer when available (several times faster); it gives the same nodes and marks.
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class FlowFileError(ValueError):
    """One problem in a flow file, at a line: ``str()`` is ``PATH:LINE: MESSAGE``.

    ``line`` is 1-based; 0 means the problem is not at any one line (an unreadable
    file, a missing directory), and ``str()`` is then ``PATH: MESSAGE``.
    """

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        # All three go to ValueError so that the exception pickles (it crosses processes).
        super().__init__(str(path), line, message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class FlowWarning:
    """Something probably wrong that does not stop the flow from loading."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: warning: {self.message}"


Fields = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


@dataclass(frozen=True, slots=True)
class Ref:
    """A name used somewhere, checked once everything is read (states may come after their use)."""

    name: str
    node: Node
    where: str


def line_of(node: Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def found(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (null)"
    return repr(node.value)


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def a_kind(word: str) -> str:
    """``word`` after its indefinite article, in a message: "a text", "an integer", "an enum"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def listing(names: Sequence[str]) -> str:
    """Known names, in a message, when there are few enough to read."""
    if not names:
        return " (none are declared)"
    return f" (declared: {', '.join(names)})" if len(names) <= 12 else ""


def at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class NodeReader:
    """Reads nodes of one file, collecting every error and warning it finds."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[FlowFileError] = []
        self.warnings: list[FlowWarning] = []
        # Constructs the few values taken as YAML types (numbers, booleans, media mappings).
        self._constructor = yaml.SafeLoader("")

    def error(self, node: Node | None, message: str) -> None:
        self.errors.append(FlowFileError(self.path, line_of(node), message))

    def warn(self, node: Node | None, message: str) -> None:
        self.warnings.append(FlowWarning(self.path, line_of(node), message))

    def fields(
        self,
        node: Node,
        where: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
        null_ok: bool = False,
    ) -> Fields | None:
        """A mapping with known keys; ``null_ok``: nothing at all reads as an empty mapping."""
        if null_ok and is_null(node):
            return {}
        entries = self.mapping_entries(node, where)
        if entries is None:
            return None
        fields: Fields = {}
        for key, entry in entries.items():
            if key in allowed:
                fields[key] = entry
            else:
                self.error(
                    entry[0],
                    at(
                        where,
                        f"unknown key {key!r}{suggest(key, allowed)} (expected one of: {', '.join(allowed)})",
                    ),
                )
        for key in required:
            if key not in entries:
                self.error(node, at(where, f"missing required key {key!r}"))
        return fields

    def mapping_entries(self, node: Node, where: str) -> Fields | None:
        if not isinstance(node, MappingNode):
            self.error(node, at(where, f"expected a mapping, found {found(node)}"))
            return None
        return self.entries(node, where)

    def entries(self, node: MappingNode, where: str) -> Fields:
        """The mapping's entries by key text; merge keys (``<<: *anchor``) are applied."""
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.error(node, at(where, f"invalid merge: {exc.problem}"))
        entries: Fields = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or is_null(key):
                self.error(key, at(where, f"a key must be a name, found {found(key)}"))
                continue
            if key.value in entries:
                first = line_of(entries[key.value][0])
                self.error(key, at(where, f"{key.value!r} appears twice (first on line {first})"))
                continue
            entries[key.value] = (key, value)
        return entries

    def named(self, top: Fields, section: str, build: Callable[[str, Node, Node], T | None]) -> dict[str, T]:
        """A by-name section (intents, slots, states, experiments)."""
        if section not in top:
            return {}
        result: dict[str, T] = {}
        for name, (key, value) in (self.mapping_entries(top[section][1], section) or {}).items():
            if not name:
                self.error(key, f"{section}: a name must not be empty")
                continue
            built = build(name, key, value)
            if built is not None:
                result[name] = built
        return result

    def get(self, fields: Fields, key: str, where: str, read: Callable[[Node, str], T | None]) -> T | None:
        entry = fields.get(key)
        return None if entry is None else read(entry[1], join(where, key))

    def items(self, node: Node, where: str) -> list[Node] | None:
        if isinstance(node, SequenceNode):
            return list(node.value)
        hint = f"; write [{node.value}]" if isinstance(node, ScalarNode) and not is_null(node) else ""
        self.error(node, at(where, f"expected a list, found {found(node)}{hint}"))
        return None

    def each(self, node: Node, where: str, read: Callable[[Node, str], T | None]) -> tuple[T, ...] | None:
        items = self.items(node, where)
        if items is None:
            return None
        built = (read(item, f"{where}[{i}]") for i, item in enumerate(items))
        return tuple(b for b in built if b is not None)

    def text(
        self,
        node: Node,
        where: str,
        refs: list[Ref] | None = None,
        check: Callable[[str, Node, str], None] | None = None,
    ) -> str | None:
        """A scalar as written; ``refs``: record it as a reference, ``check``: validate it."""
        if not isinstance(node, ScalarNode) or is_null(node):
            # A template starting with {{ or a list-like text, unquoted, is read by YAML as a mapping/list.
            hint = "; quote text that starts with { or [" if getattr(node, "flow_style", False) else ""
            self.error(node, at(where, f"expected text, found {found(node)}{hint}"))
            return None
        if refs is not None and node.value:
            refs.append(Ref(node.value, node, where))
        if check is not None:
            check(node.value, node, where)
        return str(node.value)

    def text_list(
        self,
        node: Node,
        where: str,
        refs: list[Ref] | None = None,
        check: Callable[[str, Node, str], None] | None = None,
    ) -> tuple[str, ...] | None:
        items = self.items(node, where)
        if items is None:
            return None
        texts = (self.text(item, f"{where}[{i}]", refs, check) for i, item in enumerate(items))
        return tuple(t for t in texts if t is not None)

    def name(self, node: Node, where: str) -> str | None:
        value = self.text(node, where)
        if value == "":
            self.error(node, f"{where}: must not be empty")
            return None
        return value

    def boolean(self, node: Node, where: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self._constructor.construct_yaml_bool(node))
        self.error(node, at(where, f"expected true or false, found {found(node)}"))
        return None

    def integer(self, node: Node, where: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return int(self._constructor.construct_yaml_int(node))
        self.error(node, at(where, f"expected a whole number, found {found(node)}"))
        return None

    def number(self, node: Node, where: str) -> float | None:
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            value = float(self._constructor.construct_object(node))
            if value == value:  # NaN compares with nothing: no bound or weight can use it
                return value
        self.error(node, at(where, f"expected a number, found {found(node)}"))
        return None

    def plain_mapping(self, node: Node, where: str) -> dict[str, Any] | None:
        """A mapping as plain Python values (YAML's own types), for options passed on as they are."""
        if not isinstance(node, MappingNode):
            self.error(node, at(where, f"expected a mapping, found {found(node)}"))
            return None
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, f"{where}: {exc}")
            return None
        return dict(value)

    def at_least(self, f: Fields, key: str, where: str, value: float | None, low: float) -> None:
        if value is not None and value < low:
            self.error(f[key][1], f"{where}.{key}: must be >= {low:g}, found {value:g}")


# --- parsing, with messages that say what is likely wrong ---------------------------------------------


def compose(text: str, path: str) -> Node | None:
    """The root node of ``text`` (None when it is empty); raises :class:`FlowFileError` when
    it is not YAML, with a hint at the usual cause before the parser's own words."""
    try:
        root: Node | None = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        lines = text.splitlines()
        # At the end of the file, the mark is past the last line: point at the last one.
        line = min(mark.line + 1, len(lines) or 1) if mark is not None else 0
        source = lines[line - 1] if 0 < line <= len(lines) else ""
        detail = f"{exc.context}, {exc.problem}" if exc.context else str(exc.problem)
        column = mark.column if mark is not None else 0
        at_mark = source[column : column + 1]
        hint = yaml_hint(str(exc.problem or ""), str(exc.context or ""), source, at_mark)
        message = f"invalid YAML: {hint} (the parser says: {detail})" if hint else f"invalid YAML: {detail}"
        raise FlowFileError(path, line, message) from None
    except yaml.YAMLError as exc:
        raise FlowFileError(path, 0, f"invalid YAML: {exc}") from None
    return root


def yaml_hint(problem: str, context: str, line: str, at_mark: str = "") -> str:
    """What a YAML parser message most likely means for ``line`` (``at_mark``: the character the
    parser stopped at), or "" when there is no good guess."""
    if "\t" in line and ("cannot start any token" in problem or "tab" in problem):
        return "this line has a tab; YAML is indented with spaces only"
    if "cannot start any token" in problem:
        if at_mark in ("`", "@", "%"):
            return f"text starting with {at_mark} must be in quotes"
        return "unusual character at the start of a value; put the text in quotes"
    if "mapping values are not allowed" in problem:
        _, _, value = line.partition(": ")
        if ": " in value or value.rstrip().endswith(":"):
            return 'a colon inside unquoted text; put the text in quotes (text: "Note: ...")'
        return "a key is indented deeper than the line above it, or a colon is missing on that line"
    if "expected <block end>" in problem or "did not find expected key" in problem:
        return "the indentation of this line does not match the lines above it"
    if "could not find expected ':'" in problem:
        return "a line that is not `key: value`: a missing colon, or text going on without quotes"
    if "found undefined alias" in problem:
        return "an *alias that no &anchor defines"
    if "expected ',' or '}'" in problem or "expected ',' or ']'" in problem:
        return "an inline {...} or [...] is not closed, or holds text with a comma or colon that needs quotes"
    if "unknown escape character" in problem:
        return "a backslash in double quotes; use single quotes for regular expressions ('\\d+')"
    if "end of stream" in problem and "quoted" in context:
        return "a quote is opened and never closed"
    return ""
