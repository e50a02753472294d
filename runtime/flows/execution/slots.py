"""Slot extraction for flow files: the value a message gives for a slot, or why it can't be used.

:func:`extract` reads one slot from a message; :func:`extract_all` reads every slot a
state collects from one message ("two large pizzas" fills quantity and size). Both
return :class:`Extraction` records, one shape for the three outcomes:

* found: ``Extraction(value, found=True)`` -- ``value`` is JSON-able: ``str`` (text,
  enum's canonical value, email, phone, regex, and dates as ISO ``"YYYY-MM-DD"``),
  ``int`` (integer; number when written without decimals), ``float`` (number with
  decimals), ``bool`` (boolean);
* found but invalid: ``Extraction(problem="must be between 1 and 20")`` -- ``found`` is
  False and ``value`` None; ``problem`` is a short reason for logs and re-prompts;
* not there: ``Extraction()``.

Comparisons are made on *folded* text (accents stripped, case folded, one character
per character so positions still point into the original), and words are whole: "l"
never matches inside "large". English only for number words, yes/no words, month and
weekday names.

Per type (``asked``: the message answers this slot's own prompt):

text
    Only when asked: the whole stripped message; ``minimum``/``maximum`` bound its
    length in characters; ``pattern``, if given, must match it whole (as written: add
    ``(?i)`` for case-insensitive).
integer, number
    The first number: digits with an optional sign ("-5"), decimals ("2.5"; a decimal
    comma "2,5" when it can't be a thousands separator), thousands separators ("1,500");
    or English words: "zero".."nineteen", "twenty".."ninety" with optional units
    ("twenty-one", "forty two"), "hundred", "a/one/two.. hundred". Digits that belong
    to a date ("25/12/2026", "25 december"), a time ("7:30", "7pm"), a phone number or
    an ordinal ("3rd") are not numbers. When *not* asked, "one" preceded by a
    determiner ("the big one", "this one", "no one") or followed by "of" is a pronoun,
    not 1. ``minimum``/``maximum`` are inclusive; an integer slot rejects "2.5".
boolean
    Only when asked, because a bare "yes" only means something as the answer to its
    own question: yes/no words and phrases anywhere in the message ("yes", "yep",
    "sure", "ok", "y", "of course" / "no", "nope", "nah", "n", "not really"...).
    Both kinds in one message ("yes... no") is a problem, not a guess.
enum
    A choice's value or one of its synonyms, as whole word(s); the longest phrase wins
    where they overlap ("extra large" over "large"). Returns the canonical value.
    Two different choices in one message is a problem (ambiguous). When not asked,
    one-character values and synonyms ("s", "l") are ignored: in free text they are far
    more often just letters ("plan a", "size l?" aside). With ``typos`` (a flow's
    ``typo_tolerance``), a mistyped word reads as the word of a choice it was meant to be
    ("lrage" is large, "medum" medium), by the recognizer's rule (``lexicon.Speller``): words
    of four or more letters, one edit away (two from eight letters on), and never a word
    spelled right ("mall" is no small).
email
    The first address (``local@domain.tld``), domain lower-cased. When asked, a word
    with an "@" that is not a valid address is a problem.
phone
    The first run of digits with the usual separators (spaces, dots, hyphens,
    parentheses), optionally international ("+44 20 7946 0958", "0044 ...",
    "(555) 123-4567"), with 7 to 15 digits. Returns the digits, with a leading "+" when
    the number was written internationally ("+" or "00"); without one no country code
    can be invented. When asked, a run of 5-6 or 16+ digits is a problem.
date
    The first of: ISO "2026-12-25"; day first "25/12/2026", "25.12.2026", "25-12-26"
    (a 2-digit year is 20yy); "25 december", "25th of dec", "december 25", "Dec 25,
    2026"; "today", "tonight", "tomorrow", "the day after tomorrow", "yesterday", "the
    day before yesterday"; "3 days ago", "a week ago", "in 2 weeks", "in ten days"; a
    weekday name: "last friday" is the latest Friday before today, "next friday",
    "this friday", "on friday" and "friday" the next one after today (never today).
    The slot's ``range`` settles what is left open: with ``past``, a date without a
    year is its latest occurrence on or before today and a bare weekday ("friday") the
    latest one before today; otherwise the next occurrence on or after today. A date
    outside the range ("tomorrow" for ``past``, a date gone by for ``future``; today is
    in both) is a problem, as is an impossible date ("31/02/2026"). Returns ISO.
regex
    The first match of ``pattern`` (searched as written), or of its group named
    ``value`` if it has one.

Several slots from one message (:func:`extract_all`), the rule: **each part of the
message fills at most one slot**. The asked slot reads first and what it matched is
taken out of the message (a text slot's rejected answer takes nothing: it was
probably not an answer). Every other slot then reads what remains, not asked; a part
that two or more of them read is ambiguous and fills none of them. So, asked for the
size, "two large pizzas" gives size=large and quantity=2; with two numeric slots
(quantity and people) not asked, "two large pizzas" fills neither number, and asked
for quantity, "2 pizzas for 3 people" gives quantity=2 and people=3.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confab.runtime.flows.execution.folding import fold
from confab.runtime.flows.execution.lexicon import Speller, lexicon
from confab.runtime.flows.language.document import SlotSpec

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Extraction:
    """What a message gave for a slot; see the module doc for the three outcomes."""

    value: Any = None  # str, int, float or bool (dates as ISO strings) when found
    found: bool = False
    problem: str = ""  # set when a value was there but is unusable; found is then False

    @classmethod
    def of(cls, value: Any) -> Extraction:
        return cls(value=value, found=True)

    @classmethod
    def rejected(cls, problem: str) -> Extraction:
        return cls(problem=problem)


NOT_FOUND = Extraction()


def extract(
    spec: SlotSpec, text: str, *, asked: bool, today: datetime.date, typos: bool = False
) -> Extraction:
    """The value ``text`` gives for ``spec`` (``asked``: it answers that slot's prompt; ``typos``:
    mistyped words count as the choices they were meant to be)."""
    return _extract(spec, _Message(text, typos), asked=asked, today=today)[0]


def extract_all(
    specs: Sequence[SlotSpec], text: str, *, asking: str, today: datetime.date, typos: bool = False
) -> dict[str, Extraction]:
    """Every slot in ``specs`` read from one message; ``asking`` names the asked slot, if any.

    Each part of the message fills at most one slot (the rule is in the module doc).
    """
    results: dict[str, Extraction] = {}
    message = _Message(text, typos)
    asked_spec = next((s for s in specs if s.name == asking), None) if asking else None
    if asked_spec is not None:
        extraction, spans = _extract(asked_spec, message, asked=True, today=today)
        results[asked_spec.name] = extraction
        if asked_spec.type != "text" or extraction.found:
            message = message.without(spans)
    claims: dict[str, tuple[Extraction, tuple[Span, ...]]] = {}
    for spec in specs:
        if spec is not asked_spec:
            claims[spec.name] = _extract(spec, message, asked=False, today=today)
    for name, (extraction, spans) in claims.items():
        contested = any(
            _overlaps(spans, other_spans) for other, (_, other_spans) in claims.items() if other != name
        )
        results[name] = NOT_FOUND if contested else extraction
    return {spec.name: results[spec.name] for spec in specs}


# The message -------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+(?:'\w+)*")  # "it's" is one word, so a synonym "s" can't match it


@dataclass(frozen=True, slots=True)
class _Token:
    word: str  # folded
    start: int
    end: int


class _Message:
    """A message's raw text, its folded twin (same length) and folded words with positions."""

    __slots__ = ("folded", "raw", "tokens", "typos")

    def __init__(self, raw: str, typos: bool = False) -> None:
        self.raw = raw
        self.typos = typos  # mistyped words may be read as a choice's
        self.folded = _fold_in_place(raw)
        self.tokens = [_Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(self.folded)]

    def without(self, spans: Sequence[Span]) -> _Message:
        """This message with ``spans`` blanked out (positions kept)."""
        raw = self.raw
        for start, end in spans:
            raw = raw[:start] + " " * (end - start) + raw[end:]
        return _Message(raw, self.typos)


_FOLDED_CHARS: dict[str, str] = {}
_APOSTROPHES = frozenset("\u2019\u02bc\u2018")  # typographic apostrophes read as "'"


def _fold_in_place(text: str) -> str:
    """``fold`` one character at a time, keeping any character that would change length."""
    out = []
    for char in text:
        folded = _FOLDED_CHARS.get(char)
        if folded is None:
            folded = "'" if char in _APOSTROPHES else fold(char)
            if len(folded) != 1:  # "ß" -> "ss", "ﬁ" -> "fi": keep the text aligned instead
                folded = char.lower() if len(char.lower()) == 1 else char
            _FOLDED_CHARS[char] = folded
        out.append(folded)
    return "".join(out)


def _overlaps(a: Sequence[Span], b: Sequence[Span]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def _extract(
    spec: SlotSpec, message: _Message, *, asked: bool, today: datetime.date
) -> tuple[Extraction, tuple[Span, ...]]:
    """The extraction and the parts of the message it rests on."""
    reader = _READERS.get(spec.type)
    if reader is None:
        raise ValueError(f"slot {spec.name!r}: unknown type {spec.type!r}")
    return reader(spec, message, asked, today)


_Result = tuple[Extraction, tuple[Span, ...]]
_NOTHING: _Result = (NOT_FOUND, ())


def _wordlist(text: str) -> list[str]:
    return text.split()


# text ----------------------------------------------------------------------------------


def _read_text(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    if not asked:
        return _NOTHING  # only an answer to its own prompt is free text for a slot
    value = message.raw.strip()
    if not value:
        return _NOTHING
    whole = ((0, len(message.raw)),)
    problem = _bounds_problem(len(value), spec, unit=" characters")
    if problem:
        return Extraction.rejected(problem), whole
    if spec.pattern and re.fullmatch(spec.pattern, value) is None:
        return Extraction.rejected("does not have the expected form"), whole
    return Extraction.of(value), whole


# integer, number ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Number:
    start: int
    end: int
    value: int | float
    integral: bool  # written without a fractional part (or as words)


_NUMERAL = re.compile(
    r"(?<![\w.,/:+\-\u2212])"  # not inside a word, a decimal, a date or time, or after a sign
    r"(?P<sign>[-\u2212])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)"  # "1,500" before "1" so that grouped thousands win
    r"(?:(?P<sep>[.,])(?P<frac>\d+))?"
    r"(?![/:]|[.,\-]\d|\d)"  # not followed by more of a date, time or number
    r"(?!(?:st|nd|rd|th|am|pm)\b)"  # "3rd", "7pm": an ordinal or a time, not a quantity
)
_UNITS = {
    w: i
    for i, w in enumerate(
        _wordlist(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen"
        )
    )
}
_TENS = {
    w: 10 * (i + 2) for i, w in enumerate(_wordlist("twenty thirty forty fifty sixty seventy eighty ninety"))
}
# Before "one", these make it a pronoun ("the big one", "this one", "no one"), not 1.
_DETERMINERS = frozenset(
    _wordlist("the this that these those which another each every any no other a an some")
)


def _numerals(message: _Message) -> Iterator[_Number]:
    for m in _NUMERAL.finditer(message.folded):
        whole, sep, frac = m["int"], m["sep"], m["frac"]
        if sep == "," and (len(frac) == 3 or "," in whole):
            continue  # "1,234,5" and friends: no reading is safe
        digits = whole.replace(",", "")
        negative = m["sign"] is not None
        if frac is None:
            value: int | float = int(digits)
            integral = True
        else:
            value = float(f"{int(digits)}.{frac}")
            integral = False
        yield _Number(m.start(), m.end(), -value if negative else value, integral)


def _number_words(message: _Message, asked: bool) -> Iterator[_Number]:
    tokens, folded = message.tokens, message.folded
    i = 0
    while i < len(tokens):
        token = tokens[i]
        word = token.word
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        joined_to_next = nxt is not None and folded[token.end : nxt.start].strip(" -") == ""
        if word in _TENS:
            value, end = _TENS[word], token.end
            if joined_to_next and nxt is not None and 1 <= _UNITS.get(nxt.word, 0) <= 9:
                value, end, i = value + _UNITS[nxt.word], nxt.end, i + 1
            yield _Number(token.start, end, value, True)
        elif (word in _UNITS or word == "a") and joined_to_next and nxt is not None and nxt.word == "hundred":
            multiplier = 1 if word == "a" else _UNITS[word]
            if multiplier:
                yield _Number(token.start, nxt.end, multiplier * 100, True)
            i += 1
        elif word == "hundred":
            yield _Number(token.start, token.end, 100, True)
        elif word in _UNITS:
            pronoun = word == "one" and not asked and _one_is_pronoun(tokens, i)
            if not pronoun:
                yield _Number(token.start, token.end, _UNITS[word], True)
        i += 1


def _one_is_pronoun(tokens: Sequence[_Token], i: int) -> bool:
    before = {t.word for t in tokens[max(0, i - 2) : i]}
    after = tokens[i + 1].word if i + 1 < len(tokens) else ""
    return bool(before & _DETERMINERS) or after == "of"


def _numbers(message: _Message, asked: bool, today: datetime.date) -> list[_Number]:
    """The numbers of a message in order, without those that are part of a date or phone."""
    taken = [(d.start, d.end) for d in _dates(message, today)]
    # A plain run of digits stays a number ("1000000"); one shaped like a phone number is not.
    taken += [(p.start, p.end) for p in _phones(message) if p.shaped and p.digits >= 7]
    found = [*_numerals(message), *_number_words(message, asked)]
    return sorted((n for n in found if not _overlaps(((n.start, n.end),), taken)), key=lambda n: n.start)


def _read_number(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    numbers = _numbers(message, asked, today)
    if not numbers:
        return _NOTHING
    first = numbers[0]
    span = ((first.start, first.end),)
    if spec.type == "integer" and not (first.integral or float(first.value).is_integer()):
        return Extraction.rejected("must be a whole number"), span
    value: int | float = first.value
    if spec.type == "integer" or first.integral:
        value = int(value)
    problem = _bounds_problem(value, spec)
    if problem:
        return Extraction.rejected(problem), span
    return Extraction.of(value), span


def _bounds_problem(value: float, spec: SlotSpec, unit: str = "") -> str:
    low, high = spec.minimum, spec.maximum
    if low is not None and high is not None and not low <= value <= high:
        return f"must be between {_plain(low)} and {_plain(high)}{unit}"
    if low is not None and value < low:
        return f"must be at least {_plain(low)}{unit}"
    if high is not None and value > high:
        return f"must be at most {_plain(high)}{unit}"
    return ""


def _plain(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


# boolean, enum: phrases ----------------------------------------------------------------------


def _phrases(
    message: _Message, phrases: dict[tuple[str, ...], Any], words: Sequence[str] | None = None
) -> list[tuple[Span, Any]]:
    """Every occurrence of ``phrases`` (folded word tuples) as whole words, longest first;
    ``words``: the message's words as they are to be read (a typo corrected), if not as typed."""
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for phrase in sorted(phrases, key=len, reverse=True):
        by_first.setdefault(phrase[0], []).append(phrase)
    tokens = message.tokens
    words = [t.word for t in tokens] if words is None else words
    hits: list[tuple[Span, Any]] = []
    i = 0
    while i < len(tokens):
        for phrase in by_first.get(words[i], ()):
            if tuple(words[i : i + len(phrase)]) == phrase:
                hits.append(((tokens[i].start, tokens[i + len(phrase) - 1].end), phrases[phrase]))
                i += len(phrase)
                break
        else:
            i += 1
    return hits


def _words_of(text: str) -> tuple[str, ...]:
    return tuple(t.word for t in _Message(text).tokens)


_YES = (
    "yes y yeah yea yep yup ya sure ok okay k true correct right affirmative absolutely definitely "
    "certainly indeed agreed fine alright aye",
    "of course|sure thing|why not|go ahead|please do|sounds good|that's right|thats right|no problem",
)
_NO = (
    "no n nope nah nay false wrong incorrect negative never cancel",
    "not really|no thanks|no thank you|no way|not at all|don't|dont|do not|i don't think so|not now|"
    "not right|not correct|not true|not ok|not okay|never mind",
)


def _yes_no() -> dict[tuple[str, ...], bool]:
    table: dict[tuple[str, ...], bool] = {}
    for answer, (single, multi) in ((True, _YES), (False, _NO)):
        for phrase in [*single.split(), *multi.split("|")]:
            table[_words_of(phrase)] = answer
    return table


_BOOLEAN_PHRASES = _yes_no()


def _read_boolean(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    if not asked:
        return _NOTHING  # a bare "yes" answers whatever was asked last, not this slot
    hits = _phrases(message, _BOOLEAN_PHRASES)
    if not hits:
        return _NOTHING
    spans = tuple(span for span, _ in hits)
    answers = {answer for _, answer in hits}
    if len(answers) > 1:
        return Extraction.rejected("is ambiguous: both yes and no"), spans
    return Extraction.of(answers.pop()), spans


def _read_enum(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    table: dict[tuple[str, ...], str] = {}
    for value, synonyms in spec.choices.items():
        for phrase in (value, *synonyms):
            words = _words_of(str(phrase))
            # Not asked, a one-letter synonym is far more often just a letter ("plan a").
            if words and (asked or len(" ".join(words)) > 1):
                table.setdefault(words, value)  # a synonym listed twice belongs to the first
    meant = None
    if message.typos:
        speller = Speller((word for phrase in table for word in phrase), lexicon(""))
        meant = [speller.correct(token.word) for token in message.tokens]
    hits = _phrases(message, table, meant)
    if not hits:
        return _NOTHING
    spans = tuple(span for span, _ in hits)
    values = list(dict.fromkeys(value for _, value in hits))
    if len(values) > 1:
        return Extraction.rejected("is ambiguous: " + " or ".join(values)), spans
    return Extraction.of(values[0]), spans


# email, phone ---------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+%-])"
    r"(?P<local>[\w+%-]+(?:\.[\w+%-]+)*)@(?P<domain>(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,})"
    r"(?![\w-]|\.\w)"
)
_AT_WORD = re.compile(r"\S*@\S*")


def _read_email(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    m = _EMAIL.search(message.raw)
    if m is not None:
        return Extraction.of(f"{m['local']}@{m['domain'].lower()}"), ((m.start(), m.end()),)
    if asked:
        bad = _AT_WORD.search(message.raw)
        if bad is not None and bad.group() != "@":
            return Extraction.rejected("is not a valid email address"), ((bad.start(), bad.end()),)
    return _NOTHING


_PHONE = re.compile(
    r"(?<![\w+.,/:\-])"
    r"(?P<intl>\+|00)?\s?"
    r"(?P<body>(?:\(\d{1,5}\)|\d)(?:[ .\-]?(?:\(\d{1,5}\)|\d))*)"
    r"(?![\w/:]|[.,\-]\d)"
)
_NUMERIC_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}([.\-])\d{1,2}\1(?:\d{4}|\d{2})")


@dataclass(frozen=True, slots=True)
class _Phone:
    start: int
    end: int
    value: str
    digits: int
    shaped: bool  # written with "+"/"00" or separators, not just a run of digits


def _phones(message: _Message) -> Iterator[_Phone]:
    """Runs of digits shaped like a phone number, with 5 or more digits, dates excluded."""
    for m in _PHONE.finditer(message.raw):
        body = m["body"]
        if _NUMERIC_DATE_LIKE.fullmatch(body):
            continue
        digits = re.sub(r"\D", "", body)
        if len(digits) < 5:
            continue
        intl = bool(m["intl"])
        yield _Phone(m.start(), m.end(), ("+" if intl else "") + digits, len(digits), intl or body != digits)


def _read_phone(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    bad: _Phone | None = None
    for phone in _phones(message):
        if 7 <= phone.digits <= 15:
            return Extraction.of(phone.value), ((phone.start, phone.end),)
        bad = bad or phone
    if asked and bad is not None:
        return Extraction.rejected("must have 7 to 15 digits"), ((bad.start, bad.end),)
    return _NOTHING


# date ------------------------------------------------------------------------------------------

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            "january jan",
            "february feb",
            "march mar",
            "april apr",
            "may",
            "june jun",
            "july jul",
            "august aug",
            "september sept sep",
            "october oct",
            "november nov",
            "december dec",
        ]
    )
    for name in names.split()
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAYS = {
    d: i for i, d in enumerate(_wordlist("monday tuesday wednesday thursday friday saturday sunday"))
}
_RELATIVE = {
    "today": 0,
    "tonight": 0,
    "tomorrow": 1,
    "day after tomorrow": 2,
    "yesterday": -1,
    "day before yesterday": -2,
}
_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, **{w: n for w, n in _UNITS.items() if n > 1}}

_ISO = re.compile(r"(?<![\d\-/.])(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?![\d\-/])")
_DAY_FIRST = re.compile(
    r"(?<![\d\-/.])(?P<d>\d{1,2})(?P<sep>[/.\-])(?P<m>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})(?![\d\-/]|\.\d)"
)
_DAY_MONTH = re.compile(
    rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of)?\s+(?P<mon>{_MONTH})\b\.?(?:,?\s+(?P<y>\d{{4}})\b)?"
)
_MONTH_DAY = re.compile(
    rf"\b(?P<mon>{_MONTH})\b\.?\s+(?:the\s+)?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>\d{{4}})\b)?"
)
_WORD_DATE = re.compile(
    r"\b(?:(?:the\s+)?(?P<rel>day\s+after\s+tomorrow|day\s+before\s+yesterday|today|tonight|tomorrow"
    r"|yesterday)"
    r"|(?:(?P<which>next|this|on|last)\s+)?(?P<wd>" + "|".join(_WEEKDAYS) + r"))\b"
)
_COUNT = r"(?P<n>\d{1,3}|" + "|".join(sorted(_COUNT_WORDS, key=len, reverse=True)) + r")"
_OFFSET = re.compile(
    rf"\b(?:(?P<in>in)\s+{_COUNT}\s+(?P<unit>days?|weeks?)|{_COUNT.replace('<n>', '<m>')}\s+"
    r"(?P<unit2>days?|weeks?)\s+ago)\b"
)


@dataclass(frozen=True, slots=True)
class _Date:
    start: int
    end: int
    value: datetime.date | None  # None: looked like a date but is not a real one


def _dates(message: _Message, today: datetime.date, range_: str = "") -> list[_Date]:
    """Every date the message mentions, in order (the longest first where two start together).

    ``range_`` ("past", "future" or "") decides the dates the message leaves open.
    """
    text = message.folded
    found: list[_Date] = []
    for m in _ISO.finditer(text):
        found.append(_Date(m.start(), m.end(), _date(int(m["y"]), int(m["m"]), int(m["d"]))))
    for m in _DAY_FIRST.finditer(text):
        year = int(m["y"]) + (2000 if len(m["y"]) == 2 else 0)
        found.append(_Date(m.start(), m.end(), _date(year, int(m["m"]), int(m["d"]))))
    for pattern in (_DAY_MONTH, _MONTH_DAY):
        for m in pattern.finditer(text):
            month, day = _MONTHS[m["mon"]], int(m["d"])
            if m["y"]:
                value = _date(int(m["y"]), month, day)
            elif range_ == "past":
                value = _last_occurrence(month, day, today)
            else:
                value = _next_occurrence(month, day, today)
            found.append(_Date(m.start(), m.end(), value))
    for m in _WORD_DATE.finditer(text):
        if m["rel"]:
            offset = _RELATIVE[" ".join(m["rel"].split())]
        else:
            ahead = (_WEEKDAYS[m["wd"]] - today.weekday() - 1) % 7 + 1  # 1..7: never today
            backwards = m["which"] == "last" or (range_ == "past" and m["which"] in (None, "on"))
            offset = ahead - 7 if backwards else ahead
        found.append(_Date(m.start(), m.end(), today + datetime.timedelta(days=offset)))
    for m in _OFFSET.finditer(text):
        count = m["n"] if m["in"] else m["m"]
        number = int(count) if count.isdigit() else _COUNT_WORDS[count]
        days = number * (7 if (m["unit"] or m["unit2"]).startswith("week") else 1)
        found.append(_Date(m.start(), m.end(), today + datetime.timedelta(days=days if m["in"] else -days)))
    found.sort(key=lambda d: (d.start, -d.end))
    return found


def _date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _next_occurrence(month: int, day: int, today: datetime.date) -> datetime.date | None:
    """``day``/``month`` on or after ``today``: this year's, else a later year's (Feb 29)."""
    if _date(2000, month, day) is None:  # 2000 is a leap year: no year has this day
        return None
    for year in range(today.year, today.year + 9):
        candidate = _date(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
    return None  # unreachable: a Feb 29 comes within 8 years


def _last_occurrence(month: int, day: int, today: datetime.date) -> datetime.date | None:
    """``day``/``month`` on or before ``today``: this year's, else an earlier year's (Feb 29)."""
    if _date(2000, month, day) is None:
        return None
    for year in range(today.year, today.year - 9, -1):
        candidate = _date(year, month, day)
        if candidate is not None and candidate <= today:
            return candidate
    return None  # unreachable: a Feb 29 came within 8 years


def _read_date(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    dates = _dates(message, today, spec.range)
    if not dates:
        return _NOTHING
    first = dates[0]
    span = ((first.start, first.end),)
    if first.value is None:
        return Extraction.rejected("is not a real date"), span
    if spec.range == "past" and first.value > today:
        return Extraction.rejected("must be today or a day before"), span
    if spec.range == "future" and first.value < today:
        return Extraction.rejected("must be today or a day to come"), span
    return Extraction.of(first.value.isoformat()), span


# regex ------------------------------------------------------------------------------------------


def _read_regex(spec: SlotSpec, message: _Message, asked: bool, today: datetime.date) -> _Result:
    try:
        m = re.search(spec.pattern, message.raw)
    except re.error as e:
        raise ValueError(f"slot {spec.name!r}: bad pattern {spec.pattern!r}: {e}") from None
    if m is None:
        return _NOTHING
    group = "value" if "value" in m.re.groupindex and m["value"] is not None else 0
    if not m.group(group):
        return _NOTHING
    return Extraction.of(m.group(group)), ((m.start(group), m.end(group)),)


_READERS = {
    "text": _read_text,
    "integer": _read_number,
    "number": _read_number,
    "boolean": _read_boolean,
    "enum": _read_enum,
    "email": _read_email,
    "phone": _read_phone,
    "date": _read_date,
    "regex": _read_regex,
}
