"""What the built-in recognizer knows of a language's words: how much each counts, and whether it is
spelled right.

The words come with the package, one file per language in ``words/`` (English and German; the
files say how they are laid out). From them, for the language a recognizer serves:

* **stop words** -- function words and request boilerplate ("I", "to", "want", "please";
  "ich", "mit", "möchte", "bitte"): the English ones for every language, as before there were
  others, and the language's own. They count a quarter in example similarity;
* **common words** -- frequent everyday words ("take", "long", "order"; "gibt", "etwas"), of
  the language itself (English for a flow that names no language): they count half. A message
  that shares only such a word with an intent's examples is a weak match, not a 0.45 one;
* **greetings** -- the words of greetings, in every bundled language: a message of nothing but
  them and function words ("hello there", "guten Morgen") only opens a conversation;
* **spelled words** -- every word of every bundled list, with the endings a list declares
  ("shops", "Gutscheine"): a word spelled right in any of them is never a typo, so typo
  tolerance does not read "shop" as "ship" or "kann" as "wann".

:class:`Speller` is typo tolerance itself, for intents' keywords and examples and for enum
slots' choices alike: a word of four or more letters that is neither one of the words it
corrects towards nor a spelled word is read as the closest of those words one edit away (two
for words of eight or more letters; two swapped neighbours count as one edit, as rapidfuzz's
optimal string alignment distance counts them).

Nothing is downloaded; a language without a list has the English stop words only, and typo
tolerance then knows only the words of the flow itself and of the bundled lists.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from rapidfuzz import process
from rapidfuzz.distance import OSA

from confab.runtime.flows.execution.folding import fold

BUNDLED = ("en", "de")  # the languages with a list in words/
TYPO_MIN_LENGTH = 4  # shorter words are too easily another word with one edit
TYPO_LONG_WORD = 8  # from this length on, two edits
_SECTIONS = ("stop", "common", "known", "greetings", "suffixes")


@dataclass(frozen=True, slots=True)
class WordList:
    """One language's bundled words (``words/<language>.txt``), folded."""

    stop: frozenset[str]
    common: frozenset[str]  # without the stop words
    words: frozenset[str]  # every word of the list
    greetings: frozenset[str]  # the words of a greeting ("hello", "good", "morning")
    suffixes: tuple[tuple[str, str], ...]  # (ending, what stands for it in the listed form)

    def has(self, word: str) -> bool:
        """Whether ``word`` is on the list, or a form of a word on it made by one of its endings."""
        if word in self.words:
            return True
        for ending, base in self.suffixes:
            stem = word[: -len(ending)]
            if word.endswith(ending) and len(stem) >= 2 and stem + base in self.words:
                return True
        return False


def parse_word_list(text: str) -> WordList:
    """A word list from its file's text: ``[section]`` lines, then words separated by white space;
    ``#`` starts a comment. A word listed in two sections counts as the first one says."""
    sections: dict[str, list[str]] = {name: [] for name in _SECTIONS}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            if section not in sections:
                raise ValueError(f"line {number}: unknown section {line}; sections are {list(_SECTIONS)}")
            continue
        if not section:
            raise ValueError(f"line {number}: words before the first [section]")
        sections[section] += line.split()
    stop = frozenset(map(fold, sections["stop"]))
    common = frozenset(map(fold, sections["common"])) - stop
    greetings = frozenset(map(fold, sections["greetings"]))
    words = stop | common | greetings | frozenset(map(fold, sections["known"]))
    suffixes = tuple(
        (ending, base) for ending, _, base in (fold(rule).partition("=") for rule in sections["suffixes"])
    )
    return WordList(stop, common, words, greetings, suffixes)


@functools.cache
def word_list(language: str) -> WordList | None:
    """The bundled list of ``language`` (a tag such as ``en`` or ``de-AT``), or None."""
    tag = language.lower().replace("_", "-").split("-")[0]
    if tag not in BUNDLED:
        return None
    return parse_word_list(resources.files(__package__).joinpath("words", f"{tag}.txt").read_text("utf-8"))


@dataclass(frozen=True, slots=True)
class Lexicon:
    """The words of one language as a recognizer weighs them (see the module doc)."""

    stop: frozenset[str]
    common: frozenset[str]

    def spelled(self, word: str) -> bool:
        """Whether ``word`` (folded) is spelled right in a language with a bundled list."""
        return any(own.has(word) for own in _bundled() if own is not None)

    def asks_something(self, words: Iterable[str]) -> bool:
        """Whether a message of ``words`` (folded) says more than a greeting: it has a word that is
        neither a function word nor a greeting's, in any bundled language ("hello there", "ok",
        "guten Morgen" ask nothing)."""
        greetings = _greetings()
        return any(w not in self.stop and w not in greetings for w in words)


def _bundled() -> tuple[WordList | None, ...]:
    return tuple(map(word_list, BUNDLED))


@functools.cache
def _greetings() -> frozenset[str]:
    return frozenset().union(*(own.greetings for own in _bundled() if own is not None))


@functools.cache
def lexicon(language: str) -> Lexicon:
    """The lexicon of ``language`` ("" when a flow names none: English)."""
    english = word_list("en")
    assert english is not None  # bundled
    own = word_list(language) if language else english
    if own is None:
        return Lexicon(english.stop, frozenset())
    return Lexicon(english.stop | own.stop, own.common - english.stop)


class Speller:
    """Reads a mistyped word as the word of ``targets`` it was meant to be (see the module doc)."""

    __slots__ = ("_known", "_lexicon", "_targets")

    def __init__(self, targets: Iterable[str], lexicon: Lexicon) -> None:
        """``targets``: folded words (a flow's keywords and examples, a slot's choices)."""
        self._lexicon = lexicon
        # "would" is no typo of "world": function words are neither corrected nor corrected to.
        self._targets = sorted({t for t in targets if t.isalpha() and t not in lexicon.stop})
        self._known = frozenset(self._targets)

    def __bool__(self) -> bool:
        return bool(self._targets)

    def correct(self, word: str) -> str:
        """The target ``word`` is a typo of, or ``word`` itself."""
        if len(word) < TYPO_MIN_LENGTH or not word.isalpha() or word in self._known:
            return word
        if word in self._lexicon.stop or self._lexicon.spelled(word):
            return word  # spelled right: the word the user meant, whatever the flow knows
        limit = 2 if len(word) >= TYPO_LONG_WORD else 1
        best = process.extractOne(word, self._targets, scorer=OSA.distance, score_cutoff=limit)
        return word if best is None else str(best[0])
