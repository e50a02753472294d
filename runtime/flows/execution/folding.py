"""The form text is compared in by the built-in recognizer and the slot readers: accents stripped,
case folded, words without the apostrophes inside them ("I'd" -> "id")."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_INNER_APOSTROPHE = re.compile(r"(?<=\w)['\u2019\u02bc](?=\w)")


def strip_accents(text: str) -> str:
    """``text`` without combining marks, compatibility forms unfolded ("ﬁ" -> "fi")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def fold(text: str) -> str:
    """Accents stripped and case folded: the form every comparison is made in."""
    return strip_accents(text).casefold()


def words(text: str) -> list[str]:
    """The folded words of ``text``; apostrophes inside words vanish ("don't" -> "dont")."""
    return _WORD.findall(_INNER_APOSTROPHE.sub("", fold(text)))
