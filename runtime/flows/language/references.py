"""The names a flow file uses, checked once the whole file is read (a state may come after its use).

Errors: a state, intent, slot, A/B variant or language that is not declared; a name
inside an expression or a template that does not exist: ``slots.NAME`` for a slot not
declared, ``variables.NAME`` for a variable that no ``set``, webhook ``store_as`` or sub-flow
call writes, an unknown root name in a template (``{{ slot.size }}``), ``value`` outside a
slot's ``validate``. Each with "did you mean" when a declared name is close.

Warnings (the flow still loads): a state unreachable from ``start`` (a state an experiment
swaps in counts as reachable when the state it replaces is), and a state that says
nothing on entry and then waits, which is almost always a routing state that should
``decide``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from confab.runtime.flows.language.document import (
    ActionSpec,
    ExperimentSpec,
    FlowDocument,
    FlowSettings,
    IntentSpec,
    SlotSpec,
    StateSpec,
)
from confab.runtime.flows.language.expressions import parse_expression
from confab.runtime.flows.language.templates import TEMPLATE_NAMES, template_references
from confab.runtime.flows.language.yaml_nodes import FlowWarning, Ref, a_kind, listing, suggest

if TYPE_CHECKING:
    from confab.runtime.flows.language.schema import FlowReader


def resolve(
    reader: FlowReader,
    states: dict[str, StateSpec],
    intents: dict[str, IntentSpec],
    slots: dict[str, SlotSpec],
    experiments: dict[str, ExperimentSpec],
    settings: FlowSettings | None,
) -> None:
    """Report every reference to a state, intent, slot, variant or language that is not declared."""
    kinds: list[tuple[str, list[Ref], Sequence[str], str]] = [
        ("state", reader.state_refs, list(states), "states"),
        ("intent", reader.intent_refs, list(intents), "intents"),
        ("slot", reader.slot_refs, list(slots), "slots"),
    ]
    for kind, refs, known, section in kinds:
        for ref in refs:
            if ref.name not in known:
                # A near miss is most likely a typo; otherwise it was never declared.
                hint = suggest(ref.name, known) or f"; declare it under {section}:{listing(known)}"
                reader.error(ref.node, f"{ref.where}: unknown {kind} {ref.name!r}{hint}")
    variants = sorted({v for spec in experiments.values() for v in spec.weights})
    for ref in reader.variant_refs:
        if ref.name not in variants:
            hint = suggest(ref.name, variants) or listing(variants)
            reader.error(ref.node, f"{ref.where}: {ref.name!r} is not a variant of any experiment{hint}")
    languages = list(settings.languages) if settings is not None else []
    for ref in reader.language_refs:
        if ref.name not in languages:
            hint = suggest(ref.name, languages) or (
                f" (settings.languages: {', '.join(languages)})"
                if languages
                else "; list the flow's languages under settings.languages"
            )
            reader.error(ref.node, f"{ref.where}: {ref.name!r} is not one of the flow's languages{hint}")


def check_document(reader: FlowReader, document: FlowDocument) -> None:
    """The checks that need the whole document: names inside expressions and templates, then
    (when there are no errors, which would make targets look unreachable) the warnings."""
    check_expression_names(reader, document)
    check_template_names(reader, document)
    check_corrections(reader, document)
    if not reader.errors:
        check_reachable(reader, document)
        check_silent_waits(reader, document)


def _field_problem(root: str, name: str, document: FlowDocument, variables: Iterable[str]) -> str:
    """Why ``root.name`` names nothing, or "" when it is fine."""
    if root == "slots" and name not in document.slots:
        known = list(document.slots)
        hint = suggest(name, known) or f"; declare it under slots:{listing(known)}"
        return f"unknown slot {name!r}{hint}"
    if root == "variables" and name not in variables:
        known = sorted(variables)
        hint = suggest(name, known) or (
            f" (set: {', '.join(known)})" if known else " (no action or webhook sets any variable)"
        )
        setters = "a `set`, a webhook's store_as, a generate's into or a call"
        return f"variables.{name} is never set by {setters}{hint}"
    return ""


def check_expression_names(reader: FlowReader, document: FlowDocument) -> None:
    for embedded in reader.expressions:
        expression = parse_expression(embedded.text)  # parsed when read: cached, and valid
        for path in sorted(expression.paths):
            root, _, rest = path.partition(".")
            if root == "value" and not embedded.value_allowed:
                reader.error(
                    embedded.node,
                    f"{embedded.where}: `value` (the value being checked) exists only in a slot's validate",
                )
                continue
            problem = _field_problem(root, rest.split(".")[0], document, reader.variables_set) if rest else ""
            if problem:
                reader.error(embedded.node, f"{embedded.where}: {problem}")


def check_template_names(reader: FlowReader, document: FlowDocument) -> None:
    for embedded in reader.templates:
        roots, fields = template_references(embedded.text)
        for root in sorted(roots - TEMPLATE_NAMES):
            reader.error(
                embedded.node,
                f"{embedded.where}: unknown name {root!r} in the template{suggest(root, TEMPLATE_NAMES)} "
                f"(names: {', '.join(sorted(TEMPLATE_NAMES))})",
            )
        for root, name in sorted(fields):
            problem = _field_problem(root, name, document, reader.variables_set)
            if problem:
                reader.error(embedded.node, f"{embedded.where}: {problem}")


# Slot types read only as the answer to their own prompt: a correction, which no prompt asked
# for, can never find a value of theirs.
_ANSWER_ONLY_TYPES = ("text", "boolean")


def check_corrections(reader: FlowReader, document: FlowDocument) -> None:
    for spec, node, where in reader.corrections:
        for name in spec.slots:
            slot = document.slots.get(name)
            if slot is not None and slot.type in _ANSWER_ONLY_TYPES:
                reader.error(
                    node,
                    f"{where}: {name!r} is {a_kind(slot.type)} slot, read only as the answer to its own "
                    "prompt, so a correction cannot find its value",
                )


def check_reachable(reader: FlowReader, document: FlowDocument) -> None:
    """Warn about states no conversation can enter (experiments' swaps aside)."""
    states = document.states
    swaps: dict[str, set[str]] = {}
    for experiment in document.experiments.values():
        for swap in experiment.states.values():
            for original, replacement in swap.items():
                swaps.setdefault(original, set()).add(replacement)
    # Global routes and the fallback lead out of any state, so they count as reachable from start.
    todo = [document.settings.start, document.settings.fallback_state]
    todo += [route.to for route in document.routes]
    todo += [failure_route(a) for route in document.routes for a in route.actions]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name in reached or name not in states:
            continue
        reached.add(name)
        todo += successors(document, states[name])
        todo += swaps.get(name, ())
    for name in states:
        if name not in reached:
            reader.warnings.append(
                FlowWarning(
                    reader.path,
                    reader.state_lines.get(name, 0),
                    f"states.{name}: unreachable from the start state {document.settings.start!r}",
                )
            )


def successors(document: FlowDocument, state: StateSpec) -> list[str]:
    """Every state ``state`` can lead to: transitions, decisions, give-ups and failure routes."""
    found = [t.to for t in (*state.transitions, *state.decide)]
    corrections = state.corrections
    if corrections is not None:
        found.append(corrections.to)
        found += [a.webhook.on_failure for a in corrections.actions if a.webhook is not None]
    for slot_name in state.collect:
        slot = document.slots.get(slot_name)
        if slot is not None:
            found.append(slot.on_max_attempts)
            found += [check.on_failure for check in slot.validate]
    actions = [*state.on_enter, *(a for t in (*state.transitions, *state.decide) for a in t.actions)]
    found += [failure_route(a) for a in actions]
    return [name for name in found if name]


def failure_route(action: ActionSpec) -> str:
    """Where ``action`` leads when it fails (a webhook, a model call), or ""."""
    if action.webhook is not None:
        return action.webhook.on_failure
    if action.generate is not None:
        return action.generate.on_failure
    return ""


def _speaks(action: ActionSpec) -> bool:
    """Whether ``action`` answers the user: a response, a handoff, or a model's answer said."""
    generated = action.generate is not None and action.generate.says
    return action.say is not None or action.handoff is not None or generated


def check_silent_waits(reader: FlowReader, document: FlowDocument) -> None:
    """A state that says nothing on entry, collects nothing and waits for a message whose words none
    of its transitions looks at: a routing state that answers the turn with nothing."""
    for name, state in document.states.items():
        if state.terminal or state.collect or state.decide or state.call:
            continue
        if any(_speaks(action) for action in state.on_enter):
            continue
        if not state.transitions or any(t.intent for t in state.transitions):
            continue  # a dead end, or a question whose words a transition waits for
        reader.warnings.append(
            FlowWarning(
                reader.path,
                reader.state_lines.get(name, 0),
                f"states.{name}: says nothing when entered and waits for the next message before "
                "its transitions are tried; to route at once, write them under decide:",
            )
        )
