"""Intent recognition: payloads first, then keywords and patterns, then example similarity."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confab.runtime.flows.execution.intents import (
    DefaultRecognizer,
    IntentMatch,
    IntentRecognizer,
    fold,
    words,
)
from confab.runtime.flows.execution.nlu import make_recognizers
from confab.runtime.flows.language.document import IntentSpec
from confab.runtime.flows.language.loader import load_flow_file


def intents(*specs: IntentSpec) -> dict[str, IntentSpec]:
    return {spec.name: spec for spec in specs}


# The intents of the docs/flows.md example.
PIZZA = intents(
    IntentSpec(
        "order",
        payloads=("ORDER",),
        keywords=("pizza", "order"),
        patterns=(r"\bmargh?erita\b",),
        examples=("I'd like a large pizza", "can I order food"),
    ),
    IntentSpec(
        "human", payloads=("HUMAN",), examples=("talk to a person", "I want an agent", "real human please")
    ),
    IntentSpec("yes", payloads=("YES",), keywords=("yes", "yep", "sure", "correct")),
    IntentSpec("no", payloads=("NO",), keywords=("no", "nope", "wrong")),
)

# The same order/human distinction by examples alone, so similarity has to do the work.
PIZZA_BY_EXAMPLES = intents(
    IntentSpec("order", examples=("I'd like a large pizza", "can I order food")),
    IntentSpec("human", examples=("talk to a person", "I want an agent", "real human please")),
)

SUPPORT = intents(
    IntentSpec("hours", examples=("when are you open", "what time do you close", "are you open on sunday")),
    IntentSpec("shipping", examples=("where is my parcel", "how long does delivery take", "track my order")),
    IntentSpec(
        "returns",
        examples=("I want my money back", "how do I send something back", "can I exchange an item"),
    ),
    IntentSpec("human", examples=("talk to a person", "I want to speak to someone", "get me a real human")),
)

BANK = intents(
    IntentSpec(
        "balance", examples=("what is my balance", "how much money do I have", "show my account balance")
    ),
    IntentSpec(
        "transfer",
        examples=("send money to my friend", "transfer 50 euros to john", "make a payment to a friend"),
    ),
    IntentSpec("card_lost", examples=("I lost my card", "my card was stolen", "block my credit card")),
    IntentSpec(
        "open_account",
        examples=("I want to open an account", "how do I create a new account", "sign up for a bank account"),
    ),
    IntentSpec(
        "rates", examples=("what are your interest rates", "current savings rate", "what's the exchange rate")
    ),
)


# Payloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "payload", "expected"),
    [
        ("talk to a person", "ORDER", "order"),  # the payload wins over text meaning something else
        ("", "HUMAN", "human"),
        ("pizza", "YES", "yes"),  # ... and over a keyword
        ("pizza", "UNKNOWN", "order"),  # a payload naming no intent falls through to the text
        ("talk to a person", "order", "human"),  # payloads are matched exactly: case matters
        ("talk to a person", " ORDER", "human"),  # ... and so does whitespace
        ("", "UNKNOWN", None),  # nothing left to go on
    ],
)
def test_payloads_first_and_exactly(text: str, payload: str, expected: str | None) -> None:
    match = DefaultRecognizer(PIZZA, 0.5).recognize(text, payload)
    assert (match.name if match else None) == expected
    if payload in {"ORDER", "HUMAN", "YES"}:
        assert match is not None and match.confidence == 1.0


def test_a_payload_two_intents_claim_goes_to_the_first_declared() -> None:
    specs = intents(IntentSpec("first", payloads=("GO",)), IntentSpec("second", payloads=("GO",)))
    assert DefaultRecognizer(specs, 0.5).recognize("", "GO") == IntentMatch("first", 1.0, exact=True)


# Keywords and patterns ---------------------------------------------------------------------


KEYWORDS = intents(
    IntentSpec("order", keywords=("pizza", "pizzeria", "e-mail")),
    IntentSpec("thanks", keywords=("thank you", "cheers")),
    IntentSpec("cafe", keywords=("Café",)),
    IntentSpec("pattern", patterns=(r"\bmargh?erita\b", r"\bcreme\s+brulee\b", r"order #\d+")),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pizza!", "order"),
        ("PIZZA", "order"),  # case-insensitive
        ("I love pizzas", None),  # whole words only ...
        ("pizzazz", None),
        ("a Pizzéria nearby?", "order"),  # accents don't matter, in the message ...
        ("my e-mail", "order"),  # punctuation inside a keyword matches any word break
        ("my e mail", "order"),
        ("Thank you so much", "thanks"),  # phrases: whole, in order
        ("thank... you", "thanks"),
        ("you thank", None),
        ("thank the cook, you", None),
        ("cheers!", "thanks"),
        ("a cafe au lait", "cafe"),  # ... or in the keyword
        ("CAFÉ", "cafe"),
        ("One MARGHERITA", "pattern"),  # patterns: searched, case-insensitive
        ("a margerita", "pattern"),
        ("margheritas", None),
        ("Crème Brûlée", "pattern"),  # searched in the accent-stripped text too
        ("where is order #123", "pattern"),
        ("where is order #", None),
    ],
)
def test_keywords_and_patterns(text: str, expected: str | None) -> None:
    match = DefaultRecognizer(KEYWORDS, 0.99).recognize(text)
    assert (match.name if match else None) == expected
    if match is not None:
        assert match.confidence == 1.0


def test_an_invalid_pattern_names_its_intent() -> None:
    with pytest.raises(ValueError, match="'broken'"):
        DefaultRecognizer(intents(IntentSpec("broken", patterns=("(unclosed",))), 0.5)


# Examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "text", "expected"),
    [
        # The distinction the docs' example rests on, and paraphrases sharing words or stems.
        (PIZZA_BY_EXAMPLES, "I'd like a large pizza", "order"),
        (PIZZA_BY_EXAMPLES, "talk to a person", "human"),
        (PIZZA_BY_EXAMPLES, "I want a big pizza", "order"),
        (PIZZA_BY_EXAMPLES, "I want to order", "order"),
        (PIZZA_BY_EXAMPLES, "pizza please", "order"),  # "please" is in a human example, "pizza" decides
        (PIZZA_BY_EXAMPLES, "two large pizzas please", "order"),
        (PIZZA_BY_EXAMPLES, "I would like to order a pizza", "order"),  # words from two examples
        (PIZZA_BY_EXAMPLES, "ordering some food", "order"),  # a stem
        (PIZZA_BY_EXAMPLES, "can I speak to a person", "human"),
        (PIZZA_BY_EXAMPLES, "I want a person", "human"),
        (PIZZA_BY_EXAMPLES, "get me a human", "human"),
        (PIZZA_BY_EXAMPLES, "an agent please", "human"),
        (PIZZA_BY_EXAMPLES, "what's the weather", None),
        (PIZZA_BY_EXAMPLES, "hello", None),
        (PIZZA_BY_EXAMPLES, "tell me a joke", None),
        (PIZZA_BY_EXAMPLES, "my cat is sick", None),
        (SUPPORT, "what time do you open", "hours"),
        (SUPPORT, "when will my parcel arrive", "shipping"),
        (SUPPORT, "how long will the delivery take", "shipping"),
        (SUPPORT, "track my parcel please", "shipping"),
        (SUPPORT, "give me my money back", "returns"),
        (SUPPORT, "can I send it back", "returns"),
        (SUPPORT, "I'd like to speak with someone", "human"),
        (SUPPORT, "can I talk to a human", "human"),
        (SUPPORT, "I love you", None),
        (SUPPORT, "do you sell shoes", None),
        (SUPPORT, "what is your name", None),
        (BANK, "what's my current balance", "balance"),
        (BANK, "how much do I have in my account", "balance"),
        (BANK, "I need to transfer money", "transfer"),
        (BANK, "someone stole my card", "card_lost"),
        (BANK, "please block my card", "card_lost"),
        (BANK, "lost credit card", "card_lost"),
        (BANK, "I'd like to open a new account", "open_account"),
        (BANK, "creating an account", "open_account"),
        (BANK, "interest rate on savings", "rates"),
        (BANK, "exchange rates today", "rates"),
        (BANK, "who won the game", None),
        (BANK, "I like turtles", None),
    ],
)
def test_examples_by_similarity(specs: dict[str, IntentSpec], text: str, expected: str | None) -> None:
    recognizer = DefaultRecognizer(specs, 0.5)
    match = recognizer.recognize(text)
    assert (match.name if match else None) == expected, recognizer.scores(text)


@pytest.mark.parametrize(
    ("specs", "text", "expected"),
    [
        # Below the threshold, the ranking is still right: what a lower threshold would pick.
        (SUPPORT, "when do you close on saturday", "hours"),
        (SUPPORT, "are you opened tomorrow", "hours"),
        (PIZZA_BY_EXAMPLES, "could I get two pizzas", "order"),
        (PIZZA_BY_EXAMPLES, "let me talk to someone", "human"),
        # Only frequent everyday words shared ("how long ... take", "send"): a weak match.
        (SUPPORT, "how long does shipping take", "shipping"),
        (BANK, "send 20 dollars to mary", "transfer"),
    ],
)
def test_weaker_paraphrases_still_rank_first(specs: dict[str, IntentSpec], text: str, expected: str) -> None:
    scores = DefaultRecognizer(specs, 0.5).scores(text)
    best = max(range(len(scores)), key=lambda i: scores[i])
    assert list(specs)[best] == expected, scores
    assert scores[best] > 0.4


def test_an_example_typed_verbatim_scores_one() -> None:
    recognizer = DefaultRecognizer(PIZZA_BY_EXAMPLES, 0.5)
    for text in ("I'd like a large pizza", "REAL HUMAN PLEASE!", "talk  to a person"):
        match = recognizer.recognize(text)
        assert match is not None and match.confidence == pytest.approx(1.0)


def test_unrelated_words_lower_the_similarity() -> None:
    recognizer = DefaultRecognizer(PIZZA_BY_EXAMPLES, 0.0)
    scores = [
        recognizer.scores(text)[0] for text in ("a large pizza", "a large pizza with extra cheese and olives")
    ]
    assert scores[0] > scores[1] > 0.0


# Threshold and ties --------------------------------------------------------------------------------


def test_threshold_is_inclusive_and_only_filters() -> None:
    text = "I want a big pizza"
    score = DefaultRecognizer(PIZZA_BY_EXAMPLES, 0.5).scores(text)[0]
    assert 0.5 < score < 1.0
    for threshold, expected in [(0.0, "order"), (score, "order"), (score + 1e-6, None), (1.0, None)]:
        match = DefaultRecognizer(PIZZA_BY_EXAMPLES, threshold).recognize(text)
        assert (match.name if match else None) == expected, threshold
        if match is not None:
            assert match.confidence == score  # the threshold changes the verdict, not the score


def test_a_zero_score_never_wins_even_at_threshold_zero() -> None:
    assert DefaultRecognizer(PIZZA_BY_EXAMPLES, 0.0).recognize("xyzzy") is None
    assert DefaultRecognizer(PIZZA_BY_EXAMPLES, 0.0).recognize("?!") is None


def test_keywords_beat_examples_and_threshold_one_keeps_only_certain_hits() -> None:
    recognizer = DefaultRecognizer(PIZZA, 1.0)
    assert recognizer.recognize("nope") == IntentMatch("no", 1.0, exact=True)  # the whole message
    assert recognizer.recognize("I want a big pizza") == IntentMatch("order", 1.0)  # the keyword
    assert recognizer.recognize("can I speak to a person") is None  # similarity < 1


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_ties_go_to_the_intent_declared_first(order: tuple[str, str]) -> None:
    by_keyword = intents(*(IntentSpec(name, keywords=("help",)) for name in order))
    by_example = intents(*(IntentSpec(name, examples=("I need help now",)) for name in order))
    # An example typed verbatim (1.0) ties with a keyword hit (1.0) of as many words: declaration
    # order decides, and the other is an alternative.
    first, second = order
    mixed = intents(IntentSpec(first, examples=("help me",)), IntentSpec(second, keywords=("help me",)))
    mixed_reversed = intents(
        IntentSpec(first, keywords=("help me",)), IntentSpec(second, examples=("help me",))
    )
    cases = [
        (by_keyword, "help"),
        (by_example, "I need help now"),
        (mixed, "help me"),
        (mixed_reversed, "help me"),
    ]
    for specs, text in cases:
        match = DefaultRecognizer(specs, 0.5).recognize(text)
        assert match is not None and (match.name, match.confidence) == (order[0], 1.0), specs
        assert [(m.name, m.confidence) for m in match.alternatives] == [(order[1], 1.0)]


@pytest.mark.parametrize("order", [("cover", "part"), ("part", "cover")])
def test_the_more_specific_hit_wins_whatever_the_order(order: tuple[str, str]) -> None:
    """Of two hits, the one covering more of the message's words: a longer keyword or phrase, a
    longer pattern match, an example typed verbatim (all of it)."""
    cases: list[tuple[IntentSpec, IntentSpec, str]] = [
        (
            IntentSpec("cover", keywords=("no thanks",)),
            IntentSpec("part", keywords=("thanks",)),
            "No, thanks",
        ),
        (
            IntentSpec("cover", keywords=("how much",)),
            IntentSpec("part", keywords=("one",)),
            "how much is one",
        ),
        (IntentSpec("cover", patterns=(r"no\W+thanks",)), IntentSpec("part", keywords=("no",)), "no thanks!"),
        (IntentSpec("cover", examples=("help me",)), IntentSpec("part", keywords=("help",)), "help me"),
    ]
    for cover, part, text in cases:
        specs = intents(*(cover if name == "cover" else part for name in order))
        match = DefaultRecognizer(specs, 0.5).recognize(text)
        assert match is not None and match.name == "cover" and match.alternatives == (), (text, order)


def test_scores_list_every_intent_in_declaration_order() -> None:
    scores = DefaultRecognizer(PIZZA, 0.5).scores("sure, a large pizza")
    assert len(scores) == len(PIZZA)
    assert scores[0] == 1.0 and scores[2] == 1.0 and scores[3] == 0.0  # order, yes by keyword; no: nothing


# Edge cases --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "specs",
    [
        {},
        intents(IntentSpec("empty")),
        intents(IntentSpec("punctuation", examples=("?!", ""))),
        intents(IntentSpec("only_payloads", payloads=("X",))),
    ],
)
def test_intents_with_nothing_to_match_text_never_match(specs: dict[str, IntentSpec]) -> None:
    recognizer = DefaultRecognizer(specs, 0.0)
    for text in ("", "   ", "hello there", "?!"):
        assert recognizer.recognize(text) is None


def test_a_message_of_function_words_still_matches_its_own_example() -> None:
    specs = intents(IntentSpec("more", examples=("I want more",)), IntentSpec("stop", examples=("no more",)))
    recognizer = DefaultRecognizer(specs, 0.5)
    assert recognizer.recognize("I want more") == IntentMatch("more", 1.0)
    assert recognizer.recognize("no more") == IntentMatch("stop", 1.0)


def test_folding() -> None:
    assert fold("Crème BRÛLÉE ﬁne") == "creme brulee fine"
    assert words("I'd like Pizzéria-style, don\u2019t you?") == [
        "id",
        "like",
        "pizzeria",
        "style",
        "dont",
        "you",
    ]


def test_default_recognizer_is_an_intent_recognizer() -> None:
    recognizer: IntentRecognizer = DefaultRecognizer(PIZZA, 0.5)  # checked by mypy
    assert recognizer.recognize("", "NO") == IntentMatch("no", 1.0, exact=True)


TEXT = st.text(alphabet=st.sampled_from("abcdeéiou xyzAB'-!?.,0123 "), max_size=40)


@given(TEXT)
@settings(max_examples=200, deadline=None)
def test_scores_stay_in_range_and_are_deterministic(text: str) -> None:
    first, second = DefaultRecognizer(SUPPORT, 0.3), DefaultRecognizer(dict(SUPPORT), 0.3)
    scores = first.scores(text)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == second.scores(text) == first.scores(text)
    match = first.recognize(text)
    assert match is None or (match.confidence >= 0.3 and match.confidence == max(scores))


def test_many_intents_many_recognitions_sanity() -> None:
    """50 intents x 10 examples, 1000 messages of 10 words: runs and stays consistent.

    Not a timed assertion (CI machines vary); run it with ``--durations`` to see the cost,
    about 0.1-0.3 ms a message on a laptop.
    """
    rng = random.Random(7)
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(600)
    ]
    vocabulary += ["i", "want", "to", "a", "the", "please", "my", "can", "you", "is"]
    specs = intents(
        *(
            IntentSpec(
                f"intent{i}",
                keywords=(f"kw{i}",),
                examples=tuple(" ".join(rng.choices(vocabulary, k=rng.randint(3, 9))) for _ in range(10)),
            )
            for i in range(50)
        )
    )
    recognizer = DefaultRecognizer(specs, 0.5)
    messages = [" ".join(rng.choices(vocabulary, k=10)) for _ in range(990)]
    messages += [specs[f"intent{i}"].examples[i % 10] for i in range(10)]
    results = [recognizer.recognize(m) for m in messages]
    for i, match in enumerate(results[-10:]):
        assert match is not None and match.name == f"intent{i}"  # every example finds itself
        assert match.confidence == pytest.approx(1.0)
    assert results == [recognizer.recognize(m) for m in messages]


CARDS = {
    "lost_card": IntentSpec(
        "lost_card", keywords=("lost", "stolen"), examples=("I lost my card", "block my card")
    ),
    "balance": IntentSpec("balance", keywords=("balance",), examples=("how much money do I have",)),
}


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I lsot my crad", "lost_card"),  # two swapped letters: one edit each
        ("my card was stolne", "lost_card"),
        ("what's my balanse", "balance"),
        ("I lost my card", "lost_card"),
    ],
)
def test_typos_are_read_as_the_word_meant(text: str, intent: str) -> None:
    match = DefaultRecognizer(CARDS, 0.5, typo_tolerance=True).recognize(text)
    assert match is not None and match.name == intent


def test_a_corrected_match_counts_less_and_typo_tolerance_can_be_off() -> None:
    tolerant = DefaultRecognizer(CARDS, 0.5, typo_tolerance=True)
    corrected = tolerant.recognize("I lsot my crad")
    assert corrected is not None and corrected.confidence == pytest.approx(0.9)
    assert DefaultRecognizer(CARDS, 0.5, typo_tolerance=False).recognize("lsot") is None
    assert tolerant.recognize("lsot") is not None


def test_short_and_unknown_words_are_not_corrected() -> None:
    tolerant = DefaultRecognizer(CARDS, 0.5, typo_tolerance=True)
    assert tolerant.corrected(["lsot", "my", "crad", "zzzzzz", "cat"]) == [
        "lost",
        "my",
        "card",
        "zzzzzz",
        "cat",
    ]


def test_exact_means_a_payload_or_nothing_but_a_keyword() -> None:
    recognizer = DefaultRecognizer(CARDS, 0.5)
    whole = recognizer.recognize("Stolen!")
    within = recognizer.recognize("my card was stolen")
    assert whole is not None and whole.exact
    assert within is not None and within.name == "lost_card" and not within.exact


def test_a_pattern_that_matches_the_whole_message_is_exact_too() -> None:
    specs = {
        "stop": IntentSpec("stop", patterns=(r"^\W*(stop|quit)\W*$",)),
        "caffe": IntentSpec("caffe", patterns=(r"caf[eé] (latte|au lait)",)),
    }
    recognizer = DefaultRecognizer(specs, 0.5)
    for text in ("stop", "  Quit! ", "...stop."):
        match = recognizer.recognize(text)
        assert match == IntentMatch("stop", 1.0, exact=True), text
    assert recognizer.recognize("stop sending me emails") is None  # anchored: not the whole message
    # Unanchored, a pattern is exact when its match is the whole message, with or without accents.
    assert recognizer.recognize("Café latte") == IntentMatch("caffe", 1.0, exact=True)
    assert recognizer.recognize("cafe au lait") == IntentMatch("caffe", 1.0, exact=True)
    searched = recognizer.recognize("a cafe latte please")
    assert searched is not None and searched.name == "caffe" and not searched.exact


def test_a_word_spelled_right_is_never_read_as_a_flow_word() -> None:
    shop = intents(
        IntentSpec("shipping", keywords=("ship", "shipping"), examples=("where is my parcel",)),
        IntentSpec("lost_card", keywords=("lost",)),
        IntentSpec("no", keywords=("nope",)),
        IntentSpec("feedback", examples=("can I tell you something",)),
    )
    tolerant = DefaultRecognizer(shop, 0.5, typo_tolerance=True)
    for text in (
        "where is your shop?",
        "what does a replacement cost?",
        "hope you are well",
        "do you sell shoes",
    ):
        assert tolerant.recognize(text) is None, (text, tolerant.corrected(words(text)))
    assert tolerant.corrected(words("shpi my parcle, I lsot it")) == [
        "ship",
        "my",
        "parcel",
        "i",
        "lost",
        "it",
    ]


# The bundled support flow -------------------------------------------------------------------------

SUPPORT_FLOW = Path(__file__).resolve().parent.parent / "config" / "flows" / "support.yaml"


def support_flow(language: str) -> DefaultRecognizer:
    document = load_flow_file(SUPPORT_FLOW)
    recognizer = make_recognizers(document.intents, document.settings)[language]
    assert isinstance(recognizer, DefaultRecognizer)
    return recognizer


@pytest.mark.parametrize(
    ("language", "text"),
    [
        # One shared everyday word ("take", "long", "order") is no match ...
        ("en", "do you take credit cards?"),
        ("en", "how long are gift cards valid"),
        ("en", "is there a minimum order?"),
        # ... nor is a correctly spelled word read as a flow word: shop/ship, cost/lost, hope/nope, sell/tell.
        ("en", "do you sell shoes"),
        ("en", "where is your shop?"),
        ("en", "what does a replacement cost?"),
        ("en", "hope you are well"),
        # German function words ("kann ich mit") weigh as little as English ones.
        ("de", "Kann ich mit PayPal zahlen?"),
        ("de", "Kann ich mit Gutschein bezahlen?"),
        ("de", "wie lange sind Gutscheine gültig?"),
    ],
)
def test_the_support_flow_leaves_what_it_has_no_answer_for_to_its_fallback(language: str, text: str) -> None:
    recognizer = support_flow(language)
    assert recognizer.recognize(text) is None, recognizer.scores(text)


@pytest.mark.parametrize(
    ("language", "text", "intent"),
    [
        ("en", "when will my parcel arrive", "shipping"),
        ("en", "how long does it take to arrive", "shipping"),
        ("en", "where is my parcle", "shipping"),  # typos in words the flow uses are still read
        ("en", "how long does delivry take", "shipping"),
        ("en", "I want to retrun something", "returns"),
        ("en", "talk to a persno", "human"),
        ("en", "can I get my money back", "returns"),
        ("en", "I want to tell you something", "feedback"),
        ("en", "No, thanks", "no"),  # the longer keyword
        ("de", "nein danke", "no"),
        ("de", "Ich möchte etwas zurückgeben", "returns"),
        ("de", "ich möchte mit einem menschen sprechen", "human"),
        ("de", "wo bleibt mein paket", "shipping"),
        ("de", "ich möchte mich beschweren", "feedback"),
    ],
)
def test_the_support_flow_still_reads_its_own_questions(language: str, text: str, intent: str) -> None:
    recognizer = support_flow(language)
    match = recognizer.recognize(text)
    assert match is not None and match.name == intent, recognizer.scores(text)
