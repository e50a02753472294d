"""The words the built-in recognizer knows: the bundled lists, how they weigh words, and typo
tolerance that never reads a word spelled right as another."""

from __future__ import annotations

from importlib import resources

import pytest

from confab.runtime.flows.execution.folding import fold
from confab.runtime.flows.execution.lexicon import (
    BUNDLED,
    Lexicon,
    Speller,
    lexicon,
    parse_word_list,
    word_list,
)


def test_the_bundled_lists_are_small_folded_words() -> None:
    sizes = 0
    for language in BUNDLED:
        text = resources.files("confab.runtime.flows.execution").joinpath("words", f"{language}.txt")
        sizes += len(text.read_bytes())
        words = word_list(language)
        assert words is not None and len(words.words) > 1000, language
        assert all(w == fold(w) and w.isalpha() for w in words.words), language
        assert not words.stop & words.common  # a stop word counts as one, even if also common
    assert sizes < 200_000  # shipped with the package: a compact list, not a dictionary


def test_a_word_list_reads_its_sections_comments_and_endings() -> None:
    words = parse_word_list(
        "# a comment\n[stop]\nthe a  # trailing\n[common]\nTake the\n[known]\nQuery Straße café\n"
        "[suffixes]\ns ies=y\n"
    )
    assert words.stop == {"the", "a"} and words.common == {"take"}  # "the" stays a stop word
    assert words.words == {"the", "a", "take", "query", "strasse", "cafe"}
    assert words.has("queries") and words.has("takes") and words.has("cafes") and words.has("strasse")
    assert not words.has("quer") and not words.has("s") and not words.has("ies") and not words.has("as")


@pytest.mark.parametrize(
    ("text", "error"),
    [("take\n", "before the first"), ("[words]\ntake\n", r"line 1: unknown section \[words\]")],
)
def test_a_word_list_names_its_mistake(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_word_list(text)


def test_each_language_weighs_its_own_words() -> None:
    english, german, french = lexicon("en"), lexicon("de-AT"), lexicon("fr")
    assert {"i", "to", "please"} <= english.stop and "ich" not in english.stop
    assert {"ich", "mit", "kann", "möchte".replace("ö", "o")} <= german.stop
    assert english.stop <= german.stop  # English request words stay light in any language
    assert {"take", "long", "order"} <= english.common and "parcel" not in english.common
    assert {"gibt", "etwas"} <= german.common and "take" not in german.common
    assert french.stop == english.stop and french.common == frozenset()  # no list: English stop words
    assert lexicon("").common == english.common  # a flow that names no language: English
    for words in (english, german, french):
        assert words.spelled("shop") and words.spelled("kann") and words.spelled("gutscheine")
        assert not words.spelled("lsot") and not words.spelled("parcle")


@pytest.mark.parametrize(
    ("word", "meant"),
    [
        ("lsot", "lost"),  # two swapped neighbours: one edit
        ("crad", "card"),
        ("parcle", "parcel"),
        ("deliveyr", "delivery"),  # eight letters: up to two edits
        ("delvry", "delvry"),  # six letters, two edits: too far
        ("shop", "shop"),  # spelled right: not "ship"
        ("cost", "cost"),  # not "lost"
        ("hope", "hope"),  # not "nope"
        ("shoes", "shoes"),
        ("shops", "shops"),  # a plural of a word on the list
        ("larger", "larger"),  # a comparative
        ("kann", "kann"),  # German, a function word
        ("card", "card"),  # a word of the targets themselves
        ("crd", "crd"),  # shorter than four letters
        ("c4rd", "c4rd"),  # not a word of letters
        ("zzzzzz", "zzzzzz"),  # nothing close
    ],
)
def test_a_speller_corrects_typos_and_only_typos(word: str, meant: str) -> None:
    speller = Speller(["lost", "card", "parcel", "delivery", "ship", "nope", "wann", "the"], lexicon("en"))
    assert speller.correct(word) == meant


def test_a_speller_never_corrects_to_a_function_word_and_may_have_nothing_to_correct_to() -> None:
    assert Speller(["would"], lexicon("en")).correct("wuold") == "wuold"
    empty = Speller(["a", "12"], Lexicon(frozenset({"a"}), frozenset()))
    assert not empty and empty.correct("anything") == "anything"
