"""Runs a flow file: one :class:`DeclarativeFlow` per loaded flow version.

A turn, in order (docs/flows.md, "How a turn runs", says the same for flow authors):

1. A conversation that is new, ended (terminal state) or idle past the session TTL
   starts a session: back to ``start`` (carry-over slots kept), start's on_enter run;
   after a TTL expiry ``session_expired_response`` is said first.
2. In human handoff, automation stops: the message is recorded and answered with
   the holding response, until a system message with payload ``resume`` (then the
   conversation goes back to ``start``).
3. The language is chosen (``MessageContent.language`` when the flow speaks it, else the
   conversation's last one, else the flow's first), the intent is recognised (payload
   first, then text; of matches as sure and as specific, the first one a route or a
   transition of the current state names; a recognizer that asks a model does it here, for
   a message its own rules leave open: a call of kind ``recognize``, its reading used only
   once every name and value in it passed the flow's checks) and the intent's own slots
   read; slots the
   current state collects are read from the message, several at once, each value through
   its slot's checks.
   Before that, a message that is only a number answers the choices of the last question
   its user saw (kept in flow_memory when the reply was made; the message's ``seen_turn``
   says which reply that was): it becomes that choice, or, out of range, is re-asked.
4. A state's correction route comes first: a message giving one of its slots a new value
   sets it and goes where the route says (unless its intent takes a global route or a
   transition that stays in the state: a question about it, not an answer). A confirmation
   (``confirm``) whose question the user had not seen when they wrote (``seen_turn`` older
   than the turn it was asked in; a question asked again word for word, with the same
   values, keeps the turn it was first asked in) takes only global routes, else asks its
   question again. An answer to the question just asked wins over intents read from the
   same words (unless the intent is exact: a payload, a message that is only one of its
   keywords, or that a pattern matches whole). Then global routes, then the state's
   transitions (in a collecting state, only once every collected slot is filled); the first
   that matches is taken: its actions, then the target's on_enter. On the first message of a
   session, a transition back into the start state is not taken (the greeting has just been
   said).
5. Entering a state runs its on_enter, then: a decision state takes its first matching
   choice at once; a state that calls a sub-flow starts it (its end comes back here and
   decides); a collecting state asks for what is missing, or, when everything is known,
   moves on at once -- unless it moved on with exactly these values before, which means
   the conversation came back to change them: it asks for them again.
6. Otherwise: a missing slot is asked for (re-prompts after failed answers, then
   ``on_max_attempts``), or the fallback answers (``error_count`` and ``fallback_count``;
   after ``max_fallbacks`` in a row, ``fallback_state``) -- or, with a
   ``generative_fallback`` and no ``fallback_response`` of the state's own, a language model
   answers, and only if it fails does the fallback go on as it would. On the first message of
   a session the greeting answers instead, with no fallback; but a question no intent matched
   gets the generative fallback's answer after it.

Everything said in the turn is joined; quick replies, buttons and cards are kept only
from what was said in the state the turn ends in (choices of a state passed through
would answer a question no longer asked).

A turn is deterministic given (state, message, now, webhook results): the shard replays
a turn suspended on a webhook (:class:`~runtime.flows.NeedsWebhook`) with the answer, and
the replay takes exactly the same steps up to the call. A ``generate`` step's model call
(docs/flows.md, "Generative steps") is such a call too, of kind ``generate``: its prompt is
the step's system instructions (with the flow's ``knowledge`` passages), the conversation's
recent texts and the step's prompt, each masked before it leaves (sensitive slots never
appear: templates see them masked, and any value of theirs found in the text, however it is
written, is masked too; the flow's masking patterns apply). A flow that generates keeps its conversations'
recent texts in ``flow_memory`` for that, masked as the store keeps them. The
interpreter's own bookkeeping lives in ``ConversationState.flow_memory``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confab.runtime.errors import InternalError
from confab.runtime.flows import (
    GENERATE,
    HANDOFF,
    RECOGNIZE,
    WEBHOOK,
    FlowReply,
    NeedsWebhook,
    UnknownState,
    WebhookCall,
    call_label,
)
from confab.runtime.flows.execution.folding import words
from confab.runtime.flows.execution.intents import (
    AsksModel,
    IntentMatch,
    IntentRecognizer,
    ModelQuestion,
    ModelReading,
    Utterance,
)
from confab.runtime.flows.execution.lexicon import lexicon
from confab.runtime.flows.execution.nlu import make_recognizers
from confab.runtime.flows.execution.slots import Extraction, extract, extract_all
from confab.runtime.flows.language.document import (
    KNOWLEDGE_SHOWN,
    TEXTS_KEPT,
    ActionSpec,
    FlowDocument,
    GenerateSpec,
    KnowledgeSpec,
    ResponseSpec,
    SlotSpec,
    StateSpec,
    TransitionSpec,
    WebhookSpec,
)
from confab.runtime.flows.language.expressions import ExpressionError, ExpressionEvalError, parse_expression
from confab.runtime.flows.language.masking import MASK, Masker, mask_spans, mask_value, value_spans
from confab.runtime.flows.language.templates import TemplateError, render_response, render_text
from confab.runtime.model import (
    Button,
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    JsonDict,
    QuickReply,
)
from confab.runtime.models import BUDGET, failure_reason

HISTORY_KEPT = 20  # intent_history and previous_states entries kept
HANDOFF_LOG_KEPT = 50  # messages recorded while a human has the conversation
MAX_HOPS = 10  # state changes in one turn: a guard against transitions that loop
MAX_CALL_DEPTH = 5  # sub-flows inside sub-flows
TEMPLATE_FAILED = "Sorry, something went wrong on our side."
# What a generate step says when the model fails and the flow says nothing of its own.
GENERATE_FAILED = "Sorry, I can't answer that right now."
BUDGET_SPENT = "Sorry, I can't answer questions like this any more today. Please try again tomorrow."
DEFAULT_SYSTEM = (
    "You are the assistant in a customer conversation. Answer the user's last message briefly"
    " and politely, in the language it is written in. If you do not know the answer, say so."
)
GROUNDING = (
    "Answer only from the passages below. If they do not hold the answer, say that you do not"
    " know it and offer to connect the user with a person.\n\nPassages:"
)
HISTORY_CHARS = 500  # of one remembered text
# Why a generate step failed without a call (runtime.models.failure_reason when there was one).
NOT_CALLED = "template"  # the step's prompt did not render: no call was made
# Why a model recognizer's reading is not used (``nlu_fallback:REASON``), besides why its call
# failed and what its own read() says (runtime.flows.execution.model_recognizer).
SENSITIVE = "sensitive"  # not asked: the message answers a sensitive slot, or only all of it masked hides one
UNKNOWN_INTENT = "unknown_intent"  # an intent the flow does not have
UNKNOWN_SLOT = "unknown_slot"  # a slot the flow does not have, or one never offered (a sensitive one)
INVALID_SLOT = "invalid_slot"  # a value its slot's parsing or checks refuse

# Keys of flow_memory.
ASKING = "asking"  # the slot whose prompt was said last
ATTEMPTS = "attempts"  # failed answers to it
FALLBACKS = "fallbacks"  # unmatched messages in a row
VARIANTS = "ab"  # experiment -> variant
HANDOFF_LOG = "handoff_log"
REVIEW = "review_required"
LANGUAGE = "language"  # the conversation's language, once a message named one the flow speaks
CONVERSATION = "conversation"  # a fingerprint of the conversation's key (webhook idempotency keys)
MOVED_ON = "moved_on"  # collecting state -> fingerprint of the values it last moved on with
CALLS = "calls"  # sub-flow frames, outermost first
ASKED_AT = "asked_at"  # a confirmation's question: the turn it was asked in (as it stands)
ASKED = "asked"  # ... and a fingerprint of it: its words and the values they were said with
# The choices of the last questions shown (a number picks one): [{"turn", "question", "choices"}],
# oldest first; "question" is [state, slot asked], "choices" [title, payload, type, url] lists.
SHOWN = "shown"
SHOWN_KEPT = 3  # lists kept: a number written before the last replies were seen picks from its own
HISTORY = "history"  # recent texts, [role, text] (masked), for the prompts of generate steps
# What a sub-flow shares with its caller; the rest of flow_memory is the caller's own, kept in the frame.
_SHARED = frozenset({VARIANTS, HANDOFF, HANDOFF_LOG, REVIEW, LANGUAGE, CONVERSATION, CALLS, SHOWN, HISTORY})
_NUMERIC_TYPES = ("integer", "number")  # an asked slot of these takes a bare number as its answer
_CHOICE_NUMBER = re.compile(r"#?\s*(\d{1,3})\s*[.)]?")  # "2", "#2", "2." or "2)": a choice's number


@dataclass(slots=True)
class _Fill:
    """What reading a state's slots from the message gave."""

    problem: str = ""  # why the asked slot's answer could not be used
    message: Content | None = None  # a check's own words about it (said before the re-prompt)
    answered: bool = False  # the asked slot took a value from this message
    moved: bool = False  # a failed check's webhook route took the conversation elsewhere


@dataclass(slots=True)
class _Turn:
    """What one turn collects while it runs."""

    state: ConversationState
    message: InboundMessage  # as the flow reads it: a choice's number becomes that choice
    now: float
    root: DeclarativeFlow
    received: InboundMessage | None = None  # as it came (what the store keeps); None: ``message``
    language: str = ""
    match: IntentMatch | None = None
    webhook_results: Mapping[str, JsonDict] = field(default_factory=dict)
    webhook_calls: int = 0  # webhook calls reached so far in this turn
    said: list[Content] = field(default_factory=list)
    entered_at: int = 0  # len(said) when the current state was entered
    actions: list[str] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)  # slots prompted for in this turn
    sensitive_values: list[Any] = field(default_factory=list)  # read from the message this turn
    # Slot values a model recognizer read from the message, each through its slot's parsing and
    # checks (those of ``proposed_by``, the flow it read for): where that flow reads those slots
    # from the message this turn, they come first.
    proposed: dict[str, Any] = field(default_factory=dict)
    proposed_by: DeclarativeFlow | None = None
    held_sensitive: list[Any] = field(default_factory=list)  # sensitive slots' values as the turn began
    hops: int = 0
    session_started: bool = False
    handoff_reason: str = ""  # as the flow file writes it (the template, not what it rendered)


class DeclarativeFlow:
    def __init__(
        self, document: FlowDocument, library: Mapping[tuple[str, str], DeclarativeFlow] | None = None
    ) -> None:
        """``library``: the flows loaded with this one, by (flow id, tenant), for sub-flow calls."""
        self.document = document
        self.flow_id = document.flow_id
        self.version = document.version
        self.tenant = document.tenant
        self.settings = document.settings
        self.library: Mapping[tuple[str, str], DeclarativeFlow] = library if library is not None else {}
        self.recognizers: dict[str, IntentRecognizer] = make_recognizers(document.intents, document.settings)
        self.masker = Masker.of(document.settings.mask, document.settings.mask_patterns)
        self.sensitive_slots = frozenset(n for n, s in document.slots.items() if s.sensitive)
        self.generates = bool(document.generations())  # then conversations keep recent texts

    # Flow interface -----------------------------------------------------------

    def start(self, now: float, key: ConversationKey) -> ConversationState:
        state = ConversationState(
            current_state="",
            flow_id=self.flow_id,
            flow_version=self.version,
            created_at=now,
            last_activity=now,
        )
        state.flow_memory[VARIANTS] = self.assign_variants(key)
        state.flow_memory[CONVERSATION] = _fingerprint(key.tenant_id, key.conversation_id)
        return state

    def handle(
        self,
        state: ConversationState,
        message: InboundMessage,
        now: float,
        webhook_results: Mapping[str, JsonDict] | None = None,
    ) -> FlowReply:
        before = _snapshot(state)
        turn = _Turn(state, message, now, self, received=message, webhook_results=webhook_results or {})
        turn.held_sensitive = self._held_at_start(state)
        memory = state.flow_memory
        turn.language = self._language(turn)
        hints = message.hints
        if hints.require_human_review:
            memory[REVIEW] = True
            turn.actions.append("held_for_review")

        if HANDOFF in memory:
            self._in_handoff(turn)
        elif hints.bypass_automation:
            turn.handoff_reason = "bypass_automation"
            self._hand_off(turn, "bypass_automation")
        else:
            expired = bool(state.current_state) and self._expired(state, now)
            starting = not state.current_state or expired or self._ended(state)
            if starting:
                turn.session_started = True
                self._start_session(turn, expired=expired)
            self._active(state)._take_turn(turn, first_of_session=starting)

        state.intent_history = state.intent_history[-HISTORY_KEPT:]
        state.previous_states = state.previous_states[-HISTORY_KEPT:]
        response = _combine(turn.said, turn.entered_at)
        _remember_choices(state, response)
        if memory.get(REVIEW):
            response.metadata["held_for_review"] = True
        recorded_input = self._recorded_input(turn)
        if self.generates or self._active(state).generates:
            self._remember(turn, recorded_input, response.text)
        return FlowReply(
            response=response,
            context_updates=_changes(before, _snapshot(state)),
            actions_performed=turn.actions,
            ab_variant=",".join(f"{k}:{v}" for k, v in sorted(memory.get(VARIANTS, {}).items())),
            recorded_input=recorded_input,
            session_started=turn.session_started,
            handoff_reason=turn.handoff_reason,
        )

    def force(self, state: ConversationState, name: str) -> None:
        if name not in self.document.states:
            raise UnknownState(
                f"flow {self.flow_id} has no state {name!r}; it has {sorted(self.document.states)}"
            )
        self._leave_sub_flows(state)
        if state.current_state and state.current_state != name:
            state.previous_states.append(state.current_state)
        state.current_state = name
        for key in (ASKING, ATTEMPTS, FALLBACKS, ASKED_AT, ASKED):  # whatever it was asking no longer applies
            state.flow_memory.pop(key, None)

    def assign_variants(self, key: ConversationKey) -> dict[str, str]:
        """The A/B variant of each experiment for a conversation: a hash of its key, sticky."""
        assigned = {}
        for name, spec in self.document.experiments.items():
            digest = hashlib.sha256(f"{key.tenant_id}\x00{key.conversation_id}\x00{name}".encode()).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64 * sum(spec.weights.values())
            for variant, weight in spec.weights.items():
                point -= weight
                if point < 0:
                    assigned[name] = variant
                    break
            else:
                assigned[name] = next(reversed(spec.weights))
        return assigned

    # Masking -------------------------------------------------------------------

    def redact_text(self, text: str) -> str:
        """``text`` with what ``settings.mask``/``mask_patterns`` match masked (for logs and stores)."""
        return self.masker.redact(text) if self.masker.active else text

    def redact_state(self, state: ConversationState) -> ConversationState:
        """A copy of ``state`` fit to show an operator: sensitive slots and masked text hidden
        (``redact_slots``).

        Slots are masked as the flow that declares them says: while a sub-flow runs, the
        slots are the sub-flow's, and each call frame keeps its caller's.
        """
        shown = copy.deepcopy(state)
        memory = shown.flow_memory
        for entry in memory.get(HANDOFF_LOG, []):
            entry["text"] = self.redact_text(str(entry.get("text", "")))
        for question in memory.get(SHOWN, []):  # choices' titles are rendered text too
            for choice in question.get("choices", []):
                choice[0] = self.redact_text(str(choice[0]))
        owner: DeclarativeFlow | None = self
        for frame in memory.get(CALLS, []):
            frame["slots"] = redact_slots(owner, frame.get("slots", {}))
            owner = owner._callee(str(frame["flow"])) if owner is not None else None
        shown.slots = redact_slots(owner, shown.slots)
        return shown

    def _callee(self, flow_id: str) -> DeclarativeFlow | None:
        return self.library.get((flow_id, self.tenant)) or self.library.get((flow_id, ""))

    def _held_at_start(self, state: ConversationState) -> list[Any]:
        """The values sensitive slots hold as a turn begins (those of the flow the conversation
        is in; of this one when a sub-flow it was in is no longer loaded: the turn starts afresh)."""
        try:
            return self._active(state)._sensitive_held(state)
        except InternalError:
            return self._sensitive_held(state)

    def _sensitive_held(self, state: ConversationState) -> list[Any]:
        """The values this flow's sensitive slots hold in ``state``."""
        return [v for k, v in state.slots.items() if k in self.sensitive_slots and v is not None]

    def _recorded_input(self, turn: _Turn) -> str | None:
        """What the store may keep of the message: None when nothing needs masking.

        Masked: the values of sensitive slots read from it, and those any sensitive slot held
        before or holds after the turn (a card number typed again), however written
        (``masking.value_spans``); and whatever the flow's masks match."""
        content = (turn.received or turn.message).content
        text = content.text or content.payload
        held = [
            v
            for v in (*turn.held_sensitive, *self._active(turn.state)._sensitive_held(turn.state))
            if value_spans(text, v)
        ]
        if not turn.sensitive_values and not held and not self.masker.active:
            return None
        redacted = self._masked_input(text, turn.sensitive_values, held)
        if redacted is None:
            return mask_value(text)
        if not content.text and redacted == content.payload:
            # A payload alone with nothing to mask (a button): the message is kept as it came.
            # The text the store keeps replaces the message's text, and a payload kept as
            # text reads otherwise when replayed (a payload that is an intent's fills no slot).
            return None
        return redacted

    def _masked_input(self, text: str, values: Iterable[Any], held: Iterable[Any] = ()) -> str | None:
        """``text`` with ``values`` (read from it for sensitive slots), the values of ``held``
        (those sensitive slots hold) wherever they turn up, however written
        (``masking.value_spans``), and what the flow's masks match masked; None when one of
        ``values`` is not in it in any written form (read from another form, a phone number's
        digits): only masking all of it hides that."""
        spans = []
        for value in values:
            found = value_spans(text, value)
            if not found:
                return None
            spans += found
        for value in held:
            spans += value_spans(text, value)
        return self.masker.redact(text, spans)

    # Sessions ----------------------------------------------------------------

    def _ended(self, state: ConversationState) -> bool:
        if state.flow_memory.get(CALLS):
            return False  # inside a sub-flow: its end returns to the caller, it never rests there
        current = self.document.states.get(state.current_state)
        return current is not None and current.terminal

    def _expired(self, state: ConversationState, now: float) -> bool:
        ttl = self.settings.session_ttl_s
        return bool(ttl) and now - state.last_activity > ttl

    def _start_session(self, turn: _Turn, *, expired: bool) -> None:
        state = turn.state
        if state.current_state:  # a conversation that had a session before
            self._leave_sub_flows(state)
            kept = set(self.settings.carry_over_slots)
            state.slots = {k: v for k, v in state.slots.items() if k in kept}
            state.variables = {}
            state.flow_memory = {k: v for k, v in state.flow_memory.items() if k in _SHARED}
            state.flow_memory.pop(HISTORY, None)  # a new session's prompts start afresh
            turn.actions.append("session_restarted")
            if expired:
                turn.actions.append("session_expired")
                if _says_anything(self.settings.session_expired_response):
                    turn.said.append(self._render(turn, self.settings.session_expired_response))
        self._enter(turn, self.settings.start)

    def _language(self, turn: _Turn) -> str:
        languages = self.settings.languages
        if not languages:
            return ""
        memory = turn.state.flow_memory
        tag = turn.message.content.language.lower().replace("_", "-").split("-")[0]
        if tag in languages:
            memory[LANGUAGE] = tag
            return tag
        kept = memory.get(LANGUAGE)
        return kept if isinstance(kept, str) and kept in languages else languages[0]

    # Handoff -----------------------------------------------------------------

    def _hand_off(self, turn: _Turn, reason: str) -> None:
        turn.state.flow_memory[HANDOFF] = reason
        turn.actions.append("handoff")
        turn.said.append(self._render(turn, turn.root.settings.handoff_response))

    def _in_handoff(self, turn: _Turn) -> None:
        content = turn.message.content
        memory = turn.state.flow_memory
        if content.type == "system" and content.payload == "resume":
            del memory[HANDOFF]
            turn.actions.append("handoff_resumed")
            turn.session_started = True  # automation starts afresh: a session of the flow's
            self._leave_sub_flows(turn.state)
            self._enter(turn, self.settings.start)  # the person dealt with it: automation starts afresh
            return
        log = memory.setdefault(HANDOFF_LOG, [])
        held = [span for value in turn.held_sensitive for span in value_spans(content.text, value)]
        text = self.masker.redact(content.text, held)
        log.append({"text": text, "payload": content.payload, "user_id": turn.message.user_id})
        del log[:-HANDOFF_LOG_KEPT]
        turn.actions.append("handoff_hold")
        turn.said.append(self._render(turn, self.settings.handoff_response))

    # The turn ------------------------------------------------------------------

    def _take_turn(self, turn: _Turn, *, first_of_session: bool) -> None:
        state = turn.state
        current = self._state(state.current_state)
        if not first_of_session and not self._pick_choice(turn, current):
            return
        turn.match = self._recognize(turn, current, answering=not first_of_session)
        self._note_intent(turn)
        if turn.match is not None:
            self._fill_intent_slots(turn, turn.match)

        if not first_of_session and self._correct(turn, current):
            state.flow_memory[FALLBACKS] = 0
            return
        if not first_of_session and self._unseen(turn, current):
            # Typed before its user saw the question: no answer to it. A route still means
            # what it means anywhere ("stop", "a person"), and a question about it ("how
            # much?": a transition back to this state) is answered, the question asked again.
            if self._follow(turn, current, first_of_session=False, staying_only=True):
                state.flow_memory[FALLBACKS] = 0
                return
            turn.actions.append(f"typed_ahead:{current.name}")
            self._ask_again(turn, current, self._render(turn, self.settings.typed_ahead_response))
            return
        asking = str(state.flow_memory.get(ASKING, ""))
        fill = self._fill_slots(turn, current, answering=not first_of_session)
        if fill.moved:
            return
        if fill.answered and turn.match is not None and not turn.match.exact:
            # The words answered the question just asked: they are not also an intent.
            turn.actions.append(f"answer_over_intent:{turn.match.name}")
            turn.match = None
            self._note_intent(turn, record=False)
        if self._follow_interrupting(turn, current, asking, fill) or self._follow(
            turn, current, first_of_session=first_of_session
        ):
            state.flow_memory[FALLBACKS] = 0
            return
        missing = self._missing(turn, current)
        if missing is not None:
            failed = bool(fill.problem) or self._asked_and_unanswered(turn, missing)
            self._ask(turn, missing, failed=failed, message=fill.message)
            return
        if first_of_session:
            self._answer_opening(turn, current)
            return
        self._fall_back(turn, current)

    def _preferred(self, match: IntentMatch | None, current: StateSpec) -> IntentMatch | None:
        """Of a match and its alternatives (intents the message means as surely, by as specific a
        match), the first that a global route or a transition of ``current`` names; else the match."""
        if match is None or not match.alternatives:
            return match
        usable = {t.intent for t in (*self.document.routes, *current.transitions) if t.intent}
        return next((m for m in (match, *match.alternatives) if m.name in usable), match)

    def _follow_interrupting(self, turn: _Turn, current: StateSpec, asking: str, fill: _Fill) -> bool:
        """An exact intent that interrupts a free-text question ("stop" while asked for feedback):
        a route or transition it takes leaves the text slot empty, the message being no answer.
        False, with the slot as it was, when the intent leads nowhere from here."""
        slot = self.document.slots.get(asking)
        if not (fill.answered and turn.match is not None and turn.match.exact):
            return False
        if slot is None or slot.type != "text":
            return False
        state = turn.state
        value = state.slots.pop(asking)
        if self._follow(turn, current, first_of_session=False):
            turn.actions.remove(f"fill:{asking}")
            if asking in self.sensitive_slots:
                turn.sensitive_values.remove(value)
            return True
        state.slots[asking] = value
        return False

    def _note_intent(self, turn: _Turn, *, record: bool = True) -> None:
        state, match = turn.state, turn.match
        if match is not None:
            state.current_intent = match.name
            state.intent_confidence = match.confidence
            state.intent_history.append(match.name)
        else:
            if not record and state.intent_history and state.current_intent:
                state.intent_history.pop()
            state.current_intent, state.intent_confidence = "", 0.0

    def _follow(
        self, turn: _Turn, current: StateSpec, *, first_of_session: bool, staying_only: bool = False
    ) -> bool:
        """Take the first matching global route or transition; False if none matched. With
        ``staying_only``, of the state's transitions only those that stay in it (:meth:`_stays`)."""
        candidates: list[tuple[TransitionSpec, StateSpec | None]] = [(r, None) for r in self.document.routes]
        if self._missing(turn, current) is None:
            # Only the state's own transitions move on from it (a route is a detour, not a "done").
            candidates += [
                (t, current) for t in current.transitions if not staying_only or self._stays(turn, current, t)
            ]
        for transition, source in candidates:
            if self._matches(turn, transition):
                start = self._swap(turn.state, self.settings.start)
                if first_of_session and self._swap(turn.state, transition.to) == start:
                    turn.actions.append(f"already_in:{start}")  # the session has just begun there
                    return True
                self._take(turn, transition, source)
                return True
        return False

    def _matches(self, turn: _Turn, transition: TransitionSpec) -> bool:
        if transition.intent and (turn.match is None or turn.match.name != transition.intent):
            return False
        return not transition.when or bool(self._evaluate(turn, transition.when))

    def _take(self, turn: _Turn, transition: TransitionSpec, source: StateSpec | None = None) -> None:
        if source is not None and source.collect and self._missing(turn, source) is None:
            turn.state.flow_memory.setdefault(MOVED_ON, {})[source.name] = self._values_of(turn, source)
        turn.actions.append(f"transition:{turn.state.current_state}->{transition.to}")
        if self._act(turn, transition.actions):
            self._enter(turn, transition.to)

    def _enter(self, turn: _Turn, name: str) -> None:
        turn.hops += 1
        if turn.hops > MAX_HOPS:
            raise InternalError(f"flow {self.flow_id}: more than {MAX_HOPS} state changes in one turn")
        state = turn.state
        target = self._state(self._swap(state, name))
        again = state.current_state == target.name
        if state.current_state and not again:
            state.previous_states.append(state.current_state)
        state.current_state = target.name
        turn.entered_at = len(turn.said)
        memory = state.flow_memory
        memory.pop(ASKING, None)
        memory.pop(ATTEMPTS, None)
        asked = (memory.pop(ASKED_AT, None), memory.pop(ASKED, None))
        # A confirmation entered again from itself ("how much is that?") may ask what it asked.
        standing = asked if again else None
        turn.actions.append(f"enter:{target.name}")
        if not self._act(turn, target.on_enter):
            return
        if target.confirm:
            self._mark_asked(turn, turn.said[turn.entered_at :], standing)
        if target.terminal:
            if memory.get(CALLS):
                self._return(turn)
            return
        if target.call is not None:
            self._call(turn, target)
            return
        if target.decide:
            self._decide(turn, target)
            return
        if target.collect:
            self._ask_again_if_stale(turn, target)
            if self._fill_slots(turn, target, answering=False).moved:
                return
        missing = self._missing(turn, target)
        if missing is not None:
            self._ask(turn, missing, failed=False)
        elif target.collect:  # everything it collects is already known: move on now
            for transition in target.transitions:
                if self._matches(turn, transition):
                    self._take(turn, transition, target)
                    return

    def _decide(self, turn: _Turn, spec: StateSpec) -> None:
        for choice in spec.decide:
            if self._matches(turn, choice):
                turn.actions.append(f"decide:{spec.name}")
                self._take(turn, choice)
                return

    # Sub-flows ---------------------------------------------------------------------

    def _resolve(self, flow_id: str) -> DeclarativeFlow:
        flow = self._callee(flow_id)
        if flow is None:
            raise InternalError(f"flow {self.flow_id}: the flow {flow_id!r} it calls is not loaded")
        return flow

    def _active(self, state: ConversationState) -> DeclarativeFlow:
        """The flow whose state the conversation is in: this one, or the sub-flow it called."""
        flow = self
        for frame in state.flow_memory.get(CALLS, []):
            flow = flow._resolve(str(frame["flow"]))
        return flow

    def _call(self, turn: _Turn, spec: StateSpec) -> None:
        assert spec.call is not None
        state = turn.state
        frames: list[JsonDict] = state.flow_memory.get(CALLS, [])
        if len(frames) >= MAX_CALL_DEPTH:
            raise InternalError(f"flow {self.flow_id}: sub-flows nested deeper than {MAX_CALL_DEPTH}")
        callee = self._resolve(spec.call.flow)
        inputs = {target.partition(".")[2]: self._evaluate(turn, e) for target, e in spec.call.inputs.items()}
        memory = state.flow_memory
        frames.append(
            {
                "flow": callee.flow_id,
                "version": callee.version,
                "state": spec.name,
                "slots": state.slots,
                "variables": state.variables,
                "memory": {k: v for k, v in memory.items() if k not in _SHARED},
            }
        )
        state.flow_memory = {k: v for k, v in memory.items() if k in _SHARED}
        state.flow_memory[CALLS] = frames
        state.slots, state.variables = inputs, {}
        turn.actions.append(f"call:{callee.flow_id}")
        callee._enter(turn, callee.settings.start)

    def _return(self, turn: _Turn) -> None:
        """The sub-flow ended: back to the calling state, with its outcome, which then decides."""
        state = turn.state
        frames: list[JsonDict] = state.flow_memory[CALLS]
        frame = frames.pop()
        outcome = {"state": state.current_state, "slots": state.slots, "variables": state.variables}
        caller = turn.root
        for outer in frames:
            caller = caller._resolve(str(outer["flow"]))
        shared = {k: v for k, v in state.flow_memory.items() if k in _SHARED and k != CALLS}
        state.flow_memory = {**frame["memory"], **shared}
        if frames:
            state.flow_memory[CALLS] = frames
        state.slots, state.variables = frame["slots"], frame["variables"]
        calling = caller._state(str(frame["state"]))
        assert calling.call is not None
        state.variables[calling.call.store_as] = outcome
        state.previous_states.append(state.current_state)
        state.current_state = calling.name
        turn.actions.append(f"return:{frame['flow']}->{calling.name}")
        caller._decide(turn, calling)

    def _leave_sub_flows(self, state: ConversationState) -> None:
        """Back in this flow's own slots and variables, whatever sub-flows were running."""
        frames = state.flow_memory.pop(CALLS, None)
        if frames:
            state.slots, state.variables = frames[0]["slots"], frames[0]["variables"]
            state.flow_memory.update(frames[0]["memory"])

    # Slots -----------------------------------------------------------------------

    def _values_of(self, turn: _Turn, spec: StateSpec) -> str:
        values = {name: turn.state.slots.get(name) for name in spec.collect}
        return _digest(values)

    def _ask_again_if_stale(self, turn: _Turn, spec: StateSpec) -> None:
        """Back in a collecting state with the very values it moved on with: the conversation came
        back to change them, so they are asked again (rather than moving straight on once more)."""
        moved_on = turn.state.flow_memory.get(MOVED_ON, {})
        if self._missing(turn, spec) is None and moved_on.get(spec.name) == self._values_of(turn, spec):
            for name in spec.collect:
                turn.state.slots.pop(name, None)
            del moved_on[spec.name]
            turn.actions.append(f"ask_again:{spec.name}")

    def _fill_slots(self, turn: _Turn, spec: StateSpec, *, answering: bool) -> _Fill:
        """Fill what the message gives of the slots ``spec`` collects.

        ``answering``: the message answers the prompt said last, so the asked slot may take
        free text; a message that came before the prompt (the state was entered this turn)
        may fill slots only with values it plainly contains. A payload that is an intent's
        is a choice, not an answer to type: it fills nothing.
        """
        fill = _Fill()
        wanted = [self.document.slots[n] for n in spec.collect if turn.state.slots.get(n) is None]
        if not wanted or self._payload_is_intent(turn):
            return fill
        asking = turn.state.flow_memory.get(ASKING, "") if answering else ""
        found = self._extract_all(turn, wanted, asking)
        proposed = self._proposed(turn)
        for name, extraction in found.items():
            if name in proposed:  # a model recognizer's reading: parsed and checked already
                self._set_slot(turn, name, proposed[name])
                fill.answered = fill.answered or name == asking
                continue
            value, reason = _value_and_problem(extraction)
            message = None
            if not reason and value is not None:
                accepted, value, message, moved = self._check(turn, self.document.slots[name], value)
                if moved:
                    fill.moved = True
                    return fill
                if not accepted:
                    reason = "was not accepted"
            if reason:
                if name == asking:
                    fill.problem, fill.message = reason, message
                continue
            if value is not None:
                self._set_slot(turn, name, value)
                fill.answered = fill.answered or name == asking
        return fill

    def _extract_all(self, turn: _Turn, slots: list[SlotSpec], asking: str = "") -> dict[str, Extraction]:
        """``slots`` read from the message (slots.extract_all), as this flow reads them."""
        text, today = _text_of(turn.message), _today(turn.now)
        return extract_all(slots, text, asking=asking, today=today, typos=self.settings.typo_tolerance)

    def _payload_is_intent(self, turn: _Turn) -> bool:
        return (
            bool(turn.message.content.payload)
            and turn.match is not None
            and turn.match.exact
            and (not turn.message.content.text)
        )

    def _fill_intent_slots(self, turn: _Turn, match: IntentMatch) -> None:
        """An intent's own slots (``intents.X.slots``) and a recognizer's entities, when still empty."""
        slots = self.document.slots
        spec = self.document.intents.get(match.name)
        names = [n for n in (spec.slots if spec else ()) if turn.state.slots.get(n) is None]
        proposed = self._proposed(turn)
        for name in names:
            if name in proposed:  # a model recognizer's reading: parsed and checked already
                self._set_slot(turn, name, proposed[name])
        names = [n for n in names if n not in proposed]
        found: dict[str, Any] = {}
        if names:
            extracted = self._extract_all(turn, [slots[n] for n in names])
            found = {n: e.value for n, e in extracted.items() if e.found}
        for name, value in match.entities.items():
            if name in slots and turn.state.slots.get(name) is None:
                found.setdefault(name, value)
        for name, value in found.items():
            accepted, value, _message, _moved = self._check(turn, slots[name], value, may_move=False)
            if accepted:
                self._set_slot(turn, name, value)

    def _set_slot(self, turn: _Turn, name: str, value: Any) -> None:
        turn.state.slots[name] = value
        turn.actions.append(f"fill:{name}")
        if name in self.sensitive_slots:
            turn.sensitive_values.append(value)

    def _check(
        self, turn: _Turn, slot: SlotSpec, value: Any, *, may_move: bool = True
    ) -> tuple[bool, Any, Content | None, bool]:
        """Run ``slot.validate`` on ``value``: (accepted, the value to keep, what to say, moved away)."""
        for check in slot.validate:
            if check.webhook:
                body = {**self._webhook_body(turn, check.webhook), "slot": slot.name, "value": value}
                result = self._webhook_result(turn, check.webhook, body)
                answer = result.get("body") if result.get("ok") else None
                if not isinstance(answer, Mapping):
                    turn.actions.append(f"webhook_failed:{check.webhook}")
                    if result.get("abandoned_by"):
                        turn.actions.append(f"webhook_abandoned:{check.webhook}")
                    if check.on_failure and may_move:
                        self._enter(turn, check.on_failure)
                        return False, None, None, True
                    return False, None, None, False
                turn.actions.append(f"webhook:{check.webhook}")
                if not answer.get("valid", False):
                    text = str(answer.get("message") or "")
                    turn.actions.append(f"rejected:{slot.name}")
                    return False, None, Content(text=text) if text else None, False
                value = answer.get("value", value)
            elif not self._evaluate(turn, check.when, value=value):
                turn.actions.append(f"rejected:{slot.name}")
                said = self._render(turn, check.message) if check.message is not None else None
                return False, None, said, False
        return True, value, None, False

    def _missing(self, turn: _Turn, spec: StateSpec) -> SlotSpec | None:
        """The first slot ``spec`` collects that is still empty."""
        for name in spec.collect:
            if turn.state.slots.get(name) is None:
                return self.document.slots[name]
        return None

    def _asked_and_unanswered(self, turn: _Turn, slot: SlotSpec) -> bool:
        return turn.state.flow_memory.get(ASKING) == slot.name

    def _ask(self, turn: _Turn, slot: SlotSpec, *, failed: bool, message: Content | None = None) -> None:
        if slot.name in turn.asked:  # entering the state asked already; this message came before
            return
        turn.asked.add(slot.name)
        memory = turn.state.flow_memory
        before = int(memory.get(ATTEMPTS, 0)) if memory.get(ASKING) == slot.name else 0
        attempts = before + (1 if failed else 0)
        if message is not None:
            turn.said.append(message)
        if failed and attempts >= slot.max_attempts:
            turn.actions.append(f"max_attempts:{slot.name}")
            target = slot.on_max_attempts or self.settings.fallback_state
            if target:
                self._enter(turn, target)
                return
            attempts = 0
        memory[ASKING], memory[ATTEMPTS] = slot.name, attempts
        prompt: ResponseSpec | None
        if failed and slot.reprompts:
            prompt = slot.reprompts[min(attempts, len(slot.reprompts)) - 1]
            turn.actions.append(f"reprompt:{slot.name}")
        else:
            prompt = slot.prompt
            turn.actions.append(f"prompt:{slot.name}")
        if prompt is None:
            prompt = ResponseSpec(text=f"What is your {slot.name.replace('_', ' ')}?")
        turn.said.append(self._render(turn, prompt))

    # Fallback --------------------------------------------------------------------

    def _fall_back(
        self,
        turn: _Turn,
        current: StateSpec,
        response: ResponseSpec | None = None,
        choices: list[list[str]] | None = None,
    ) -> None:
        """Not understood: the fallback answers (``response`` instead, offering ``choices``, when
        given), or, after ``max_fallbacks`` in a row, the fallback state.

        The flow's own fallback response offers the choices of the question it answers, when
        that question had some (and is the one its user saw last), instead of its own: a
        number or a button then still means what it meant in the question (its own choices
        are for the questions without any).
        """
        state = turn.state
        said = current.fallback_response or self.settings.fallback_response
        result = self._generative_answer(turn, current) if response is None else None
        if result is not None and result.get("ok"):
            state.flow_memory[FALLBACKS] = 0  # answered: not a misunderstanding in a row
            return
        if result is not None and failure_reason(result) == BUDGET:
            said = self._budget_response(self.settings.generative_fallback)
        state.error_count += 1
        fallbacks = int(state.flow_memory.get(FALLBACKS, 0)) + 1
        state.flow_memory[FALLBACKS] = fallbacks
        turn.actions.append("fallback")
        target = self.settings.fallback_state
        if target and fallbacks >= self.settings.max_fallbacks:
            state.flow_memory[FALLBACKS] = 0
            self._enter(turn, target)
            return
        if response is None and current.fallback_response is None and choices is None:
            shown = _shown_at(state.flow_memory.get(SHOWN, []), turn.message.seen_turn)
            if shown is not None and shown["question"] == _question(state):
                choices = shown["choices"] or None
        answer = self._render(turn, response or said)
        turn.said.append(_offering(answer, choices) if choices else answer)

    def _answer_opening(self, turn: _Turn, current: StateSpec) -> None:
        """The first message of a session, which nothing took further than the greeting: a question
        no intent matched, which the generative fallback answers after it. No fallback response
        otherwise, and no error: the greeting is the answer to a message that only opens the
        conversation ("hello there", "yes", a button from an old session); when the model fails,
        it stands alone (a spent budget is said so)."""
        if turn.match is not None or not lexicon(turn.language).asks_something(
            words(turn.message.content.text)
        ):
            return
        result = self._generative_answer(turn, current)
        if result is not None and not result.get("ok") and failure_reason(result) == BUDGET:
            turn.said.append(self._render(turn, self._budget_response(self.settings.generative_fallback)))

    def _generative_answer(self, turn: _Turn, current: StateSpec) -> JsonDict | None:
        """The generative fallback's answer to a message nothing matched, said when it came (a
        model result, ``ok`` or not); None when there is none here: the flow has no generative
        fallback, or the state a fallback response of its own."""
        generative = self.settings.generative_fallback
        if generative is None or current.fallback_response is not None:
            return None
        result = self._generation(turn, generative)
        if result.get("ok"):
            turn.actions += ["fallback", "generative_fallback"]
            turn.said.append(Content(text=str(result.get("text", ""))))
        return result

    @staticmethod
    def _budget_response(spec: GenerateSpec | None) -> ResponseSpec:
        """What a generation the tenant's budget refused says: ``spec``'s (a generate step or
        the generative fallback) budget_response, else a default."""
        spent = spec.budget_response if spec is not None else None
        return spent or ResponseSpec(text=BUDGET_SPENT)

    # Numbered choices, corrections, unseen questions --------------------------------------

    def _pick_choice(self, turn: _Turn, current: StateSpec) -> bool:
        """A message that is only a number picks from the choices of the last question its user saw
        (the reply its ``seen_turn`` names, else the last): the turn reads it as that choice.
        False when the number is none of those choices: that was said, the turn is over.

        A number is the answer itself when the slot being asked is a number, and plain text
        when that question offered no choices.
        """
        content = turn.message.content
        number = _CHOICE_NUMBER.fullmatch(content.text.strip()) if not content.payload else None
        if number is None:
            return True
        memory = turn.state.flow_memory
        asking = self.document.slots.get(str(memory.get(ASKING, "")))
        if asking is not None and asking.type in _NUMERIC_TYPES:
            return True
        shown = _shown_at(memory.get(SHOWN, []), turn.message.seen_turn)
        choices: list[list[str]] = shown["choices"] if shown is not None else []
        if not choices:
            return True
        picked = int(number.group(1))
        if not 1 <= picked <= len(choices):
            self._note_intent(turn)  # no intent: the message meant nothing offered
            turn.actions.append(f"choice_out_of_range:{picked}")
            self._fall_back(turn, current, self.settings.choice_out_of_range_response, choices)
            return False
        title, payload, _kind, _url = choices[picked - 1]
        chosen = dataclasses.replace(content, text=title, payload=payload)
        turn.message = dataclasses.replace(turn.message, content=chosen)
        turn.actions.append(f"choice:{picked}")
        return True

    def _correct(self, turn: _Turn, current: StateSpec) -> bool:
        """The state's correction route: the message gives some of its slots a value other than
        theirs ("actually make it medium"). They are set and the route is taken; a value the
        slot refuses is said so and the state's question asked again, as it is when the message
        names only the values the slots have and its intent (if any) goes nowhere from here.
        False: no correction."""
        spec = current.corrections
        if spec is None or self._payload_is_intent(turn) or self._asks_otherwise(turn, current):
            return False
        state, slots = turn.state, self.document.slots
        filled = [slots[n] for n in spec.slots if state.slots.get(n) is not None]
        if not filled:
            return False
        found = self._extract_all(turn, filled)
        changed: dict[str, Any] = {}
        unchanged: list[str] = []
        refused: tuple[SlotSpec, Content | None] | None = None
        proposed = self._proposed(turn)
        for slot in filled:
            checked = slot.name in proposed  # a model recognizer's reading: checked already
            value, problem = (proposed[slot.name], "") if checked else _value_and_problem(found[slot.name])
            if not problem and value == state.slots.get(slot.name):
                unchanged.append(slot.name)
                continue
            if not problem and value is None:
                continue
            said = None
            if not problem:
                accepted = True
                if not checked:
                    accepted, value, said, _moved = self._check(turn, slot, value, may_move=False)
                if accepted:
                    changed[slot.name] = value
                    continue
            refused = refused or (slot, said)
        if changed:
            for name, value in changed.items():
                self._set_slot(turn, name, value)
                turn.actions.append(f"correct:{name}")
            target = spec.to or current.name
            # The values changed, so a collecting target moves on with them (not "asked again").
            state.flow_memory.get(MOVED_ON, {}).pop(target, None)
            self._take(turn, TransitionSpec(to=target, actions=spec.actions))
            return True
        if refused is None:
            if unchanged and not self._routed(turn, current):
                # "Make it two" when it is two already: nothing to change, and nothing not understood.
                turn.actions += [f"correct_unchanged:{name}" for name in unchanged]
                unchanged_said = spec.unchanged_response
                before = self._render(turn, unchanged_said) if unchanged_said is not None else None
                self._ask_again(turn, current, before)
                return True
            return False
        slot, said = refused
        turn.actions.append(f"correction_refused:{slot.name}")
        if said is None:
            prompt = slot.reprompts[0] if slot.reprompts else slot.prompt
            said = self._render(turn, prompt) if prompt is not None else None
        # Its words only: the question asked again offers the choices.
        self._ask_again(turn, current, Content(text=said.text) if said is not None else None)
        return True

    def _asks_otherwise(self, turn: _Turn, current: StateSpec) -> bool:
        """Whether the message's intent is something the state handles other than an answer to its
        question: a global route's ("cancel the 2 pizzas"), or a transition's that stays in this
        state ("how much is one pizza?"). The state's other transitions are the answers, which a
        new value corrects: "no, 3 please" changes the quantity."""
        if turn.match is None:
            return False
        if any(route.intent and self._matches(turn, route) for route in self.document.routes):
            return True
        return any(self._stays(turn, current, t) and self._matches(turn, t) for t in current.transitions)

    def _stays(self, turn: _Turn, current: StateSpec, transition: TransitionSpec) -> bool:
        """Whether ``transition`` of ``current`` is a question about it rather than an answer to
        it: an intent's, back to ``current`` itself ("how much is that?" at a confirmation)."""
        return bool(transition.intent) and self._swap(turn.state, transition.to) == current.name

    def _routed(self, turn: _Turn, current: StateSpec) -> bool:
        """Whether the message's intent takes a route or a transition of ``current``."""
        return any(t.intent and self._matches(turn, t) for t in (*self.document.routes, *current.transitions))

    def _unseen(self, turn: _Turn, current: StateSpec) -> bool:
        """A confirmation whose question the message's user had not seen when they wrote it."""
        seen = turn.message.seen_turn
        asked = turn.state.flow_memory.get(ASKED_AT)
        return current.confirm and seen is not None and isinstance(asked, int) and seen < asked

    def _ask_again(self, turn: _Turn, current: StateSpec, before: Content | None) -> None:
        """The state's question (the ``say`` actions of its on_enter, nothing else of it) once
        more, after ``before``; a confirmation counts it as asked in this turn, unless it is
        the very question that stands (:meth:`_mark_asked`)."""
        if before is not None and (before.text or before.quick_replies or before.buttons):
            turn.said.append(before)
        question = [self._render(turn, action.say) for action in current.on_enter if action.say is not None]
        turn.said += question
        if current.confirm:
            memory = turn.state.flow_memory
            self._mark_asked(turn, question, (memory.get(ASKED_AT), memory.get(ASKED)))

    def _mark_asked(self, turn: _Turn, question: list[Content], standing: tuple[Any, Any] | None) -> None:
        """A confirmation asked ``question`` in this turn: an answer to it must have been written
        having seen this turn's reply -- unless the question ``standing`` (the turn it was asked
        in, its fingerprint) is the same one, same words and same values: a user who saw it then
        has seen this one, and may answer it (a "Just to be sure" must not repeat itself)."""
        state = turn.state
        values = {"slots": state.slots, "variables": state.variables}
        said = [content.to_wire() for content in question]
        asked = _digest([said, values])
        asked_at, standing_asked = standing or (None, None)
        if not isinstance(asked_at, int) or standing_asked != asked:
            asked_at = _this_turn(state)
        state.flow_memory[ASKED_AT], state.flow_memory[ASKED] = asked_at, asked

    # Actions ------------------------------------------------------------------

    def _act(self, turn: _Turn, actions: Iterable[ActionSpec]) -> bool:
        """Run ``actions``; False when one of them took the conversation elsewhere (handoff,
        a failed webhook's route): what would have followed them does not happen."""
        for action in actions:
            kind = action.kind
            if kind == "say":
                assert action.say is not None
                turn.said.append(self._render(turn, action.say))
                turn.actions.append("say")
            elif kind == "set":
                for target, expression in action.set.items():
                    _assign(turn.state, target, self._evaluate(turn, expression))
                    turn.actions.append(f"set:{target}")
            elif kind == "clear":
                for target in action.clear:
                    _clear(turn.state, target)
                    turn.actions.append(f"clear:{target}")
            elif kind == "webhook":
                assert action.webhook is not None
                if not self._call_webhook(turn, action.webhook):
                    return False
            elif kind == "generate":
                assert action.generate is not None
                if not self._generate(turn, action.generate):
                    return False
            else:
                turn.handoff_reason = action.handoff or ""
                self._hand_off(turn, self._text(turn, action.handoff or ""))
                return False
        return True

    def _call_webhook(self, turn: _Turn, spec: WebhookSpec) -> bool:
        result = self._webhook_result(turn, spec.name, self._webhook_body(turn, spec.name))
        if result.get("ok"):
            turn.state.variables[spec.store_as] = result.get("body")
            turn.actions.append(f"webhook:{spec.name}")
            return True
        turn.state.variables[spec.store_as] = {"error": str(result.get("error", "failed"))}
        turn.actions.append(f"webhook_failed:{spec.name}")
        if result.get("abandoned_by"):  # an operator gave the call up (Admin.AbandonWebhook)
            turn.actions.append(f"webhook_abandoned:{spec.name}")
        if spec.on_failure:
            self._enter(turn, spec.on_failure)
            return False
        return True

    def _webhook_result(self, turn: _Turn, name: str, body: JsonDict, kind: str = WEBHOOK) -> JsonDict:
        """The answer to this turn's next outside call (a webhook, or a model's answer); raises
        NeedsWebhook until the shard has it."""
        key = str(turn.webhook_calls)
        turn.webhook_calls += 1
        result = turn.webhook_results.get(key)
        if result is None:  # the actor calls it and runs this turn again with the answer
            raise NeedsWebhook(WebhookCall(key, name, body, kind))
        return result

    # Recognition -------------------------------------------------------------------

    def _recognize(self, turn: _Turn, current: StateSpec, *, answering: bool) -> IntentMatch | None:
        """The intent the message means: its recognizer's answer; or, from a recognizer that asks
        a model (AsksModel) about a message its answer does not settle, the model's reading once
        it passed every check (its slot values in ``turn.proposed``). A reading that cannot be
        used leaves the recognizer's answer, and the actions say why: ``nlu_fallback:REASON``.

        ``answering``: the message answers the question said last (see ``_fill_slots``)."""
        content = turn.message.content
        recognizer = self.recognizers.get(turn.language) or next(iter(self.recognizers.values()))
        match = self._preferred(recognizer.recognize(content.text, content.payload), current)
        if not isinstance(recognizer, AsksModel) or (match is not None and match.exact):
            return match  # an exact match is never asked about: it is certain, and costs nothing
        if not content.text.strip():
            return match
        utterance = self._utterance(turn, match, answering=answering)
        if utterance is None:
            turn.actions.append(f"nlu_fallback:{SENSITIVE}")
            return match
        question = recognizer.question(utterance)
        if question is None:
            return match
        request = self._recognition_request(turn, question)
        result = self._webhook_result(turn, question.provider, request, RECOGNIZE)
        if not result.get("ok"):
            reason = failure_reason(result)
            turn.actions += [f"recognize_failed:{reason}", f"nlu_fallback:{reason}"]
            return match
        turn.actions.append(call_label(RECOGNIZE, question.provider))
        reading = recognizer.read(utterance, str(result.get("text", "")))
        problem, values = self._accepted(turn, reading, utterance)
        if problem:
            turn.actions.append(f"nlu_fallback:{problem}")
            return match
        turn.proposed, turn.proposed_by = values, self
        return IntentMatch(reading.intent, reading.confidence) if reading.intent is not None else None

    def _proposed(self, turn: _Turn) -> Mapping[str, Any]:
        """The slot values a model recognizer read this turn, if they were checked as this flow's
        slots (a sub-flow entered in the turn may have slots of the same names, and other checks)."""
        return turn.proposed if turn.proposed_by is self else {}

    def _utterance(self, turn: _Turn, lexical: IntentMatch | None, *, answering: bool) -> Utterance | None:
        """What a recognizer may tell a model of the message: its text as the store keeps it, and
        the slots it may fill: none sensitive, and a text slot only when the message answers its
        question (as the words fill one). None when it may tell nothing: the message answers a
        sensitive slot's question, or holds a sensitive value that only masking all of it hides."""
        asking = str(turn.state.flow_memory.get(ASKING, "")) if answering else ""
        if asking in self.sensitive_slots:
            return None
        text, today = turn.message.content.text, _today(turn.now)
        held = []  # what any sensitive slot would read from it
        for name in sorted(self.sensitive_slots):
            found = extract(self.document.slots[name], text, asked=False, today=today)
            if found.found:
                held.append(found.value)
        masked = turn.root._masked_input(text, held, turn.held_sensitive)
        if masked is None:
            return None
        offered = {
            name: spec
            for name, spec in self.document.slots.items()
            if not spec.sensitive and (spec.type != "text" or name == asking)
        }
        return Utterance(masked, lexical, offered, asking, today)

    def _recognition_request(self, turn: _Turn, question: ModelQuestion) -> JsonDict:
        """The request for a recognizer's question (``runtime.models``): a JSON object asked for,
        every message masked as a generate step's prompt is."""
        messages = [(str(m.get("role", "user")), str(m.get("content", ""))) for m in question.messages]
        return self._model_request(
            turn, RECOGNIZE, question.provider, messages, question.max_tokens, question.temperature, json=True
        )

    def _accepted(
        self, turn: _Turn, reading: ModelReading, utterance: Utterance
    ) -> tuple[str, dict[str, Any]]:
        """Why ``reading`` cannot be used ("" when it can), and the slot values it gives, each as
        its slot reads it and its checks accept it."""
        if reading.problem:
            return reading.problem, {}
        if reading.intent is not None and reading.intent not in self.document.intents:
            return UNKNOWN_INTENT, {}
        values: dict[str, Any] = {}
        for name, given in reading.slots.items():
            slot = utterance.slots.get(name)
            if slot is None:
                return UNKNOWN_SLOT, {}
            if given is None:
                continue
            value = self._read_as(turn, slot, given)
            if value is None:
                return INVALID_SLOT, {}
            values[name] = value
        return "", values

    def _read_as(self, turn: _Turn, slot: SlotSpec, given: Any) -> Any:
        """``given`` (a model's value for ``slot``) as the slot reads it when typed as the answer
        to its own question, if its checks accept that; None if not."""
        if isinstance(given, Mapping | list):
            return None
        if isinstance(given, bool):
            written = "true" if given else "false"
        elif isinstance(given, int | float):
            written = format(decimal.Decimal(repr(given)), "f")  # 1e-07 is 0.0000001, not "1"
        else:
            written = str(given)
        value, problem = _value_and_problem(extract(slot, written, asked=True, today=_today(turn.now)))
        if problem or value is None:
            return None
        accepted, value, _said, _moved = self._check(turn, slot, value, may_move=False)
        return value if accepted else None

    # Generation --------------------------------------------------------------------

    def _generate(self, turn: _Turn, spec: GenerateSpec) -> bool:
        """A generate step: its answer said or stored; False when its failure route took the
        conversation elsewhere (what would have followed it does not happen)."""
        result = self._generation(turn, spec)
        if result.get("ok"):
            text = str(result.get("text", ""))
            if spec.into:
                _assign(turn.state, spec.into, text)
            else:
                turn.said.append(Content(text=text))
            return True
        if failure_reason(result) == BUDGET:  # refused politely, whatever the route after it
            turn.said.append(self._render(turn, self._budget_response(spec)))
        elif spec.failure_response is not None:
            turn.said.append(self._render(turn, spec.failure_response))
        elif spec.says and not spec.on_failure:
            turn.said.append(Content(text=GENERATE_FAILED))
        if spec.on_failure:
            self._enter(turn, spec.on_failure)
            return False
        return True

    def _generation(self, turn: _Turn, spec: GenerateSpec) -> JsonDict:
        """The model's answer to ``spec`` (a result of ``runtime.models``), its action noted:
        ``generate:PROVIDER``, or ``generate_failed:REASON``."""
        try:
            request = self._generation_request(turn, spec)
        except TemplateError as exc:  # the loader checks templates; a render can still fail
            turn.actions.append(f"template_failed:{exc.message}")
            result: JsonDict = {"ok": False, "reason": NOT_CALLED, "error": exc.message}
        else:
            result = self._webhook_result(turn, spec.provider, request, GENERATE)
        if result.get("ok"):
            turn.actions.append(call_label(GENERATE, spec.provider))
        else:
            turn.actions.append(f"generate_failed:{failure_reason(result)}")
        return result

    def _generation_request(self, turn: _Turn, spec: GenerateSpec) -> JsonDict:
        """What the model is asked: system instructions (and passages), recent texts, the prompt;
        every text masked as the flow says before it leaves."""
        environment = self._prompt_environment(turn)
        system = render_text(spec.system, environment).strip() if spec.system else DEFAULT_SYSTEM
        if spec.knowledge:
            system += "\n\n" + _grounding(self._passages(turn))
        messages = [("system", system)]
        remembered = turn.state.flow_memory.get(HISTORY, [])
        for role, text in remembered[-spec.history :] if spec.history else ():
            messages.append((str(role), str(text)))
        messages.append(("user", render_text(spec.prompt, environment).strip()))
        return self._model_request(
            turn,
            GENERATE,
            spec.provider,
            messages,
            spec.max_tokens,
            spec.temperature,
            say=spec.says,  # streamed to a frontend that asked for deltas
        )

    def _model_request(
        self,
        turn: _Turn,
        kind: str,
        provider: str,
        messages: Iterable[tuple[str, str]],
        max_tokens: int,
        temperature: float | None,
        **fields: Any,
    ) -> JsonDict:
        """A model call's request (``runtime.models``): the messages (role, text), each masked as
        the flow says before it leaves; the call's idempotency key (``kind:provider``, its place in
        the turn); ``fields``; the step's max_tokens and temperature when it sets them."""
        masked = [{"role": role, "content": self._masked_for_prompt(turn, text)} for role, text in messages]
        request: JsonDict = {
            "messages": masked,
            "idempotency_key": idempotency_key(turn.state, str(turn.webhook_calls), f"{kind}:{provider}"),
            **fields,
        }
        if max_tokens:
            request["max_tokens"] = max_tokens
        if temperature is not None:
            request["temperature"] = temperature
        return request

    def _prompt_environment(self, turn: _Turn) -> dict[str, Any]:
        """What a prompt's templates see: sensitive slots as ``****``, the message masked."""
        environment = self._environment(turn)
        environment["slots"] = {
            name: MASK if name in self.sensitive_slots and value is not None else value
            for name, value in turn.state.slots.items()
        }
        masked = turn.root._recorded_input(turn)
        if masked is not None:
            environment["message"] = masked
        return environment

    def _masked_for_prompt(self, turn: _Turn, text: str) -> str:
        """``text`` as it may leave for a model: what the flow's patterns match masked, and every
        value of a sensitive slot wherever it appears (a variable may hold a copy), however it is
        written (``masking.value_spans``)."""
        values = [*turn.sensitive_values, *turn.held_sensitive, *self._sensitive_held(turn.state)]
        spans = [*turn.root.masker.spans(text), *self.masker.spans(text)]
        for value in values:
            spans += value_spans(text, value)
        return mask_spans(text, spans) if spans else text

    def _passages(self, turn: _Turn) -> list[KnowledgeSpec]:
        """The flow's passages that go with a prompt: all of them when there are few, else those
        sharing most words with the message (in the file's order)."""
        passages = list(self.document.knowledge)
        if len(passages) <= KNOWLEDGE_SHOWN:
            return passages
        asked = _words(_text_of(turn.message))
        scored = sorted(
            range(len(passages)),
            key=lambda i: (-len(asked & _words(f"{passages[i].title} {passages[i].text}")), i),
        )
        return [passages[i] for i in sorted(scored[:KNOWLEDGE_SHOWN])]

    def _remember(self, turn: _Turn, recorded_input: str | None, said: str) -> None:
        """Keep the turn's texts for later prompts, masked as the store keeps them."""
        content = turn.message.content
        heard = recorded_input if recorded_input is not None else content.text or content.payload
        remembered: list[list[str]] = turn.state.flow_memory.setdefault(HISTORY, [])
        if heard:
            remembered.append(["user", heard[:HISTORY_CHARS]])
        if said:
            remembered.append(["assistant", self._masked_for_prompt(turn, said)[:HISTORY_CHARS]])
        del remembered[:-TEXTS_KEPT]

    def _webhook_body(self, turn: _Turn, name: str) -> JsonDict:
        state, content = turn.state, turn.message.content
        return {
            "webhook": name,
            "idempotency_key": idempotency_key(state, str(turn.webhook_calls), name),
            "flow": self.flow_id,
            "flow_version": self.version,
            "state": state.current_state,
            "slots": state.slots,
            "variables": state.variables,
            "user_profile": state.user_profile,
            "message": {
                "text": content.text,
                "payload": content.payload,
                "channel": turn.message.channel,
                "language": turn.language,
            },
        }

    # Helpers -----------------------------------------------------------------

    def _state(self, name: str) -> StateSpec:
        return self.document.states[name]

    def _swap(self, state: ConversationState, name: str) -> str:
        """The state an A/B variant puts in place of ``name``."""
        for experiment, variant in state.flow_memory.get(VARIANTS, {}).items():
            spec = self.document.experiments.get(experiment)
            if spec is not None:
                name = spec.states.get(variant, {}).get(name, name)
        return name

    def _environment(self, turn: _Turn) -> dict[str, Any]:
        state, message = turn.state, turn.message
        return {
            "slots": state.slots,
            "variables": state.variables,
            "user_profile": state.user_profile,
            "state": state.current_state,
            "intent": turn.match.name if turn.match else "",
            "confidence": turn.match.confidence if turn.match else 0.0,
            "message": message.content.text,
            "channel": message.channel,
            "language": turn.language,
            "message_count": state.message_count,
            "error_count": state.error_count,
            "fallback_count": int(state.flow_memory.get(FALLBACKS, 0)),
        }

    def _evaluate(self, turn: _Turn, expression: str, **extra: Any) -> Any:
        try:
            return parse_expression(expression).evaluate({**self._environment(turn), **extra})
        except (ExpressionError, ExpressionEvalError) as exc:  # the loader checks syntax; be safe anyway
            turn.actions.append(f"expression_failed:{exc}")
            return None

    def _variant(self, turn: _Turn) -> str:
        variants: Mapping[str, str] = turn.state.flow_memory.get(VARIANTS, {})
        return next(iter(variants.values()), "")

    def _render(self, turn: _Turn, spec: ResponseSpec) -> Content:
        try:
            return render_response(
                spec,
                self._environment(turn),
                channel=turn.message.channel,
                variant=self._variant(turn),
                language=turn.language,
            )
        except TemplateError as exc:
            turn.actions.append(f"template_failed:{exc.message}")
            return Content(text=TEMPLATE_FAILED)  # never the raw template text

    def _text(self, turn: _Turn, template: str) -> str:
        try:
            return render_text(template, self._environment(turn))
        except TemplateError as exc:
            turn.actions.append(f"template_failed:{exc.message}")
            return TEMPLATE_FAILED


def idempotency_key(state: ConversationState, call: str, name: str) -> str:
    """The key a webhook call carries (body ``idempotency_key``, header ``Idempotency-Key``).

    The same for every retry of one call and for the replay of a turn after a restart
    (the turn's inputs are the same), different for every other call: it is derived from
    the conversation (its key's fingerprint and when it began), the turn (the number of
    messages before it) and the call's place in the turn.
    """
    conversation = str(state.flow_memory.get(CONVERSATION, "")) or state.flow_id
    parts = (conversation, repr(state.created_at), str(state.message_count), call, name)
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def redact_slots(owner: DeclarativeFlow | None, slots: JsonDict) -> JsonDict:
    """``slots`` as operators may see them: the values ``owner`` declares sensitive masked, and
    its mask patterns applied to every other text (a free-text slot holds whatever the user
    typed); every value masked when the flow they belong to is not loaded (what it declares
    cannot be known)."""
    shown: JsonDict = {}
    for name, value in slots.items():
        if value is None:
            shown[name] = value
        elif owner is None or name in owner.sensitive_slots:
            shown[name] = mask_value(value if isinstance(value, str) else json.dumps(value))
        elif isinstance(value, str):
            shown[name] = owner.redact_text(value)
        else:
            shown[name] = value
    return shown


def _digest(value: Any) -> str:
    """A short fingerprint of ``value``'s JSON (keys sorted, what JSON cannot hold as its str):
    equal for equal values, and stored (a conversation's memory keeps it across turns)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprint(tenant_id: str, conversation_id: str) -> str:
    return hashlib.sha256(f"{tenant_id}\x00{conversation_id}".encode()).hexdigest()[:16]


def _grounding(passages: Iterable[KnowledgeSpec]) -> str:
    lines = [GROUNDING]
    for passage in passages:
        lines.append(f"- {passage.title}: {passage.text}" if passage.title else f"- {passage.text}")
    return "\n".join(lines)


_WORD = re.compile(r"\w{3,}")


def _words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


def _says_anything(spec: ResponseSpec) -> bool:
    return bool(spec.text or spec.quick_replies or spec.buttons or spec.cards or spec.media or spec.location)


def _text_of(message: InboundMessage) -> str:
    return message.content.text or message.content.payload


def _this_turn(state: ConversationState) -> int:
    """The number of the turn running: its reply's ``turn`` (the message count after it)."""
    return state.message_count + 1


def _question(state: ConversationState) -> list[str]:
    """What the conversation is asking now: its state and the slot it asked for, if any."""
    return [state.current_state, str(state.flow_memory.get(ASKING, ""))]


def _choices_of(response: Content) -> list[list[str]]:
    """The choices a response offers, numbered as a chat frontend numbers them: quick replies,
    then buttons, then the cards' buttons."""
    choices = [[q.title, q.payload, "quick_reply", ""] for q in response.quick_replies]
    buttons = [*response.buttons, *(b for card in response.carousel for b in card.buttons)]
    return choices + [[b.title, b.payload, b.type, b.url] for b in buttons]


def _remember_choices(state: ConversationState, response: Content) -> None:
    """Keep the choices of the question a reply asks, for a number the user sends next. A reply
    without choices to the same question (a re-prompt, a fallback) leaves the list shown."""
    shown: list[JsonDict] = state.flow_memory.get(SHOWN, [])
    question, choices = _question(state), _choices_of(response)
    if choices or not shown or shown[-1]["question"] != question:
        shown.append({"turn": _this_turn(state), "question": question, "choices": choices})
        state.flow_memory[SHOWN] = shown[-SHOWN_KEPT:]


def _shown_at(shown: list[JsonDict], seen_turn: int | None) -> JsonDict | None:
    """The question whose choices the user saw last by ``seen_turn`` (the last one when None)."""
    for entry in reversed(shown):
        if seen_turn is None or int(entry["turn"]) <= seen_turn:
            return entry
    return None


def _offering(said: Content, choices: list[list[str]]) -> Content:
    """``said`` offering ``choices`` (as :func:`_choices_of` keeps them) instead of its own."""
    quick_replies = [
        QuickReply(title, payload) for title, payload, kind, _ in choices if kind == "quick_reply"
    ]
    buttons = [
        Button(title, kind, payload, url) for title, payload, kind, url in choices if kind != "quick_reply"
    ]
    return dataclasses.replace(said, quick_replies=quick_replies, buttons=buttons, carousel=[])


def _today(now: float) -> datetime.date:
    """The date of ``now`` on the server's clock: a turn's dates follow from its inputs alone."""
    return datetime.datetime.fromtimestamp(now).date()


def _value_and_problem(extraction: Any) -> tuple[Any, str]:
    problem = getattr(extraction, "problem", "") or ""
    if problem:
        return None, str(problem)
    if getattr(extraction, "found", True) is False:
        return None, ""
    return getattr(extraction, "value", None), ""


def _assign(state: ConversationState, target: str, value: Any) -> None:
    scope, _, name = target.partition(".")
    (state.slots if scope == "slots" else state.variables)[name] = value


def _clear(state: ConversationState, target: str) -> None:
    if target == "slots":
        state.slots = {}
        return
    scope, _, name = target.partition(".")
    (state.slots if scope == "slots" else state.variables).pop(name, None)


def _snapshot(state: ConversationState) -> dict[str, JsonDict]:
    return {"slots": dict(state.slots), "variables": dict(state.variables)}


def _changes(before: dict[str, JsonDict], after: dict[str, JsonDict]) -> JsonDict:
    """Exactly what this turn changed: new and changed values, and removed keys as null."""
    changed: JsonDict = {}
    for scope in ("slots", "variables"):
        old, new = before[scope], after[scope]
        diff = {k: v for k, v in new.items() if k not in old or old[k] != v}
        diff.update({k: None for k in old if k not in new})
        if diff:
            changed[scope] = diff
    return changed


def _combine(said: list[Content], final_from: int = 0) -> Content:
    """One response from everything said this turn: texts joined; quick replies, buttons and
    cards only from what was said from ``final_from`` on (in the state the turn ends in)."""
    if not said:
        return Content(text="")
    if len(said) == 1 and final_from == 0:
        return said[0]
    combined = Content(
        type=next((c.type for c in reversed(said[final_from:]) if c.type != "text"), "text"),
        text="\n".join(c.text for c in said if c.text),
    )
    for content in said[final_from:]:
        combined.quick_replies.extend(content.quick_replies)
        combined.buttons.extend(content.buttons)
        combined.carousel.extend(content.carousel)
    for content in said:
        combined.media = content.media or combined.media
        combined.location = content.location or combined.location
    return combined
