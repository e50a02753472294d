r"""Intent recognition for flow files: which declared intent a message means, and how surely.

:class:`IntentRecognizer` is the pluggable interface (the interpreter calls ``recognize``;
a recognizer that is also :class:`AsksModel` may ask a language model about what its own
rules leave open); :class:`DefaultRecognizer` implements the rules of ``docs/flows.md``:

1. **Payloads** (quick replies, buttons) are compared exactly, before any text: a hit
   is confidence 1.0. A payload that names no intent is ignored and the text decides.
2. **Keywords** (whole words or phrases) and **patterns** (regular expressions,
   searched case-insensitively) score 1.0. Keywords compare *folded* text: accents
   stripped, case folded, apostrophes inside words dropped ("I'd" -> "id"), every run
   of other punctuation a word break, so "Pizzéria" matches the keyword "pizzeria"
   and "e-mail" matches "e mail". Patterns are searched in the raw text, then in the
   accent-stripped text, so ``caf[eé]`` is not needed to match "café". A match is
   *exact* (:attr:`IntentMatch.exact`) when the message is nothing but one of the
   intent's keywords, or when one of its patterns matches the whole message (its
   surrounding spaces aside): ``^\W*(stop|quit)\W*$`` against "Stop!".
3. **Examples** score their similarity to the message, in [0, 1] (below).

The best score at or above ``threshold`` wins (a score of 0 never does). Of equal scores,
the more specific match wins: the hit covering more words of the message (the longest
keyword or pattern match of each intent; all of them for an example typed verbatim), so
"no thanks" is ``no`` ("no thanks") rather than ``thanks``; then the intent declared
first, with the others as good reported as :attr:`IntentMatch.alternatives` -- the flow
prefers the first of them its current state can use (a route or transition names it).
Similarity scores are rounded to 9 decimals, so float noise in an otherwise exact tie
cannot reorder intents.

Similarity measure
------------------
TF-IDF cosine similarity over the folded words, blended from two feature spaces:

* words (weight 0.3): unigrams, and bigrams at half weight -- shared words, plus a
  little word order ("talk to a person" vs "a person to talk to");
* characters (weight 0.7): 3-, 4- and 5-grams of each word padded with boundary marks
  ("<pizza>"), as in fastText -- these catch shared stems and inflections
  ("order"/"ordering", "pizza"/"pizzas", "reserve"/"reservation") and small typos
  without a language-specific stemmer, which is why they get the larger share.

Weights: term frequency is sublinear (1 + ln tf). Document frequency counts *intents*,
not examples, because the question is which intent a word points to: a word every
example of one intent shares is that intent's signature, not noise; ``idf = ln(1 + n /
df)`` (n = intents with examples) falls towards 0 for a word every intent uses. With
the two or three intents a flow often has, IDF alone cannot tell "pizza" from "please",
nor "take" from "delivery", so the lexicon of the flow's language (lexicon.py) stands in
for the corpus it lacks: function and request words ("a", "to", "I", "want", "please";
"ich", "mit" in German) count a quarter (and add no character n-grams), frequent
everyday words ("take", "long", "order") half -- one of them shared with an example is a
weak match, not a 0.45 one. Languages without a bundled list get the English function
words only. A message word no example uses counts as rare (``df = 1``): unknown words
lower the similarity, as a reader would expect of "pizza, and your opening hours?".

An intent's similarity is the best of its examples' cosines and of its *centroid* (the
normalised sum of its example vectors), so "I would like to order a pizza" scores well
against "I'd like a large pizza" + "can I order food" together. The reported confidence
is the square root of that cosine (see :func:`_calibrated`): lexical cosines of fair
paraphrases sit around 0.25-0.6 and of unrelated text under 0.1, and the monotonic
square root puts that boundary near the default threshold 0.5 without changing any
ranking; a verbatim example still scores 1.0.

Why not BM25: its scores are unbounded and need a per-query normalisation to be read
against a fixed threshold; cosine is in [0, 1] by construction. Why not an embedding
model: no model download, no heavy dependency, and flow authors can reason about (and
test) a lexical measure. The price: paraphrases sharing no word or stem with
any example ("where's my package" vs "where is my parcel") are not recognised -- add
examples, or keywords.

Typos
-----
With ``typo_tolerance`` (on unless a flow turns it off), a message word of four or more
letters that no keyword or example uses, and that is no correctly spelled word of the
bundled lists, is read as the closest word they do use, when that is one edit away (two
for words of eight or more letters; swapping two neighbours counts as one edit, as
rapidfuzz's optimal string alignment distance counts them): "I lsot my crad" reads as
"I lost my card", while "shop" stays shop (not "ship") and "cost" stays cost (not
"lost"); lexicon.Speller is the rule, which enum slots share. Scores of the corrected
message count 0.9 of a faithful one, so a correctly typed match of another intent still
wins.

Speed: every example vector is built, weighted and L2-normalised at construction and
kept in an inverted index (feature -> rows and weights), so ``recognize`` only builds
the message's vector and walks the postings of the features it has: 0.2-0.4 ms for a
10-word message against 50 intents x 10 examples on one core (CPython 3.11), most of it
the postings walk. A recognizer never changes after construction, so one instance can
serve any number of conversations and threads.
"""

from __future__ import annotations

import datetime
import itertools
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# fold, strip_accents and words are this module's too: the plug-in interface has always had them.
from confab.runtime.flows.execution.folding import fold as fold
from confab.runtime.flows.execution.folding import strip_accents as strip_accents
from confab.runtime.flows.execution.folding import words as words
from confab.runtime.flows.execution.lexicon import Lexicon, Speller, lexicon
from confab.runtime.flows.language.document import IntentSpec, SlotSpec

CHAR_NGRAM_SIZES = (3, 4, 5)
WORD_WEIGHT = 0.3  # an example's similarity: WORD_WEIGHT x word cosine + CHAR_WEIGHT x char cosine
CHAR_WEIGHT = 1.0 - WORD_WEIGHT
BIGRAM_WEIGHT = 0.5  # a bigram counts this much of its heavier word

STOP_WORD_WEIGHT = 0.25  # how much a function word counts against a content word
COMMON_WORD_WEIGHT = 0.5  # how much a frequent everyday word counts (lexicon.py)
# English function words and request boilerplate (words/en.txt), folded as ``words`` folds them
# ("I'd" -> "id"). They say little about *which* intent is meant, yet they fill most short
# messages, so with a handful of examples they would otherwise decide ties ("pizza please" vs
# "real human please"). A recognizer for German has the German ones too (lexicon.py).
STOP_WORDS = lexicon("en").stop
_SCORE_DIGITS = 9
TYPO_PENALTY = 0.9  # a corrected message's confidence counts this much


@dataclass(frozen=True, slots=True)
class IntentMatch:
    name: str
    confidence: float  # 0..1; 1.0 for a payload, keyword or pattern hit
    # A payload, a message that is nothing but one of the intent's keywords ("stop"), or one
    # that a pattern of the intent matches whole: unmistakable, so it interrupts even a
    # question's answer (docs/flows.md, precedence).
    exact: bool = False
    # Slot values a recognizer found in the message (a plug-in's entities), by slot name.
    entities: Mapping[str, Any] = field(default_factory=dict)
    # Other intents the message means just as surely (as confident, as specific a match), in
    # declaration order: the flow takes the first of this match and these that its current
    # state can use (docs/flows.md, intent recognition).
    alternatives: tuple[IntentMatch, ...] = ()


class IntentRecognizer(Protocol):
    def recognize(self, text: str, payload: str = "") -> IntentMatch | None:
        """The intent ``text`` (or ``payload``) means, or None below the threshold."""
        ...


# A recognizer may also ask a language model (docs/flows.md, "Intent recognition"): the few
# records below, and AsksModel, are all it needs beyond recognize().


@dataclass(frozen=True, slots=True)
class Utterance:
    """What a recognizer that asks a model is told of a message."""

    text: str  # masked as the store keeps it: nothing the flow declares sensitive
    lexical: IntentMatch | None  # recognize()'s own answer (never exact: those are not asked about)
    slots: Mapping[str, SlotSpec]  # the slots the message may give values for (no sensitive one)
    asking: str = ""  # the slot whose question the message answers ("" when none)
    today: datetime.date | None = None  # the turn's date (what "tomorrow" means)


@dataclass(frozen=True, slots=True)
class ModelQuestion:
    """What to ask a model about a message: a chat's messages (role, content), for a JSON object."""

    messages: tuple[Mapping[str, str], ...]
    provider: str = ""  # a models.providers name of the server config ("" = the first)
    max_tokens: int = 0  # 0 = the provider's
    temperature: float | None = None  # None = the provider's


@dataclass(frozen=True, slots=True)
class ModelReading:
    """What a model's answer says a message means, as the model wrote it (the interpreter checks
    the names and passes every value through its slot's parsing and checks), or why it says
    nothing usable (``problem``: the rest is then ignored)."""

    intent: str | None = None  # None: no intent
    confidence: float = 0.0
    slots: Mapping[str, Any] = field(default_factory=dict)  # slot name -> value
    problem: str = ""


@runtime_checkable
class AsksModel(IntentRecognizer, Protocol):
    """A recognizer that asks a language model about the messages its own rules do not settle.

    ``recognize`` answers without a model, as any recognizer does. When its answer is not
    exact, the interpreter asks ``question`` (None: nothing to ask), makes the call as a turn
    makes every outside call (recorded with the turn, scripted in dialogues, replayed), and
    hands the model's text to ``read``. A failed call, or a reading with a problem, an unknown
    intent or slot, or a value its slot refuses, leaves ``recognize``'s answer in place. Both
    must be deterministic: a turn that waits on the call runs again with its answer, and asks
    the same question again.
    """

    def question(self, utterance: Utterance) -> ModelQuestion | None: ...

    def read(self, utterance: Utterance, answer: str) -> ModelReading: ...


def _weights(tokens: Sequence[str], words_of: Lexicon) -> list[float]:
    """How much each token counts: function words little and common words less than others,
    unless the text has nothing but function words."""
    weights = [
        STOP_WORD_WEIGHT if t in words_of.stop else COMMON_WORD_WEIGHT if t in words_of.common else 1.0
        for t in tokens
    ]
    # A message (or example) made only of function words ("I want it") still has to be
    # comparable with itself at full strength.
    return weights if any(w != STOP_WORD_WEIGHT for w in weights) else [1.0] * len(tokens)


def _word_features(tokens: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Weighted counts of word unigrams and bigrams (a bigram counts as its heavier word)."""
    features: dict[str, float] = {}
    # Prefixes keep a unigram from ever colliding with a bigram of the same spelling.
    for token, weight in zip(tokens, weights, strict=True):
        features["w" + token] = features.get("w" + token, 0.0) + weight
    for i in range(len(tokens) - 1):
        key = f"b{tokens[i]} {tokens[i + 1]}"
        features[key] = features.get(key, 0.0) + BIGRAM_WEIGHT * max(weights[i], weights[i + 1])
    return features


def _char_features(tokens: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Weighted counts of the character n-grams of each word, padded with boundary marks."""
    features: dict[str, float] = {}
    for token, weight in zip(tokens, weights, strict=True):
        if weight == STOP_WORD_WEIGHT:
            # A function word's unigram already says what little it says; its n-grams
            # ("<th", "the") occur in nearly every example and would only cost time.
            continue
        padded = f"<{token}>"
        for n in CHAR_NGRAM_SIZES:
            for i in range(len(padded) - n + 1):
                gram = padded[i : i + n]
                features[gram] = features.get(gram, 0.0) + weight
    return features


class _Space:
    """One TF-IDF feature space over the examples, with an inverted index for scoring.

    Rows are the examples, intent by intent (``DefaultRecognizer`` builds both spaces
    from the same groups, so row numbers agree between them). Each intent also has a
    *centroid*, the normalised sum of its example vectors, so a message that takes
    "order" from one example and "pizza" from another still scores; its cosine is
    linear in the examples' (``sum of the rows' cosines / centroid_norms[i]``), so it
    needs no postings of its own.
    """

    __slots__ = ("_idf", "_postings", "_unknown_idf", "centroid_norms")

    def __init__(self, groups: Sequence[Sequence[dict[str, float]]]) -> None:
        """``groups``: per intent that has examples, each example's weighted feature counts."""
        intents_with: dict[str, int] = {}
        for group in groups:
            for feature in {f for features in group for f in features}:
                intents_with[feature] = intents_with.get(feature, 0) + 1
        n = max(len(groups), 1)
        self._idf = {f: math.log(1.0 + n / df) for f, df in intents_with.items()}
        self._unknown_idf = math.log(1.0 + n)  # as rare as a feature only one intent uses
        postings: dict[str, list[tuple[int, float]]] = {}
        self.centroid_norms: list[float] = []
        row = 0
        for group in groups:
            centroid: dict[str, float] = {}
            for features in group:
                for feature, weight in self._vector(features).items():
                    postings.setdefault(feature, []).append((row, weight))
                    centroid[feature] = centroid.get(feature, 0.0) + weight
                row += 1
            # Never 0: every example has at least one word, so at least one weight > 0.
            self.centroid_norms.append(math.sqrt(sum(w * w for w in centroid.values())) or 1.0)
        self._postings = {f: tuple(rows) for f, rows in postings.items()}

    def _vector(self, features: dict[str, float]) -> dict[str, float]:
        """Sublinear TF-IDF weights, L2-normalised (empty if every weight is 0)."""
        idf, unknown = self._idf, self._unknown_idf
        # Sublinear tf: 1 + ln(tf) from 1 up, linear below -- continuous at 1, and a lone
        # function word (tf = STOP_WORD_WEIGHT) stays light instead of going negative.
        return _normalised(
            {f: (1.0 + math.log(tf) if tf >= 1.0 else tf) * idf.get(f, unknown) for f, tf in features.items()}
        )

    def cosines(self, features: dict[str, float], rows: int, scale: float) -> list[float]:
        """``scale`` x cosine(message, row) for every row (example)."""
        into = [0.0] * rows
        postings = self._postings
        for feature, weight in self._vector(features).items():
            posting = postings.get(feature)
            if posting is not None:
                weight *= scale
                for row, row_weight in posting:
                    into[row] += weight * row_weight
        return into


class DefaultRecognizer:
    """Payloads, then keywords and patterns, then example similarity (see the module doc)."""

    def __init__(
        self,
        intents: Mapping[str, IntentSpec],
        threshold: float,
        *,
        typo_tolerance: bool = False,
        language: str = "",
    ) -> None:
        """``language``: what the intents' words are written in, for the words it weighs less and
        knows to be spelled right (lexicon.py); "" when the flow names none."""
        self.threshold = threshold
        self._lexicon = lexicon(language)
        self._names: tuple[str, ...] = tuple(intents)  # declaration order breaks ties
        self._by_payload: dict[str, int] = {}
        for index, spec in enumerate(intents.values()):
            for payload in spec.payloads:
                self._by_payload.setdefault(payload, index)  # the first intent to claim it
        # Keywords by their folded words joined with single spaces; a message is looked up
        # by its runs of up to _keyword_length words, which is exactly a whole-word match.
        self._keywords: dict[str, list[int]] = {}
        for index, spec in enumerate(intents.values()):
            for keyword in spec.keywords:
                phrase = " ".join(words(keyword))
                if phrase and index not in self._keywords.get(phrase, ()):
                    self._keywords.setdefault(phrase, []).append(index)
        self._keyword_length = max((p.count(" ") + 1 for p in self._keywords), default=0)
        self._patterns: list[tuple[int, tuple[re.Pattern[str], ...]]] = [
            (index, tuple(_compile(name, p) for p in spec.patterns))
            for index, (name, spec) in enumerate(intents.items())
            if spec.patterns
        ]
        self._patterns_of = dict(self._patterns)
        self._index_examples(intents.values())
        # The words a typo is corrected towards: every keyword's and example's content words.
        vocabulary = {w for p in self._keywords for w in p.split()}
        vocabulary |= {w for spec in intents.values() for e in spec.examples for w in words(e)}
        self._speller = Speller(vocabulary, self._lexicon)
        self._typo_tolerance = typo_tolerance and bool(self._speller)

    def corrected(self, tokens: Sequence[str]) -> list[str]:
        """``tokens`` with each word of 4+ letters that is no word of the flow's nor spelled right
        replaced by the closest word of the flow, if close (lexicon.Speller)."""
        return [self._speller.correct(token) for token in tokens]

    def _index_examples(self, specs: Iterable[IntentSpec]) -> None:
        word_groups: list[list[dict[str, float]]] = []
        char_groups: list[list[dict[str, float]]] = []
        # (intent index, first row, end of its rows) per intent with examples, in _Space's order.
        self._rows: list[tuple[int, int, int]] = []
        row = 0
        for index, spec in enumerate(specs):
            examples = [tokens for tokens in map(words, spec.examples) if tokens]
            if not examples:
                continue
            weighted = [(tokens, _weights(tokens, self._lexicon)) for tokens in examples]
            word_groups.append([_word_features(t, w) for t, w in weighted])
            char_groups.append([_char_features(t, w) for t, w in weighted])
            self._rows.append((index, row, row + len(examples)))
            row += len(examples)
        self._n_rows = row
        self._word_space = _Space(word_groups)
        self._char_space = _Space(char_groups)

    def recognize(self, text: str, payload: str = "") -> IntentMatch | None:
        if payload:
            index = self._by_payload.get(payload)
            if index is not None:
                return IntentMatch(self._names[index], 1.0, exact=True)
        tokens = words(text)
        raw, covered = self._raw_scores(tokens, text)
        if self._typo_tolerance:
            fixed = self.corrected(tokens)
            if fixed != tokens:
                penalty = TYPO_PENALTY * TYPO_PENALTY  # on the raw cosine: 0.9 once calibrated
                again, again_covered = self._raw_scores(fixed, " ".join(fixed))
                for index, score in enumerate(again):
                    if penalty * score > raw[index]:
                        raw[index], covered[index] = penalty * score, again_covered[index]
        # The surest, then the most specific (the longer hit: "no thanks" over "thanks"), then
        # the first declared. Calibration is monotonic: ranking raw scores ranks confidences.
        ranked = sorted(
            (i for i, score in enumerate(raw) if score > 0.0), key=lambda i: (-raw[i], -covered[i], i)
        )
        if not ranked:
            return None
        best = ranked[0]
        confidence = _calibrated(raw[best])
        if confidence < self.threshold:
            return None
        tied = [i for i in ranked[1:] if raw[i] == raw[best] and covered[i] == covered[best]]
        alternatives = tuple(self._match(i, confidence, tokens, text) for i in tied)
        return self._match(best, confidence, tokens, text, alternatives)

    def _match(
        self,
        index: int,
        confidence: float,
        tokens: Sequence[str],
        text: str,
        alternatives: tuple[IntentMatch, ...] = (),
    ) -> IntentMatch:
        exact = index in self._keywords.get(" ".join(tokens), ()) or self._matches_whole(index, text)
        return IntentMatch(self._names[index], confidence, exact=exact, alternatives=alternatives)

    def _matches_whole(self, index: int, text: str) -> bool:
        """Whether a pattern of intent ``index`` matches all of ``text`` (its outer spaces aside),
        as written or without accents, as patterns are searched."""
        patterns = self._patterns_of.get(index, ())
        if not patterns:
            return False
        stripped = text.strip()
        forms = {stripped, strip_accents(stripped)}
        return any(p.fullmatch(form) for p in patterns for form in forms)

    def scores(self, text: str) -> list[float]:
        """Every intent's text score (confidence), in declaration order, for debugging and tuning."""
        return [_calibrated(score) for score in self._raw_scores(words(text), text)[0]]

    def _raw_scores(self, tokens: Sequence[str], text: str) -> tuple[list[float], list[int]]:
        """Per intent: 1.0 for a keyword or pattern hit, else its best uncalibrated cosine; and how
        many words of the message its longest hit covers (all of them for an example typed
        verbatim, 0 for a mere similarity)."""
        scores = [0.0] * len(self._names)
        covered = [0] * len(self._names)
        if not tokens:
            return scores, covered
        for start in range(len(tokens)):
            for end in range(start + 1, min(start + self._keyword_length, len(tokens)) + 1):
                for index in self._keywords.get(" ".join(tokens[start:end]), ()):
                    scores[index] = 1.0
                    covered[index] = max(covered[index], end - start)
        if self._patterns:
            accentless = strip_accents(text)
            forms = (text, accentless) if accentless != text else (text,)
            for index, patterns in self._patterns:
                for match in (m for p in patterns for form in forms for m in p.finditer(form)):
                    scores[index] = 1.0  # a match of no words (a lookahead) is a hit all the same
                    covered[index] = max(covered[index], len(words(match.group())), 1)
        if self._rows:
            weights = _weights(tokens, self._lexicon)
            # Both accumulators come pre-scaled by their blend weight, so an example's
            # similarity is a plain (C-level) sum of the two, and prefix sums give each
            # intent's centroid cosine (linear in its examples') without a Python loop.
            word = self._word_space.cosines(_word_features(tokens, weights), self._n_rows, WORD_WEIGHT)
            char = self._char_space.cosines(_char_features(tokens, weights), self._n_rows, CHAR_WEIGHT)
            blended = list(map(operator.add, word, char))
            word_sums = [0.0, *itertools.accumulate(word)]
            char_sums = [0.0, *itertools.accumulate(char)]
            for (index, start, end), word_norm, char_norm in zip(
                self._rows, self._word_space.centroid_norms, self._char_space.centroid_norms, strict=True
            ):
                best = max(blended[start:end])
                centroid = (word_sums[end] - word_sums[start]) / word_norm + (
                    char_sums[end] - char_sums[start]
                ) / char_norm
                if centroid > best:
                    best = centroid
                # Rounded so float noise cannot break a tie that declaration order should break
                # (an example typed verbatim must tie exactly with a keyword hit at 1.0).
                best = min(round(best, _SCORE_DIGITS), 1.0)
                if best > scores[index]:
                    scores[index] = best
                if best == 1.0:  # the message is one of its examples: it covers every word
                    covered[index] = len(tokens)
        return scores, covered


def _calibrated(cosine: float) -> float:
    """The confidence reported for a blended cosine: its square root, in [0, 1].

    Lexical cosines are small numbers: a fair paraphrase of an example typically scores
    0.25-0.6 and unrelated text under 0.1. The square root is monotonic (rankings and
    ties are unchanged, an exact example still scores 1.0) and moves that boundary to
    about 0.5, where ``intent_threshold`` defaults.
    """
    return min(round(math.sqrt(max(cosine, 0.0)), _SCORE_DIGITS), 1.0)


def _normalised(vector: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(w * w for w in vector.values()))
    if norm == 0.0:
        return {}
    return {f: w / norm for f, w in vector.items()}


def _compile(intent: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"intent {intent!r}: bad pattern {pattern!r}: {e}") from None
