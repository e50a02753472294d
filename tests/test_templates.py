"""Response templates: rendering, the sandbox, caps, and responses built into Content."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confab.runtime.flows.language.document import ButtonSpec, CardSpec, QuickReplySpec, ResponseSpec
from confab.runtime.flows.language.templates import (
    MAX_OUTPUT,
    MAX_TEMPLATE_LENGTH,
    TemplateError,
    compile_template,
    is_template,
    render_response,
    render_text,
    select_response,
    template_references,
)
from confab.runtime.model import Button, CarouselCard, Content, QuickReply

CONTEXT: dict[str, Any] = {
    "slots": {"size": "large", "quantity": 3, "email": None, "items": "ITEMS", "toppings": ["ham", "olives"]},
    "variables": {"total": 28.5},
    "user_profile": {"name": "Ana", "address": {"city": "Lisbon"}},
    "state": "confirm",
    "intent": "order",
    "message": "a large one",
    "channel": "web",
}


def render(text: str, context: dict[str, Any] | None = None) -> str:
    return render_text(text, CONTEXT if context is None else context)


def render_error(text: str, context: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        render(text, context)
    return info.value


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("Hi {{ user_profile.name | default('there') }}!", "Hi Ana!"),
        (
            "{{ slots.quantity }} {{ slots.size }} pizza(s), {{ variables.total }} EUR.",
            "3 large pizza(s), 28.5 EUR.",
        ),
        ("{{ user_profile.address.city }}", "Lisbon"),
        ("{{ state }}/{{ intent }}/{{ channel }}: {{ message }}", "confirm/order/web: a large one"),
        ("{{ slots['size'] }}", "large"),
        ("{{ slots.items }}", "ITEMS"),  # a key beats dict.items
        ("{{ slots.toppings | join(', ') }}", "ham, olives"),
        ("{% for t in slots.toppings %}[{{ loop.index }}:{{ t | upper }}]{% endfor %}", "[1:HAM][2:OLIVES]"),
        ("{% if slots.quantity > 2 %}many{% else %}few{% endif %}", "many"),
        ("{{ (variables.total * 2) | round(1) }}", "57.0"),
        ("{{ 'a' ~ slots.size ~ 1 }}", "alarge1"),
        ("{{ slots.size | title }} {{ slots.size | replace('l', 'L') }}", "Large Large"),
        ("{{ slots.size.upper() }}", "LARGE"),
        ("{{ '%d items' | replace('%d', slots.quantity | string) }}", "3 items"),
        ("{% set n = slots.quantity + 1 %}{{ n }}", "4"),
        ("{{ slots.toppings | length }} {{ slots.toppings | first }}", "2 ham"),
        ("{{ range(3) | list | sum }}", "3"),
        ("{{ dict(a=1).a }}", "1"),
        ("{% for k, v in user_profile.items() %}{% endfor %}ok", "ok"),
        ("line 1\n{{ slots.size }}\n", "line 1\nlarge\n"),  # trailing newline kept
        ("{# a comment #}x", "x"),
    ],
)
def test_rendering(template: str, text: str) -> None:
    assert render(template) == text


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("[{{ nothing }}]", "[]"),
        ("[{{ slots.missing }}]", "[]"),
        ("[{{ user_profile.address.street.number }}]", "[]"),  # chaining
        ("[{{ nothing.at['all'].ever }}]", "[]"),
        ("[{{ slots.email }}]", "[]"),  # None renders empty
        ("Hi {{ user_profile.nick | default('there') }}", "Hi there"),
        ("{% if slots.missing %}yes{% else %}no{% endif %}", "no"),
        ("{% for x in slots.missing %}{{ x }}{% endfor %}.", "."),
        ("{{ slots.missing | upper }}", ""),
    ],
)
def test_undefined_renders_empty(template: str, text: str) -> None:
    assert render(template) == text


def test_plain_text_skips_jinja() -> None:
    assert not is_template("Just text, with {braces} and 50% off")
    assert render_text("Just text, with {braces} and 50% off", {}) == "Just text, with {braces} and 50% off"
    # Even text Jinja would reject, or that is longer than a template may be: it is not a template.
    assert render_text("50% off }} {x}", {}) == "50% off }} {x}"
    long = "x" * (MAX_TEMPLATE_LENGTH * 2)
    assert render_text(long, {}) == long
    assert is_template("{{ x }}") and is_template("{% if x %}{% endif %}") and is_template("{# c #}")


def test_context_is_not_modified() -> None:
    context = {"slots": {"a": [1, 2]}}
    render("{% set x = 5 %}{{ slots.a | list }}{{ slots.a | reverse | list }}", context)
    assert context == {"slots": {"a": [1, 2]}}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("template", "lineno", "fragment"),
    [
        ("{{ x ", 1, "end of print statement"),
        ("line\n{% if %}", 2, "Expected an expression"),
        ("a\nb\n{% for x in y %}", 3, "endfor"),
        ("{{ x | no_such_filter }}", 1, "No filter named 'no_such_filter'"),
        ("{% endif %}", 1, "endif"),
        ("ok\n\n{{ 1 + }}", 3, "unexpected 'end of print statement'"),
    ],
)
def test_syntax_errors_have_line_numbers(template: str, lineno: int, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(template)
    assert info.value.lineno == lineno
    assert fragment in info.value.message
    assert f"line {lineno}" in str(info.value)
    # render_text reports the same error
    with pytest.raises(TemplateError):
        render(template)


def test_compile_template_is_cached_and_validates_types() -> None:
    assert compile_template("{{ slots.size }}") is compile_template("{{ slots.size }}")
    with pytest.raises(TemplateError, match="must be a string"):
        compile_template(3)  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="longer than"):
        compile_template("{{ x }}" + " " * MAX_TEMPLATE_LENGTH)


@pytest.mark.parametrize(
    ("template", "lineno", "fragment"),
    [
        ("first\n{{ slots.quantity + 'a' }}", 2, "TypeError"),
        ("{{ slots.missing + 1 }}", 1, "UndefinedError"),
        ("{{ [1, 'a'] | sort }}", 1, "TypeError"),
        ("a\nb\n{{ slots.size / 0 }}", 3, "TypeError"),
        ("{{ 1 / 0 }}", 1, "ZeroDivisionError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", 1, "recursion"),
    ],
)
def test_render_errors_become_template_errors(template: str, lineno: int, fragment: str) -> None:
    error = render_error(template)
    assert fragment in error.message
    assert error.lineno == lineno


@pytest.mark.parametrize(
    "template",
    [
        "{% include 'other.txt' %}",
        "{% extends 'base.txt' %}",
        "{% import 'macros.txt' as m %}",
        "{% from 'macros.txt' import m %}",
    ],
)
def test_no_loading_other_templates(template: str) -> None:
    with pytest.raises(TemplateError, match="not available in flow templates"):
        compile_template(template)


# --------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''['__class__'] }}",
        "{{ ''|attr('__class__') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ range.__globals__ }}",
        "{{ _confab_concat.__globals__ }}",
        "{{ _confab_loop.__code__ }}",
        "{{ dict.__base__ }}",
        "{{ slots.__class__ }}",
        "{{ slots.size.__class__.__base__ }}",
        "{{ nothing.__class__ }}",
        "{{ (1).__class__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ slots.toppings.append('x') }}",  # immutable sandbox
        "{{ slots.pop('size') }}",
        "{{ slots.update({'size': 'small'}) }}",
        "{{ slots.clear() }}",
        "{{ '{0.__class__}'.format(slots) }}",  # str.format is not reachable at all
        "{{ '%s' % slots }}",  # nor %-formatting
        "{{ 'x'.ljust(1000000000) }}",
        "{{ ','.join(slots.toppings) }}",
    ],
)
def test_sandbox_blocks_escapes(template: str) -> None:
    error = render_error(template)
    assert error.lineno == 1
    assert CONTEXT["slots"]["size"] == "large" and CONTEXT["slots"]["toppings"] == ["ham", "olives"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' | center(1000) }}",
        "{{ 'x' | indent(1000) }}",
        "{{ 'x' | wordwrap(1) }}",
        "{{ '%s' | format(1) }}",
        "{{ slots | tojson }}",
        "{{ slots | pprint }}",
        "{{ slots | xmlattr }}",
        "{{ [1, 2] | batch(2) | list }}",
        "{{ lipsum(1000) }}",
        "{% set ns = namespace(a=1) %}",
    ],
)
def test_risky_filters_and_globals_are_not_available(template: str) -> None:
    # Unknown filters fail at compile time; unknown globals are undefined and fail when called.
    with pytest.raises(TemplateError):
        render(template)


# --------------------------------------------------------------------------- caps


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ 'x' * 1000000000 }}", "longer than"),
        ("{{ [0] * 1000000000 }}", "longer than"),
        ("{{ 9 ** 9 ** 9 }}", "too large"),
        ("{{ 2 ** 100000 }}", "too large"),
        ("{% set n = 99999999999999999999 %}{{ n * n * n * n * n * n * n * n * n * n }}", "too large"),
        ("{{ range(100000) | list }}", "range()"),
        ("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}", "too much work"),
        ("{% for a in 'x' * 10000 %}{% for b in 'x' * 10000 %}{% endfor %}{% endfor %}", "too much work"),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
            "too much work",
        ),
        ("{% for x in range(3) recursive %}{{ loop(range(3)) }}{% endfor %}", "recursion"),
        ("{% set a = 'x' * 10000 %}{{ a ~ a }}", "longer than"),
        ("{% set a = 'x' * 6000 %}{{ a + a }}", "longer than"),
        ("{% set a = 'x' * 6000 %}{{ a }}{{ a }}", "output longer than"),
        ("{{ ['x' * 10000] * 2 }}", "longer than"),
        ("{{ (['x' * 10000] * 10000) | join }}", "join result longer"),
        ("{{ ('x' * 6000) | replace('x', 'yy') }}", "replace result longer"),
        ("{{ ('x' * 100) | replace('', 'y' * 1000) }}", "replace result longer"),
        ("{{ ([[1] * 5000] * 5000) | sum(start=[]) }}", "numbers only"),
        ("{{ (['x' * 10000] * 10000) | string }}", "longer than"),
        ("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", "output longer than"),
    ],
)
def test_resource_caps(template: str, fragment: str) -> None:
    # Each cap refuses before the big value exists: the memory a refusal takes bounds its work,
    # on any machine (the values refused here would take from 100 MB to gigabytes).
    tracemalloc.start()
    try:
        error = render_error(template, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fragment in error.message, error.message
    assert peak < 20_000_000


def test_doubling_through_set_is_capped() -> None:
    template = "{% set a = 'xxxxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a | length }}"
    assert "longer than" in render_error(template, {}).message


def test_output_up_to_the_cap_is_fine() -> None:
    assert len(render(f"{{{{ 'x' * {MAX_OUTPUT} }}}}")) == MAX_OUTPUT
    assert render("{% for i in range(100) %}{{ i }}{% endfor %}", {}).startswith("0123")


# --------------------------------------------------------------------------- responses


def test_render_response_text() -> None:
    content = render_response(ResponseSpec(text="Hi {{ user_profile.name }}!"), CONTEXT)
    assert content == Content(type="text", text="Hi Ana!")


def test_render_response_quick_replies_and_buttons() -> None:
    spec = ResponseSpec(
        text="{{ slots.quantity }} {{ slots.size }}?",
        quick_replies=(
            QuickReplySpec(title="Yes, {{ slots.size }}", payload="YES"),
            QuickReplySpec(title="No"),
        ),
        buttons=(
            ButtonSpec(
                title="Pay {{ variables.total }}", type="url", url="https://pay.example/{{ slots.quantity }}"
            ),
            ButtonSpec(title="Call", type="phone", payload="+351000"),
        ),
    )
    content = render_response(spec, CONTEXT)
    assert content.type == "quick_reply"
    assert content.text == "3 large?"
    assert content.quick_replies == [QuickReply(title="Yes, large", payload="YES"), QuickReply(title="No")]
    assert content.buttons == [
        Button(title="Pay 28.5", type="url", url="https://pay.example/3"),
        Button(title="Call", type="phone", payload="+351000"),
    ]


def test_render_response_buttons_only_is_text() -> None:
    content = render_response(ResponseSpec(text="Ok?", buttons=(ButtonSpec(title="Yes", payload="YES"),)), {})
    assert content.type == "text"
    assert content.buttons == [Button(title="Yes", payload="YES")]


def test_render_response_carousel() -> None:
    spec = ResponseSpec(
        text="Pick one",
        quick_replies=(QuickReplySpec(title="None of these", payload="NONE"),),
        cards=(
            CardSpec(
                title="{{ slots.size | title }} pizza",
                subtitle="for {{ user_profile.name }}",
                image_url="https://img.example/{{ not_rendered }}.png",
                buttons=(ButtonSpec(title="Order {{ slots.quantity }}", payload="ORDER"),),
            ),
            CardSpec(title="Salad"),
        ),
    )
    content = render_response(spec, CONTEXT)
    assert content.type == "carousel"  # cards win over quick replies
    assert content.carousel == [
        CarouselCard(
            title="Large pizza",
            subtitle="for Ana",
            image_url="https://img.example/{{ not_rendered }}.png",  # not a template field
            buttons=[Button(title="Order 3", payload="ORDER")],
        ),
        CarouselCard(title="Salad"),
    ]
    assert content.quick_replies == [QuickReply(title="None of these", payload="NONE")]


def test_render_response_media_and_location_are_copied() -> None:
    media = {"url": "https://x/y.png", "mime_type": "image/png", "extra": {"k": [1]}}
    location = {"latitude": 38.7, "longitude": -9.1, "name": "Shop"}
    spec = ResponseSpec(text="Here", media=media, location=location)
    content = render_response(spec, {})
    assert content.media == media and content.location == location
    assert content.media is not media and content.media["extra"] is not media["extra"]
    assert content.location is not location
    assert render_response(ResponseSpec(text="x"), {}).media is None


def test_render_response_is_wire_ready() -> None:
    spec = ResponseSpec(text="t", cards=(CardSpec(title="c", buttons=(ButtonSpec(title="b"),)),))
    content = render_response(spec, {})
    assert Content.from_wire(content.to_wire()) == content


def test_render_response_fails_as_a_whole() -> None:
    spec = ResponseSpec(text="fine", quick_replies=(QuickReplySpec(title="{{ ''.__class__ }}"),))
    with pytest.raises(TemplateError):
        render_response(spec, CONTEXT)


# --------------------------------------------------------------------------- selection

SMS = ResponseSpec(text="sms base")
VARIANT_SMS = ResponseSpec(text="sms friendly")
FRIENDLY = ResponseSpec(text="friendly {{ user_profile.name }}", channels={"sms": VARIANT_SMS})
TERSE = ResponseSpec(text="terse")  # no channels of its own
BASE = ResponseSpec(
    text="base",
    channels={"sms": SMS, "whatsapp": ResponseSpec(text="wa base")},
    variants={"friendly": FRIENDLY, "terse": TERSE},
)


@pytest.mark.parametrize(
    ("channel", "variant", "text"),
    [
        ("", "", "base"),
        ("web", "", "base"),  # no override for web
        ("sms", "", "sms base"),
        ("whatsapp", "", "wa base"),
        ("", "friendly", "friendly Ana"),
        ("web", "friendly", "friendly Ana"),
        ("sms", "friendly", "sms friendly"),  # the variant's own channel override
        ("whatsapp", "friendly", "wa base"),  # falls back to the base response's channel override
        ("web", "terse", "terse"),
        ("sms", "terse", "sms base"),
        ("sms", "unknown", "sms base"),  # unknown variant: the base response
        ("", "unknown", "base"),
    ],
)
def test_channel_and_variant_selection(channel: str, variant: str, text: str) -> None:
    assert render_response(BASE, CONTEXT, channel=channel, variant=variant).text == text


def test_selection_looks_one_level_deep() -> None:
    nested = ResponseSpec(text="sms", variants={"friendly": ResponseSpec(text="nested variant")})
    spec = ResponseSpec(text="base", channels={"sms": nested})
    assert select_response(spec, channel="sms", variant="friendly") is nested


# --------------------------------------------------------------------------- fuzzing

_PIECES = [
    "{{", "}}", "{%", "%}", "{#", "#}", " ", "x", "slots", ".", "size", "__class__", "(", ")", "[", "]",
    "'a'", "1", "0", "+", "*", "**", "~", "/", "|", "upper", "join", "replace('a', 'bb')", "for x in",
    "range(", "endfor", "if", "endif", "set y =", "loop", "cycler", "'x' * 10000", ",",
]  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=25))
@settings(max_examples=300, deadline=None)
def test_fuzz_only_template_errors(pieces: list[str]) -> None:
    for text in (" ".join(pieces), "".join(pieces)):
        try:
            result = render_text(text, CONTEXT)
        except TemplateError:
            continue
        assert len(result) <= max(MAX_OUTPUT, len(text))


# --------------------------------------------------------------------------- flow filters


@pytest.mark.parametrize(
    ("template", "language", "text"),
    [
        ("{{ variables.total | money('EUR') }}", "", "28.50 EUR"),
        ("{{ 24 | money('EUR') }}", "en", "24.00 EUR"),
        ("{{ 1234.5 | money('EUR') }}", "de", "1.234,50 EUR"),
        ("{{ 1500 | money('JPY') }}", "en", "1,500 JPY"),  # the currency's own decimals
        ("{{ 7.5 | money('EUR', symbol=true) }}", "en", "€7.50"),
        ("{{ slots.missing | money('EUR') }}", "", ""),
        ("{{ '2026-03-12' | date }}", "", "March 12, 2026"),
        ("{{ '2026-03-12' | date }}", "de", "12. März 2026"),
        ("{{ '2026-03-12' | date('short') }}", "en", "3/12/26"),
        ("{{ '4111111111111111' | mask }}", "", "****1111"),
        ("{{ '1990-03-12' | mask }}", "", "****"),
    ],
)
def test_money_date_and_mask_filters(template: str, language: str, text: str) -> None:
    assert render(template, {**CONTEXT, "language": language}) == text


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ 'lots' | money('EUR') }}", "not a number"),
        ("{{ [1] | money('EUR') }}", "money() of a list"),
        ("{{ 'soon' | date }}", "not an ISO date"),
    ],
)
def test_money_and_date_of_the_wrong_thing_fail_the_template(template: str, fragment: str) -> None:
    assert fragment in render_error(template).message


def test_template_references_name_what_a_template_reads() -> None:
    roots, fields = template_references(
        "{{ slots.size }} {{ variables['total'] }} {% for slots in [1] %}{{ slots.x }}{% endfor %}"
        "{{ user_profile.name | default(intent) }}"
    )
    assert roots == {"slots", "variables", "user_profile", "intent"}
    assert fields == {("slots", "size"), ("variables", "total"), ("slots", "x")}
    assert template_references("plain text") == (set(), set())
    _, methods = template_references(
        "{% for k, v in slots.items() %}{{ k }}{% endfor %}{{ variables.get('x') }}"
    )
    assert methods == set()  # the mapping's methods, not slots or variables of those names


def test_language_selection_comes_before_variant_and_channel() -> None:
    spec = ResponseSpec(
        text="Hello",
        variants={"friendly": ResponseSpec(text="Hey")},
        channels={"sms": ResponseSpec(text="SMS hello")},
        languages={
            "de": ResponseSpec(
                text="Hallo",
                variants={"friendly": ResponseSpec(text="Hi du")},
                channels={"sms": ResponseSpec(text="SMS hallo")},
            )
        },
    )
    assert render_response(spec, CONTEXT, language="de").text == "Hallo"
    assert render_response(spec, CONTEXT, language="de", variant="friendly").text == "Hi du"
    assert render_response(spec, CONTEXT, language="de", channel="sms").text == "SMS hallo"
    assert render_response(spec, CONTEXT, language="fr", channel="sms").text == "SMS hello"
