"""Intent recognizers a flow can use: the built-in one, or a plug-in registered with the server.

A flow names a plug-in in ``settings.nlu`` (``{recognizer: NAME, options: {...}}``). Flow
files may be written by tenants, so a file can only *name* a recognizer; it never loads
code. A recognizer is installed with the server, as a Python package that declares an
entry point in the group :data:`ENTRY_POINT_GROUP`::

    [options.entry_points]
    confab.nlu =
        spacy = my_package.nlu:make_recognizer

or, in-process (tests, embedding), with :func:`register_recognizer`. The entry point is
a :class:`RecognizerFactory`: called once per flow version and language with the flow's
intents (for that language), its ``intent_threshold``, the ``options`` and the language,
it returns an :class:`~.intents.IntentRecognizer`. Its ``recognize(text, payload)``
returns an :class:`~.intents.IntentMatch` (or None); the match's ``entities`` fill the
flow's slots of those names (each value goes through the slot's checks), and its
``exact`` says the message is unmistakably that intent (docs/flows.md, precedence).
A recognizer must be deterministic (turns are replayed) and thread-safe, and should
answer in milliseconds: it runs on the shard's thread.

The built-in recognizer (:class:`~.intents.DefaultRecognizer`) needs no model and
downloads nothing. The built-in ``model`` recognizer
(:class:`~.model_recognizer.ModelRecognizer`) asks a language model about what the built-in
one leaves open.

A recognizer may ask a language model too: one that is also an
:class:`~.intents.AsksModel` (``question`` and ``read`` besides ``recognize``) is asked, for a
message its own answer does not settle, what to ask the model; the interpreter makes the
call as a turn makes its outside calls (recorded, scripted in dialogues, replayed), masks
the prompt, and validates the reading. A recognizer without those methods works as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol

from confab.runtime.flows.execution import model_recognizer
from confab.runtime.flows.execution.intents import DefaultRecognizer, IntentRecognizer
from confab.runtime.flows.language.document import FlowSettings, IntentSpec

ENTRY_POINT_GROUP = "confab.nlu"
BUILTIN = "builtin"
MODEL = model_recognizer.NAME
_BUILT_IN = (BUILTIN, MODEL)  # what the server has without any plug-in


class RecognizerFactory(Protocol):
    def __call__(
        self,
        intents: Mapping[str, IntentSpec],
        threshold: float,
        options: Mapping[str, Any],
        language: str,
    ) -> IntentRecognizer: ...


class UnknownRecognizer(LookupError):
    pass


_registered: dict[str, RecognizerFactory] = {}


def register_recognizer(name: str, factory: RecognizerFactory) -> None:
    """Make ``factory`` available to flows as ``settings.nlu.recognizer: NAME``."""
    _registered[name] = factory


def unregister_recognizer(name: str) -> None:
    _registered.pop(name, None)


def _builtin(
    intents: Mapping[str, IntentSpec], threshold: float, options: Mapping[str, Any], language: str
) -> IntentRecognizer:
    typo_tolerance = bool(options.get("typo_tolerance", True))
    return DefaultRecognizer(intents, threshold, typo_tolerance=typo_tolerance, language=language)


def _model(
    intents: Mapping[str, IntentSpec], threshold: float, options: Mapping[str, Any], language: str
) -> IntentRecognizer:
    lexical = _builtin(intents, threshold, options, language)
    return model_recognizer.ModelRecognizer(lexical, intents, options)


def registered_recognizers() -> list[str]:
    """Every recognizer name a flow can use, the built-in ones first."""
    installed = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return [*_BUILT_IN, *sorted({*_registered, *installed} - set(_BUILT_IN))]


def factory_for(name: str) -> RecognizerFactory:
    if name == BUILTIN:
        return _builtin
    if name == MODEL:
        return _model
    if name in _registered:
        return _registered[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        factory: RecognizerFactory = ep.load()
        return factory
    raise UnknownRecognizer(f"no intent recognizer {name!r} is registered")


def language_intents(intents: Mapping[str, IntentSpec], language: str) -> dict[str, IntentSpec]:
    """The intents as a message in ``language`` is matched against (docs/flows.md, languages)."""
    result = {}
    for name, spec in intents.items():
        local = spec.languages.get(language) if language else None
        if local is None:
            result[name] = spec
        else:
            result[name] = IntentSpec(
                name=name,
                payloads=spec.payloads,
                keywords=local.keywords,
                patterns=local.patterns,
                examples=local.examples,
                slots=spec.slots,
            )
    return result


def make_recognizers(
    intents: Mapping[str, IntentSpec], settings: FlowSettings
) -> dict[str, IntentRecognizer]:
    """One recognizer per language of the flow ("" for a flow that declares none)."""
    nlu = settings.nlu
    factory = factory_for(nlu.recognizer) if nlu is not None else _builtin
    options: Mapping[str, Any] = nlu.options if nlu is not None else {}
    if nlu is None or nlu.recognizer in _BUILT_IN:
        options = {**options, "typo_tolerance": settings.typo_tolerance}
    languages = settings.languages or ("",)
    return {
        language: factory(language_intents(intents, language), settings.intent_threshold, options, language)
        for language in languages
    }
