"""What a finished turn adds to the conversation analytics (``runtime.analytics``).

Read from the turn a shard ran, never from logs: the turn's ``actions_performed`` say, in
order, which states it entered (``enter:S``), the transitions it took, where it fell back,
re-prompted or gave up on a slot, which webhooks it called (``webhook:W`` /
``webhook_failed:W``) and which language models (``generate:P`` / ``generate_failed:REASON``,
and a model recognizer's ``recognize:P`` / ``recognize_failed:REASON``), in the order of
their answers in the turn's ``webhook_results`` (a step that found no provider configured,
``generate_failed:no_provider``, is no generation and no failure of one), whether a model
answered a fallback (``generative_fallback``) and whether it handed over; the flow's reply
says whether a session began and the handoff's reason as the flow file writes it. Every
label is a name from the flow file (states, slots, webhooks, reasons, variants) or the config
(model providers), or a reason of ``runtime.models``; the user's text is kept only as a missed
utterance, masked as the flow says (and card numbers, IBANs, e-mail addresses and phone
numbers always), in the store's bounded list, never as a label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confab.runtime.analytics import (
    COMPLETED,
    ENTERED,
    FALLBACKS,
    GENERATION_FAILURES,
    GENERATIONS,
    GENERATIVE_FALLBACKS,
    GIVEN_UP,
    HANDOFFS,
    MISSED_BUCKET_S,
    REASON_CHARS,
    REPROMPTS,
    SESSIONS_STARTED,
    TRANSITIONS,
    TURNS,
    VARIANT_COMPLETED,
    VARIANT_HANDOFFS,
    VARIANT_SESSIONS,
    WEBHOOK_ABANDONED,
    WEBHOOK_CALLS,
    WEBHOOK_FAILURES,
    WEBHOOK_LATENCY,
    WEBHOOK_TIMEOUTS,
    SessionMark,
    TurnCounts,
    bucket_of,
    latency_bound,
    normalize_text,
)
from confab.runtime.flows import HANDOFF, Flow
from confab.runtime.flows.execution.interpreter import NOT_CALLED
from confab.runtime.flows.execution.turn import Done
from confab.runtime.flows.language.masking import Masker
from confab.runtime.model import ConversationKey, ConversationState, JsonDict
from confab.runtime.models import NO_PROVIDER

# Missed texts are shown in reports and dashboards: besides what the flow masks, the built-in
# detectors always apply to them (a card number typed by mistake is never shown).
_ALWAYS_MASKED = Masker.of(["card_number", "iban", "email", "phone"], [])

# flow_memory keys of the interpreter's (runtime.flows.execution.interpreter)
_VARIANTS = "ab"
_CALLS = "calls"


def count_turn(flow: Flow, key: ConversationKey, done: Done) -> TurnCounts:
    """The counts of ``done``, a turn of ``key`` on ``flow`` (the flow its state names)."""
    state, reply = done.state, done.reply
    tenant, flow_id, version = key.tenant_id, state.flow_id, state.flow_version
    bucket = bucket_of(done.now)
    out = TurnCounts()

    def add(at: str, name: str, item: str = "", count: int = 1, total: float = 0.0) -> None:
        out.add((tenant, flow_id, version, at, bucket, name, item), count, total)

    started = reply.session_started or not done.state_before
    ttl, terminal = _facts(flow)
    variants = _variant_items(state) if started or state.current_state in terminal else ()
    current = "" if started else done.state_before
    read_in = "" if started else done.state_before  # the state the message was read in
    calls = 0
    for action in reply.actions_performed:
        kind, _, arg = action.partition(":")
        if kind == "enter":
            if current:
                add(current, TRANSITIONS, arg)
            add(arg, ENTERED)
            read_in = read_in or arg
            current = arg
        elif kind == "return":
            current = arg.partition("->")[2]
        elif kind == "fallback":
            add(current, FALLBACKS)
            text = reply.recorded_input
            if text is None:
                text = done.message.content.text or done.message.content.payload
            missed = normalize_text(_ALWAYS_MASKED.redact(text))
            if missed:
                out.missed.append((tenant, flow_id, bucket_of(done.now, MISSED_BUCKET_S), missed))
        elif kind == "reprompt":
            add(current, REPROMPTS, arg)
        elif kind == "max_attempts":
            add(current, GIVEN_UP, arg)
        elif kind in ("webhook", "webhook_failed"):
            _count_webhook(add, current, arg, kind == "webhook_failed", done.webhook_results.get(str(calls)))
            calls += 1
        elif kind in ("generate", "recognize"):  # a model recognizer's call counts as one too
            answer = done.webhook_results.get(str(calls)) or {}
            add(current, GENERATIONS, arg, 1, float(answer.get("elapsed_ms", 0.0) or 0.0))
            calls += 1
        elif kind in ("generate_failed", "recognize_failed"):
            if arg != NO_PROVIDER:  # with no provider to ask, there was no generation to fail
                add(current, GENERATION_FAILURES, arg)
            calls += 0 if kind == "generate_failed" and arg == NOT_CALLED else 1
        elif kind == "generative_fallback":
            add(current, GENERATIVE_FALLBACKS)
        elif kind == "handoff":
            add(current, HANDOFFS, reply.handoff_reason[:REASON_CHARS])
            for variant in variants or _variant_items(state):
                add(current, VARIANT_HANDOFFS, variant)
    read_in = read_in or state.current_state
    add(read_in, TURNS)
    if started:
        add(read_in, SESSIONS_STARTED)
        for variant in variants:
            add(read_in, VARIANT_SESSIONS, variant)
    if state.current_state in terminal and _ended(flow, state):
        add(state.current_state, COMPLETED)
        for variant in variants:
            add(state.current_state, VARIANT_COMPLETED, variant)
    resumed = started and bool(done.state_before)  # a conversation that had a session before
    if ttl or resumed:
        out.session_changed = True
        out.session = session_of(flow, state)
        out.settle_at = done.now if resumed else 0.0
    if resumed and "session_expired" in reply.actions_performed:
        out.expired_state = done.state_before
    return out


def count_reset(now: float) -> TurnCounts:
    """A reset ends the open session: abandoned if it had expired by now, else simply gone."""
    return TurnCounts(session_changed=True, session=None, settle_at=now)


def count_forced(flow: Flow, state: ConversationState) -> TurnCounts | None:
    """An operator moved the conversation: its open session is in the new state now."""
    if not session_ttl(flow):
        return None
    return TurnCounts(session_changed=True, session=session_of(flow, state))


def session_ttl(flow: Flow) -> float:
    return _facts(flow)[0]


# Per flow (version): its session TTL and its terminal states, read once.
_FACTS: dict[int, tuple[Flow, float, frozenset[str]]] = {}


def _facts(flow: Flow) -> tuple[float, frozenset[str]]:
    known = _FACTS.get(id(flow))
    if known is None or known[0] is not flow:
        settings = getattr(flow, "settings", None)
        document = getattr(flow, "document", None)
        states = getattr(document, "states", {}) if document is not None else {}
        terminal = frozenset(name for name, spec in states.items() if getattr(spec, "terminal", False))
        known = _FACTS[id(flow)] = (flow, float(getattr(settings, "session_ttl_s", 0) or 0), terminal)
    return known[1], known[2]


def _variant_items(state: ConversationState) -> list[str]:
    return [f"{e}={v}" for e, v in sorted(_variants(state).items())]


def session_of(flow: Flow, state: ConversationState) -> SessionMark | None:
    """The open session ``state`` leaves: None if it ended, a person has it, or it cannot expire."""
    ttl = session_ttl(flow)
    if not ttl or not state.current_state or HANDOFF in state.flow_memory or _ended(flow, state):
        return None
    return SessionMark(state.flow_id, state.flow_version, state.current_state, state.last_activity + ttl)


def _ended(flow: Flow, state: ConversationState) -> bool:
    if state.flow_memory.get(_CALLS) or HANDOFF in state.flow_memory:
        return False
    return state.current_state in _facts(flow)[1]


def _variants(state: ConversationState) -> Mapping[str, str]:
    variants = state.flow_memory.get(_VARIANTS, {})
    return variants if isinstance(variants, Mapping) else {}


def _count_webhook(add: Any, at: str, name: str, failed: bool, result: JsonDict | None) -> None:
    result = result or {}
    elapsed = float(result.get("elapsed_ms", 0.0) or 0.0)
    add(at, WEBHOOK_CALLS, name, 1, elapsed)
    add(at, WEBHOOK_LATENCY, f"{name}|{latency_bound(elapsed)}")
    if not failed:
        return
    add(at, WEBHOOK_FAILURES, name)
    error = str(result.get("error", ""))
    if result.get("abandoned") or error.startswith(("abandoned", "cancelled")):
        add(at, WEBHOOK_ABANDONED, name)
    elif result.get("timed_out"):
        add(at, WEBHOOK_TIMEOUTS, name)
