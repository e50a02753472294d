"""Response templates: Jinja2 in a sandbox, turned into ``runtime.model.Content``.

Templates see ``slots``, ``variables``, ``user_profile``, ``state``, ``intent``,
``confidence``, ``message``, ``channel``, ``language``, ``message_count``,
``error_count`` and ``fallback_count`` (whatever mapping the interpreter passes;
:data:`TEMPLATE_NAMES`, which the loader checks names against). Besides Jinja's
filters in :data:`FILTERS`, flows have ``money`` (an amount with its currency,
``{{ variables.total | money('EUR') }}`` -> ``24.00 EUR``, in the conversation's
language's number format; ``symbol=true`` for ``€24.00``), ``date`` (an ISO date as
words, ``March 12, 2026``; a Babel/CLDR format name or pattern may be given) and
``mask`` (all but the last four characters hidden), formatted with Babel. They render with
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`, hardened further because a
flow file can belong to a tenant, i.e. be written by someone we do not trust:

* No ``_``-prefixed or internal attributes (the sandbox's rule); an attempt raises
  :class:`TemplateError` instead of rendering empty, so authors see it when testing.
* On strings only the read-only, size-preserving methods in :data:`STRING_METHODS` are
  reachable (no ``format``, ``ljust``, ``center``, ``join``, ``replace``...: each can
  build a string of any size from a short template); mutating methods of lists and
  dicts are refused by the immutable sandbox.
* Only the filters in :data:`FILTERS` exist (``format``, ``indent``, ``center``,
  ``wordwrap``, ``tojson``, ``batch``, ``slice``... are left out for the same reason),
  each checked for the size of what it returns; ``join`` and ``replace`` check before
  building. Globals are ``range`` (at most :data:`MAX_RANGE` items), ``dict``,
  ``cycler`` and ``joiner`` (no ``lipsum``, no ``namespace``: a namespace lets a loop
  double a string each iteration). ``include``/``extends``/``import`` are refused.
* ``+ - * / // % **`` are intercepted: strings and lists cannot grow beyond
  :data:`MAX_OUTPUT`, integers beyond :data:`MAX_INT_BITS` bits (``9 ** 9 ** 9`` fails at
  once), and ``%`` string formatting is refused. ``~`` concatenation is rewritten into
  a checked call. Every ``{{ }}`` output, and the whole output, is capped at
  :data:`MAX_OUTPUT` characters.
* Loop iterations and calls share a budget of :data:`MAX_STEPS` per render, so nested
  loops or recursive macros cannot spin for minutes.

Undefined names render as ``""`` and chain (``{{ user_profile.address.city }}`` is
empty when there is no address; ``default(...)`` works); ``None`` renders as ``""``
too. Attribute access on a mapping prefers the key, so a slot named ``items`` is
``slots.items``. A trailing newline is kept (YAML ``|`` blocks end with one), as the
fast path for text without ``{{``/``{%``/``{#`` does. Any failure while rendering
(sandbox violation, undefined arithmetic, a filter raising, a cap) is a
:class:`TemplateError`, never another exception.
"""

from __future__ import annotations

import contextvars
import copy
import datetime
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner
from jinja2.visitor import NodeTransformer

from confab.runtime.flows.language.document import ButtonSpec, ResponseSpec
from confab.runtime.flows.language.masking import mask_value
from confab.runtime.model import Button, CarouselCard, Content, QuickReply

__all__ = [
    "FILTERS",
    "MAX_OUTPUT",
    "MAX_RANGE",
    "MAX_STEPS",
    "MAX_TEMPLATE_LENGTH",
    "STRING_METHODS",
    "TEMPLATE_NAMES",
    "TemplateError",
    "compile_template",
    "is_template",
    "render_response",
    "render_text",
    "select_response",
    "template_references",
]

MAX_TEMPLATE_LENGTH = 10_000  # characters of source
MAX_OUTPUT = 10_000  # characters rendered (and of any string or list built on the way)
MAX_RANGE = 1_000  # items of range()
MAX_STEPS = 10_000  # loop iterations + calls per render
MAX_INT_BITS = 256

STRING_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isdecimal",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    }
)

FILTERS = frozenset(
    {
        "abs",
        "attr",
        "capitalize",
        "count",
        "d",
        "default",
        "dictsort",
        "filesizeformat",
        "first",
        "float",
        "groupby",
        "int",
        "items",
        "join",
        "last",
        "length",
        "list",
        "lower",
        "map",
        "max",
        "min",
        "reject",
        "rejectattr",
        "replace",
        "reverse",
        "round",
        "select",
        "selectattr",
        "sort",
        "string",
        "striptags",
        "sum",
        "title",
        "trim",
        "truncate",
        "unique",
        "upper",
        "urlencode",
        "wordcount",
    }
)

# The names a flow template can use: what the interpreter passes, and the globals below.
TEMPLATE_NAMES = frozenset(
    {
        "slots",
        "variables",
        "user_profile",
        "state",
        "intent",
        "message",
        "channel",
        "language",
        "confidence",
        "message_count",
        "error_count",
        "fallback_count",
        "range",
        "dict",
        "cycler",
        "joiner",
    }
)
DEFAULT_LOCALE = "en"
_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})

_LOOP_GUARD = "_confab_loop"
_CONCAT = "_confab_concat"


class TemplateError(ValueError):
    """A template that does not compile or failed to render; ``lineno`` is 1-based (None: unknown)."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message, lineno)
        self.message = message
        self.lineno = lineno

    def __str__(self) -> str:
        return self.message if self.lineno is None else f"{self.message} (line {self.lineno})"


class _LimitError(SecurityError):
    """A cap was hit while rendering (turned into a TemplateError with the line number)."""


def _limit(message: str) -> NoReturn:
    raise _LimitError(message)


# --------------------------------------------------------------------------- sizes


def _size(value: Any, budget: int = MAX_OUTPUT) -> int:
    """Roughly how many characters ``str(value)`` would take, counting no further than ``budget``.

    Walks containers without building their text, so ``[s] * 10000`` (10,000 references to
    one 10,000-character string: cheap to hold, 100 MB to print) is caught before printing.
    """
    total = 0
    stack = [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            for key, inner in item.items():
                stack.append(key)
                stack.append(inner)
                if len(stack) > budget:
                    break
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= budget:
                stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
    return total


def _check_size(value: Any, what: str) -> Any:
    if _size(value) > MAX_OUTPUT:
        _limit(f"{what} longer than {MAX_OUTPUT} characters")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- budget

# The current render's remaining steps; a list so the guards can count down in place.
_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "confab_template_budget", default=None
)


def _spend(steps: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return  # rendered outside render_text (e.g. a test calling Template.render): loops still capped
    budget[0] -= steps
    if budget[0] < 0:
        _limit(f"template does too much work (more than {MAX_STEPS} loop iterations and calls)")


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wraps every ``{% for %}``'s iterable (see :class:`_Hardener`) to count its iterations."""
    if _BUDGET.get() is None:  # no render budget: at least cap this loop alone
        for count, item in enumerate(iterable):
            if count >= MAX_STEPS:
                _limit(f"loop longer than {MAX_STEPS} iterations")
            yield item
        return
    for item in iterable:
        _spend()
        yield item


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        _limit(f"range() of more than {MAX_RANGE} items")
    return numbers


def _concat(*parts: Any) -> str:
    """``a ~ b``: Jinja's own join, with the result's size checked before it is built."""
    if sum(_size(part) for part in parts) > MAX_OUTPUT:
        _limit(f"text longer than {MAX_OUTPUT} characters")
    return "".join("" if part is None else str(part) for part in parts)  # None: "" as in {{ }}


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` output: None renders empty; huge values are refused before str()."""
    if value is None:
        return ""
    if isinstance(value, Undefined):
        return value
    return _check_size(value, "output")


# --------------------------------------------------------------------------- filters


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Jinja passes the context/environment first to filters marked pass_*; wraps() copies
    # that mark (jinja_pass_arg) so the wrapper is called the same way.
    value_index = 1 if hasattr(func, "jinja_pass_arg") else 0

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        args = _PRECHECKS[name](value_index, args, kwargs) if name in _PRECHECKS else args
        return _check_size(func(*args, **kwargs), f"{name} result")

    return guarded


def _precheck_join(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) <= index:
        return args
    items = list(args[index])  # materialized: may be a one-shot generator (map, select)
    separator = args[index + 1] if len(args) > index + 1 else kwargs.get("d", "")
    if len(items) * _size(separator) + sum(_size(item) for item in items) > MAX_OUTPUT:
        _limit(f"join result longer than {MAX_OUTPUT} characters")
    return (*args[:index], items, *args[index + 1 :])


def _precheck_replace(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) < index + 3:
        return args
    text, old, new = (str(a) for a in args[index : index + 3])
    count: Any = args[index + 3] if len(args) > index + 3 else kwargs.get("count")
    hits = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    if len(text) + hits * max(0, len(new) - len(old)) > MAX_OUTPUT:
        _limit(f"replace result longer than {MAX_OUTPUT} characters")
    return args


def _precheck_value(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    # string/urlencode print their whole input: check it before printing.
    if len(args) > index:
        _check_size(args[index], "text")
    return args


def _precheck_sum(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    # sum(start=[]) over lists of lists concatenates quadratically; numbers only.
    start = args[index + 2] if len(args) > index + 2 else kwargs.get("start", 0)
    if not (isinstance(start, int | float) and not isinstance(start, bool)):
        _limit("sum() adds numbers only")
    return args


_PRECHECKS: dict[str, Callable[[int, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "join": _precheck_join,
    "replace": _precheck_replace,
    "string": _precheck_value,
    "urlencode": _precheck_value,
    "sum": _precheck_sum,
}


# --------------------------------------------------------------------------- flow filters


def _locale(context: Context) -> Locale:
    language = context.get("language") or DEFAULT_LOCALE
    try:
        return Locale.parse(str(language))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT_LOCALE)


@pass_context
def _money(context: Context, amount: Any, currency: str = "EUR", symbol: bool = False) -> str:
    """``24.00 EUR`` (or ``€24.00`` with ``symbol``) in the conversation language's number format."""
    if amount is None or isinstance(amount, Undefined):
        return ""
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        _limit(f"money() of a {type(amount).__name__}")
    try:
        value = float(amount)
    except ValueError:
        _limit(f"money() of {str(amount)[:40]!r}, which is not a number")
    locale = _locale(context)
    if symbol:
        return str(format_currency(value, currency, locale=locale))
    # The locale's grouping and decimal marks, the currency's own number of decimals, the ISO code.
    return str(format_currency(value, currency, format="#,##0.00 ¤¤", locale=locale))


@pass_context
def _date(context: Context, value: Any, format: str = "long") -> str:
    """An ISO date (a date slot's value) in words, in the conversation's language."""
    if value is None or isinstance(value, Undefined) or value == "":
        return ""
    try:
        day = value if isinstance(value, datetime.date) else datetime.date.fromisoformat(str(value))
    except ValueError:
        _limit(f"date() of {str(value)[:40]!r}, which is not an ISO date")
    return str(format_date(day, format, locale=_locale(context)))


def _mask(value: Any) -> str:
    return "" if value is None or isinstance(value, Undefined) else mask_value(str(value))


# --------------------------------------------------------------------------- environment


class _FlowEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr not in STRING_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox would hand out a sandboxed str.format; we refuse format entirely
        # ('{:>999999999}'.format(1) is sandboxed against attribute access, not size).
        return None

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Raise rather than render "": a flow author probing the sandbox should see why.
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            # A key beats a method: slots.items is the slot called "items", not dict.items.
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str | list | tuple):
            _check_size(result, "result")
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            if max(abs(left).bit_length(), 1) * right > MAX_INT_BITS * 2 and abs(left) > 1:
                _limit("number too large")
        elif operator == "*":
            sequence, count = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            repeats = isinstance(sequence, str | list | tuple) and _is_int(count) and count > 0
            if repeats and len(sequence) * count > MAX_OUTPUT:
                _limit(f"result longer than {MAX_OUTPUT}")
        elif operator == "+":
            sequences = isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
            if sequences and len(left) + len(right) > MAX_OUTPUT:
                _limit(f"result longer than {MAX_OUTPUT}")
        elif operator == "%" and isinstance(left, str):
            _limit("'%' string formatting is not allowed in templates")
        result = self.binop_table[operator](left, right)
        if _is_int(result) and result.bit_length() > MAX_INT_BITS:
            _limit("number too large")
        return result


class _Hardener(NodeTransformer):
    """Rewrites a parsed template so loops and ``~`` go through our guards."""

    def __init__(self, environment: _FlowEnvironment) -> None:
        self.environment = environment

    def _call(self, name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
        call = nodes.Call(nodes.Name(name, "load", lineno=lineno), args, [], None, None, lineno=lineno)
        call.set_environment(self.environment)
        return call

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._call(_LOOP_GUARD, [node.iter], node.lineno)  # type: ignore[list-item]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._call(_CONCAT, list(node.nodes), node.lineno)

    def visit_Extends(self, node: nodes.Extends) -> NoReturn:
        raise TemplateError("'extends' is not available in flow templates", node.lineno)

    def visit_Include(self, node: nodes.Include) -> NoReturn:
        raise TemplateError("'include' is not available in flow templates", node.lineno)

    def visit_Import(self, node: nodes.Import) -> NoReturn:
        raise TemplateError("'import' is not available in flow templates", node.lineno)

    def visit_FromImport(self, node: nodes.FromImport) -> NoReturn:
        raise TemplateError("'import' is not available in flow templates", node.lineno)


def _environment() -> _FlowEnvironment:
    env = _FlowEnvironment(
        autoescape=False,  # chat text, not HTML
        undefined=ChainableUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
        cache_size=0,  # compile_template caches; Jinja's cache is for loaders we do not use
    )
    env.filters = {name: _guard_filter(name, JINJA_FILTERS[name]) for name in sorted(FILTERS)}
    env.filters.update(money=_money, date=_date, mask=_mask)
    env.globals = {
        "range": _range,
        "dict": dict,
        "cycler": Cycler,
        "joiner": Joiner,
        _LOOP_GUARD: _loop_guard,
        _CONCAT: _concat,
    }
    return env


_ENV = _environment()


# --------------------------------------------------------------------------- public


def is_template(text: str) -> bool:
    """Whether ``text`` has any Jinja syntax; plain text is used as is."""
    return "{{" in text or "{%" in text or "{#" in text


def compile_template(text: str) -> Template:
    """The compiled template (cached by text); raises :class:`TemplateError` when invalid."""
    if not isinstance(text, str):
        raise TemplateError(f"a template must be a string, not {type(text).__name__}")
    return _compile_cached(text)


@functools.lru_cache(maxsize=2048)
def _compile_cached(text: str) -> Template:
    if len(text) > MAX_TEMPLATE_LENGTH and is_template(text):  # plain text is never compiled to render
        raise TemplateError(f"template longer than {MAX_TEMPLATE_LENGTH} characters", 1)
    try:
        tree = _ENV.parse(text)
        _Hardener(_ENV).visit(tree)
        return _ENV.from_string(tree)
    except TemplateSyntaxError as exc:  # includes unknown filters (TemplateAssertionError)
        raise TemplateError(exc.message or str(exc), exc.lineno) from None
    except RecursionError:  # absurdly nested source
        raise TemplateError("template too deeply nested", 1) from None


def template_references(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The root names a (valid) template reads, and the ``slots.NAME``/``variables.NAME`` among them."""
    if not is_template(text):
        return set(), set()
    tree = _ENV.parse(text)
    roots = set(meta.find_undeclared_variables(tree))
    fields: set[tuple[str, str]] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        owner = node.node
        if not (isinstance(owner, nodes.Name) and owner.name in ("slots", "variables")):
            continue
        if owner.name not in roots:  # a loop variable or {% set %} of that name, not the flow's
            continue
        if isinstance(node, nodes.Getattr):
            if (
                node.attr not in _MAPPING_METHODS
            ):  # slots.items(): the mapping's own, when no slot has the name
                fields.add((owner.name, node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            fields.add((owner.name, node.arg.value))
    return roots, fields


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render one template with ``context``; raises :class:`TemplateError` on any failure."""
    if not is_template(text):
        return text
    template = compile_template(text)
    token = _BUDGET.set([MAX_STEPS])
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise _LimitError(f"output longer than {MAX_OUTPUT} characters")
            parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except Exception as exc:  # a failing template must fail the template, not the turn
        raise TemplateError(_describe(exc), _template_line(exc)) from exc
    finally:
        _BUDGET.reset(token)


def _describe(exc: Exception) -> str:
    if isinstance(exc, _LimitError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "template recursion too deep"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, SecurityError) else f"{type(exc).__name__}: {text}"


def _template_line(exc: BaseException) -> int | None:
    """The template line being rendered when ``exc`` was raised (Jinja rewrites the traceback)."""
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return lineno


def select_response(
    spec: ResponseSpec, *, channel: str = "", variant: str = "", language: str = ""
) -> ResponseSpec:
    """Which response to render; see :func:`render_response`."""
    spec = spec.languages.get(language, spec) if language else spec
    chosen = spec.variants.get(variant, spec) if variant else spec
    if channel:
        override = chosen.channels.get(channel)
        if override is None and chosen is not spec:
            override = spec.channels.get(channel)
        if override is not None:
            chosen = override
    return chosen


def render_response(
    spec: ResponseSpec,
    context: Mapping[str, Any],
    *,
    channel: str = "",
    variant: str = "",
    language: str = "",
) -> Content:
    """Render ``spec`` into the :class:`~runtime.model.Content` to send.

    Selection: the ``language`` first (``spec.languages[language]`` when present, else
    ``spec``; what follows looks only inside that choice), then the A/B ``variant``
    (``spec.variants[variant]`` when present, else ``spec``), then the ``channel``: the
    chosen response's ``channels[channel]``, or, when a variant was chosen and it has none
    for that channel, the base response's ``channels[channel]``, else the chosen response
    itself. Only one level is looked at:
    ``channels``/``variants`` inside an alternative are ignored. A channel override
    replaces the whole response (as ``docs/flows.md`` says), so on that channel the
    variant's wording is not used unless the variant has its own ``channels`` entry.

    Rendered as templates: ``text``, quick reply titles, button titles and urls, card
    titles and subtitles. Payloads, button types and image urls are copied; ``media``
    and ``location`` are deep-copied (the document is shared between conversations).
    The type is ``carousel`` when there are cards, else ``quick_reply`` when there are
    quick replies, else ``text``.

    Raises :class:`TemplateError` when any template fails.
    """
    chosen = select_response(spec, channel=channel, variant=variant, language=language)

    def render(text: str) -> str:
        return render_text(text, context)

    def button(b: ButtonSpec) -> Button:
        return Button(title=render(b.title), type=b.type, payload=b.payload, url=render(b.url))

    quick_replies = [QuickReply(title=render(q.title), payload=q.payload) for q in chosen.quick_replies]
    cards = [
        CarouselCard(
            title=render(c.title),
            subtitle=render(c.subtitle),
            image_url=c.image_url,
            buttons=[button(b) for b in c.buttons],
        )
        for c in chosen.cards
    ]
    kind = "carousel" if cards else "quick_reply" if quick_replies else "text"
    return Content(
        type=kind,
        text=render(chosen.text),
        quick_replies=quick_replies,
        buttons=[button(b) for b in chosen.buttons],
        carousel=cards,
        media=copy.deepcopy(chosen.media) if chosen.media is not None else None,
        location=copy.deepcopy(chosen.location) if chosen.location is not None else None,
    )
