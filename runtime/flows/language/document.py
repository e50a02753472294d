"""A flow file, as loaded: plain frozen dataclasses, one per element of the format.

The format itself (with a complete example) is documented in ``docs/flows.md``;
``runtime.flows.language.loader`` reads YAML into these records and validates them, and
``runtime.flows.execution.interpreter`` runs them. Text fields marked *template* are
rendered by ``runtime.flows.language.templates``; fields marked *expression* are
evaluated by ``runtime.flows.language.expressions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SLOT_TYPES = ("text", "integer", "number", "boolean", "enum", "email", "phone", "date", "regex")
BUTTON_TYPES = ("postback", "url", "phone", "share", "login")
DATE_RANGES = ("past", "future")  # a date slot's `range`: today counts as both
# Built-in detectors of `settings.mask` (runtime.flows.language.masking).
MASKS = ("card_number", "iban", "email", "phone")


@dataclass(frozen=True, slots=True)
class IntentSpec:
    name: str
    # Quick-reply and button payloads that mean this intent; matched exactly, before any text.
    payloads: tuple[str, ...] = ()
    # Words or phrases; a message containing one matches (whole words, case-insensitive).
    keywords: tuple[str, ...] = ()
    # Regular expressions searched in the message (case-insensitive).
    patterns: tuple[str, ...] = ()
    # Example utterances, matched by similarity.
    examples: tuple[str, ...] = ()
    # Slots read from a message that means this intent, whatever the state collects
    # ("I lost my visa card": lost_card, with card_type = visa).
    slots: tuple[str, ...] = ()
    # Per language (settings.languages): keywords, patterns and examples used instead for
    # messages in that language; payloads and slots always come from the intent itself.
    languages: dict[str, IntentSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SlotCheckSpec:
    """One check of ``validate``: an expression, or a webhook that judges the value."""

    when: str = ""  # expression: the value (`value`) is accepted when it is true
    message: ResponseSpec | None = None  # said when the check rejects the value (then the re-prompt)
    webhook: str = ""  # a webhook answering {"valid": bool, "message": "...", "value": ...}
    on_failure: str = ""  # webhook: state to go to when the call fails ("" = the value is rejected)


@dataclass(frozen=True, slots=True)
class SlotSpec:
    name: str
    type: str  # one of SLOT_TYPES
    prompt: ResponseSpec | None = None  # asked when the slot is missing (None: "What is your NAME?")
    reprompts: tuple[ResponseSpec, ...] = ()  # after the 1st, 2nd... failed answer; the last repeats
    max_attempts: int = 3  # failed answers before `on_max_attempts`
    on_max_attempts: str = ""  # state to go to then ("" = the flow's fallback state)
    # enum: canonical value -> synonyms (the value itself always matches)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    minimum: float | None = None  # integer, number: inclusive bounds; text: length bounds
    maximum: float | None = None
    pattern: str = ""  # regex: the first match is the value; text: the answer must match it whole
    range: str = ""  # date: "past" or "future" (DATE_RANGES); "" = any date
    validate: tuple[SlotCheckSpec, ...] = ()  # checks a found value must pass, in order
    sensitive: bool = False  # masked in stored turns, logs and operators' views


@dataclass(frozen=True, slots=True)
class QuickReplySpec:
    title: str  # template
    payload: str = ""


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    title: str  # template
    type: str = "postback"  # one of BUTTON_TYPES
    payload: str = ""
    url: str = ""  # template


@dataclass(frozen=True, slots=True)
class CardSpec:
    title: str  # template
    subtitle: str = ""  # template
    image_url: str = ""
    buttons: tuple[ButtonSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    """What to say. ``channels`` and ``variants`` hold whole alternative responses."""

    text: str = ""  # template
    quick_replies: tuple[QuickReplySpec, ...] = ()
    buttons: tuple[ButtonSpec, ...] = ()
    cards: tuple[CardSpec, ...] = ()
    media: dict[str, Any] | None = None  # MediaContent fields by proto name (url, mime_type, caption...)
    location: dict[str, Any] | None = None  # LocationContent fields by proto name
    # Per channel (web, whatsapp, messenger, slack, teams, voice, sms): used instead on that channel.
    channels: dict[str, ResponseSpec] = field(default_factory=dict)
    # Per A/B variant name (see ExperimentSpec): used instead for conversations in that variant.
    variants: dict[str, ResponseSpec] = field(default_factory=dict)
    # Per language (settings.languages): used instead for conversations in that language.
    languages: dict[str, ResponseSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """An HTTP call to a webhook the server's config names (its URL lives there, not here)."""

    name: str  # a `webhooks` entry of the server config
    store_as: str  # variables.<store_as> gets the JSON answer (or {"error": ...})
    on_failure: str = ""  # state to go to when it fails after its retries ("" = carry on)


# Recent texts (the user's and the flow's, masked) a conversation keeps for its prompts, and the
# most a generate step may send.
TEXTS_KEPT = 12
DEFAULT_HISTORY = 6
# Passages of `knowledge` a prompt carries at most (the ones sharing most words with the message).
KNOWLEDGE_SHOWN = 5


@dataclass(frozen=True, slots=True)
class GenerateSpec:
    """A language model's answer (docs/flows.md, "Generative steps"): said to the user, or
    stored ``into`` a slot or variable. The prompt is the ``system`` instructions, the
    conversation's recent texts and the ``prompt``, every piece masked as the flow says."""

    prompt: str = "{{ message }}"  # template: what the user asks (default: the message)
    system: str = ""  # template: instructions to the model ("" = a short default)
    provider: str = ""  # a `models.providers` name of the server config ("" = the first one)
    history: int = DEFAULT_HISTORY  # recent texts of the conversation sent with it (0..TEXTS_KEPT)
    knowledge: bool = False  # the flow's `knowledge` passages go with it (grounding)
    into: str = ""  # "slots.x" / "variables.y": stored there; "" = said to the user
    max_tokens: int = 0  # 0 = the provider's
    temperature: float | None = None  # None = the provider's
    on_failure: str = ""  # state to go to when it fails ("" = carry on)
    failure_response: ResponseSpec | None = None  # said when it fails (None: a default, if said)
    budget_response: ResponseSpec | None = None  # said when the tenant's budget is spent (None: a default)

    @property
    def says(self) -> bool:
        return not self.into


@dataclass(frozen=True, slots=True)
class KnowledgeSpec:
    """A short passage a generative step may answer from (``knowledge:``)."""

    text: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One step of on_enter or of a transition; exactly one of the fields is set."""

    say: ResponseSpec | None = None
    # target ("slots.x" or "variables.y") -> expression giving the new value
    set: dict[str, str] = field(default_factory=dict)
    clear: tuple[str, ...] = ()  # targets ("slots.x", "variables.y", or "slots" for all slots)
    handoff: str | None = None  # reason (template): the conversation enters human mode
    webhook: WebhookSpec | None = None
    generate: GenerateSpec | None = None

    @property
    def kind(self) -> str:
        if self.say is not None:
            return "say"
        if self.set:
            return "set"
        if self.clear:
            return "clear"
        if self.webhook is not None:
            return "webhook"
        if self.generate is not None:
            return "generate"
        return "handoff"


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    to: str  # target state
    intent: str = ""  # taken when this intent is recognised ...
    when: str = ""  # ... and/or this expression is true (both, when both are given)
    actions: tuple[ActionSpec, ...] = ()  # run when taken, before the target's on_enter


@dataclass(frozen=True, slots=True)
class CorrectionSpec:
    """A state's correction route: a message that gives one of ``slots`` a new value ("actually
    make it medium") sets it and goes to ``to`` (the state itself when "") after ``actions``.
    One that names only the values they have ("make it two" when it is two) hears
    ``unchanged_response`` (if any) and the state's question again."""

    slots: tuple[str, ...]
    to: str = ""
    actions: tuple[ActionSpec, ...] = ()
    unchanged_response: ResponseSpec | None = None


@dataclass(frozen=True, slots=True)
class CallSpec:
    """A sub-flow: another flow runs until it ends, then this state decides where to go."""

    flow: str  # the flow called (the tenant's own, else the shared one)
    store_as: str  # variables.<store_as> gets {"state": its end state, "slots": ..., "variables": ...}
    inputs: dict[str, str] = field(default_factory=dict)  # callee target -> expression (here)


@dataclass(frozen=True, slots=True)
class StateSpec:
    name: str
    on_enter: tuple[ActionSpec, ...] = ()
    # Slots this state fills, asked in this order; its transitions are tried once all are filled
    # (global routes are always tried first).
    collect: tuple[str, ...] = ()
    transitions: tuple[TransitionSpec, ...] = ()
    terminal: bool = False  # the conversation ends here; the next message starts a new session
    # A decision state: tried right after on_enter, without waiting for a message (no intents;
    # the last one has no `when`, so one is always taken).
    decide: tuple[TransitionSpec, ...] = ()
    fallback_response: ResponseSpec | None = None  # said instead of the flow's in this state
    call: CallSpec | None = None  # a sub-flow; `decide` is tried when it returns
    # A confirmation: its on_enter asks yes or no to commit something, so an answer typed before
    # the user saw that question (the message's seen_turn) is not taken: the question is asked again.
    confirm: bool = False
    corrections: CorrectionSpec | None = None  # slots a message here may change, and where to then


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """An A/B test: each conversation gets one variant, sticky, by a hash of its identity."""

    name: str
    weights: dict[str, float]  # variant -> weight (> 0)
    # variant -> {state: replacement state}: whole states swapped for that variant
    states: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowSettings:
    start: str
    fallback_state: str = ""  # where repeated misunderstanding leads ("" = stay)
    max_fallbacks: int = 3  # consecutive unmatched messages before going to fallback_state
    fallback_response: ResponseSpec = field(
        default_factory=lambda: ResponseSpec(text="Sorry, I didn't get that.")
    )
    intent_threshold: float = 0.5  # below this confidence: no intent
    session_ttl_s: float = 0.0  # inactivity that starts a new session; 0 = never
    carry_over_slots: tuple[str, ...] = ()  # kept into a new session
    # Said to messages that arrive while a human has the conversation (handoff).
    handoff_response: ResponseSpec = field(
        default_factory=lambda: ResponseSpec(text="A person will answer you shortly.")
    )
    # Said before the start state's greeting when a session ran out (session_ttl_s); empty: nothing.
    session_expired_response: ResponseSpec = field(
        default_factory=lambda: ResponseSpec(
            text="It's been a while, so we're starting over. (Our last conversation timed out.)"
        )
    )
    languages: tuple[str, ...] = ()  # the languages it speaks; the first is the default
    typo_tolerance: bool = True  # keywords and examples also match words with a typo or two
    nlu: NluSpec | None = None  # a registered recognizer instead of the built-in one
    mask: tuple[str, ...] = ()  # built-in detectors (MASKS) of data to mask in stored text
    mask_patterns: tuple[str, ...] = ()  # regular expressions of more data to mask
    # Said before a confirmation's question is asked again because the answer came before the
    # user had seen it (StateSpec.confirm).
    typed_ahead_response: ResponseSpec = field(default_factory=lambda: ResponseSpec(text="Just to be sure:"))
    # Said, with the choices shown last, to a number that is none of them.
    choice_out_of_range_response: ResponseSpec = field(
        default_factory=lambda: ResponseSpec(
            text="That number isn't one of the choices. Please pick one of these:"
        )
    )
    # The model answers what nothing matched (a state's own fallback_response still wins); when
    # it fails, the fallback goes on as without it.
    generative_fallback: GenerateSpec | None = None


@dataclass(frozen=True, slots=True)
class NluSpec:
    """An intent recognizer registered with the server (runtime.flows.execution.nlu), by name."""

    recognizer: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowDocument:
    flow_id: str
    version: str  # declared, else a hash of the file's content
    settings: FlowSettings
    states: dict[str, StateSpec]
    intents: dict[str, IntentSpec] = field(default_factory=dict)
    slots: dict[str, SlotSpec] = field(default_factory=dict)
    routes: tuple[TransitionSpec, ...] = ()  # global: tried first, in every state
    experiments: dict[str, ExperimentSpec] = field(default_factory=dict)
    knowledge: tuple[KnowledgeSpec, ...] = ()  # passages generative steps may answer from
    tenant: str = ""  # "" = every tenant without a flow of its own
    description: str = ""
    source: str = ""  # the file it came from

    def generations(self) -> list[GenerateSpec]:
        """Every generate step of the flow, its generative fallback's too."""
        found = [self.settings.generative_fallback] if self.settings.generative_fallback else []
        actions = [a for t in self.routes for a in t.actions]
        for state in self.states.values():
            actions += [*state.on_enter, *(a for t in (*state.transitions, *state.decide) for a in t.actions)]
        return found + [a.generate for a in actions if a.generate is not None]
