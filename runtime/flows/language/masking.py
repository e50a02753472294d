"""Masking sensitive data: what a flow declares sensitive is hidden wherever text is kept or shown.

A flow declares it two ways (docs/flows.md, "Masking"):

* per slot, ``sensitive: true``: the slot's value is masked in operators' views of the
  state, and the part of a message it was read from is masked in the stored input;
* by pattern, ``settings.mask`` (built-in detectors: ``card_number`` -- 13 to 19 digits,
  spaces or hyphens allowed, passing the Luhn check; ``iban`` -- passing the ISO 13616
  mod-97 check; ``email``; ``phone``) and ``settings.mask_patterns`` (regular
  expressions): every match in a message's text is masked before the text is stored.

A masked value keeps its last four characters when it has twelve or more (``****1111``,
what a card statement shows), and is ``****`` otherwise. Masking never changes what the
flow itself sees: slots keep their values, and webhooks get them unmasked.

A sensitive value is found (:func:`value_spans`) however it is written: with spaces, hyphens,
dots, slashes or parentheses between its characters or without them, in any case -- "5555 4444 3333 2222",
"5555-4444-3333-2222" and "5555444433332222" are one card number, whichever of them the
slot holds. The text kept in the store and the text sent to a language model are masked by
that one rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

MASK = "****"
_KEEP_LAST = 4
_KEEP_FROM_LENGTH = 12
# What people put between the characters of a number they type: "5555 4444", "5555-4444",
# "5555.4444", "5555 - 4444", "(555) 123/4567". Not part of the value: it is the same without them.
_SEPARATORS = re.compile(r"[\s.\-/()]+")
_BETWEEN = r"[\s.\-/()]*"

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+%-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}")
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d(?:[ .()-]{0,2}\d){6,14}(?!\w)")


def mask_value(value: str) -> str:
    """``value`` hidden, but for its last four characters (spaces and hyphens aside) when it is
    long enough to keep them."""
    compact = re.sub(r"[\s-]", "", value)
    if len(compact) >= _KEEP_FROM_LENGTH:
        return MASK + compact[-_KEEP_LAST:]
    return MASK


def value_spans(text: str, value: object) -> list[tuple[int, int]]:
    """Where ``value`` (a slot's) appears in ``text``: as it is, or with separators (spaces,
    hyphens, dots) anywhere between its characters or left out, case aside. A value of nothing
    but separators appears nowhere."""
    characters = _SEPARATORS.sub("", str(value))
    if not characters:
        return []
    pattern = re.compile(_BETWEEN.join(map(re.escape, characters)), re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _cards(text: str) -> Iterable[tuple[int, int]]:
    for m in _CARD.finditer(text):
        if luhn_valid(re.sub(r"\D", "", m.group())):
            yield m.span()


def _ibans(text: str) -> Iterable[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        if iban_valid(m.group()):
            yield m.span()


Detector = Callable[[str], Iterable[tuple[int, int]]]


def _matches(pattern: re.Pattern[str]) -> Detector:
    def find(text: str) -> Iterable[tuple[int, int]]:
        return (m.span() for m in pattern.finditer(text) if m.end() > m.start())

    return find


BUILT_IN: dict[str, Detector] = {
    "card_number": _cards,
    "iban": _ibans,
    "email": _matches(_EMAIL),
    "phone": _matches(_PHONE),
}


@dataclass(frozen=True, slots=True)
class Masker:
    """The masking one flow declares: built-in detectors by name and its own patterns."""

    builtin: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, builtin: Sequence[str], patterns: Sequence[str]) -> Masker:
        return cls(tuple(builtin), tuple(re.compile(p) for p in patterns))

    @property
    def active(self) -> bool:
        return bool(self.builtin or self.patterns)

    def spans(self, text: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        for name in self.builtin:
            found.extend(BUILT_IN[name](text))
        for pattern in self.patterns:
            found.extend(m.span() for m in pattern.finditer(text) if m.end() > m.start())
        return found

    def redact(self, text: str, extra: Iterable[tuple[int, int]] = ()) -> str:
        """``text`` with every match (and the ``extra`` spans) masked."""
        return mask_spans(text, [*self.spans(text), *extra])


def mask_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with each of ``spans`` (merged where they overlap) replaced by its mask."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out += [text[last:start], mask_value(text[start:end])]
        last = end
    out.append(text[last:])
    return "".join(out)
