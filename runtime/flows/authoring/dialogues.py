"""Scripted dialogues: user lines in, expected responses and states out.

A flow author's test file (``confab flows test FILE``)::

    flow: pizza                  # the flow each dialogue runs (processing hint force_flow)
    tenant: acme                 # optional
    now: "2026-03-12T18:30:00"   # optional: the clock of every dialogue (in-process only)
    webhooks:                    # optional: webhook answers instead of calls (in-process only)
      price: {total: 24, currency: EUR}       # the JSON a successful call answers
      stock: {fail: "HTTP 503"}               # or a call that fails
    dialogues:
      - name: two large pizzas
        channel: web             # optional (web)
        variants: {greeting: friendly}        # optional: the A/B variant of each experiment
        now: ...                 # optional: this dialogue's own clock; `webhooks:` likewise
        turns:
          - user: "hi"
            expect: {state: greet, says: "order a pizza"}
          - payload: ORDER
            language: en         # optional: MessageContent.language
            after: 3600          # optional: seconds of silence before this turn (in-process only)
            seen_turn: 1         # optional: the turn of the last reply its user had seen
            expect: {state: take_order, says: "Which size"}

A flow's language models are never called: a turn scripts the answers of its ``generate``
steps (and generative fallback) in call order, and a dialogue or the file may give one for
every call its turns do not script::

    generate: {fail: no_provider}          # optional: every call's answer, unless a turn says
    dialogues:
      - name: the FAQ answers
        generate: "We open at nine."       # optional: this dialogue's default
        turns:
          - user: when do you open?
            generate: "We open at nine."   # the answer's text
          - user: and on Sundays?
            generate: {chunks: ["Closed ", "on Sundays."]}   # or streamed in chunks
          - user: is it raining?
            generate: {fail: timeout}      # or a failure (runtime.models.REASONS, http_500...)
          - user: two questions
            generate: ["First.", {fail: budget}]             # several calls, in order

A flow whose recognizer asks a model (``settings.nlu: {recognizer: model}``) gets that
call's answer from ``recognize:``, on a turn, a dialogue or the file (the default of every
such call a turn does not script): the reading as the model would write it, its text as it
came (to play one that is no JSON), or a failure::

    recognize: {fail: timeout}             # optional: the file's default
    dialogues:
      - turns:
          - user: could I get the big one, two of them
            recognize: {intent: order, confidence: 0.9, slots: {size: large, quantity: 2}}
          - user: what?
            recognize: "not json at all"

A call nothing scripts fails as with no model provider configured (``no_provider``).

A turn sends ``user`` (text) and/or ``payload``; ``seen_turn`` says which reply its user had
seen when they wrote it (``metadata.custom_metadata["confab.seen_turn"]``: the dialogue's turn
1 answers with turn 1), to play a message typed before the last replies arrived. Every key of
``expect`` is optional: ``says`` (a piece of the response text, or a list of pieces), ``says_not``,
``state``, ``intent``, ``slots`` and ``variables`` (the given keys must have these
values), ``actions`` (these must be among actions_performed), ``quick_replies``
and ``buttons`` (their titles, exactly), ``error_count``, ``turn`` (the reply's turn).

Each dialogue runs on a fresh conversation whose id puts it in the ``variants`` asked
for (the variant follows from a hash of the conversation's key, so the right id is
searched for: this works against a server too). Every turn is played and checked, so
one wrong answer does not hide the next; a dialogue that needs what its runner cannot
do (a pinned clock, webhook answers) is skipped with the reason.

Runners (:class:`TurnRunner`): ``runtime.flows.authoring.runner.FlowRunner`` runs the flows
themselves in this process, deterministically, with the turn a shard runs
(``runtime.flows.execution.turn``; its clock and webhook answers are the dialogue's, or real webhooks
from a server config); ``tools.dialogue_client.GrpcRunner`` talks to a server.
This module is the dialogue file format, how a dialogue is played through a runner and
how its answers are checked.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from confab.runtime.errors import ConfabError
from confab.runtime.flows import GENERATE, RECOGNIZE, Flow
from confab.runtime.flows.execution.interpreter import DeclarativeFlow, redact_slots
from confab.runtime.flows.language.masking import mask_value
from confab.runtime.model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    JsonDict,
    ProcessingHints,
    TurnResult,
)
from confab.runtime.models import NO_PROVIDER, REASONS, failure

WEBHOOK_WAIT_S = 30.0
MAX_VARIANT_SEARCH = 100_000  # conversation ids tried to land in the asked-for variants
EXPECT_KEYS = (
    "says",
    "says_not",
    "state",
    "intent",
    "slots",
    "variables",
    "actions",
    "quick_replies",
    "buttons",
    "error_count",
    "turn",
)
FILE_KEYS = ("flow", "tenant", "now", "webhooks", "generate", "recognize", "dialogues")
DIALOGUE_KEYS = ("name", "channel", "variants", "now", "webhooks", "generate", "recognize", "turns")
TURN_KEYS = ("user", "payload", "language", "after", "seen_turn", "generate", "recognize", "expect")
GENERATE_KEYS = ("text", "chunks", "fail")
READING_KEYS = ("intent", "confidence", "slots")  # a model recognizer's answer (its JSON object)
NOT_SCRIPTED = "a dialogue calls no language model, and no answer is scripted for this call (generate:)"
_HTTP_REASON = re.compile(r"http_[1-5]\d\d")  # a model call failed with this HTTP status

# A webhook answer as a dialogue gives it: the body of a success, or {"fail": reason}.
WebhookAnswers = Mapping[str, Any]


class ScriptedGenerations:
    """The answers a turn's model calls get: its generate steps' own, in call order, then the
    default; its recognizer's call (one a turn) its own, else the recognizer's default."""

    def __init__(
        self,
        answers: Sequence[Any] = (),
        default: Any = None,
        reading: Any = None,
        reading_default: Any = None,
    ) -> None:
        self._answers = list(answers)
        self._default = default
        self._reading = reading
        self._reading_default = reading_default

    def next(self, kind: str = GENERATE) -> JsonDict:
        """The next call's answer, as the call's result (``runtime.models``); ``kind``: the
        call's (``runtime.flows.WebhookCall.kind``)."""
        if kind == RECOGNIZE:
            given, self._reading = self._reading, None
            if given is None:
                given = self._reading_default
            return reading_result(given) if given is not None else _not_scripted()
        if self._answers:
            return generation_result(self._answers.pop(0))
        if self._default is not None:
            return generation_result(self._default)
        return _not_scripted()


def _not_scripted() -> JsonDict:
    return failure(NO_PROVIDER, NOT_SCRIPTED, chunks=0, attempts=0)


def generation_result(given: Any) -> JsonDict:
    """A model's answer as a dialogue gives it (its text, ``{chunks: [...]}``, ``{text: ...}`` or
    ``{fail: reason}``), as the result of the call a flow sees; DialogueFileError if it is none
    (its message names the answer, not where it was: the caller says that)."""
    if isinstance(given, str):
        return {"ok": True, "text": given, "chunks": 1}
    if not isinstance(given, Mapping) or len(given) != 1 or next(iter(given)) not in GENERATE_KEYS:
        raise DialogueFileError(
            f"{given!r} is not an answer: give its text, {{chunks: [...]}} or {{fail: REASON}}"
        )
    ((kind, value),) = given.items()
    if kind == "fail":
        reason = str(value)
        if reason not in REASONS and not _HTTP_REASON.fullmatch(reason):
            raise DialogueFileError(
                f"{{fail: {value!r}}}: not a reason a model call fails for; known: "
                f"{', '.join(REASONS)}, or http_NNN for an HTTP status (http_429, http_500...)"
            )
        return failure(reason, f"scripted failure: {reason}", chunks=0)
    if kind == "text" and isinstance(value, str):
        return {"ok": True, "text": value, "chunks": 1}
    if kind == "chunks" and isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return {"ok": True, "text": "".join(value), "chunks": len(value), "pieces": list(value)}
    raise DialogueFileError(f"{given!r}: {kind} must be text, or a list of texts for chunks")


def reading_result(given: Any) -> JsonDict:
    """A model recognizer's answer as a dialogue gives it (the reading, ``{intent, confidence,
    slots}``; its text as it came; or ``{fail: reason}``), as the result of the call a flow
    sees; DialogueFileError if it is none."""
    if isinstance(given, str):
        return {"ok": True, "text": given, "chunks": 1}
    if isinstance(given, Mapping) and set(given) == {"fail"}:
        return failure(str(given["fail"]), f"scripted failure: {given['fail']}", chunks=0)
    if isinstance(given, Mapping) and given and set(given) <= set(READING_KEYS):
        return {"ok": True, "text": json.dumps(dict(given), default=str), "chunks": 1}
    raise DialogueFileError(
        f"{given!r} is not an answer: give the reading ({{{', '.join(READING_KEYS)}}}),"
        " its text, or {fail: REASON}"
    )


def _reading(value: Any, where: str) -> Any:
    """A ``recognize:``, checked."""
    try:
        reading_result(value)
    except DialogueFileError as exc:
        raise DialogueFileError(f"{where}: {exc}") from None
    return value


def _scripted(value: Any, where: str, *, several: bool = True) -> tuple[Any, ...]:
    """A ``generate:``: one answer, or (``several``: a turn's) a list of them; each checked."""
    answers = tuple(value) if several and isinstance(value, list) else (value,)
    for answer in answers:
        try:
            generation_result(answer)
        except DialogueFileError as exc:
            raise DialogueFileError(f"{where}: {exc}") from None
    return answers


class DialogueFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DialogueTurn:
    user: str
    payload: str
    expect: dict[str, Any]
    language: str = ""
    after_s: float = 0.0
    seen_turn: int | None = None  # the turn of the last reply its user had seen; None: not said
    generate: tuple[Any, ...] = ()  # the answers of its generate steps' model calls, in call order
    recognize: Any = None  # the answer of its model recognizer's call


@dataclass(frozen=True, slots=True)
class Dialogue:
    name: str
    channel: str
    turns: tuple[DialogueTurn, ...]
    variants: dict[str, str] = field(default_factory=dict)
    now: float | None = None
    webhooks: dict[str, Any] = field(default_factory=dict)
    generate: Any = None  # the answer of every generate step's call its turns do not script
    recognize: Any = None  # the answer of every model recognizer's call its turns do not script

    @property
    def in_process_only(self) -> str:
        """Why only the in-process runner can play it ("": any runner can): a server has its own
        clock, calls its own webhooks and its own models."""
        reasons = []
        scripted = self.generate is not None or any(t.generate for t in self.turns)
        scripted = scripted or self.recognize is not None or any(t.recognize is not None for t in self.turns)
        if scripted:
            reasons.append("scripts model answers: a server calls its own models")
        if self.webhooks:
            reasons.append("scripts webhook answers: a server calls its own webhooks")
        if self.now is not None or any(t.after_s for t in self.turns):
            reasons.append("pins the clock (now: or after:): a server keeps its own time")
        return "; ".join(reasons)

    def generations(self, turn: DialogueTurn) -> ScriptedGenerations:
        """The answers ``turn``'s model calls get."""
        return ScriptedGenerations(turn.generate, self.generate, turn.recognize, self.recognize)


@dataclass(frozen=True, slots=True)
class DialogueFile:
    flow: str
    tenant: str
    dialogues: tuple[Dialogue, ...]


@dataclass(frozen=True, slots=True)
class ShownTurn:
    """A turn as a transcript shows it: masked as the store keeps it and operators see it."""

    user: str  # what was sent: the text, or the payload alone
    payload: str
    text: str  # what the flow said
    slots: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnView:
    """What a turn answered, whichever way it was run."""

    text: str
    state: str
    intent: str
    slots: dict[str, Any]
    variables: dict[str, Any]
    actions: list[str]
    quick_replies: list[str]
    buttons: list[str]
    error_count: int
    turn: int = 0  # the reply's turn (the conversation's message count after it)
    # The turn masked as the store keeps it, when the runner knows (in-process: the flow said
    # which part of the message it read a sensitive value from); else see ``shown_by_flow``.
    shown: ShownTurn | None = None

    @classmethod
    def of(cls, result: TurnResult) -> TurnView:
        r, s = result.response, result.state
        return cls(
            text=r.text,
            turn=result.turn,
            state=s.current_state,
            intent=s.current_intent,
            slots=dict(s.slots),
            variables=dict(s.variables),
            actions=list(result.actions_performed),
            quick_replies=[q.title for q in r.quick_replies],
            buttons=[b.title for b in r.buttons],
            error_count=s.error_count,
        )


@dataclass(frozen=True, slots=True)
class PlayedTurn:
    """One turn of a transcript: what was sent and what came back (None: the turn failed)."""

    sent: DialogueTurn
    view: TurnView | None
    problems: tuple[str, ...]
    shown: ShownTurn | None = None  # the turn masked, for the transcript (None: the turn failed)


@dataclass(slots=True)
class DialogueResult:
    name: str
    problems: list[str] = field(default_factory=list)
    transcript: list[PlayedTurn] = field(default_factory=list)
    skipped: str = ""  # why it was not played

    @property
    def passed(self) -> bool:
        return not self.problems and not self.skipped


class TurnRunner(Protocol):
    # Whether it can run a turn at a given time with given webhook answers (in-process only).
    pins_time: bool

    def send(
        self,
        conversation: ConversationKey,
        text: str,
        payload: str,
        channel: str,
        flow: str,
        *,
        language: str = "",
        now: float | None = None,
        webhooks: WebhookAnswers | None = None,
        seen_turn: int | None = None,
        generations: ScriptedGenerations | None = None,
    ) -> TurnView: ...


# --- reading dialogue files ---------------------------------------------------------------------------


def dialogue_message(
    text: str, payload: str, channel: str, flow: str, language: str = "", seen_turn: int | None = None
) -> InboundMessage:
    """The message a dialogue's turn sends, as every in-process runner sends it (a server gets
    the same fields as a ProcessMessageRequest: ``tools.dialogue_client``)."""
    return InboundMessage(
        user_id="dialogue",
        content=Content(text=text, payload=payload, language=language),
        channel=channel,
        hints=ProcessingHints(force_flow=flow),
        seen_turn=seen_turn,
    )


def _keys(raw: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise DialogueFileError(f"{where}: unknown keys {unknown}; known: {list(allowed)}")


def _instant(value: Any, where: str) -> float | None:
    """``now:`` as Unix seconds: a number, or an ISO date or date-time (local time)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time(12)).timestamp()
    try:
        return datetime.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise DialogueFileError(
            f"{where}: now must be Unix seconds or an ISO date-time, not {value!r}"
        ) from None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DialogueFileError(f"{where}: expected a mapping")
    return {str(k): v for k, v in value.items()}


def load_dialogues(path: Path) -> DialogueFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DialogueFileError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("dialogues"), list):
        raise DialogueFileError(f"{path}: expected a mapping with a list of dialogues")
    _keys(data, FILE_KEYS, str(path))
    file_now = _instant(data.get("now"), str(path))
    file_hooks = _mapping(data.get("webhooks"), f"{path}: webhooks")
    file_generate = data.get("generate")
    if file_generate is not None:
        _scripted(file_generate, f"{path}: generate", several=False)
    file_reading = data.get("recognize")
    if file_reading is not None:
        _reading(file_reading, f"{path}: recognize")
    dialogues = []
    for i, raw in enumerate(data["dialogues"]):
        where = f"{path}: dialogues[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("turns"), list):
            raise DialogueFileError(f"{where}: expected a mapping with a list of turns")
        _keys(raw, DIALOGUE_KEYS, where)
        turns = []
        for j, turn in enumerate(raw["turns"]):
            twhere = f"{where}.turns[{j}]"
            if not isinstance(turn, dict) or not ("user" in turn or "payload" in turn):
                raise DialogueFileError(f"{twhere}: a turn needs `user` or `payload`")
            _keys(turn, TURN_KEYS, twhere)
            expect = turn.get("expect") or {}
            unknown = sorted(set(expect) - set(EXPECT_KEYS))
            if unknown:
                raise DialogueFileError(f"{twhere}: unknown expectations {unknown}; known: {EXPECT_KEYS}")
            after = turn.get("after", 0)
            if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
                raise DialogueFileError(f"{twhere}.after: expected seconds (a number >= 0)")
            seen_turn = turn.get("seen_turn")
            if seen_turn is not None and (
                isinstance(seen_turn, bool) or not isinstance(seen_turn, int) or seen_turn < 0
            ):
                raise DialogueFileError(f"{twhere}.seen_turn: expected a reply's turn (a whole number >= 0)")
            turns.append(
                DialogueTurn(
                    str(turn.get("user", "")),
                    str(turn.get("payload", "")),
                    dict(expect),
                    language=str(turn.get("language", "")),
                    after_s=float(after),
                    seen_turn=seen_turn,
                    generate=_scripted(turn["generate"], f"{twhere}.generate") if "generate" in turn else (),
                    recognize=_reading(turn["recognize"], f"{twhere}.recognize")
                    if "recognize" in turn
                    else None,
                )
            )
        now = _instant(raw.get("now"), where)
        generate = raw.get("generate", file_generate)
        if generate is not None:
            _scripted(generate, f"{where}.generate", several=False)
        reading = raw.get("recognize", file_reading)
        if reading is not None:
            _reading(reading, f"{where}.recognize")
        dialogues.append(
            Dialogue(
                str(raw.get("name", f"dialogue {i + 1}")),
                str(raw.get("channel", "web")),
                tuple(turns),
                variants={k: str(v) for k, v in _mapping(raw.get("variants"), f"{where}.variants").items()},
                now=now if now is not None else file_now,
                webhooks={**file_hooks, **_mapping(raw.get("webhooks"), f"{where}.webhooks")},
                generate=generate,
                recognize=reading,
            )
        )
    return DialogueFile(
        str(data.get("flow", "")), str(data.get("tenant", "dialogue-tests")), tuple(dialogues)
    )


# --- checking ------------------------------------------------------------------------------------------


def check(expect: dict[str, Any], view: TurnView) -> list[str]:
    """What in ``view`` differs from ``expect`` (empty when the turn went as expected)."""
    problems = []
    says = expect.get("says", [])
    for piece in [says] if isinstance(says, str) else says:
        if piece.lower() not in view.text.lower():
            problems.append(f"expected the response to say {piece!r}; it said {view.text!r}")
    says_not = expect.get("says_not", [])
    for piece in [says_not] if isinstance(says_not, str) else says_not:
        if piece.lower() in view.text.lower():
            problems.append(f"expected the response not to say {piece!r}; it said {view.text!r}")
    for key in ("state", "intent", "error_count", "turn"):
        if key in expect and expect[key] != getattr(view, key):
            problems.append(f"expected {key} {expect[key]!r}, got {getattr(view, key)!r}")
    for key in ("slots", "variables"):
        actual = getattr(view, key)
        for name, value in (expect.get(key) or {}).items():
            if actual.get(name) != value:
                problems.append(f"expected {key}.{name} = {value!r}, got {actual.get(name)!r}")
    missing = [a for a in expect.get("actions", []) if a not in view.actions]
    if missing:
        problems.append(f"expected actions {missing} among {view.actions}")
    for key in ("quick_replies", "buttons"):
        if key in expect and list(expect[key]) != getattr(view, key):
            problems.append(f"expected {key} {expect[key]!r}, got {getattr(view, key)!r}")
    return problems


FlowLookup = Callable[[str, str], Flow | None]  # (flow id, tenant) -> the flow, to choose variants


def conversation_for_variants(
    flow: Flow | None, tenant: str, variants: Mapping[str, str], prefix: str
) -> ConversationKey:
    """A conversation key whose A/B assignment is ``variants`` (a hash decides it: ids are tried)."""
    if not variants:
        return ConversationKey(tenant, prefix)
    if not isinstance(flow, DeclarativeFlow):  # only flow files have experiments
        raise DialogueFileError(f"variants {dict(variants)}: the flow is not available here to choose them")
    assign = flow.assign_variants
    known = flow.document.experiments
    for experiment, variant in variants.items():
        if experiment not in known or variant not in known[experiment].weights:
            raise DialogueFileError(
                f"variants: the flow has no experiment {experiment!r} with variant {variant!r}"
            )
    for n in range(MAX_VARIANT_SEARCH):
        key = ConversationKey(tenant, f"{prefix}-{n}")
        assigned = assign(key)
        if all(assigned.get(e) == v for e, v in variants.items()):
            return key
    raise DialogueFileError(f"variants {dict(variants)}: no conversation id found for them")


def run_dialogues(
    file: DialogueFile, runner: TurnRunner, find_flow: FlowLookup | None = None
) -> list[DialogueResult]:
    results = []
    for dialogue in file.dialogues:
        result = DialogueResult(dialogue.name)
        results.append(result)
        if dialogue.in_process_only and not runner.pins_time:
            result.skipped = f"{dialogue.in_process_only}; only the in-process runner plays it"
            continue
        prefix = f"dialogue-{uuid.uuid4().hex[:12]}"
        try:
            flow = find_flow(file.flow, file.tenant) if find_flow and dialogue.variants else None
            key = conversation_for_variants(flow, file.tenant, dialogue.variants, prefix)
        except DialogueFileError as exc:
            result.problems.append(str(exc))
            continue
        clock = dialogue.now
        masking = find_flow(file.flow, file.tenant) if find_flow else None
        slots_before: dict[str, Any] = {}
        for n, turn in enumerate(dialogue.turns, start=1):
            if clock is not None:
                clock += turn.after_s
            label = f"turn {n} ({turn.user or turn.payload!r})"
            try:
                view = runner.send(
                    key,
                    turn.user,
                    turn.payload,
                    dialogue.channel,
                    file.flow,
                    language=turn.language,
                    now=clock,
                    webhooks=dialogue.webhooks,
                    seen_turn=turn.seen_turn,
                    generations=dialogue.generations(turn),
                )
            except ConfabError as exc:
                problem = f"failed: {exc.message}"
                result.problems.append(f"{label}: {problem}")
                result.transcript.append(PlayedTurn(turn, None, (problem,)))
                continue
            problems = check(turn.expect, view)
            result.problems.extend(f"{label}: {p}" for p in problems)
            shown = view.shown or shown_by_flow(masking, turn, view, slots_before)
            result.transcript.append(PlayedTurn(turn, view, tuple(problems), shown))
            slots_before = view.slots
    return results


def masked_slots(flow: Flow, state: ConversationState) -> JsonDict:
    """``state``'s slots as operators may see them: masked as ``flow`` (the state's) says, its
    sensitive slots and its mask patterns in every text (``interpreter.redact_slots``)."""
    return flow.redact_state(state).slots


def shown_by_flow(
    flow: Flow | None, turn: DialogueTurn, view: TurnView, slots_before: Mapping[str, Any]
) -> ShownTurn:
    """A turn a runner could not mask itself (a server's), masked by the flow the dialogue file
    names: its sensitive slots and its mask patterns. The store masks only the part of a
    message a sensitive value was read from, which a client cannot tell: a message that gave
    a sensitive slot its value is shown masked whole. A flow not loaded here declares nothing
    that can be known: every slot value is masked, and every message that changed one."""
    if flow is not None:
        slots = masked_slots(
            flow, ConversationState(view.state, flow.flow_id, flow.version, slots=dict(view.slots))
        )
    else:
        slots = redact_slots(None, dict(view.slots))
    masked = [k for k in view.slots if slots.get(k) != view.slots[k]]
    filled = any(view.slots[k] != slots_before.get(k) for k in masked)
    redact = flow.redact_text if flow is not None else (lambda text: text)
    user, payload = turn.user, turn.payload
    if filled:
        user, payload = (mask_value(user), "") if user else ("", mask_value(payload))
    return ShownTurn(redact(user), redact(payload), redact(view.text), slots)


# --- runners --------------------------------------------------------------------------------------------


def webhook_result(given: Any) -> JsonDict:
    """A webhook answer as a dialogue file gives it (a success's JSON, or ``{"fail": reason}``),
    as the result of the call that a flow sees."""
    if isinstance(given, Mapping) and "fail" in given:
        return {"ok": False, "error": str(given["fail"])}
    return {"ok": True, "status": 200, "body": copy.deepcopy(given)}


def dialogue_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            yield path


def transcript_lines(result: DialogueResult) -> list[str]:
    """A dialogue as it went: each line sent, what came back, the state it left, and what was wrong."""
    lines = []
    for played in result.transcript:
        view, shown = played.view, played.shown
        sent = shown if shown is not None else played.sent
        said = sent.user + (f" [{sent.payload}]" if sent.payload else "")
        lines.append(f"  you> {said}")
        if view is not None and shown is not None:
            lines += [f"  bot> {line}" for line in (shown.text.splitlines() or [""])]
            choices = [*view.quick_replies, *view.buttons]
            if choices:
                lines.append("       " + "  ".join(f"[{c}]" for c in choices))
            detail = f"state {view.state}" + (f", intent {view.intent}" if view.intent else "")
            if shown.slots:
                detail += ", slots " + ", ".join(f"{k}={v!r}" for k, v in shown.slots.items())
            lines.append(f"       ({detail})")
        lines += [f"    ! {problem}" for problem in played.problems]
    return lines


__all__ = [
    "Dialogue",
    "DialogueFile",
    "DialogueFileError",
    "DialogueResult",
    "DialogueTurn",
    "PlayedTurn",
    "ScriptedGenerations",
    "ShownTurn",
    "TurnRunner",
    "TurnView",
    "check",
    "conversation_for_variants",
    "dialogue_files",
    "generation_result",
    "load_dialogues",
    "masked_slots",
    "reading_result",
    "run_dialogues",
    "shown_by_flow",
    "transcript_lines",
    "webhook_result",
]
