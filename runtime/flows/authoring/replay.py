"""What-if replay: recorded conversations played again against a new version of a flow.

A shard with history on (``engine.history_retention_s``) keeps, for every turn, the
message it answered (masked as its flow says), the turn's clock and its webhook answers,
next to the reply it gave. A replay feeds those messages, in order, to the new version in
this process (:class:`~runtime.flows.authoring.runner.FlowRunner`, which runs the turn a shard
runs, ``runtime.flows.execution.turn``) and compares each turn with the recorded one: the state it ends
in, what it says (the text, and the titles of its quick replies and buttons) and the slots.
The first turn that differs is the conversation's divergence; later turns that differ are
counted.

Deterministic, and with no effect outside this process:

* each turn runs at its recorded time (``now``: what "today" and the session TTL see);
* a webhook the new version calls gets the answer the recorded turn's call of that name
  got (the n-th call of a name in the turn, the n-th recorded answer of that name); a
  call the recording cannot answer gets the answer given for that webhook (``answers``,
  as a dialogue file gives them), else fails -- and is reported. A real webhook is never
  called: replaying a "block my card" conversation must not block a card;
* a language model's answer (a ``generate`` step, a generative fallback) is the n-th
  recorded model answer of the turn, whichever provider, and a model recognizer's the
  turn's recorded reading; one the recording does not have fails (as with no provider) and
  is reported. A model is never called;
* A/B variants follow from the conversation's key, as they did when it ran.

Operators' acts are replayed as the actor does them: a reset starts the conversation's
flow over at its recorded time; a forced state moves the new version to the state of that
name, and a version without that state diverges there (the rest of the conversation is
not compared: it would be measured from a place the new version cannot be in).

A replay starts where a flow starts: the conversation's first turn, or a reset. A
conversation whose early turns are gone (older than the store keeps) or were stored
without their message (history was off) is replayed from its first reset after them, or
skipped, with the reason.

This module takes plain domain records (:class:`RecordedConversation`); reading them
from a store is the caller's part (``tools.replay_store``): flows know nothing of stores.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from confab.runtime.errors import ConfabError
from confab.runtime.flows import GENERATE, RECOGNIZE, WEBHOOK, Flow, UnknownFlow, UnknownState, WebhookCall
from confab.runtime.flows.authoring.dialogues import webhook_result
from confab.runtime.flows.authoring.runner import FlowRunner
from confab.runtime.flows.execution.interpreter import NOT_CALLED
from confab.runtime.flows.language.document import FlowDocument
from confab.runtime.flows.language.masking import MASK
from confab.runtime.model import Content, ConversationKey, ConversationState, InboundMessage, JsonDict
from confab.runtime.models import NO_PROVIDER, failure

# A webhook call leaves one of these actions (interpreter: "webhook:price" or
# "webhook_failed:price"), and a model call one of the others ("generate:default",
# "generate_failed:timeout", "recognize:default", "recognize_failed:http_500"), in the order of
# the calls: a recorded turn's answers are keyed by call number only, and these give each
# call's kind and webhook name.
_CALL_ACTIONS = ("webhook:", "webhook_failed:")
_GENERATE_ACTIONS = (f"{GENERATE}:", f"{GENERATE}_failed:")
_RECOGNIZE_ACTIONS = (f"{RECOGNIZE}:", f"{RECOGNIZE}_failed:")
_NOT_CALLED = f"generate_failed:{NOT_CALLED}"  # a prompt that did not render: no call was made
NOT_RECORDED = "not recorded: a replay calls no webhook, and no answer was given for this one"
MODEL_NOT_RECORDED = "not recorded: a replay calls no language model"

# What a replay compares, in the order a divergence lists it.
STATE, RESPONSE, SLOTS, FAILED = "state", "response", "slots", "failed"


class ReplayError(ValueError):
    """The replay cannot be set up: no such flow or version."""


# --- what was recorded ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedTurn:
    """A message the conversation answered, and what it answered then."""

    seq: int  # the turn's number in the conversation (resets and forced states count too)
    message: InboundMessage  # as recorded: masked where its flow said so
    now: float  # the turn's clock
    webhook_results: Mapping[str, JsonDict]  # by call key ("0", "1", ...), as the turn got them
    response: Content
    state: ConversationState  # after the turn
    state_before: str
    actions: tuple[str, ...] = ()  # actions_performed: they name the webhook calls


@dataclass(frozen=True, slots=True)
class RecordedReset:
    """An operator's (or a client's) reset: the flow ``flow_id`` started over at ``now``."""

    seq: int
    now: float
    flow_id: str


@dataclass(frozen=True, slots=True)
class RecordedForce:
    """An operator moved the conversation to state ``state_name``."""

    seq: int
    state_name: str
    state: ConversationState  # after the move


@dataclass(frozen=True, slots=True)
class RecordedAgentMessage:
    """A person's message into the conversation while it was handed over: no flow ran, so a
    replay has nothing to play (it is kept so the history reads as the user saw it)."""

    seq: int
    agent: str
    text: str
    now: float


@dataclass(frozen=True, slots=True)
class UnrecordedTurn:
    """A turn kept without its message (run while history was off): it cannot be played."""

    seq: int


RecordedStep = RecordedTurn | RecordedReset | RecordedForce | RecordedAgentMessage | UnrecordedTurn


@dataclass(frozen=True, slots=True)
class RecordedConversation:
    key: ConversationKey
    # Oldest first. Turns missing before the first (or between two) are no longer kept.
    steps: tuple[RecordedStep, ...]

    def ran(self, flow_id: str) -> bool:
        """Whether any of its turns ran on flow ``flow_id`` (any version)."""
        for step in self.steps:
            flows: tuple[str, ...]
            if isinstance(step, RecordedTurn):
                flows = (step.state.flow_id, step.message.hints.force_flow)
            elif isinstance(step, RecordedReset):
                flows = (step.flow_id,)
            elif isinstance(step, RecordedForce):
                flows = (step.state.flow_id,)
            else:
                continue
            if flow_id in flows:
                return True
        return False


# --- what a replay found ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What one version did in one turn, fit to show: sensitive slots and text masked."""

    flow: str
    state: str
    text: str
    choices: tuple[str, ...]  # titles of the quick replies and buttons
    slots: JsonDict
    failed: str = ""  # why the turn failed in this version ("": it did not)


@dataclass(frozen=True, slots=True)
class Divergence:
    """A turn where the new version did otherwise than the recorded one."""

    seq: int
    at_state: str  # the state the turn began in ("": a new session)
    sent: str  # what the user sent, as recorded (text, or [payload]); or what an operator did
    differs: tuple[str, ...]  # of STATE, RESPONSE, SLOTS, FAILED
    recorded: TurnOutcome
    replayed: TurnOutcome
    changed_slots: tuple[str, ...] = ()
    # The recorded message had parts masked: the new version read the masks, not what the
    # user typed, so the difference may be the masking's and not the new version's.
    masked: bool = False


@dataclass(frozen=True, slots=True)
class UnrecordedCall:
    """A call of the new version that the recording could not answer: to a webhook, or to a
    language model (``webhook`` then reads ``generate:PROVIDER`` or ``recognize:PROVIDER``, as
    the turn's action would)."""

    seq: int
    webhook: str
    answered: str  # "given" (an answer for it was given) or "failed" (answered as a failure)
    kind: str = WEBHOOK  # WEBHOOK, GENERATE or RECOGNIZE (runtime.flows)

    @property
    def label(self) -> str:
        """The call as a person reads it: ``webhook stock``, ``model call generate:default``."""
        return f"webhook {self.webhook}" if self.kind == WEBHOOK else f"model call {self.webhook}"


@dataclass(slots=True)
class ConversationReplay:
    key: ConversationKey
    turns: int = 0  # messages replayed
    first: Divergence | None = None
    later: int = 0  # turns after the first divergence that differ too
    unrecorded_calls: list[UnrecordedCall] = field(default_factory=list)
    stopped: str = ""  # why the turns after some point were not compared
    skipped: str = ""  # why it was not replayed at all
    error: str = ""  # why its replay failed

    @property
    def outcome(self) -> str:
        if self.skipped:
            return "skipped"
        if self.error:
            return "error"
        return "diverges" if self.first is not None else "same"


@dataclass(slots=True)
class ReplaySummary:
    flow: str
    version: str
    conversations: int = 0  # replayed (skipped ones aside): same + diverging + errors
    same: int = 0
    diverging: int = 0
    errors: int = 0  # replays that could not go on (what they found is not counted)
    skipped: int = 0
    turns: int = 0
    # First divergences by the state the conversation was in, most first ("": a new session).
    by_state: dict[str, int] = field(default_factory=dict)
    masked: int = 0  # first divergences at a masked message
    unrecorded_calls: int = 0


def summarize(flow: Flow, replays: Iterable[ConversationReplay]) -> ReplaySummary:
    summary = ReplaySummary(flow.flow_id, flow.version)
    states: Counter[str] = Counter()
    for replay in replays:
        outcome = replay.outcome
        if outcome == "skipped":
            summary.skipped += 1
            continue
        summary.conversations += 1
        summary.turns += replay.turns
        summary.unrecorded_calls += len(replay.unrecorded_calls)
        if outcome == "error":
            summary.errors += 1
        elif outcome == "same":
            summary.same += 1
        elif replay.first is not None:
            summary.diverging += 1
            states[replay.first.at_state] += 1
            if replay.first.masked:
                summary.masked += 1
    summary.by_state = dict(sorted(states.items(), key=lambda item: (-item[1], item[0])))
    return summary


# --- choosing the version ---------------------------------------------------------------------------


def choose_flow(documents: Sequence[FlowDocument], flow_id: str, version: str, tenant: str) -> FlowDocument:
    """The flow ``flow_id`` a replay runs: the tenant's own if it has one, else the shared one;
    ``version`` (when given) must be its version."""
    found = [d for d in documents if d.flow_id == flow_id]
    chosen = next((d for d in found if tenant and d.tenant == tenant), None) or next(
        (d for d in found if not d.tenant), None
    )
    if chosen is None:
        owners = ", ".join(sorted(f"tenant {d.tenant!r}" for d in found))
        known = sorted({d.flow_id for d in documents})
        close = difflib.get_close_matches(flow_id, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close and not owners else ""
        detail = f" (only for {owners})" if owners else f"{hint} (flows: {', '.join(known) or 'none'})"
        raise ReplayError(f"no flow {flow_id!r}" + (f" for tenant {tenant!r}" if tenant else "") + detail)
    if version and chosen.version != version:
        raise ReplayError(
            f"flow {flow_id!r} in {chosen.source or 'the loaded flows'} is version {chosen.version!r},"
            f" not {version!r}"
        )
    return chosen


# --- replaying ---------------------------------------------------------------------------------------


class Replayer:
    """Replays recorded conversations against ``flow``, one of ``flows`` (those it runs with:
    the other flows conversations are on, the sub-flows it calls)."""

    def __init__(
        self,
        flows: Sequence[Flow],
        flow: Flow,
        *,
        default_flow: str = "echo",
        answers: Mapping[str, Any] | None = None,
    ) -> None:
        """``answers``: webhook name -> the answer for calls the recording cannot answer, as a
        dialogue file gives them (a success's JSON, or ``{"fail": reason}``)."""
        self.flow = flow
        self._answers = dict(answers or {})
        # No webhook targets: a replay never calls a real webhook.
        self._runner = FlowRunner(flows, default_flow)

    def concerns(self, conversation: RecordedConversation) -> bool:
        """Whether the conversation ran this flow (any version), as the flow its tenant gets."""
        if not conversation.ran(self.flow.flow_id):
            return False
        try:
            return self._runner.registry.by_id(self.flow.flow_id, conversation.key.tenant_id) is self.flow
        except UnknownFlow:
            return False

    def replay(self, conversation: RecordedConversation) -> ConversationReplay:
        result = ConversationReplay(conversation.key)
        start, why_not = replay_start(conversation.steps)
        if start is None:
            result.skipped = why_not
            return result
        key = conversation.key
        self._runner.forget(key)
        try:
            for step in conversation.steps[start:]:
                if isinstance(step, RecordedReset):
                    self._runner.reset(key, step.now, step.flow_id)
                elif isinstance(step, RecordedForce):
                    if not self._force(result, step):
                        break
                elif isinstance(step, RecordedTurn):
                    self._turn(result, step)
        except ConfabError as exc:  # e.g. a reset of a flow that is not loaded here
            result.error = exc.message
        finally:
            self._runner.forget(key)
        return result

    def _turn(self, result: ConversationReplay, turn: RecordedTurn) -> None:
        result.turns += 1
        answers = _RecordedAnswers(turn, self._answers)
        before = self._runner.state_of(result.key)
        recorded = self._shown(turn.state, turn.response)
        try:
            state, reply = self._runner.play(result.key, turn.message, turn.now, answers.answer)
        except ConfabError as exc:  # the turn fails, as it would on a shard: the state stays
            failed = exc.message
        except Exception as exc:  # a flow bug: likewise (the actor answers INTERNAL)
            failed = f"turn failed: {type(exc).__name__}: {exc}"
        else:
            failed = ""
        result.unrecorded_calls += answers.unrecorded
        if failed:
            replayed = replace(self._shown_state(before), failed=failed)
            differs: tuple[str, ...] = (FAILED,)
            changed: tuple[str, ...] = ()
        else:
            replayed = self._shown(state, reply.response)
            changed = _changed_slots(turn.state.slots, state.slots)
            moved = (turn.state.flow_id, turn.state.current_state) != (state.flow_id, state.current_state)
            differs = tuple(
                aspect
                for aspect, differ in (
                    (STATE, moved),
                    (RESPONSE, _said(turn.response) != _said(reply.response)),
                    (SLOTS, bool(changed)),
                )
                if differ
            )
        if differs:
            content = turn.message.content
            sent = content.text or (f"[{content.payload}]" if content.payload else "")
            masked = MASK in content.text or MASK in content.payload
            _note(
                result,
                Divergence(
                    turn.seq,
                    turn.state_before,
                    self._runner.registry.for_state(turn.state).redact_text(sent),
                    differs,
                    recorded,
                    replayed,
                    changed,
                    masked,
                ),
            )

    def _force(self, result: ConversationReplay, force: RecordedForce) -> bool:
        """Move the new version as the operator moved the recorded one; False if it cannot."""
        before = self._runner.state_of(result.key)
        try:
            self._runner.force(result.key, force.state_name)
        except (UnknownState, ConfabError) as exc:
            reason = exc.message if isinstance(exc, ConfabError) else str(exc)
            _note(
                result,
                Divergence(
                    force.seq,
                    before.current_state if before is not None else "",
                    f"(an operator forced state {force.state_name!r})",
                    (STATE,),
                    self._shown(force.state, Content()),
                    replace(self._shown_state(before), failed=reason),
                ),
            )
            result.stopped = (
                f"turn {force.seq}: the new version cannot be where the recorded one was moved"
                " to; the turns after it are not compared"
            )
            return False
        return True

    def _shown_state(self, state: ConversationState | None) -> TurnOutcome:
        """Where a version stayed when a step failed (nowhere, for a conversation not begun)."""
        if state is None:
            return TurnOutcome(flow="", state="", text="", choices=(), slots={})
        return self._shown(state, Content())

    def _shown(self, state: ConversationState, response: Content) -> TurnOutcome:
        """What a version did, masked as its flow says: sensitive slots, and the flow's mask
        patterns in every text (a free-text slot holds whatever the user typed)."""
        text, slots = self._runner.masked(state, response.text)
        return TurnOutcome(
            flow=state.flow_id,
            state=state.current_state,
            text=text,
            choices=_said(response)[1],
            slots=slots,
        )


def replay_start(steps: Sequence[RecordedStep]) -> tuple[int | None, str]:
    """Where a replay of ``steps`` can begin (an index), or None and why it cannot.

    It begins at the conversation's first turn, or at the first reset after the last turn
    that cannot be played (gone from the store, or stored without its message).
    """
    start: int | None = 0
    why = ""
    expected = 1
    for index, step in enumerate(steps):
        if step.seq != expected:
            last = step.seq - 1
            start, why = (
                None,
                (
                    f"its turn {last} is no longer kept"
                    if last == expected
                    else f"its turns {expected} to {last} are no longer kept"
                ),
            )
        if isinstance(step, UnrecordedTurn):
            start, why = None, f"its turn {step.seq} was stored without its message (history was off)"
        elif isinstance(step, RecordedReset) and start is None:
            start = index
        expected = step.seq + 1
    if start is None:
        return None, f"{why}, and it was not reset since: a replay has nowhere to start"
    return start, ""


class _RecordedAnswers:
    """The answers one recorded turn's webhook calls got, for the same turn in the new version."""

    def __init__(self, turn: RecordedTurn, given: Mapping[str, Any]) -> None:
        self._seq = turn.seq
        self._given = given
        self.unrecorded: list[UnrecordedCall] = []
        keys = sorted(turn.webhook_results, key=_call_number)
        # (kind, webhook name) of each call, in call order; a model call's name is not compared.
        calls = [_call_of(a) for a in turn.actions if a.startswith(_ANY_CALL) and a != _NOT_CALLED]
        # By kind and name, in call order; by call key when the actions do not name every call.
        self._by_name: dict[tuple[str, str], deque[JsonDict]] | None = None
        self._by_key = dict(turn.webhook_results)
        if len(calls) == len(keys):
            self._by_name = {}
            for named, call_key in zip(calls, keys, strict=True):
                self._by_name.setdefault(named, deque()).append(turn.webhook_results[call_key])

    def answer(self, call: WebhookCall) -> JsonDict:
        recorded: JsonDict | None = None
        if self._by_name is not None:
            queue = self._by_name.get((call.kind, "" if call.to_model else call.name))
            recorded = queue.popleft() if queue else None
        else:
            recorded = self._by_key.pop(call.key, None)
        if recorded is not None:
            return copy.deepcopy(recorded)
        if call.to_model:
            self.unrecorded.append(UnrecordedCall(self._seq, call.label, "failed", call.kind))
            return failure(NO_PROVIDER, MODEL_NOT_RECORDED, chunks=0)
        if call.name in self._given:
            self.unrecorded.append(UnrecordedCall(self._seq, call.name, "given"))
            return webhook_result(self._given[call.name])
        self.unrecorded.append(UnrecordedCall(self._seq, call.name, "failed"))
        return {"ok": False, "error": NOT_RECORDED}


_ANY_CALL = (*_CALL_ACTIONS, *_GENERATE_ACTIONS, *_RECOGNIZE_ACTIONS)


def _call_of(action: str) -> tuple[str, str]:
    """(kind, webhook name) of the call an action names; a model call's name is not compared."""
    if action.startswith(_CALL_ACTIONS):
        return WEBHOOK, action.split(":", 1)[1]
    return (RECOGNIZE if action.startswith(_RECOGNIZE_ACTIONS) else GENERATE), ""


def _call_number(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def _note(result: ConversationReplay, divergence: Divergence) -> None:
    if result.first is None:
        result.first = divergence
    else:
        result.later += 1


def _said(response: Content) -> tuple[str, tuple[str, ...]]:
    return response.text, tuple(
        [*(q.title for q in response.quick_replies), *(b.title for b in response.buttons)]
    )


def _changed_slots(recorded: JsonDict, replayed: JsonDict) -> tuple[str, ...]:
    """Slots whose values differ; a slot that is absent and one that is null are both unset."""
    return tuple(
        name
        for name in sorted(set(recorded) | set(replayed))
        if _canonical(recorded.get(name)) != _canonical(replayed.get(name))
    )


def _canonical(value: Any) -> str:
    # The recorded values went through msgpack (tuples came back as lists): compare as JSON.
    return json.dumps(value, sort_keys=True, default=str)


__all__ = [
    "ConversationReplay",
    "Divergence",
    "RecordedAgentMessage",
    "RecordedConversation",
    "RecordedForce",
    "RecordedReset",
    "RecordedStep",
    "RecordedTurn",
    "ReplayError",
    "ReplaySummary",
    "Replayer",
    "TurnOutcome",
    "UnrecordedCall",
    "UnrecordedTurn",
    "choose_flow",
    "replay_start",
    "summarize",
]
