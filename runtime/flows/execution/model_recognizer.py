"""The built-in recognizer that asks a language model: ``settings.nlu: {recognizer: model}``.

Its own answer (``recognize``) is the built-in recognizer's (:class:`~.intents.DefaultRecognizer`:
payloads, keywords, patterns, examples, with the flow's typo tolerance and threshold). For a
message that answer does not settle (no exact match), it is an :class:`~.intents.AsksModel`:
it asks a model, with the flow's intents and the slots the message may fill, for a JSON
object::

    {"intent": "order", "confidence": 0.92, "slots": {"size": "large", "quantity": 2}}

and reads the answer (:meth:`ModelRecognizer.read`). The interpreter makes the call (a turn's
recorded call of kind ``recognize``), masks the prompt, checks the names and passes every value
through its slot's parsing and checks; whatever fails there, or here, leaves the built-in
recognizer's answer in place (docs/flows.md, "Intent recognition").

The prompt: a system message with the task, each intent (its name; its keywords and up to
:data:`EXAMPLES_SHOWN` examples, in the conversation's language, as hints), each slot the
message may fill (name, type, choices, bounds, form), the slot the message answers and the
turn's date when they matter; then the message as the store keeps it (masked) as the user's.
Everything in it comes from the flow file and the message, so the same turn asks the same.

Options (checked when the flow loads, :func:`option_problems`): ``provider`` (a
``models.providers`` name; default the first), ``min_confidence`` (0.6: a reading below it is
not used), ``examples`` (true: intents' examples go in the prompt), ``max_tokens`` (200),
``temperature`` (0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from confab.runtime.flows.execution.intents import (
    IntentMatch,
    IntentRecognizer,
    ModelQuestion,
    ModelReading,
    Utterance,
)
from confab.runtime.flows.language.document import IntentSpec, SlotSpec

NAME = "model"  # settings.nlu.recognizer
OPTIONS = ("provider", "min_confidence", "examples", "max_tokens", "temperature")
MIN_CONFIDENCE = 0.6
MAX_TOKENS = 200  # a reading is a short JSON object
EXAMPLES_SHOWN = 5  # of an intent's examples, in the prompt

# Why a model's answer is not used (besides why its call failed: runtime.models.REASONS).
INVALID_JSON = "invalid_json"  # not a JSON object of the shape asked for
LOW_CONFIDENCE = "low_confidence"  # below min_confidence

TASK = """\
You read one message a user wrote in a conversation and say what it means. Answer with one JSON \
object and nothing else:
{"intent": NAME or null, "confidence": a number from 0 to 1, "slots": {"SLOT": VALUE}}
"intent" is the one of the intents below that the message means, or null when it means none of \
them (an answer to the question asked is no intent). "confidence" is how sure you are of the \
whole reading. "slots" holds only values the message itself states, for the slots below, in the \
form each slot asks for; leave out every other slot. Text shown as **** is hidden: never guess it."""

# ```json ... ``` around the object: some servers add it even when asked for JSON alone.
_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S | re.I)


def option_problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a flow's ``settings.nlu.options`` for this recognizer: (the option,
    what is wrong with it), the option "" for what is wrong with them all."""
    problems = []
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        problems.append(
            ("", f"unknown option(s) {', '.join(unknown)}; the model recognizer has {', '.join(OPTIONS)}")
        )
    provider = options.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider):
        problems.append(("provider", "must be the name of a model provider (models.providers)"))
    if not _number_between(options.get("min_confidence", MIN_CONFIDENCE), 0.0, 1.0):
        problems.append(
            ("min_confidence", f"must be a number between 0 and 1, found {options['min_confidence']!r}")
        )
    if not isinstance(options.get("examples", True), bool):
        problems.append(("examples", f"must be true or false, found {options['examples']!r}"))
    tokens = options.get("max_tokens", MAX_TOKENS)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        problems.append(("max_tokens", f"must be a whole number of at least 1, found {tokens!r}"))
    if not _number_between(options.get("temperature", 0.0), 0.0, 2.0):
        problems.append(
            ("temperature", f"must be a number between 0 and 2, found {options['temperature']!r}")
        )
    return problems


def _number_between(value: Any, low: float, high: float) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


class ModelRecognizer:
    """``lexical``'s answers (the built-in recognizer's: ``runtime.flows.execution.nlu`` makes
    it as for a flow without this one), and a model's reading of what they leave open."""

    def __init__(
        self, lexical: IntentRecognizer, intents: Mapping[str, IntentSpec], options: Mapping[str, Any]
    ) -> None:
        self.lexical = lexical
        self.provider = str(options.get("provider", ""))
        self.min_confidence = float(options.get("min_confidence", MIN_CONFIDENCE))
        self.max_tokens = int(options.get("max_tokens", MAX_TOKENS))
        self.temperature = float(options.get("temperature", 0.0))
        self._intents = "\n".join(
            _intent_line(spec, examples=bool(options.get("examples", True))) for spec in intents.values()
        )

    def recognize(self, text: str, payload: str = "") -> IntentMatch | None:
        return self.lexical.recognize(text, payload)

    def question(self, utterance: Utterance) -> ModelQuestion | None:
        parts = [TASK, "Intents:\n" + (self._intents or "(none)")]
        if utterance.slots:
            parts.append("Slots:\n" + "\n".join(_slot_line(spec) for spec in utterance.slots.values()))
        if utterance.asking:
            parts.append(f"The question the message answers asked for: {utterance.asking}.")
        if utterance.today is not None and any(s.type == "date" for s in utterance.slots.values()):
            parts.append(f"Today is {utterance.today.isoformat()} ({utterance.today.strftime('%A')}).")
        return ModelQuestion(
            messages=(
                {"role": "system", "content": "\n\n".join(parts)},
                {"role": "user", "content": utterance.text},
            ),
            provider=self.provider,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )

    def read(self, utterance: Utterance, answer: str) -> ModelReading:
        text = answer.strip()
        fenced = _FENCED.fullmatch(text)
        if fenced is not None:
            text = fenced.group(1)
        try:
            data = json.loads(text)
        except ValueError:
            return ModelReading(problem=INVALID_JSON)
        if not isinstance(data, dict) or "intent" not in data:
            return ModelReading(problem=INVALID_JSON)
        intent, confidence, slots = data["intent"], data.get("confidence"), data.get("slots")
        if intent is not None and not isinstance(intent, str):
            return ModelReading(problem=INVALID_JSON)
        if not _number_between(confidence, 0.0, 1.0):  # NaN fails too
            return ModelReading(problem=INVALID_JSON)
        if slots is None:
            slots = {}
        if not isinstance(slots, dict) or not all(isinstance(name, str) for name in slots):
            return ModelReading(problem=INVALID_JSON)
        if confidence < self.min_confidence:
            return ModelReading(problem=LOW_CONFIDENCE)
        given = {name: value for name, value in slots.items() if value is not None}
        return ModelReading(intent=intent, confidence=float(confidence), slots=given)


def _intent_line(spec: IntentSpec, *, examples: bool) -> str:
    hints = []
    if examples and spec.examples:
        hints.append(
            "e.g. " + "; ".join(json.dumps(e, ensure_ascii=False) for e in spec.examples[:EXAMPLES_SHOWN])
        )
    if spec.keywords:
        hints.append("words: " + ", ".join(spec.keywords))
    return f"- {spec.name}" + (f": {' | '.join(hints)}" if hints else "")


def _slot_line(spec: SlotSpec) -> str:
    return f"- {spec.name}: {_slot_form(spec)}"


def _slot_form(spec: SlotSpec) -> str:
    kind = spec.type
    if kind == "enum":
        choices = [
            f"{value} (also: {', '.join(synonyms)})" if synonyms else value
            for value, synonyms in spec.choices.items()
        ]
        return "one of " + "; ".join(choices)
    if kind in ("integer", "number"):
        form = "a whole number" if kind == "integer" else "a number"
        return form + _bounds(spec, "")
    if kind == "text":
        return "text" + _bounds(spec, " characters") + (f", matching {spec.pattern}" if spec.pattern else "")
    if kind == "date":
        when = {"past": ", today or before", "future": ", today or after"}.get(spec.range, "")
        return f"a date, as YYYY-MM-DD{when}"
    if kind == "regex":
        return f"text matching the regular expression {spec.pattern}"
    return {"boolean": "true or false", "email": "an e-mail address", "phone": "a phone number"}.get(
        kind, kind
    )


def _bounds(spec: SlotSpec, unit: str) -> str:
    low, high = spec.minimum, spec.maximum
    if low is not None and high is not None:
        return f", from {low:g} to {high:g}{unit}"
    if low is not None:
        return f", at least {low:g}{unit}"
    if high is not None:
        return f", at most {high:g}{unit}"
    return ""
