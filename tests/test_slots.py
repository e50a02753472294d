"""Slot extraction: every slot type, bounds, synonyms, and several slots from one message."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confab.runtime.flows.execution.slots import NOT_FOUND, Extraction, extract, extract_all
from confab.runtime.flows.language.document import SLOT_TYPES, SlotSpec

TODAY = datetime.date(2026, 3, 11)  # a Wednesday

SIZE = SlotSpec(
    "size",
    "enum",
    choices={"small": ("s", "little"), "medium": ("m", "regular"), "large": ("l", "big", "family")},
)
QUANTITY = SlotSpec("quantity", "integer", minimum=1, maximum=20)
PEOPLE = SlotSpec("people", "integer", minimum=1)
AMOUNT = SlotSpec("amount", "number")
EMAIL = SlotSpec("email", "email")
PHONE = SlotSpec("phone", "phone")
DATE = SlotSpec("date", "date")
CONFIRM = SlotSpec("confirm", "boolean")
NAME = SlotSpec("name", "text", minimum=2, maximum=20)

FOUND = "found"  # marks a row's expectation: found, with this value
Row = tuple[SlotSpec, str, bool, Any]  # spec, message, asked, expected (a value, NOT_FOUND or a problem)


def problem(reason: str) -> Extraction:
    return Extraction.rejected(reason)


def check(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    got = extract(spec, text, asked=asked, today=TODAY)
    if isinstance(expected, Extraction):
        assert got == expected
    else:
        assert got == Extraction.of(expected)
        assert type(got.value) is type(expected)  # 2 is not 2.0, "true" is not True


def ids(rows: list[Row]) -> list[str]:
    return [f"{spec.name}:{text!r}:{'asked' if asked else 'not-asked'}" for spec, text, asked, _ in rows]


# Extraction --------------------------------------------------------------------------------------


def test_extraction_shapes() -> None:
    assert NOT_FOUND == Extraction() == Extraction(None, False, "")
    assert Extraction.of(0) == Extraction(0, True, "")
    assert Extraction.of(False).found  # a falsy value is still found
    assert Extraction.rejected("must be at most 20") == Extraction(None, False, "must be at most 20")


def test_every_slot_type_is_handled() -> None:
    for slot_type in SLOT_TYPES:
        extract(SlotSpec("x", slot_type, pattern="x"), "x", asked=True, today=TODAY)
    with pytest.raises(ValueError, match="unknown type"):
        extract(SlotSpec("x", "colour"), "red", asked=True, today=TODAY)


# text --------------------------------------------------------------------------------------------

TEXT_ROWS: list[Row] = [
    (NAME, "  Ada Lovelace \n", True, "Ada Lovelace"),
    (NAME, "Ada", False, NOT_FOUND),  # free text only answers its own prompt
    (NAME, "   ", True, NOT_FOUND),
    (NAME, "", True, NOT_FOUND),
    (NAME, "A", True, problem("must be between 2 and 20 characters")),
    (NAME, "x" * 21, True, problem("must be between 2 and 20 characters")),
    (NAME, "x" * 20, True, "x" * 20),  # bounds are inclusive
    (SlotSpec("t", "text", minimum=3), "ab", True, problem("must be at least 3 characters")),
    (SlotSpec("t", "text", maximum=3), "abcd", True, problem("must be at most 3 characters")),
    (SlotSpec("code", "text", pattern=r"[A-Z]{2}\d{3}"), " AB123 ", True, "AB123"),
    (
        SlotSpec("code", "text", pattern=r"[A-Z]{2}\d{3}"),
        "AB1234",
        True,
        problem("does not have the expected form"),
    ),
    (
        SlotSpec("code", "text", pattern=r"[A-Z]{2}\d{3}"),
        "ab123",
        True,
        problem("does not have the expected form"),
    ),
    (SlotSpec("code", "text", pattern=r"(?i)[A-Z]{2}\d{3}"), "ab123", True, "ab123"),
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), TEXT_ROWS, ids=ids(TEXT_ROWS))
def test_text(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


# integer, number ------------------------------------------------------------------------------

NUMBER_ROWS: list[Row] = [
    (QUANTITY, "3", True, 3),
    (QUANTITY, "I'd like 3 pizzas", False, 3),
    (QUANTITY, "3 pizzas and 4 drinks", True, 3),  # the first number
    (QUANTITY, "two large pizzas", False, 2),
    (QUANTITY, "Twelve", True, 12),
    (QUANTITY, "twenty", True, 20),
    (QUANTITY, "one", True, 1),
    (QUANTITY, "zero", True, problem("must be between 1 and 20")),
    (QUANTITY, "21", True, problem("must be between 1 and 20")),
    (QUANTITY, "twenty-one", True, problem("must be between 1 and 20")),
    (QUANTITY, "-2", True, problem("must be between 1 and 20")),
    (QUANTITY, "2.5", True, problem("must be a whole number")),
    (QUANTITY, "2.0", True, 2),
    (QUANTITY, "no idea", True, NOT_FOUND),
    (QUANTITY, "", True, NOT_FOUND),
    (PEOPLE, "0", True, problem("must be at least 1")),
    (SlotSpec("n", "integer", maximum=10), "11", True, problem("must be at most 10")),
    (SlotSpec("n", "integer", minimum=0.5, maximum=2.5), "3", True, problem("must be between 0.5 and 2.5")),
    (SlotSpec("n", "integer"), "1,500", True, 1500),
    (SlotSpec("n", "integer"), "1,234,567", True, 1234567),
    (SlotSpec("n", "integer"), "1000000", True, 1000000),  # a bare run of digits stays a number
    (SlotSpec("n", "integer"), "-7 degrees", True, -7),
    (SlotSpec("n", "integer"), "\u22127", True, -7),  # the minus sign character
    (SlotSpec("n", "integer"), "forty two", True, 42),
    (SlotSpec("n", "integer"), "ninety-nine", True, 99),
    (SlotSpec("n", "integer"), "thirty", True, 30),
    (SlotSpec("n", "integer"), "a hundred", True, 100),
    (SlotSpec("n", "integer"), "one hundred", True, 100),
    (SlotSpec("n", "integer"), "hundred", True, 100),
    (SlotSpec("n", "integer"), "three hundred", True, 300),
    (SlotSpec("n", "integer"), "twenty, one", True, 20),  # a list, not a compound
    (SlotSpec("n", "integer"), "FIVE", True, 5),
    (SlotSpec("n", "integer"), "\uff15", True, 5),  # a full-width digit
    (AMOUNT, "2.5", True, 2.5),
    (AMOUNT, "2,5 kg", True, 2.5),  # a decimal comma where it can't be thousands
    (AMOUNT, "1,500.25 EUR", True, 1500.25),
    (AMOUNT, "-3.75", True, -3.75),
    (AMOUNT, "12", True, 12),  # written without decimals: an int
    (AMOUNT, "about 5kg", True, 5),  # units glued on are fine ...
    (AMOUNT, "seven", True, 7),
    (SlotSpec("n", "number", minimum=0, maximum=1), "1.5", True, problem("must be between 0 and 1")),
    # Digits that are something else.
    (QUANTITY, "at 7:30", True, NOT_FOUND),  # a time
    (QUANTITY, "at 7pm", True, NOT_FOUND),
    (QUANTITY, "the 3rd", True, NOT_FOUND),  # an ordinal
    (QUANTITY, "on 25/12/2026", True, NOT_FOUND),  # a date
    (QUANTITY, "on 2026-12-25", True, NOT_FOUND),
    (QUANTITY, "on 25.12.2026", True, NOT_FOUND),
    (QUANTITY, "25 december, 4 please", True, 4),
    (QUANTITY, "call 555 123 4567", True, NOT_FOUND),  # a phone number
    (QUANTITY, "+44 20 7946 0958", True, NOT_FOUND),
    (QUANTITY, "5-3", True, NOT_FOUND),  # a range or a score: no reading is safe... nor a "-3"
    (QUANTITY, "room B12", True, NOT_FOUND),  # part of a word
    (QUANTITY, "1.234,5", True, NOT_FOUND),  # continental grouping is not read
    # "one" the pronoun, when the message was not an answer to this slot.
    (QUANTITY, "the large one", False, NOT_FOUND),
    (QUANTITY, "this one please", False, NOT_FOUND),
    (QUANTITY, "no one", False, NOT_FOUND),
    (QUANTITY, "one of those", False, NOT_FOUND),
    (QUANTITY, "just one", False, 1),
    (QUANTITY, "one large pizza", False, 1),
    (QUANTITY, "the big one", True, 1),  # asked "how many?", it is a number
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), NUMBER_ROWS, ids=ids(NUMBER_ROWS))
def test_numbers(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


# boolean -----------------------------------------------------------------------------------------

BOOLEAN_ROWS: list[Row] = [
    *(
        (CONFIRM, word, True, True)
        for word in ["yes", "Yes!", "y", "yep", "yeah", "sure", "OK", "okay", "true"]
    ),
    *((CONFIRM, word, True, False) for word in ["no", "No.", "n", "nope", "nah", "false", "wrong"]),
    (CONFIRM, "yes please", True, True),
    (CONFIRM, "of course", True, True),
    (CONFIRM, "sure thing!", True, True),
    (CONFIRM, "no problem", True, True),  # the longer phrase wins over "no"
    (CONFIRM, "not really", True, False),
    (CONFIRM, "no thank you", True, False),
    (CONFIRM, "I don't think so", True, False),
    (CONFIRM, "I don\u2019t think so", True, False),  # a typographic apostrophe
    (CONFIRM, "that's not right", True, False),
    (CONFIRM, "YES", False, NOT_FOUND),  # only as the answer to its own question
    (CONFIRM, "maybe", True, NOT_FOUND),
    (CONFIRM, "yesterday", True, NOT_FOUND),  # whole words
    (CONFIRM, "nothing", True, NOT_FOUND),
    (CONFIRM, "yes... no", True, problem("is ambiguous: both yes and no")),
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), BOOLEAN_ROWS, ids=ids(BOOLEAN_ROWS))
def test_boolean(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


# enum --------------------------------------------------------------------------------------------

CRUST = SlotSpec("crust", "enum", choices={"thin": ("thin crust", "crispy"), "thick": ("deep dish", "pan")})
SIZES_XL = SlotSpec("size", "enum", choices={"large": ("big",), "xl": ("extra large", "huge")})
ACCENTED = SlotSpec("drink", "enum", choices={"café": ("coffee",), "thé": ("tea",)})

ENUM_ROWS: list[Row] = [
    (SIZE, "large", True, "large"),
    (SIZE, "LARGE please", False, "large"),
    (SIZE, "a big one", False, "large"),  # a synonym gives the canonical value
    (SIZE, "family size", False, "large"),
    (SIZE, "Regular", True, "medium"),
    (SIZE, "Médium", True, "medium"),  # accents in the message don't matter
    (SIZE, "l", True, "large"),  # a one-letter synonym, when asked
    (SIZE, "L", False, NOT_FOUND),  # ... but not in free text
    (SIZE, "it's small", True, "small"),  # "it's" does not hold the synonym "s"
    (SIZE, "larger", True, NOT_FOUND),  # whole words only
    (SIZE, "biggest", True, NOT_FOUND),
    (SIZE, "huge", True, NOT_FOUND),
    (SIZE, "small or large?", True, problem("is ambiguous: small or large")),
    (SIZE, "large, the big one", True, "large"),  # one choice, said twice
    (CRUST, "Deep Dish", True, "thick"),  # multi-word synonyms
    (CRUST, "deep-dish", True, "thick"),
    (CRUST, "dish", True, NOT_FOUND),
    (CRUST, "a thin crust", True, "thin"),
    (SIZES_XL, "extra large", True, "xl"),  # the longest phrase wins, no ambiguity with "large"
    (SIZES_XL, "large", True, "large"),
    (ACCENTED, "un cafe", True, "café"),  # accents in the choice don't matter either
    (ACCENTED, "TEA", True, "thé"),
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), ENUM_ROWS, ids=ids(ENUM_ROWS))
def test_enum(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


TYPO_ROWS: list[Row] = [
    (SIZE, "lrage", True, "large"),  # two swapped neighbours: one edit
    (SIZE, "medum", True, "medium"),
    (SIZE, "2 lrage ones", False, "large"),  # not asked, too
    (SIZE, "smal", True, "small"),
    (SIZE, "mall", True, NOT_FOUND),  # spelled right: no typo of "small"
    (SIZE, "larger", True, NOT_FOUND),  # nor a comparative
    (SIZE, "lrg", True, NOT_FOUND),  # shorter than four letters: too easily anything
    (SIZE, "medum or lrage?", True, problem("is ambiguous: medium or large")),
    (CRUST, "deep dsih", True, "thick"),  # a word of a synonym of several
    (SIZES_XL, "extra lagre", True, "xl"),
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), TYPO_ROWS, ids=ids(TYPO_ROWS))
def test_enum_choices_are_read_through_typos_when_the_flow_tolerates_them(
    spec: SlotSpec, text: str, asked: bool, expected: Any
) -> None:
    assert extract(spec, text, asked=asked, today=TODAY, typos=True) == (
        expected if isinstance(expected, Extraction) else Extraction.of(expected)
    )
    if not isinstance(expected, Extraction) or expected.problem:
        assert extract(spec, text, asked=asked, today=TODAY) == NOT_FOUND  # typos off: as typed


# email, phone --------------------------------------------------------------------------------------

CONTACT_ROWS: list[Row] = [
    (EMAIL, "ada@example.com", True, "ada@example.com"),
    (EMAIL, "it's Ada.Lovelace+pizza@Example.CO.UK.", False, "Ada.Lovelace+pizza@example.co.uk"),
    (EMAIL, "mail me at a_b-c@sub.domain.org, thanks", False, "a_b-c@sub.domain.org"),
    (EMAIL, "first x@y.io then z@w.io", True, "x@y.io"),
    (EMAIL, "ada@example", True, problem("is not a valid email address")),
    (EMAIL, "ada@", True, problem("is not a valid email address")),
    (EMAIL, "ada@example", False, NOT_FOUND),  # not asked: no complaint about other text
    (EMAIL, "meet @ noon", True, NOT_FOUND),
    (EMAIL, "no email", True, NOT_FOUND),
    (PHONE, "+44 20 7946 0958", True, "+442079460958"),
    (PHONE, "0044 20 7946 0958", True, "+442079460958"),  # 00 is the international prefix
    (PHONE, "call (555) 123-4567 after six", False, "5551234567"),
    (PHONE, "+1-555-123-4567", True, "+15551234567"),
    (PHONE, "555.123.4567", True, "5551234567"),
    (PHONE, "0612345678", True, "0612345678"),
    (PHONE, "1234567", True, "1234567"),  # 7 digits: the minimum
    (PHONE, "+123456789012345", True, "+123456789012345"),  # 15: the maximum
    (PHONE, "12345", True, problem("must have 7 to 15 digits")),
    (PHONE, "1234 5678 9012 3456", True, problem("must have 7 to 15 digits")),
    (PHONE, "12345", False, NOT_FOUND),
    (PHONE, "2 pizzas", True, NOT_FOUND),
    (PHONE, "on 2026-12-25", True, NOT_FOUND),  # a date is not a phone number
    (PHONE, "on 25.12.2026", True, NOT_FOUND),
    (PHONE, "call 12345 or 555 123 4567", True, "5551234567"),  # the first *valid* one
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), CONTACT_ROWS, ids=ids(CONTACT_ROWS))
def test_email_and_phone(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


# date ----------------------------------------------------------------------------------------------

DATE_ROWS: list[Row] = [
    (DATE, "2026-12-25", True, "2026-12-25"),
    (DATE, "on 2026-1-5 please", False, "2026-01-05"),
    (DATE, "25/12/2026", True, "2026-12-25"),
    (DATE, "25.12.2026", True, "2026-12-25"),
    (DATE, "5-1-2027", True, "2027-01-05"),
    (DATE, "25/12/26", True, "2026-12-25"),  # a two-digit year is 20yy
    (DATE, "1/2/2026", True, "2026-02-01"),  # day first
    (DATE, "today", True, "2026-03-11"),
    (DATE, "tonight", True, "2026-03-11"),
    (DATE, "Tomorrow!", False, "2026-03-12"),
    (DATE, "the day after tomorrow", True, "2026-03-13"),
    (DATE, "friday", True, "2026-03-13"),
    (DATE, "next Friday", True, "2026-03-13"),
    (DATE, "on tuesday", True, "2026-03-17"),
    (DATE, "wednesday", True, "2026-03-18"),  # today's weekday: next week's, never today
    (DATE, "25 december", True, "2026-12-25"),
    (DATE, "December 25", True, "2026-12-25"),
    (DATE, "dec 25th", True, "2026-12-25"),
    (DATE, "the 25th of December", True, "2026-12-25"),
    (DATE, "25 Dec 2027", True, "2027-12-25"),
    (DATE, "December 25th, 2027", True, "2027-12-25"),
    (DATE, "11 march", True, "2026-03-11"),  # a date without a year: today counts ...
    (DATE, "10 march", True, "2027-03-10"),  # ... a past one is next year's
    (DATE, "feb 29", True, "2028-02-29"),  # the next year that has one
    (DATE, "1er août", True, NOT_FOUND),  # English month names only
    (DATE, "31/02/2026", True, problem("is not a real date")),
    (DATE, "2026-13-01", True, problem("is not a real date")),
    (DATE, "feb 30", True, problem("is not a real date")),
    (DATE, "tomorrow or 2026-12-25", True, "2026-03-12"),  # the first one
    (DATE, "on 2026-12-25, not tomorrow", True, "2026-12-25"),
    (DATE, "some day", True, NOT_FOUND),
    (DATE, "2 pizzas", True, NOT_FOUND),
    (DATE, "mondays", True, NOT_FOUND),
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), DATE_ROWS, ids=ids(DATE_ROWS))
def test_dates(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


# regex ----------------------------------------------------------------------------------------------

ORDER_NO = SlotSpec("order_no", "regex", pattern=r"\b[A-Z]\d{3,}\b")
ORDER_REF = SlotSpec("order_ref", "regex", pattern=r"(?i)order\s*#?\s*(?P<value>\d+)")

REGEX_ROWS: list[Row] = [
    (ORDER_NO, "my order B1234 is late", False, "B1234"),
    (ORDER_NO, "A123 and B456", True, "A123"),  # the first match
    (ORDER_NO, "b1234", True, NOT_FOUND),  # patterns are used as written
    (ORDER_REF, "about Order #5531", True, "5531"),  # the group named value
    (ORDER_REF, "about the pizza", True, NOT_FOUND),
    (SlotSpec("any", "regex", pattern=r"x*"), "abc", True, NOT_FOUND),  # an empty match is nothing
]


@pytest.mark.parametrize(("spec", "text", "asked", "expected"), REGEX_ROWS, ids=ids(REGEX_ROWS))
def test_regex(spec: SlotSpec, text: str, asked: bool, expected: Any) -> None:
    check(spec, text, asked, expected)


def test_an_invalid_regex_names_its_slot() -> None:
    with pytest.raises(ValueError, match="'broken'"):
        extract(SlotSpec("broken", "regex", pattern="(unclosed"), "x", asked=True, today=TODAY)


# Several slots from one message -----------------------------------------------------------------------

VALUE = Extraction.of


@pytest.mark.parametrize(
    ("specs", "text", "asking", "expected"),
    [
        # The asked slot reads first; the others read what it left.
        ([SIZE, QUANTITY], "two large pizzas", "size", {"size": VALUE("large"), "quantity": VALUE(2)}),
        ([SIZE, QUANTITY], "two large pizzas", "quantity", {"size": VALUE("large"), "quantity": VALUE(2)}),
        ([SIZE, QUANTITY], "2 family size", "", {"size": VALUE("large"), "quantity": VALUE(2)}),
        ([SIZE, QUANTITY], "large", "quantity", {"size": VALUE("large"), "quantity": NOT_FOUND}),
        # A number that two slots could take, neither asked, fills neither ...
        (
            [SIZE, QUANTITY, PEOPLE],
            "two large pizzas",
            "size",
            {"size": VALUE("large"), "quantity": NOT_FOUND, "people": NOT_FOUND},
        ),
        # ... but the asked one takes its number first, and the other takes what is left.
        (
            [QUANTITY, PEOPLE],
            "2 pizzas for 3 people",
            "quantity",
            {"quantity": VALUE(2), "people": VALUE(3)},
        ),
        ([QUANTITY, PEOPLE], "2 pizzas for 3 people", "", {"quantity": NOT_FOUND, "people": NOT_FOUND}),
        # An invalid answer still takes its part of the message.
        (
            [QUANTITY, PEOPLE],
            "30",
            "quantity",
            {"quantity": problem("must be between 1 and 20"), "people": NOT_FOUND},
        ),
        # Dates, phones and emails keep their digits from numeric slots.
        (
            [QUANTITY, DATE],
            "3 pizzas on 25/12/2026",
            "quantity",
            {"quantity": VALUE(3), "date": VALUE("2026-12-25")},
        ),
        (
            [QUANTITY, DATE],
            "25 december, 4 please",
            "",
            {"quantity": VALUE(4), "date": VALUE("2026-12-25")},
        ),
        (
            [QUANTITY, PHONE, EMAIL],
            "2 for me, +44 20 7946 0958, ada2@example.com",
            "",
            {"quantity": VALUE(2), "phone": VALUE("+442079460958"), "email": VALUE("ada2@example.com")},
        ),
        # Only the asked slot takes free text; asked, it takes the whole message.
        ([NAME, SIZE], "Ada", "", {"name": NOT_FOUND, "size": NOT_FOUND}),
        ([NAME, SIZE], "Big Ada", "name", {"name": VALUE("Big Ada"), "size": NOT_FOUND}),
        # ... but an answer the text slot rejects takes nothing: it was probably not an answer.
        (
            [NAME, QUANTITY],
            "I want 3 pizzas right now, please",
            "name",
            {"name": problem("must be between 2 and 20 characters"), "quantity": VALUE(3)},
        ),
        # Yes/no only for the asked boolean.
        ([CONFIRM, SIZE], "yes, large", "confirm", {"confirm": VALUE(True), "size": VALUE("large")}),
        ([CONFIRM, SIZE], "yes, large", "size", {"confirm": NOT_FOUND, "size": VALUE("large")}),
        # Two enums claiming the same word: the asked one wins; unasked, neither.
        (
            [SIZE, SlotSpec("tier", "enum", choices={"gold": ("big",)})],
            "big",
            "size",
            {"size": VALUE("large"), "tier": NOT_FOUND},
        ),
        (
            [SIZE, SlotSpec("tier", "enum", choices={"gold": ("big",)})],
            "big",
            "",
            {"size": NOT_FOUND, "tier": NOT_FOUND},
        ),
        # An "asking" that names no slot here is no asked slot at all.
        ([SIZE, QUANTITY], "two large", "email", {"size": VALUE("large"), "quantity": VALUE(2)}),
        ([], "anything", "size", {}),
    ],
)
def test_extract_all(specs: list[SlotSpec], text: str, asking: str, expected: dict[str, Extraction]) -> None:
    got = extract_all(specs, text, asking=asking, today=TODAY)
    assert got == expected
    assert list(got) == [spec.name for spec in specs]  # in the order asked for


def test_extract_all_agrees_with_extract_for_a_single_slot() -> None:
    for spec, text, asked, _ in [*NUMBER_ROWS, *ENUM_ROWS, *DATE_ROWS, *CONTACT_ROWS, *BOOLEAN_ROWS]:
        together = extract_all([spec], text, asking=spec.name if asked else "", today=TODAY)
        assert together == {spec.name: extract(spec, text, asked=asked, today=TODAY)}, text


ALL_KINDS = [
    SIZE,
    QUANTITY,
    AMOUNT,
    EMAIL,
    PHONE,
    DATE,
    CONFIRM,
    NAME,
    ORDER_REF,
]


@given(st.text(max_size=60), st.sampled_from(["", *(spec.name for spec in ALL_KINDS)]))
@settings(max_examples=300, deadline=None)
def test_any_message_gives_well_formed_extractions(text: str, asking: str) -> None:
    results = extract_all(ALL_KINDS, text, asking=asking, today=TODAY)
    assert list(results) == [spec.name for spec in ALL_KINDS]
    for extraction in results.values():
        assert not (extraction.found and extraction.problem)
        assert extraction.found or extraction.value is None
        assert extraction.value is None or isinstance(extraction.value, str | int | float | bool)


PAST = SlotSpec("lost_on", "date", range="past")
FUTURE = SlotSpec("deliver_on", "date", range="future")
DECEMBER = datetime.date(2026, 12, 1)  # a Tuesday
RELATIVE_DATES: list[tuple[SlotSpec, str, str | Extraction]] = [
    (DATE, "yesterday", "2026-11-30"),
    (DATE, "the day before yesterday", "2026-11-29"),
    (DATE, "I lost it two days ago", "2026-11-29"),
    (DATE, "a week ago", "2026-11-24"),
    (DATE, "in 2 weeks", "2026-12-15"),
    (DATE, "in ten days", "2026-12-11"),
    (DATE, "last friday", "2026-11-27"),  # the latest Friday before today, never the next one
    (DATE, "next friday", "2026-12-04"),
    (DATE, "friday", "2026-12-04"),
    (DATE, "12 March", "2027-03-12"),  # no range: its next occurrence
    (PAST, "12 March", "2026-03-12"),  # in the past: this year's, gone by
    (PAST, "on friday", "2026-11-27"),
    (PAST, "tomorrow", problem("must be today or a day before")),
    (PAST, "in 2 weeks", problem("must be today or a day before")),
    (PAST, "today", "2026-12-01"),  # today is in both ranges
    (FUTURE, "today", "2026-12-01"),
    (FUTURE, "yesterday", problem("must be today or a day to come")),
    (FUTURE, "2026-11-03", problem("must be today or a day to come")),
    (FUTURE, "12 March", "2027-03-12"),
]


@pytest.mark.parametrize(("spec", "text", "expected"), RELATIVE_DATES)
def test_relative_dates_and_date_ranges(spec: SlotSpec, text: str, expected: str | Extraction) -> None:
    got = extract(spec, text, asked=True, today=DECEMBER)
    assert got == (Extraction.of(expected) if isinstance(expected, str) else expected)


def test_relative_dates_are_not_numbers() -> None:
    assert extract(QUANTITY, "3 days ago", asked=False, today=DECEMBER) == NOT_FOUND
