"""Runs a flow file: one :class:`DeclarativeFlow` per loaded flow version.

A turn, in order (see docs/flows.md for the format):

1. A conversation that is new, ended (terminal state) or idle past the session TTL
   starts a session: back to ``start`` (carry-over slots kept), start's on_enter run.
2. In human handoff, automation stops: the message is recorded and answered with
   the holding response, until a system message with payload ``resume`` (then the
   conversation goes back to ``start``).
3. The intent is recognised (payload first, then text); slots the current state
   collects are extracted from the message, several at once.
4. Global routes, then the state's transitions (in a collecting state, only once
   every slot is filled); the first that matches is taken: its actions, then the
   target's on_enter. A state whose slots are all filled on entry moves on at once.
5. Otherwise: a missing slot is asked for (re-prompts after failed answers, then
   ``on_max_attempts``), or the fallback answers (``error_count``; after
   ``max_fallbacks`` in a row, ``fallback_state``).

The interpreter's own bookkeeping lives in ``ConversationState.flow_memory``.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InternalError
from ..model import Content, ConversationKey, ConversationState, InboundMessage, JsonDict
from . import FlowReply, NeedsWebhook, UnknownState, WebhookCall
from .document import (
    ActionSpec,
    FlowDocument,
    ResponseSpec,
    SlotSpec,
    StateSpec,
    TransitionSpec,
    WebhookSpec,
)
from .expressions import ExpressionError, ExpressionEvalError, parse_expression
from .intents import DefaultRecognizer, IntentMatch
from .slots import extract_all
from .templates import TemplateError, render_response, render_text

HISTORY_KEPT = 20  # intent_history and previous_states entries kept
HANDOFF_LOG_KEPT = 50  # messages recorded while a human has the conversation
MAX_HOPS = 10  # state changes in one turn: a guard against transitions that loop
TEMPLATE_FAILED = "Sorry, something went wrong on our side."

# Keys of flow_memory.
ASKING = "asking"  # the slot whose prompt was said last
ATTEMPTS = "attempts"  # failed answers to it
FALLBACKS = "fallbacks"  # unmatched messages in a row
VARIANTS = "ab"  # experiment -> variant
HANDOFF = "handoff"  # reason, while a human has the conversation
HANDOFF_LOG = "handoff_log"
REVIEW = "review_required"


@dataclass(slots=True)
class _Turn:
    """What one turn collects while it runs."""

    state: ConversationState
    message: InboundMessage
    match: IntentMatch | None = None
    webhook_results: Mapping[str, JsonDict] = field(default_factory=dict)
    webhook_calls: int = 0  # webhook actions reached so far in this turn
    said: list[Content] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)  # slots prompted for in this turn
    hops: int = 0


class DeclarativeFlow:
    def __init__(self, document: FlowDocument) -> None:
        self.document = document
        self.flow_id = document.flow_id
        self.version = document.version
        self.tenant = document.tenant
        self.settings = document.settings
        self.recognizer = DefaultRecognizer(document.intents, document.settings.intent_threshold)

    # Flow interface -----------------------------------------------------------

    def start(self, now: float, key: ConversationKey) -> ConversationState:
        state = ConversationState(
            current_state="",
            flow_id=self.flow_id,
            flow_version=self.version,
            created_at=now,
            last_activity=now,
        )
        state.flow_memory[VARIANTS] = self._assign_variants(key)
        return state

    def handle(
        self,
        state: ConversationState,
        message: InboundMessage,
        now: float,
        webhook_results: Mapping[str, JsonDict] | None = None,
    ) -> FlowReply:
        before = _snapshot(state)
        turn = _Turn(state, message, webhook_results=webhook_results or {})
        memory = state.flow_memory
        hints = message.hints
        if hints.require_human_review:
            memory[REVIEW] = True
            turn.actions.append("held_for_review")

        if HANDOFF in memory:
            self._in_handoff(turn)
        elif hints.bypass_automation:
            self._hand_off(turn, "bypass_automation")
        else:
            starting = not state.current_state or self._session_over(state, now)
            if starting:
                self._start_session(turn)
            self._run(turn, first_of_session=starting)

        state.intent_history = state.intent_history[-HISTORY_KEPT:]
        state.previous_states = state.previous_states[-HISTORY_KEPT:]
        response = _combine(turn.said)
        if memory.get(REVIEW):
            response.metadata["held_for_review"] = True
        return FlowReply(
            response=response,
            context_updates=_changes(before, _snapshot(state)),
            actions_performed=turn.actions,
            ab_variant=",".join(f"{k}:{v}" for k, v in sorted(memory.get(VARIANTS, {}).items())),
        )

    def force(self, state: ConversationState, name: str) -> None:
        if name not in self.document.states:
            raise UnknownState(
                f"flow {self.flow_id} has no state {name!r}; it has {sorted(self.document.states)}"
            )
        if state.current_state and state.current_state != name:
            state.previous_states.append(state.current_state)
        state.current_state = name
        for key in (ASKING, ATTEMPTS, FALLBACKS):  # whatever it was asking no longer applies
            state.flow_memory.pop(key, None)

    # Sessions ----------------------------------------------------------------

    def _session_over(self, state: ConversationState, now: float) -> bool:
        current = self.document.states.get(state.current_state)
        if current is not None and current.terminal:
            return True
        ttl = self.settings.session_ttl_s
        return bool(ttl) and now - state.last_activity > ttl

    def _start_session(self, turn: _Turn) -> None:
        state = turn.state
        if state.current_state:  # a conversation that had a session before
            kept = set(self.settings.carry_over_slots)
            state.slots = {k: v for k, v in state.slots.items() if k in kept}
            state.variables = {}
            variants = state.flow_memory.get(VARIANTS, {})
            state.flow_memory = {VARIANTS: variants}
            turn.actions.append("session_restarted")
        self._enter(turn, self.settings.start)

    # Handoff -----------------------------------------------------------------

    def _hand_off(self, turn: _Turn, reason: str) -> None:
        turn.state.flow_memory[HANDOFF] = reason
        turn.actions.append("handoff")
        turn.said.append(self._render(turn, self.settings.handoff_response))

    def _in_handoff(self, turn: _Turn) -> None:
        content = turn.message.content
        memory = turn.state.flow_memory
        if content.type == "system" and content.payload == "resume":
            del memory[HANDOFF]
            turn.actions.append("handoff_resumed")
            self._enter(turn, self.settings.start)  # the person dealt with it: automation starts afresh
            return
        log = memory.setdefault(HANDOFF_LOG, [])
        log.append({"text": content.text, "payload": content.payload, "user_id": turn.message.user_id})
        del log[:-HANDOFF_LOG_KEPT]
        turn.actions.append("handoff_hold")
        turn.said.append(self._render(turn, self.settings.handoff_response))

    # The turn ------------------------------------------------------------------

    def _run(self, turn: _Turn, *, first_of_session: bool) -> None:
        state, message = turn.state, turn.message
        turn.match = self.recognizer.recognize(message.content.text, message.content.payload)
        if turn.match is not None:
            state.current_intent = turn.match.name
            state.intent_confidence = turn.match.confidence
            state.intent_history.append(turn.match.name)
        else:
            state.current_intent, state.intent_confidence = "", 0.0

        current = self._state(state.current_state)
        problem = self._fill_slots(turn, current, answering=not first_of_session)
        if self._follow(turn, current):
            state.flow_memory[FALLBACKS] = 0
            return
        missing = self._missing(turn, current)
        if missing is not None:
            self._ask(turn, missing, failed=problem is not None or self._asked_and_unanswered(turn, missing))
            return
        if first_of_session:  # the greeting was the answer; nothing to fall back from
            return
        self._fall_back(turn)

    def _follow(self, turn: _Turn, current: StateSpec) -> bool:
        """Take the first matching global route or transition; False if none matched."""
        candidates: list[TransitionSpec] = list(self.document.routes)
        if self._missing(turn, current) is None:
            candidates.extend(current.transitions)
        for transition in candidates:
            if self._matches(turn, transition):
                self._take(turn, transition)
                return True
        return False

    def _matches(self, turn: _Turn, transition: TransitionSpec) -> bool:
        if transition.intent and (turn.match is None or turn.match.name != transition.intent):
            return False
        return not transition.when or bool(self._evaluate(turn, transition.when))

    def _take(self, turn: _Turn, transition: TransitionSpec) -> None:
        turn.actions.append(f"transition:{turn.state.current_state}->{transition.to}")
        if self._act(turn, transition.actions):
            self._enter(turn, transition.to)

    def _enter(self, turn: _Turn, name: str) -> None:
        turn.hops += 1
        if turn.hops > MAX_HOPS:
            raise InternalError(f"flow {self.flow_id}: more than {MAX_HOPS} state changes in one turn")
        state = turn.state
        target = self._state(self._swap(state, name))
        if state.current_state and state.current_state != target.name:
            state.previous_states.append(state.current_state)
        state.current_state = target.name
        memory = state.flow_memory
        memory.pop(ASKING, None)
        memory.pop(ATTEMPTS, None)
        turn.actions.append(f"enter:{target.name}")
        if not self._act(turn, target.on_enter) or target.terminal:
            return
        if target.collect:
            self._fill_slots(turn, target, answering=False)
        missing = self._missing(turn, target)
        if missing is not None:
            self._ask(turn, missing, failed=False)
        elif target.collect:  # everything it collects is already known: move on now
            for transition in target.transitions:
                if self._matches(turn, transition):
                    self._take(turn, transition)
                    return

    # Slots -----------------------------------------------------------------------

    def _fill_slots(self, turn: _Turn, spec: StateSpec, *, answering: bool) -> str | None:
        """Fill what the message gives of the slots ``spec`` collects; the asked slot's problem.

        ``answering``: the message answers the prompt said last, so the asked slot may take
        free text; a message that came before the prompt (the state was entered this turn)
        may fill slots only with values it plainly contains.
        """
        wanted = [self.document.slots[n] for n in spec.collect if turn.state.slots.get(n) is None]
        if not wanted:
            return None
        asking = turn.state.flow_memory.get(ASKING, "") if answering else ""
        found = extract_all(wanted, _text_of(turn.message), asking=asking, today=_today())
        problem = None
        for name, extraction in found.items():
            value, reason = _value_and_problem(extraction)
            if reason:
                if name == asking:
                    problem = reason
                continue
            if value is not None:
                turn.state.slots[name] = value
                turn.actions.append(f"fill:{name}")
        return problem

    def _missing(self, turn: _Turn, spec: StateSpec) -> SlotSpec | None:
        """The first slot ``spec`` collects that is still empty."""
        for name in spec.collect:
            if turn.state.slots.get(name) is None:
                return self.document.slots[name]
        return None

    def _asked_and_unanswered(self, turn: _Turn, slot: SlotSpec) -> bool:
        return turn.state.flow_memory.get(ASKING) == slot.name

    def _ask(self, turn: _Turn, slot: SlotSpec, *, failed: bool) -> None:
        if slot.name in turn.asked:  # entering the state asked already; this message came before
            return
        turn.asked.add(slot.name)
        memory = turn.state.flow_memory
        before = int(memory.get(ATTEMPTS, 0)) if memory.get(ASKING) == slot.name else 0
        attempts = before + (1 if failed else 0)
        if failed and attempts >= slot.max_attempts:
            turn.actions.append(f"max_attempts:{slot.name}")
            target = slot.on_max_attempts or self.settings.fallback_state
            if target:
                self._enter(turn, target)
                return
            attempts = 0
        memory[ASKING], memory[ATTEMPTS] = slot.name, attempts
        if failed and slot.reprompts:
            text = slot.reprompts[min(attempts, len(slot.reprompts)) - 1]
            turn.actions.append(f"reprompt:{slot.name}")
        else:
            text = slot.prompt or f"What is your {slot.name.replace('_', ' ')}?"
            turn.actions.append(f"prompt:{slot.name}")
        turn.said.append(Content(text=self._text(turn, text)))

    # Fallback --------------------------------------------------------------------

    def _fall_back(self, turn: _Turn) -> None:
        state = turn.state
        state.error_count += 1
        fallbacks = int(state.flow_memory.get(FALLBACKS, 0)) + 1
        state.flow_memory[FALLBACKS] = fallbacks
        turn.actions.append("fallback")
        target = self.settings.fallback_state
        if target and fallbacks >= self.settings.max_fallbacks:
            state.flow_memory[FALLBACKS] = 0
            self._enter(turn, target)
            return
        turn.said.append(self._render(turn, self.settings.fallback_response))

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
            else:
                self._hand_off(turn, action.handoff or "")
                return False
        return True

    def _call_webhook(self, turn: _Turn, spec: WebhookSpec) -> bool:
        key = str(turn.webhook_calls)
        turn.webhook_calls += 1
        result = turn.webhook_results.get(key)
        if result is None:  # the actor calls it and runs this turn again with the answer
            raise NeedsWebhook(WebhookCall(key, spec.name, self._webhook_body(turn, spec)))
        if result.get("ok"):
            turn.state.variables[spec.store_as] = result.get("body")
            turn.actions.append(f"webhook:{spec.name}")
            return True
        turn.state.variables[spec.store_as] = {"error": str(result.get("error", "failed"))}
        turn.actions.append(f"webhook_failed:{spec.name}")
        if spec.on_failure:
            self._enter(turn, spec.on_failure)
            return False
        return True

    def _webhook_body(self, turn: _Turn, spec: WebhookSpec) -> JsonDict:
        state, content = turn.state, turn.message.content
        return {
            "webhook": spec.name,
            "flow": self.flow_id,
            "flow_version": self.version,
            "state": state.current_state,
            "slots": state.slots,
            "variables": state.variables,
            "user_profile": state.user_profile,
            "message": {"text": content.text, "payload": content.payload, "channel": turn.message.channel},
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

    def _assign_variants(self, key: ConversationKey) -> dict[str, str]:
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
            "message_count": state.message_count,
            "error_count": state.error_count,
        }

    def _evaluate(self, turn: _Turn, expression: str) -> Any:
        try:
            return parse_expression(expression).evaluate(self._environment(turn))
        except (ExpressionError, ExpressionEvalError) as exc:  # the loader checks syntax; be safe anyway
            turn.actions.append(f"expression_failed:{exc}")
            return None

    def _variant(self, turn: _Turn) -> str:
        variants: Mapping[str, str] = turn.state.flow_memory.get(VARIANTS, {})
        return next(iter(variants.values()), "")

    def _render(self, turn: _Turn, spec: ResponseSpec) -> Content:
        try:
            return render_response(
                spec, self._environment(turn), channel=turn.message.channel, variant=self._variant(turn)
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


def _text_of(message: InboundMessage) -> str:
    return message.content.text or message.content.payload


def _today() -> datetime.date:
    return datetime.date.today()


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


def _combine(said: list[Content]) -> Content:
    """One response from everything said this turn: texts joined, rich parts kept."""
    if not said:
        return Content(text="")
    if len(said) == 1:
        return said[0]
    combined = Content(
        type=next((c.type for c in reversed(said) if c.type != "text"), "text"),
        text="\n".join(c.text for c in said if c.text),
    )
    for content in said:
        combined.quick_replies.extend(content.quick_replies)
        combined.buttons.extend(content.buttons)
        combined.carousel.extend(content.carousel)
        combined.media = content.media or combined.media
        combined.location = content.location or combined.location
    return combined
