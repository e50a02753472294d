"""Reads flow files (the format is ``docs/flows.md``) into :mod:`.document` records, strictly.

The YAML is composed into nodes (``yaml.compose``), not loaded into plain Python
values, and the records are built from the nodes: that way every error names the
line it is about, and the schema decides how a scalar is read. Where the format
expects text, a scalar is taken as written, so YAML 1.1's ``yes``/``no``/``on``/
``off`` and numbers stay text (``keywords: [yes, no]``, ``payloads: [YES]``,
``version: 3``); where it expects a number or a boolean, only those are accepted.

Checks, each reported with the line it is about (:class:`FlowFileError`):

* the structure: unknown keys (with "did you mean"), duplicate keys, required keys
  (``flow``, ``settings.start``, ``states``, a slot's ``type``, a transition's ``to``),
  the type of every value, exactly one key per action;
* values: slot types, button types, channel names, ranges (``intent_threshold`` in
  [0, 1], ``max_fallbacks``/``max_attempts`` >= 1, ``session_ttl_s`` >= 0, experiment
  weights > 0, ``minimum`` <= ``maximum``), regular expressions compile, every
  expression (``when``, ``set``) and template (texts, titles, urls, prompts,
  reprompts) parses, media/location keys are the proto's field names;
* references: states (``start``, ``fallback_state``, ``to``, ``on_max_attempts``,
  experiment swaps), intents, slots (``collect``, ``carry_over_slots``, ``set``/``clear``
  targets) and response ``variants`` (an experiment's variant) exist.

Warnings (:class:`FlowWarning`) do not stop a flow from loading: a state unreachable
from ``start`` (a state an experiment swaps in counts as reachable when the state it
replaces is), an intent that can never match, a terminal state with transitions.

Entry points: :func:`load_flow_file` (one file; raises the first error),
:func:`check_flow_file` (one file; every error and warning), :func:`load_flow_dirs`
and :func:`load_flow_paths` (many files: invalid ones are reported and skipped).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .document import (
    BUTTON_TYPES,
    SLOT_TYPES,
    ActionSpec,
    ButtonSpec,
    CardSpec,
    ExperimentSpec,
    FlowDocument,
    FlowSettings,
    IntentSpec,
    QuickReplySpec,
    ResponseSpec,
    SlotSpec,
    StateSpec,
    TransitionSpec,
    WebhookSpec,
)
from .expressions import ExpressionError, parse_expression
from .templates import TemplateError, compile_template

T = TypeVar("T")

FLOW_SUFFIXES = (".yaml", ".yml")
# The wire's Channel enum names, lower case without CHANNEL_ (grpc_edge.convert.CHANNELS).
CHANNELS = ("web", "whatsapp", "messenger", "slack", "teams", "voice", "sms")

TOP_KEYS = (
    "flow",
    "version",
    "tenant",
    "description",
    "settings",
    "intents",
    "slots",
    "routes",
    "states",
    "experiments",
)
SETTINGS_KEYS = (
    "start",
    "fallback_state",
    "max_fallbacks",
    "fallback_response",
    "intent_threshold",
    "session_ttl_s",
    "carry_over_slots",
    "handoff_response",
)
INTENT_KEYS = ("payloads", "keywords", "patterns", "examples")
SLOT_KEYS = (
    "type",
    "prompt",
    "reprompts",
    "max_attempts",
    "on_max_attempts",
    "choices",
    "minimum",
    "maximum",
    "pattern",
)
STATE_KEYS = ("on_enter", "collect", "transitions", "terminal")
TRANSITION_KEYS = ("to", "intent", "when", "actions")
ACTION_KEYS = ("say", "set", "clear", "handoff", "webhook")
WEBHOOK_KEYS = ("name", "store_as", "on_failure")
RESPONSE_KEYS = ("text", "quick_replies", "buttons", "cards", "media", "location", "channels", "variants")
QUICK_REPLY_KEYS = ("title", "payload")
BUTTON_KEYS = ("title", "type", "payload", "url")
CARD_KEYS = ("title", "subtitle", "image_url", "buttons")
EXPERIMENT_KEYS = ("weights", "states")
# MediaContent / LocationContent field names (protos/mcp_engine.proto): `media` and
# `location` are passed through to the proto, so a misspelt key would be lost silently.
MEDIA_FIELDS = (
    "url",
    "secure_url",
    "mime_type",
    "size_bytes",
    "duration_ms",
    "dimensions",
    "thumbnail_url",
    "alt_text",
    "caption",
    "transcript",
    "transcript_confidence",
    "ocr_text",
    "ocr_confidence",
    "detected_objects",
)
LOCATION_FIELDS = ("latitude", "longitude", "accuracy_meters", "address", "place_name", "place_id")

# Slot types each optional check applies to (docs/flows.md, the slots table).
_BOUNDED_TYPES = ("text", "integer", "number")
_PATTERN_TYPES = ("text", "regex")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
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


@dataclass(slots=True)
class FlowCheck:
    """Everything :func:`check_flow_file` found in one file."""

    path: str
    document: FlowDocument | None  # None when there are errors
    errors: list[FlowFileError] = field(default_factory=list)  # by line
    warnings: list[FlowWarning] = field(default_factory=list)  # by line
    flow_line: int = 0  # the line of the `flow:` key (where a duplicate flow is reported)


@dataclass(slots=True)
class FlowSet:
    """The flows of many files: the valid ones, and what was wrong with the others."""

    flows: list[FlowDocument] = field(default_factory=list)
    errors: list[FlowFileError] = field(default_factory=list)
    warnings: list[FlowWarning] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every file looked at, in load order


def load_flow_file(path: Path) -> FlowDocument:
    """The flow in ``path``; raises the file's first :class:`FlowFileError` (by line).

    Warnings are dropped: use :func:`check_flow_file` to see them.
    """
    check = check_flow_file(path)
    if check.document is None:
        raise check.errors[0]
    return check.document


def check_flow_file(path: Path) -> FlowCheck:
    """Read and validate ``path``: the document if it is valid, every error and warning."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FlowCheck(name, None, [FlowFileError(name, 0, f"cannot read the file: {exc.strerror or exc}")])
    reader = _Reader(name)
    document = reader.read(data)
    errors = sorted(reader.errors, key=lambda e: e.line)  # stable: one line's errors keep their order
    warnings = sorted(reader.warnings, key=lambda w: w.line)
    return FlowCheck(name, None if errors else document, errors, warnings, reader.flow_line)


def load_flow_dirs(dirs: Iterable[Path]) -> FlowSet:
    """Every ``*.yaml``/``*.yml`` directly in each of ``dirs`` (sorted by name, not recursive,
    hidden files skipped).

    A file with errors is skipped (its errors are in ``errors``); so is a second file
    declaring the same (flow id, tenant). A directory that does not exist is an error.
    """
    paths: list[Path] = []
    errors: list[FlowFileError] = []
    for directory in dirs:
        if Path(directory).is_dir():
            paths.append(Path(directory))
        else:
            errors.append(FlowFileError(directory, 0, "not a directory"))
    flows = load_flow_paths(paths)
    flows.errors[:0] = errors
    return flows


def load_flow_paths(paths: Iterable[Path]) -> FlowSet:
    """Like :func:`load_flow_dirs`, but each path may also be a file (loaded whatever its suffix)."""
    result = FlowSet()
    seen: dict[tuple[str, str], FlowDocument] = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            # Hidden files are editors' locks and backups (.#pizza.yaml), not flows.
            files = sorted(
                p
                for p in path.iterdir()
                if p.suffix in FLOW_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
        elif path.exists():
            files = [path]
        else:
            result.errors.append(FlowFileError(path, 0, "no such file or directory"))
            continue
        for file in files:
            check = check_flow_file(file)
            result.files.append(check.path)
            result.errors.extend(check.errors)
            result.warnings.extend(check.warnings)
            document = check.document
            if document is None:
                continue
            key = (document.flow_id, document.tenant)
            first = seen.get(key)
            if first is not None:
                owner = f"tenant {document.tenant!r}" if document.tenant else "shared, no tenant"
                result.errors.append(
                    FlowFileError(
                        check.path,
                        check.flow_line,
                        f"flow {document.flow_id!r} ({owner}) is already defined in {first.source}; "
                        "this file is skipped (give it another flow id or tenant)",
                    )
                )
                continue
            seen[key] = document
            result.flows.append(document)
    return result


# --- reading nodes --------------------------------------------------------------------------------------

Fields = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


@dataclass(frozen=True, slots=True)
class _Ref:
    """A name used somewhere, checked once everything is read (states may come after their use)."""

    name: str
    node: Node
    where: str


def _line(node: Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _found(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing (null)"
    return repr(node.value)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listing(names: Sequence[str]) -> str:
    """Known names, in a message, when there are few enough to read."""
    if not names:
        return " (none are declared)"
    return f" (declared: {', '.join(names)})" if len(names) <= 12 else ""


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Reader:
    """Builds one file's document from its nodes, collecting every error it can find."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[FlowFileError] = []
        self.warnings: list[FlowWarning] = []
        self.flow_line = 0
        # Constructs the few values taken as YAML types (numbers, booleans, media mappings).
        self._constructor = yaml.SafeLoader("")
        self.state_refs: list[_Ref] = []
        self.intent_refs: list[_Ref] = []
        self.slot_refs: list[_Ref] = []
        self.variant_refs: list[_Ref] = []
        self.state_lines: dict[str, int] = {}

    def error(self, node: Node | None, message: str) -> None:
        self.errors.append(FlowFileError(self.path, _line(node), message))

    def warn(self, node: Node | None, message: str) -> None:
        self.warnings.append(FlowWarning(self.path, _line(node), message))

    # --- the document ---

    def read(self, data: bytes) -> FlowDocument | None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.errors.append(FlowFileError(self.path, line, f"the file is not UTF-8 text ({exc.reason})"))
            return None
        try:
            root = yaml.compose(text, Loader=_COMPOSER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            # At the end of the file, the mark is past the last line: point at the last one.
            line = min(mark.line + 1, len(text.splitlines()) or 1) if mark is not None else 0
            detail = f"{exc.context}, {exc.problem}" if exc.context else str(exc.problem)
            self.errors.append(FlowFileError(self.path, line, f"invalid YAML: {detail}"))
            return None
        except yaml.YAMLError as exc:
            self.errors.append(FlowFileError(self.path, 0, f"invalid YAML: {exc}"))
            return None
        if root is None:
            self.errors.append(
                FlowFileError(self.path, 1, "the file is empty; a flow needs flow, settings and states")
            )
            return None
        top = self.fields(root, "", TOP_KEYS, required=("flow", "settings", "states"))
        if top is None:
            return None
        if "flow" in top:
            self.flow_line = _line(top["flow"][0])
        flow_id = self.get(top, "flow", "", self.name)
        version = self.get(top, "version", "", self.text)
        tenant = self.get(top, "tenant", "", self.text)
        description = self.get(top, "description", "", self.text)
        intents = self.named(top, "intents", self.intent)
        slots = self.named(top, "slots", self.slot)
        states = self.named(top, "states", self.state)
        routes = self.get(top, "routes", "", lambda n, w: self.each(n, w, self.transition))
        experiments = self.named(top, "experiments", self.experiment)
        settings = self.get(top, "settings", "", self.settings)

        self.resolve(states, intents, slots, experiments)
        if flow_id is None or settings is None:
            return None
        document = FlowDocument(
            flow_id=flow_id,
            version=version or hashlib.sha256(data).hexdigest()[:12],
            settings=settings,
            states=states,
            intents=intents,
            slots=slots,
            routes=tuple(routes or ()),
            experiments=experiments,
            tenant=tenant or "",
            description=description or "",
            source=self.path,
        )
        if not self.errors:  # a broken transition would make its targets look unreachable
            self.check_reachable(document)
        return document

    def settings(self, node: Node, where: str) -> FlowSettings | None:
        f = self.fields(node, where, SETTINGS_KEYS, required=("start",))
        if f is None:
            return None
        start = self.get(f, "start", where, self.state_name)
        kw: dict[str, Any] = {}
        kw["fallback_state"] = self.get(f, "fallback_state", where, self.optional_state_name)
        kw["max_fallbacks"] = self.get(f, "max_fallbacks", where, self.integer)
        self.at_least(f, "max_fallbacks", where, kw["max_fallbacks"], 1)
        kw["fallback_response"] = self.get(f, "fallback_response", where, self.response)
        kw["intent_threshold"] = self.get(f, "intent_threshold", where, self.number)
        threshold = kw["intent_threshold"]
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            self.error(
                f["intent_threshold"][1],
                f"{where}.intent_threshold: must be between 0 and 1, found {threshold:g}",
            )
        kw["session_ttl_s"] = self.get(f, "session_ttl_s", where, self.number)
        self.at_least(f, "session_ttl_s", where, kw["session_ttl_s"], 0)
        kw["carry_over_slots"] = self.get(
            f, "carry_over_slots", where, lambda n, w: self.text_list(n, w, self.slot_refs)
        )
        kw["handoff_response"] = self.get(f, "handoff_response", where, self.response)
        return FlowSettings(start=start or "", **{k: v for k, v in kw.items() if v is not None})

    def intent(self, name: str, key: Node, node: Node) -> IntentSpec:
        where = f"intents.{name}"
        f = self.fields(node, where, INTENT_KEYS, null_ok=True) or {}
        kw: dict[str, tuple[str, ...] | None] = {
            k: self.get(f, k, where, self.text_list) for k in ("payloads", "keywords", "examples")
        }
        kw["patterns"] = self.get(f, "patterns", where, lambda n, w: self.text_list(n, w, check=self.regex))
        if _is_null(node) or (isinstance(node, MappingNode) and not node.value):
            self.warn(key, f"{where}: no payloads, keywords, patterns or examples: it can never match")
        return IntentSpec(name=name, **{k: v for k, v in kw.items() if v is not None})

    def slot(self, name: str, key: Node, node: Node) -> SlotSpec | None:
        where = f"slots.{name}"
        if not _IDENTIFIER.match(name):
            # Expressions and templates reach a slot as slots.NAME, and set/clear target it so.
            self.error(
                key,
                f"{where}: a slot name must be letters, digits and _ (not starting with a "
                "digit), so that slots.NAME works in expressions and templates",
            )
        f = self.fields(node, where, SLOT_KEYS, required=("type",))
        if f is None:
            return None
        kind = self.get(f, "type", where, self.text)
        if kind is not None and kind not in SLOT_TYPES:
            self.error(
                f["type"][1],
                f"{where}.type: unknown slot type {kind!r}{_suggest(kind, SLOT_TYPES)} "
                f"(expected one of: {', '.join(SLOT_TYPES)})",
            )
            kind = None
        kw: dict[str, Any] = {}
        kw["prompt"] = self.get(f, "prompt", where, self.template)
        kw["reprompts"] = self.get(
            f, "reprompts", where, lambda n, w: self.text_list(n, w, check=self.compile)
        )
        kw["max_attempts"] = self.get(f, "max_attempts", where, self.integer)
        self.at_least(f, "max_attempts", where, kw["max_attempts"], 1)
        kw["on_max_attempts"] = self.get(f, "on_max_attempts", where, self.optional_state_name)
        kw["choices"] = self.get(f, "choices", where, self.choices)
        kw["minimum"] = self.get(f, "minimum", where, self.number)
        kw["maximum"] = self.get(f, "maximum", where, self.number)
        kw["pattern"] = self.get(f, "pattern", where, lambda n, w: self.text(n, w, check=self.regex))
        if kind is not None:
            self.check_slot_options(kind, f, kw, where)
        return SlotSpec(name=name, type=kind or "text", **{k: v for k, v in kw.items() if v is not None})

    def check_slot_options(self, kind: str, f: Fields, kw: dict[str, Any], where: str) -> None:
        """Options that mean nothing for the slot's type are mistakes, not silently ignored."""
        type_node = f["type"][1]
        if kind == "enum" and not kw["choices"] and "choices" not in f:
            self.error(type_node, f"{where}: an enum slot needs choices (values, or value: [synonyms])")
        if kind == "regex" and "pattern" not in f:
            self.error(type_node, f"{where}: a regex slot needs a pattern")
        for key, types in (
            ("choices", ("enum",)),
            ("pattern", _PATTERN_TYPES),
            ("minimum", _BOUNDED_TYPES),
            ("maximum", _BOUNDED_TYPES),
        ):
            if key in f and kind not in types:
                self.error(
                    f[key][0], f"{where}.{key}: does not apply to a {kind} slot (only to: {', '.join(types)})"
                )
        low, high = kw["minimum"], kw["maximum"]
        if low is not None and high is not None and low > high:
            self.error(f["maximum"][1], f"{where}: maximum ({high:g}) is below minimum ({low:g})")

    def choices(self, node: Node, where: str) -> dict[str, tuple[str, ...]] | None:
        if isinstance(node, SequenceNode):  # a plain list of values, no synonyms
            return {value: () for value in self.text_list(node, where) or ()}
        if not isinstance(node, MappingNode):
            self.error(
                node,
                _at(
                    where, f"expected a mapping (value: [synonyms]) or a list of values, found {_found(node)}"
                ),
            )
            return None
        choices: dict[str, tuple[str, ...]] = {}
        for value, (_key, synonyms) in self.entries(node, where).items():
            # `small:` with nothing after it: a value without synonyms.
            choices[value] = () if _is_null(synonyms) else self.text_list(synonyms, f"{where}.{value}") or ()
        if not choices:
            self.error(node, _at(where, "no choices"))
        return choices

    def state(self, name: str, key: Node, node: Node) -> StateSpec:
        where = f"states.{name}"
        self.state_lines[name] = _line(key)
        f = self.fields(node, where, STATE_KEYS, null_ok=True) or {}
        kw: dict[str, Any] = {}
        kw["on_enter"] = self.get(f, "on_enter", where, lambda n, w: self.each(n, w, self.action))
        kw["collect"] = self.get(f, "collect", where, self.collect)
        kw["transitions"] = self.get(f, "transitions", where, lambda n, w: self.each(n, w, self.transition))
        kw["terminal"] = self.get(f, "terminal", where, self.boolean)
        if kw["terminal"] and (kw["transitions"] or kw["collect"]):
            self.warn(
                f["terminal"][1],
                f"{where}: a terminal state ends the conversation, so its "
                "transitions and collect are never used",
            )
        return StateSpec(name=name, **{k: v for k, v in kw.items() if v is not None})

    def collect(self, node: Node, where: str) -> tuple[str, ...] | None:
        names = self.text_list(node, where, self.slot_refs)
        if names is not None and len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            self.error(node, _at(where, f"{', '.join(map(repr, twice))} listed more than once"))
        return names

    def experiment(self, name: str, key: Node, node: Node) -> ExperimentSpec | None:
        where = f"experiments.{name}"
        f = self.fields(node, where, EXPERIMENT_KEYS, required=("weights",))
        if f is None:
            return None
        weights: dict[str, float] = {}
        if "weights" in f:
            weights_node = f["weights"][1]
            entries = self.mapping_entries(weights_node, f"{where}.weights") or {}
            for variant, (_k, value) in entries.items():
                weight = self.number(value, f"{where}.weights.{variant}")
                if weight is not None and weight <= 0:
                    self.error(value, f"{where}.weights.{variant}: a weight must be > 0, found {weight:g}")
                weights[variant] = weight or 1.0
            if not entries and isinstance(weights_node, MappingNode):
                self.error(weights_node, f"{where}.weights: an experiment needs at least one variant")
        swaps: dict[str, dict[str, str]] = {}
        if "states" in f:
            for variant, (vkey, states_node) in (
                self.mapping_entries(f["states"][1], f"{where}.states") or {}
            ).items():
                vwhere = f"{where}.states.{variant}"
                if weights and variant not in weights:
                    self.error(
                        vkey,
                        f"{vwhere}: {variant!r} is not a variant of this experiment"
                        f"{_suggest(variant, weights)} (its weights name: {', '.join(weights)})",
                    )
                swap: dict[str, str] = {}
                for original, (okey, replacement) in (
                    self.mapping_entries(states_node, vwhere) or {}
                ).items():
                    self.state_refs.append(_Ref(original, okey, f"{vwhere} (the state replaced)"))
                    target = self.state_name(replacement, f"{vwhere}.{original}")
                    if target is not None:
                        swap[original] = target
                swaps[variant] = swap
        return ExperimentSpec(name=name, weights=weights, states=swaps)

    # --- transitions and actions ---

    def transition(self, node: Node, where: str) -> TransitionSpec | None:
        f = self.fields(node, where, TRANSITION_KEYS, required=("to",))
        if f is None:
            return None
        to = self.get(f, "to", where, self.state_name)
        kw: dict[str, Any] = {}
        kw["intent"] = self.get(f, "intent", where, lambda n, w: self.text(n, w, refs=self.intent_refs))
        kw["when"] = self.get(f, "when", where, self.expression)
        kw["actions"] = self.get(f, "actions", where, lambda n, w: self.each(n, w, self.action))
        if to is None:
            return None
        return TransitionSpec(to=to, **{k: v for k, v in kw.items() if v is not None})

    def action(self, node: Node, where: str) -> ActionSpec | None:
        if not isinstance(node, MappingNode):
            self.error(
                node,
                f"{where}: expected an action (a mapping with one key: {', '.join(ACTION_KEYS)}), "
                f"found {_found(node)}",
            )
            return None
        errors_before = len(self.errors)
        f = self.fields(node, where, ACTION_KEYS) or {}
        if len(f) != 1:
            if len(f) > 1:
                self.error(
                    node,
                    f"{where}: an action has exactly one key, found {', '.join(f)}; "
                    "make each its own list item",
                )
            elif len(self.errors) == errors_before:  # an unknown key was reported already
                self.error(node, f"{where}: an action needs one of: {', '.join(ACTION_KEYS)}")
            return None
        ((kind, (_key, value)),) = f.items()
        awhere = f"{where}.{kind}"
        if kind == "say":
            if isinstance(value, ScalarNode) and not _is_null(value):
                self.error(
                    value,
                    f"{awhere}: expected a response (a mapping), found {_found(value)}; "
                    "write say: {text: ...}",
                )
                return None
            say = self.response(value, awhere)
            return ActionSpec(say=say) if say is not None else None
        if kind == "set":
            assignments = self.assignments(value, awhere)
            return ActionSpec(set=assignments) if assignments else None
        if kind == "clear":
            targets = self.clear_targets(value, awhere)
            return ActionSpec(clear=targets) if targets else None
        if kind == "webhook":
            webhook = self.webhook(value, awhere)
            return ActionSpec(webhook=webhook) if webhook is not None else None
        reason = "" if _is_null(value) else self.text(value, awhere)  # `- handoff:` needs no reason
        return ActionSpec(handoff=reason) if reason is not None else None

    def webhook(self, node: Node, where: str) -> WebhookSpec | None:
        f = self.fields(node, where, WEBHOOK_KEYS, required=("name", "store_as"))
        if f is None:
            return None
        name = self.get(f, "name", where, self.name)
        store_as = self.get(f, "store_as", where, self.name)
        on_failure = self.get(f, "on_failure", where, self.optional_state_name)
        if name is None or store_as is None:
            return None
        if not store_as.isidentifier():
            self.error(f["store_as"][1], f"{where}.store_as: must be an identifier (a variable name)")
            return None
        return WebhookSpec(name=name, store_as=store_as, on_failure=on_failure or "")

    def assignments(self, node: Node, where: str) -> dict[str, str] | None:
        entries = self.mapping_entries(node, where)
        if entries is None:
            return None
        if not entries:
            self.error(node, f"{where}: nothing to set; expected {{target: expression}}")
        assignments: dict[str, str] = {}
        for target, (key, value) in entries.items():
            self.target(target, key, where, clear=False)
            expression = self.expression(value, f"{where}.{target}")
            if expression is not None:
                assignments[target] = expression
        return assignments

    def clear_targets(self, node: Node, where: str) -> tuple[str, ...] | None:
        # `clear: slots` reads as well as `clear: [slots]`.
        items = [node] if isinstance(node, ScalarNode) and not _is_null(node) else self.items(node, where)
        if items is None:
            return None
        if not items:
            self.error(node, f"{where}: nothing to clear")
        targets: list[str] = []
        for i, item in enumerate(items):
            target = self.text(item, f"{where}[{i}]" if item is not node else where)
            if target is not None:
                self.target(target, item, where, clear=True)
                targets.append(target)
        return tuple(targets)

    def target(self, target: str, node: Node, where: str, *, clear: bool) -> None:
        if clear and target == "slots":
            return
        scope, dot, name = target.partition(".")
        if scope == "slots" and dot:
            self.slot_refs.append(_Ref(name, node, f"{where}: {target}"))
            return
        if scope == "variables" and dot and _IDENTIFIER.match(name):
            return
        expected = "slots.NAME or variables.NAME" + (", or slots for every slot" if clear else "")
        hint = ""
        if dot and scope not in ("slots", "variables"):
            hint = _suggest(scope, ("slots", "variables"))
            if hint:
                hint = (
                    f"; did you mean {difflib.get_close_matches(scope, ['slots', 'variables'], 1)[0]}.{name}?"
                )
        self.error(node, f"{where}: {target!r} is not a target; expected {expected}{hint}")

    # --- responses ---

    def response(self, node: Node, where: str) -> ResponseSpec | None:
        f = self.fields(node, where, RESPONSE_KEYS, null_ok=False)
        if f is None:
            return None
        kw: dict[str, Any] = {}
        kw["text"] = self.get(f, "text", where, self.template)
        kw["quick_replies"] = self.get(
            f, "quick_replies", where, lambda n, w: self.each(n, w, self.quick_reply)
        )
        kw["buttons"] = self.get(f, "buttons", where, lambda n, w: self.each(n, w, self.button))
        kw["cards"] = self.get(f, "cards", where, lambda n, w: self.each(n, w, self.card))
        kw["media"] = self.get(f, "media", where, lambda n, w: self.proto_fields(n, w, MEDIA_FIELDS))
        kw["location"] = self.get(f, "location", where, lambda n, w: self.proto_fields(n, w, LOCATION_FIELDS))
        kw["channels"] = self.get(f, "channels", where, self.channel_responses)
        kw["variants"] = self.get(f, "variants", where, self.variant_responses)
        return ResponseSpec(**{k: v for k, v in kw.items() if v is not None})

    def channel_responses(self, node: Node, where: str) -> dict[str, ResponseSpec] | None:
        responses: dict[str, ResponseSpec] = {}
        for channel, (key, value) in (self.mapping_entries(node, where) or {}).items():
            if channel not in CHANNELS:
                self.error(
                    key,
                    f"{where}: unknown channel {channel!r}{_suggest(channel, CHANNELS)} "
                    f"(channels: {', '.join(CHANNELS)})",
                )
            response = self.response(value, f"{where}.{channel}")
            if response is not None:
                responses[channel] = response
        return responses

    def variant_responses(self, node: Node, where: str) -> dict[str, ResponseSpec] | None:
        responses: dict[str, ResponseSpec] = {}
        for variant, (key, value) in (self.mapping_entries(node, where) or {}).items():
            self.variant_refs.append(_Ref(variant, key, where))
            response = self.response(value, f"{where}.{variant}")
            if response is not None:
                responses[variant] = response
        return responses

    def quick_reply(self, node: Node, where: str) -> QuickReplySpec | None:
        f = self.fields(node, where, QUICK_REPLY_KEYS, required=("title",))
        if f is None:
            return None
        title = self.get(f, "title", where, self.template)
        payload = self.get(f, "payload", where, self.text)
        return QuickReplySpec(title=title, payload=payload or "") if title is not None else None

    def button(self, node: Node, where: str) -> ButtonSpec | None:
        f = self.fields(node, where, BUTTON_KEYS, required=("title",))
        if f is None:
            return None
        title = self.get(f, "title", where, self.template)
        kind = self.get(f, "type", where, self.text)
        if kind is not None and kind not in BUTTON_TYPES:
            self.error(
                f["type"][1],
                f"{where}.type: unknown button type {kind!r}{_suggest(kind, BUTTON_TYPES)} "
                f"(expected one of: {', '.join(BUTTON_TYPES)})",
            )
        payload = self.get(f, "payload", where, self.text)
        url = self.get(f, "url", where, self.template)
        if kind == "url" and not url and "url" not in f:
            self.error(f["type"][1], f"{where}: a url button needs a url")
        if title is None:
            return None
        return ButtonSpec(title=title, type=kind or "postback", payload=payload or "", url=url or "")

    def card(self, node: Node, where: str) -> CardSpec | None:
        f = self.fields(node, where, CARD_KEYS, required=("title",))
        if f is None:
            return None
        title = self.get(f, "title", where, self.template)
        subtitle = self.get(f, "subtitle", where, self.template)
        image_url = self.get(f, "image_url", where, self.text)
        buttons = self.get(f, "buttons", where, lambda n, w: self.each(n, w, self.button))
        if title is None:
            return None
        return CardSpec(
            title=title, subtitle=subtitle or "", image_url=image_url or "", buttons=buttons or ()
        )

    def proto_fields(self, node: Node, where: str, names: Sequence[str]) -> dict[str, Any] | None:
        entries = self.mapping_entries(node, where)
        if entries is None:
            return None
        for name, (key, _value) in entries.items():
            if name not in names:
                self.error(
                    key,
                    f"{where}: unknown field {name!r}{_suggest(name, names)} "
                    f"(expected one of: {', '.join(names)})",
                )
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, f"{where}: {exc}")
            return None
        return dict(value)

    # --- references ---

    def resolve(
        self,
        states: dict[str, StateSpec],
        intents: dict[str, IntentSpec],
        slots: dict[str, SlotSpec],
        experiments: dict[str, ExperimentSpec],
    ) -> None:
        kinds: list[tuple[str, list[_Ref], Sequence[str], str]] = [
            ("state", self.state_refs, list(states), "states"),
            ("intent", self.intent_refs, list(intents), "intents"),
            ("slot", self.slot_refs, list(slots), "slots"),
        ]
        for kind, refs, known, section in kinds:
            for ref in refs:
                if ref.name not in known:
                    # A near miss is most likely a typo; otherwise it was never declared.
                    hint = _suggest(ref.name, known) or f"; declare it under {section}:{_listing(known)}"
                    self.error(ref.node, f"{ref.where}: unknown {kind} {ref.name!r}{hint}")
        variants = sorted({v for spec in experiments.values() for v in spec.weights})
        for ref in self.variant_refs:
            if ref.name not in variants:
                hint = _suggest(ref.name, variants) or _listing(variants)
                self.error(ref.node, f"{ref.where}: {ref.name!r} is not a variant of any experiment{hint}")

    def check_reachable(self, document: FlowDocument) -> None:
        """Warn about states no conversation can enter (experiments' swaps aside)."""
        states = document.states
        swaps: dict[str, set[str]] = {}
        for experiment in document.experiments.values():
            for swap in experiment.states.values():
                for original, replacement in swap.items():
                    swaps.setdefault(original, set()).add(replacement)
        # Global routes and the fallback lead out of any state, so they count as reachable from start.
        todo = [document.settings.start, document.settings.fallback_state]
        todo += [route.to for route in document.routes]
        reached: set[str] = set()
        while todo:
            name = todo.pop()
            if name in reached or name not in states:
                continue
            reached.add(name)
            state = states[name]
            todo += [t.to for t in state.transitions]
            todo += [document.slots[s].on_max_attempts for s in state.collect if s in document.slots]
            actions = [*state.on_enter, *(a for t in state.transitions for a in t.actions)]
            todo += [a.webhook.on_failure for a in actions if a.webhook is not None]
            todo += swaps.get(name, ())
        for name in states:
            if name not in reached:
                self.warnings.append(
                    FlowWarning(
                        self.path,
                        self.state_lines.get(name, 0),
                        f"states.{name}: unreachable from the start state {document.settings.start!r}",
                    )
                )

    # --- generic node readers: each reports its own errors and returns None on one ---

    def fields(
        self,
        node: Node,
        where: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
        null_ok: bool = False,
    ) -> Fields | None:
        """A mapping with known keys; ``null_ok``: nothing at all reads as an empty mapping."""
        if null_ok and _is_null(node):
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
                    _at(
                        where,
                        f"unknown key {key!r}{_suggest(key, allowed)} "
                        f"(expected one of: {', '.join(allowed)})",
                    ),
                )
        for key in required:
            if key not in entries:
                self.error(node, _at(where, f"missing required key {key!r}"))
        return fields

    def mapping_entries(self, node: Node, where: str) -> Fields | None:
        if not isinstance(node, MappingNode):
            self.error(node, _at(where, f"expected a mapping, found {_found(node)}"))
            return None
        return self.entries(node, where)

    def entries(self, node: MappingNode, where: str) -> Fields:
        """The mapping's entries by key text; merge keys (``<<: *anchor``) are applied."""
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.error(node, _at(where, f"invalid merge: {exc.problem}"))
        entries: Fields = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or _is_null(key):
                self.error(key, _at(where, f"a key must be a name, found {_found(key)}"))
                continue
            if key.value in entries:
                first = _line(entries[key.value][0])
                self.error(key, _at(where, f"{key.value!r} appears twice (first on line {first})"))
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
        return None if entry is None else read(entry[1], _join(where, key))

    def items(self, node: Node, where: str) -> list[Node] | None:
        if isinstance(node, SequenceNode):
            return list(node.value)
        hint = f"; write [{node.value}]" if isinstance(node, ScalarNode) and not _is_null(node) else ""
        self.error(node, _at(where, f"expected a list, found {_found(node)}{hint}"))
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
        refs: list[_Ref] | None = None,
        check: Callable[[str, Node, str], None] | None = None,
    ) -> str | None:
        """A scalar as written; ``refs``: record it as a reference, ``check``: validate it."""
        if not isinstance(node, ScalarNode) or _is_null(node):
            # A template starting with {{ or a list-like text, unquoted, is read by YAML as a mapping/list.
            hint = "; quote text that starts with { or [" if getattr(node, "flow_style", False) else ""
            self.error(node, _at(where, f"expected text, found {_found(node)}{hint}"))
            return None
        if refs is not None and node.value:
            refs.append(_Ref(node.value, node, where))
        if check is not None:
            check(node.value, node, where)
        return str(node.value)

    def text_list(
        self,
        node: Node,
        where: str,
        refs: list[_Ref] | None = None,
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

    def state_name(self, node: Node, where: str) -> str | None:
        value = self.name(node, where)
        if value is not None:
            self.state_refs.append(_Ref(value, node, where))
        return value

    def optional_state_name(self, node: Node, where: str) -> str | None:
        """A state, or "" for "none" (the fallback state / stay)."""
        return self.text(node, where, refs=self.state_refs)

    def boolean(self, node: Node, where: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self._constructor.construct_yaml_bool(node))
        self.error(node, _at(where, f"expected true or false, found {_found(node)}"))
        return None

    def integer(self, node: Node, where: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT:
            return int(self._constructor.construct_yaml_int(node))
        self.error(node, _at(where, f"expected a whole number, found {_found(node)}"))
        return None

    def number(self, node: Node, where: str) -> float | None:
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            value = float(self._constructor.construct_object(node))
            if value == value:  # NaN compares with nothing: no bound or weight can use it
                return value
        self.error(node, _at(where, f"expected a number, found {_found(node)}"))
        return None

    def at_least(self, f: Fields, key: str, where: str, value: float | None, low: float) -> None:
        if value is not None and value < low:
            self.error(f[key][1], f"{where}.{key}: must be >= {low:g}, found {value:g}")

    # --- embedded languages ---

    def template(self, node: Node, where: str) -> str | None:
        return self.text(node, where, check=self.compile)

    def expression(self, node: Node, where: str) -> str | None:
        return self.text(node, where, check=self.parse)

    def compile(self, text: str, node: Node, where: str) -> None:
        try:
            compile_template(text)
        except TemplateError as exc:
            line = _line(node)
            lineno = exc.lineno or 1
            if getattr(node, "style", None) in ("|", ">"):
                # A block scalar's text starts on the line after its | or >.
                line += lineno
            self.errors.append(FlowFileError(self.path, line, f"{where}: invalid template: {exc.message}"))

    def parse(self, text: str, node: Node, where: str) -> None:
        try:
            parse_expression(text)
        except ExpressionError as exc:
            # position is 0-based; people count from 1.
            self.error(
                node, f"{where}: invalid expression {text!r} at character {exc.position + 1}: {exc.message}"
            )

    def regex(self, text: str, node: Node, where: str) -> None:
        try:
            re.compile(text, re.IGNORECASE)  # intents search case-insensitively
        except re.error as exc:
            at = f" at character {exc.pos + 1}" if exc.pos is not None else ""
            self.error(node, f"{where}: invalid regular expression {text!r}{at}: {exc.msg}")
