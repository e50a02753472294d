"""The sections of a flow file (the format is ``docs/flows.md``): nodes in, :mod:`.document` records out.

:class:`FlowReader` reads one file's sections with the primitives of :mod:`.yaml_nodes`
and checks, each reported with its line:

* the structure: unknown keys (with "did you mean"), duplicate keys, required keys
  (``flow``, ``settings.start``, ``states``, a slot's ``type``, a transition's ``to``),
  the type of every value, exactly one key per action;
* values: slot types, button types, channel names, ranges (``intent_threshold`` in
  [0, 1], ``max_fallbacks``/``max_attempts`` >= 1, ``session_ttl_s`` >= 0, experiment
  weights > 0, ``minimum`` <= ``maximum``), regular expressions compile, every
  expression (``when``, ``set``) and template (texts, titles, urls, prompts, reprompts,
  handoff reasons, a generate step's prompt and system) parses, media/location keys are
  the proto's field names, the shape of decision and sub-flow states, a generate step's
  ``into`` (a text slot or a variable), ``history``, ``temperature`` and ``knowledge``
  (which needs passages under ``knowledge:``).

The model providers generate steps name are the server config's: the loader checks them
against it when it is given (:mod:`.loader`).

Names used across sections (states, intents, slots, variables, variants, languages, and
the names inside expressions and templates) are recorded as it reads and checked at the
end by :mod:`.references`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from confab.runtime.flows.language.document import (
    BUTTON_TYPES,
    DATE_RANGES,
    DEFAULT_HISTORY,
    MASKS,
    SLOT_TYPES,
    TEXTS_KEPT,
    ActionSpec,
    ButtonSpec,
    CallSpec,
    CardSpec,
    CorrectionSpec,
    ExperimentSpec,
    FlowDocument,
    FlowSettings,
    GenerateSpec,
    IntentSpec,
    KnowledgeSpec,
    NluSpec,
    QuickReplySpec,
    ResponseSpec,
    SlotCheckSpec,
    SlotSpec,
    StateSpec,
    TransitionSpec,
    WebhookSpec,
)
from confab.runtime.flows.language.expressions import ExpressionError, parse_expression
from confab.runtime.flows.language.templates import TemplateError, compile_template
from confab.runtime.flows.language.yaml_nodes import (
    Fields,
    FlowFileError,
    NodeReader,
    Ref,
    a_kind,
    at,
    compose,
    found,
    is_null,
    line_of,
    suggest,
)

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
    "knowledge",
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
    "session_expired_response",
    "languages",
    "typo_tolerance",
    "nlu",
    "mask",
    "mask_patterns",
    "typed_ahead_response",
    "choice_out_of_range_response",
    "generative_fallback",
)
INTENT_KEYS = ("payloads", "keywords", "patterns", "examples", "slots", "languages")
INTENT_LANGUAGE_KEYS = ("keywords", "patterns", "examples")
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
    "range",
    "validate",
    "sensitive",
)
CHECK_KEYS = ("when", "message", "webhook", "on_failure")
STATE_KEYS = (
    "on_enter",
    "collect",
    "transitions",
    "terminal",
    "decide",
    "fallback_response",
    "call",
    "confirm",
    "corrections",
)
CORRECTION_KEYS = ("slots", "to", "actions", "unchanged_response")
CALL_KEYS = ("flow", "store_as", "with")
TRANSITION_KEYS = ("to", "intent", "when", "actions")
ACTION_KEYS = ("say", "set", "clear", "handoff", "webhook", "generate")
WEBHOOK_KEYS = ("name", "store_as", "on_failure")
GENERATE_KEYS = (
    "prompt",
    "system",
    "provider",
    "history",
    "knowledge",
    "into",
    "max_tokens",
    "temperature",
    "on_failure",
    "failure_response",
    "budget_response",
)
# A generative fallback answers the user; when it fails, the flow's own fallback goes on.
FALLBACK_GENERATE_KEYS = tuple(
    k for k in GENERATE_KEYS if k not in ("into", "on_failure", "failure_response")
)
KNOWLEDGE_KEYS = ("title", "text")
MAX_KNOWLEDGE = 200  # passages
MAX_PASSAGE_CHARS = 4000
NLU_KEYS = ("recognizer", "options")
RESPONSE_KEYS = (
    "text",
    "quick_replies",
    "buttons",
    "cards",
    "media",
    "location",
    "channels",
    "variants",
    "languages",
)
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
_RANGE_TYPES = ("date",)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
LANGUAGE_TAG = re.compile(r"[a-z]{2,3}\Z")  # an ISO 639 code: "en", "de", "fil"


@dataclass(frozen=True, slots=True)
class Embedded:
    """An expression or template of the file, kept so the names inside can be checked."""

    text: str
    node: Node
    where: str
    value_allowed: bool = False  # an expression of a slot's `validate` may read `value`


class FlowReader(NodeReader):
    """Builds one file's document from its nodes, collecting every error it can find."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.flow_line = 0
        self.state_refs: list[Ref] = []
        self.intent_refs: list[Ref] = []
        self.slot_refs: list[Ref] = []
        self.variant_refs: list[Ref] = []
        self.language_refs: list[Ref] = []
        self.state_lines: dict[str, int] = {}
        self.expressions: list[Embedded] = []
        self.templates: list[Embedded] = []
        self.variables_set: set[str] = set()  # variables.NAME some action or call writes
        self.calls: list[tuple[CallSpec, Node, str]] = []  # checked against the other files
        self.corrections: list[tuple[CorrectionSpec, Node, str]] = []  # slot types checked at the end
        # Model providers named by generate steps: checked against the server config's (loader).
        self.providers: list[tuple[str, Node, str]] = []
        self.generations = 0  # generate steps and generative fallbacks read: the flow calls a model
        self.into_slots: list[Ref] = []  # slots generate steps store into: text slots only
        self.knowledge_wanted: list[tuple[Node, str]] = []  # generate steps with knowledge: true
        self._in_validation = False

    # --- the document ---

    def read(self, data: bytes) -> FlowDocument | None:
        from confab.runtime.flows.language.references import (  # references reads this module's records
            check_document,
            resolve,
        )

        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.errors.append(FlowFileError(self.path, line, f"the file is not UTF-8 text ({exc.reason})"))
            return None
        try:
            root = compose(text, self.path)
        except FlowFileError as exc:
            self.errors.append(exc)
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
            self.flow_line = line_of(top["flow"][0])
        flow_id = self.get(top, "flow", "", self.name)
        version = self.get(top, "version", "", self.text)
        tenant = self.get(top, "tenant", "", self.text)
        description = self.get(top, "description", "", self.text)
        intents = self.named(top, "intents", self.intent)
        slots = self.named(top, "slots", self.slot)
        states = self.named(top, "states", self.state)
        routes = self.get(top, "routes", "", lambda n, w: self.each(n, w, self.transition))
        experiments = self.named(top, "experiments", self.experiment)
        knowledge = self.get(top, "knowledge", "", self.knowledge) or ()
        settings = self.get(top, "settings", "", self.settings)
        resolve(self, states, intents, slots, experiments, settings)
        self.check_generations(slots, knowledge)
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
            knowledge=knowledge,
            tenant=tenant or "",
            description=description or "",
            source=self.path,
        )
        check_document(self, document)
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
        kw["session_expired_response"] = self.get(f, "session_expired_response", where, self.response)
        kw["languages"] = self.get(f, "languages", where, self.languages)
        kw["typo_tolerance"] = self.get(f, "typo_tolerance", where, self.boolean)
        kw["nlu"] = self.get(f, "nlu", where, self.nlu)
        kw["mask"] = self.get(f, "mask", where, lambda n, w: self.text_list(n, w, check=self.mask_name))
        kw["mask_patterns"] = self.get(
            f, "mask_patterns", where, lambda n, w: self.text_list(n, w, check=self.regex)
        )
        kw["typed_ahead_response"] = self.get(f, "typed_ahead_response", where, self.response)
        kw["choice_out_of_range_response"] = self.get(f, "choice_out_of_range_response", where, self.response)
        kw["generative_fallback"] = self.get(
            f, "generative_fallback", where, lambda n, w: self.generate(n, w, fallback=True)
        )
        return FlowSettings(start=start or "", **{k: v for k, v in kw.items() if v is not None})

    def languages(self, node: Node, where: str) -> tuple[str, ...] | None:
        names = self.text_list(node, where)
        for i, name in enumerate(names or ()):
            if not LANGUAGE_TAG.match(name):
                self.error(
                    node, f"{where}[{i}]: {name!r} is not a language code (two or three lower-case letters)"
                )
        if names is not None and len(set(names)) != len(names):
            self.error(node, f"{where}: a language is listed twice")
        return names

    def mask_name(self, text: str, node: Node, where: str) -> None:
        if text not in MASKS:
            self.error(
                node,
                f"{where}: unknown mask {text!r}{suggest(text, MASKS)} (built-in masks: "
                f"{', '.join(MASKS)}; write your own under mask_patterns)",
            )

    def nlu(self, node: Node, where: str) -> NluSpec | None:
        from confab.runtime.flows.execution import model_recognizer  # its options are checked here
        from confab.runtime.flows.execution.nlu import (
            registered_recognizers,  # the registry reads plug-ins' entry points
        )

        f = self.fields(node, where, NLU_KEYS, required=("recognizer",))
        if f is None:
            return None
        name = self.get(f, "recognizer", where, self.name)
        options = self.get(f, "options", where, lambda n, w: self.plain_mapping(n, w))
        if name is None:
            return None
        known = registered_recognizers()
        if name not in known:
            self.error(
                f["recognizer"][1],
                f"{where}.recognizer: no recognizer {name!r} is registered{suggest(name, known)} "
                f"(registered: {', '.join(known) or 'none'})",
            )
        if name == model_recognizer.NAME and options is not None:
            options_node = f["options"][1]
            for option, problem in model_recognizer.option_problems(options):
                self.error(
                    _value_of(options_node, option),
                    f"{where}.options{'.' + option if option else ''}: {problem}",
                )
            provider = options.get("provider")
            if isinstance(provider, str) and provider:
                self.providers.append(
                    (provider, _value_of(options_node, "provider"), f"{where}.options.provider")
                )
        return NluSpec(recognizer=name, options=options or {})

    def intent(self, name: str, key: Node, node: Node) -> IntentSpec:
        where = f"intents.{name}"
        f = self.fields(node, where, INTENT_KEYS, null_ok=True) or {}
        kw: dict[str, Any] = self.intent_words(f, where)
        kw["payloads"] = self.get(f, "payloads", where, self.text_list)
        kw["slots"] = self.get(f, "slots", where, lambda n, w: self.text_list(n, w, self.slot_refs))
        kw["languages"] = self.get(f, "languages", where, self.intent_languages)
        if is_null(node) or (isinstance(node, MappingNode) and not node.value):
            self.warn(key, f"{where}: no payloads, keywords, patterns or examples: it can never match")
        return IntentSpec(name=name, **{k: v for k, v in kw.items() if v is not None})

    def intent_words(self, f: Fields, where: str) -> dict[str, Any]:
        kw: dict[str, Any] = {k: self.get(f, k, where, self.text_list) for k in ("keywords", "examples")}
        kw["patterns"] = self.get(f, "patterns", where, lambda n, w: self.text_list(n, w, check=self.regex))
        return kw

    def intent_languages(self, node: Node, where: str) -> dict[str, IntentSpec] | None:
        languages: dict[str, IntentSpec] = {}
        for language, (key, value) in (self.mapping_entries(node, where) or {}).items():
            self.language_refs.append(Ref(language, key, where))
            lwhere = f"{where}.{language}"
            f = self.fields(value, lwhere, INTENT_LANGUAGE_KEYS)
            if f is not None:
                words = self.intent_words(f, lwhere)
                languages[language] = IntentSpec(
                    name=where.split(".")[1], **{k: v for k, v in words.items() if v is not None}
                )
        return languages

    def slot(self, name: str, key: Node, node: Node) -> SlotSpec | None:
        where = f"slots.{name}"
        if not IDENTIFIER.match(name):
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
                f"{where}.type: unknown slot type {kind!r}{suggest(kind, SLOT_TYPES)} "
                f"(expected one of: {', '.join(SLOT_TYPES)})",
            )
            kind = None
        kw: dict[str, Any] = {}
        kw["prompt"] = self.get(f, "prompt", where, self.prompt)
        kw["reprompts"] = self.get(f, "reprompts", where, lambda n, w: self.each(n, w, self.prompt))
        kw["max_attempts"] = self.get(f, "max_attempts", where, self.integer)
        self.at_least(f, "max_attempts", where, kw["max_attempts"], 1)
        kw["on_max_attempts"] = self.get(f, "on_max_attempts", where, self.optional_state_name)
        kw["choices"] = self.get(f, "choices", where, self.choices)
        kw["minimum"] = self.get(f, "minimum", where, self.number)
        kw["maximum"] = self.get(f, "maximum", where, self.number)
        kw["pattern"] = self.get(f, "pattern", where, lambda n, w: self.text(n, w, check=self.regex))
        kw["range"] = self.get(f, "range", where, lambda n, w: self.text(n, w, check=self.date_range))
        kw["validate"] = self.get(f, "validate", where, self.checks)
        kw["sensitive"] = self.get(f, "sensitive", where, self.boolean)
        if kind is not None:
            self.check_slot_options(kind, f, kw, where)
        return SlotSpec(name=name, type=kind or "text", **{k: v for k, v in kw.items() if v is not None})

    def prompt(self, node: Node, where: str) -> ResponseSpec | None:
        """A prompt is text (a template) or a whole response (quick replies, channels...)."""
        if isinstance(node, ScalarNode) and not is_null(node):
            text = self.template(node, where)
            return ResponseSpec(text=text) if text is not None else None
        return self.response(node, where)

    def date_range(self, text: str, node: Node, where: str) -> None:
        if text not in DATE_RANGES:
            self.error(
                node,
                f"{where}: {text!r} is not a date range{suggest(text, DATE_RANGES)} "
                f"(expected one of: {', '.join(DATE_RANGES)})",
            )

    def checks(self, node: Node, where: str) -> tuple[SlotCheckSpec, ...] | None:
        self._in_validation = True
        try:
            return self.each(node, where, self.check)
        finally:
            self._in_validation = False

    def check(self, node: Node, where: str) -> SlotCheckSpec | None:
        f = self.fields(node, where, CHECK_KEYS)
        if f is None:
            return None
        when = self.get(f, "when", where, self.expression)
        message = self.get(f, "message", where, self.prompt)
        webhook = self.get(f, "webhook", where, self.name)
        on_failure = self.get(f, "on_failure", where, self.optional_state_name)
        if ("when" in f) == ("webhook" in f):
            self.error(node, f"{where}: a check has either `when` (an expression) or `webhook`, not both")
            return None
        if "on_failure" in f and "webhook" not in f:
            self.error(f["on_failure"][0], f"{where}.on_failure: only a webhook check can fail")
        if "webhook" in f and "message" in f:
            self.error(f["message"][0], f"{where}.message: a webhook check's message comes from its answer")
        return SlotCheckSpec(
            when=when or "", message=message, webhook=webhook or "", on_failure=on_failure or ""
        )

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
            ("range", _RANGE_TYPES),
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
                at(where, f"expected a mapping (value: [synonyms]) or a list of values, found {found(node)}"),
            )
            return None
        choices: dict[str, tuple[str, ...]] = {}
        for value, (_key, synonyms) in self.entries(node, where).items():
            # `small:` with nothing after it: a value without synonyms.
            choices[value] = () if is_null(synonyms) else self.text_list(synonyms, f"{where}.{value}") or ()
        if not choices:
            self.error(node, at(where, "no choices"))
        return choices

    def state(self, name: str, key: Node, node: Node) -> StateSpec:
        where = f"states.{name}"
        self.state_lines[name] = line_of(key)
        f = self.fields(node, where, STATE_KEYS, null_ok=True) or {}
        kw: dict[str, Any] = {}
        kw["on_enter"] = self.get(f, "on_enter", where, lambda n, w: self.each(n, w, self.action))
        kw["collect"] = self.get(f, "collect", where, self.collect)
        kw["transitions"] = self.get(f, "transitions", where, lambda n, w: self.each(n, w, self.transition))
        kw["terminal"] = self.get(f, "terminal", where, self.boolean)
        kw["decide"] = self.get(f, "decide", where, lambda n, w: self.each(n, w, self.decision))
        kw["fallback_response"] = self.get(f, "fallback_response", where, self.response)
        kw["call"] = self.get(f, "call", where, self.call)
        kw["confirm"] = self.get(f, "confirm", where, self.boolean)
        kw["corrections"] = self.get(f, "corrections", where, self.correction)
        if kw["terminal"] and (kw["transitions"] or kw["collect"]):
            self.warn(
                f["terminal"][1],
                f"{where}: a terminal state ends the conversation, so its "
                "transitions and collect are never used",
            )
        self.check_state_shape(f, kw, where)
        return StateSpec(name=name, **{k: v for k, v in kw.items() if v is not None})

    def check_state_shape(self, f: Fields, kw: dict[str, Any], where: str) -> None:
        """Decision and sub-flow states move on by themselves: what would wait is a mistake."""
        if "decide" in f:
            for key in ("collect", "transitions", "terminal"):
                if key in f:
                    self.error(
                        f[key][0],
                        f"{where}.{key}: a state that decides (decide:) moves on at once, so it "
                        f"cannot have {key}",
                    )
            decisions = kw["decide"] or ()
            if decisions and decisions[-1].when:
                self.error(
                    f["decide"][1],
                    f"{where}.decide: the last choice must have no `when`, so that one is always taken",
                )
        if "call" in f and "decide" not in f:
            self.error(f["call"][0], f"{where}: a state that calls a flow needs decide: (where to go after)")
        for key in ("confirm", "corrections"):
            if key not in f or (key == "confirm" and not kw["confirm"]):
                continue
            for moving in ("decide", "terminal", "call"):
                if moving in f:
                    self.error(
                        f[key][0],
                        f"{where}.{key}: a state with {moving} does not wait for an answer, so it "
                        f"cannot have {key}",
                    )
        if kw["confirm"] and not any(a.say is not None for a in kw["on_enter"] or ()):
            self.error(
                f["confirm"][0],
                f"{where}.confirm: a confirmation asks its question in on_enter (a say), so that it "
                "can be asked again when an answer came before the user saw it",
            )

    def correction(self, node: Node, where: str) -> CorrectionSpec | None:
        f = self.fields(node, where, CORRECTION_KEYS, required=("slots",))
        if f is None:
            return None
        slots = self.get(f, "slots", where, lambda n, w: self.text_list(n, w, self.slot_refs))
        to = self.get(f, "to", where, self.state_name)
        actions = self.get(f, "actions", where, lambda n, w: self.each(n, w, self.action))
        unchanged_response = self.get(f, "unchanged_response", where, self.response)
        if slots is not None and not slots:
            self.error(f["slots"][1], f"{where}.slots: name the slots a message here may correct")
        if not slots:
            return None
        spec = CorrectionSpec(
            slots=slots, to=to or "", actions=actions or (), unchanged_response=unchanged_response
        )
        self.corrections.append((spec, f["slots"][1], f"{where}.slots"))
        return spec

    def call(self, node: Node, where: str) -> CallSpec | None:
        f = self.fields(node, where, CALL_KEYS, required=("flow", "store_as"))
        if f is None:
            return None
        flow = self.get(f, "flow", where, self.name)
        store_as = self.get(f, "store_as", where, self.variable_name)
        inputs: dict[str, str] = {}
        if "with" in f:
            for target, (key, value) in (self.mapping_entries(f["with"][1], f"{where}.with") or {}).items():
                if not (target.startswith("slots.") and IDENTIFIER.match(target[len("slots.") :])):
                    self.error(key, f"{where}.with: {target!r} is not a target; expected slots.NAME")
                expression = self.expression(value, f"{where}.with.{target}")
                if expression is not None:
                    inputs[target] = expression
        if flow is None or store_as is None:
            return None
        spec = CallSpec(flow=flow, store_as=store_as, inputs=inputs)
        self.calls.append((spec, f["flow"][1], where))
        return spec

    def collect(self, node: Node, where: str) -> tuple[str, ...] | None:
        names = self.text_list(node, where, self.slot_refs)
        if names is not None and len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            self.error(node, at(where, f"{', '.join(map(repr, twice))} listed more than once"))
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
                        f"{suggest(variant, weights)} (its weights name: {', '.join(weights)})",
                    )
                swap: dict[str, str] = {}
                for original, (okey, replacement) in (
                    self.mapping_entries(states_node, vwhere) or {}
                ).items():
                    self.state_refs.append(Ref(original, okey, f"{vwhere} (the state replaced)"))
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

    def decision(self, node: Node, where: str) -> TransitionSpec | None:
        if isinstance(node, MappingNode):
            for key, _value in node.value:
                if isinstance(key, ScalarNode) and key.value == "intent":
                    self.error(
                        key,
                        f"{where}.intent: a decision is made without a message, so it cannot "
                        "wait for an intent; use `when`",
                    )
        return self.transition(node, where)

    def action(self, node: Node, where: str) -> ActionSpec | None:
        if not isinstance(node, MappingNode):
            self.error(
                node,
                f"{where}: expected an action (a mapping with one key: {', '.join(ACTION_KEYS)}), "
                f"found {found(node)}",
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
            if isinstance(value, ScalarNode) and not is_null(value):
                self.error(
                    value,
                    f"{awhere}: expected a response (a mapping), found {found(value)}; "
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
        if kind == "generate":
            generate = self.generate(value, awhere)
            return ActionSpec(generate=generate) if generate is not None else None
        reason = "" if is_null(value) else self.template(value, awhere)  # `- handoff:` needs no reason
        return ActionSpec(handoff=reason) if reason is not None else None

    def webhook(self, node: Node, where: str) -> WebhookSpec | None:
        f = self.fields(node, where, WEBHOOK_KEYS, required=("name", "store_as"))
        if f is None:
            return None
        name = self.get(f, "name", where, self.name)
        store_as = self.get(f, "store_as", where, self.variable_name)
        on_failure = self.get(f, "on_failure", where, self.optional_state_name)
        if name is None or store_as is None:
            return None
        return WebhookSpec(name=name, store_as=store_as, on_failure=on_failure or "")

    def generate(self, node: Node, where: str, *, fallback: bool = False) -> GenerateSpec | None:
        keys = FALLBACK_GENERATE_KEYS if fallback else GENERATE_KEYS
        f = self.fields(node, where, keys, required=() if fallback else ("prompt",))
        if f is None:
            return None
        self.generations += 1
        kw: dict[str, Any] = {}
        kw["prompt"] = self.get(f, "prompt", where, self.template)
        kw["system"] = self.get(f, "system", where, self.template)
        kw["provider"] = self.get(f, "provider", where, self.name)
        if kw["provider"] is not None:
            self.providers.append((kw["provider"], f["provider"][1], f"{where}.provider"))
        kw["history"] = self.get(f, "history", where, self.integer)
        history = kw["history"]
        if history is not None and not 0 <= history <= TEXTS_KEPT:
            self.error(
                f["history"][1],
                f"{where}.history: must be between 0 and {TEXTS_KEPT} (texts a conversation keeps),"
                f" found {history}",
            )
        kw["knowledge"] = self.get(f, "knowledge", where, self.boolean)
        if kw["knowledge"]:
            self.knowledge_wanted.append((f["knowledge"][1], f"{where}.knowledge"))
        into = self.get(f, "into", where, self.text)
        if into is not None:
            self.target(into, f["into"][1], f"{where}.into", clear=False)
            scope, _, name = into.partition(".")
            if scope == "slots":
                self.into_slots.append(Ref(name, f["into"][1], f"{where}.into"))
            kw["into"] = into
        kw["max_tokens"] = self.get(f, "max_tokens", where, self.integer)
        self.at_least(f, "max_tokens", where, kw["max_tokens"], 1)
        kw["temperature"] = self.get(f, "temperature", where, self.number)
        temperature = kw["temperature"]
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            self.error(
                f["temperature"][1], f"{where}.temperature: must be between 0 and 2, found {temperature:g}"
            )
        kw["on_failure"] = self.get(f, "on_failure", where, self.optional_state_name)
        kw["failure_response"] = self.get(f, "failure_response", where, self.prompt)
        kw["budget_response"] = self.get(f, "budget_response", where, self.prompt)
        if kw["history"] is None:
            kw["history"] = DEFAULT_HISTORY
        return GenerateSpec(**{k: v for k, v in kw.items() if v is not None})

    def knowledge(self, node: Node, where: str) -> tuple[KnowledgeSpec, ...] | None:
        passages = self.each(node, where, self.passage)
        if passages is not None and len(passages) > MAX_KNOWLEDGE:
            self.error(node, f"{where}: at most {MAX_KNOWLEDGE} passages, found {len(passages)}")
        return passages

    def passage(self, node: Node, where: str) -> KnowledgeSpec | None:
        """A passage: its text, or {title, text}."""
        if isinstance(node, ScalarNode):
            text = self.name(node, where)
            title = ""
        else:
            f = self.fields(node, where, KNOWLEDGE_KEYS, required=("text",))
            if f is None:
                return None
            text = self.get(f, "text", where, self.name)
            title = self.get(f, "title", where, self.text) or ""
        if text is None:
            return None
        if len(text) > MAX_PASSAGE_CHARS:
            self.error(
                node, f"{where}: a passage is at most {MAX_PASSAGE_CHARS} characters, found {len(text)}"
            )
        return KnowledgeSpec(text=text.strip(), title=title.strip())

    def check_generations(self, slots: dict[str, SlotSpec], knowledge: tuple[KnowledgeSpec, ...]) -> None:
        """What a generate step needs of the rest of the file: passages, and a text slot to fill."""
        if not knowledge:
            for node, where in self.knowledge_wanted:
                self.error(node, f"{where}: the flow has no passages; list them under knowledge: at the top")
        for ref in self.into_slots:
            slot = slots.get(ref.name)
            if slot is not None and slot.type != "text":
                self.error(
                    ref.node,
                    f"{ref.where}: slots.{ref.name} is {a_kind(slot.type)} slot; a model's answer is text"
                    " (store it into a text slot or a variable)",
                )

    def variable_name(self, node: Node, where: str) -> str | None:
        name = self.name(node, where)
        if name is not None and not IDENTIFIER.match(name):
            self.error(node, f"{where}: must be an identifier (a variable name)")
            return None
        if name is not None:
            self.variables_set.add(name)
        return name

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
        items = [node] if isinstance(node, ScalarNode) and not is_null(node) else self.items(node, where)
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
            self.slot_refs.append(Ref(name, node, f"{where}: {target}"))
            return
        if scope == "variables" and dot and IDENTIFIER.match(name):
            if not clear:
                self.variables_set.add(name)
            return
        expected = "slots.NAME or variables.NAME" + (", or slots for every slot" if clear else "")
        hint = ""
        if dot and scope not in ("slots", "variables"):
            close = suggest(scope, ("slots", "variables"))
            if close:
                hint = f"; did you mean {close.split(chr(39))[1]}.{name}?"
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
        kw["languages"] = self.get(f, "languages", where, self.language_responses)
        return ResponseSpec(**{k: v for k, v in kw.items() if v is not None})

    def channel_responses(self, node: Node, where: str) -> dict[str, ResponseSpec] | None:
        responses: dict[str, ResponseSpec] = {}
        for channel, (key, value) in (self.mapping_entries(node, where) or {}).items():
            if channel not in CHANNELS:
                self.error(
                    key,
                    f"{where}: unknown channel {channel!r}{suggest(channel, CHANNELS)} "
                    f"(channels: {', '.join(CHANNELS)})",
                )
            response = self.response(value, f"{where}.{channel}")
            if response is not None:
                responses[channel] = response
        return responses

    def variant_responses(self, node: Node, where: str) -> dict[str, ResponseSpec] | None:
        return self.keyed_responses(node, where, self.variant_refs)

    def language_responses(self, node: Node, where: str) -> dict[str, ResponseSpec] | None:
        return self.keyed_responses(node, where, self.language_refs)

    def keyed_responses(self, node: Node, where: str, refs: list[Ref]) -> dict[str, ResponseSpec]:
        responses: dict[str, ResponseSpec] = {}
        for name, (key, value) in (self.mapping_entries(node, where) or {}).items():
            refs.append(Ref(name, key, where))
            response = self.response(value, f"{where}.{name}")
            if response is not None:
                responses[name] = response
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
                f"{where}.type: unknown button type {kind!r}{suggest(kind, BUTTON_TYPES)} "
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
                    f"{where}: unknown field {name!r}{suggest(name, names)} "
                    f"(expected one of: {', '.join(names)})",
                )
        return self.plain_mapping(node, where)

    # --- names ---

    def state_name(self, node: Node, where: str) -> str | None:
        value = self.name(node, where)
        if value is not None:
            self.state_refs.append(Ref(value, node, where))
        return value

    def optional_state_name(self, node: Node, where: str) -> str | None:
        """A state, or "" for "none" (the fallback state / stay)."""
        return self.text(node, where, refs=self.state_refs)

    # --- embedded languages ---

    def template(self, node: Node, where: str) -> str | None:
        return self.text(node, where, check=self.compile)

    def expression(self, node: Node, where: str) -> str | None:
        return self.text(node, where, check=self.parse)

    def compile(self, text: str, node: Node, where: str) -> None:
        try:
            compile_template(text)
        except TemplateError as exc:
            line = line_of(node)
            lineno = exc.lineno or 1
            if getattr(node, "style", None) in ("|", ">"):
                # A block scalar's text starts on the line after its | or >.
                line += lineno
            self.errors.append(FlowFileError(self.path, line, f"{where}: invalid template: {exc.message}"))
            return
        self.templates.append(Embedded(text, node, where))

    def parse(self, text: str, node: Node, where: str) -> None:
        try:
            parse_expression(text)
        except ExpressionError as exc:
            # position is 0-based; people count from 1.
            self.error(
                node, f"{where}: invalid expression {text!r} at character {exc.position + 1}: {exc.message}"
            )
            return
        self.expressions.append(Embedded(text, node, where, value_allowed=self._in_validation))

    def regex(self, text: str, node: Node, where: str) -> None:
        try:
            re.compile(text, re.IGNORECASE)  # intents search case-insensitively
        except re.error as exc:
            position = f" at character {exc.pos + 1}" if exc.pos is not None else ""
            self.error(node, f"{where}: invalid regular expression {text!r}{position}: {exc.msg}")


def _value_of(node: Node, key: str) -> Node:
    """The value node of ``key`` in the mapping ``node`` (``node`` itself when there is none)."""
    if key and isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key and isinstance(value_node, Node):
                return value_node
    return node
