"""``confab flows``: check flow files, look at them, play dialogues and recorded traffic through them.

    confab flows validate PATH... [--config FILE]   files or directories of *.yaml / *.yml
    confab flows show NAME|FILE [--dir DIR ...] [--config FILE] [--tenant T] [--dot]
    confab flows test PATH... [--dir DIR ...] [--config FILE] [--transcript]
                              [--target HOST:PORT [--api-key KEY]]
    confab flows replay --flow NAME[@VERSION] --from STORE [...]   (see tools/flows_replay.py)

Each reads the server config as ``confab serve`` does: ``--config FILE`` over the bundled
defaults, or the defaults alone. Its model providers are the ones a flow's generate steps
may name: a file naming another is an error, as the server says; with none configured (the
defaults), generate steps take their failure route and no name is refused.

``validate`` prints one line per error (``PATH:LINE: MESSAGE``) and per warning
(``PATH:LINE: warning: MESSAGE``), then a summary (which providers the files were checked
against, when a file calls a model); it exits 0 when every file is valid (warnings
allowed), 1 otherwise. ``show`` finds the flow among the bundled flows, the config's flow
directories and the ``--dir`` ones (or reads FILE) and prints its state graph as text, or as
Graphviz DOT with ``--dot`` (``confab flows show pizza --dot | dot -Tsvg``). ``test`` plays
dialogue files (``runtime.flows.authoring.dialogues``) in-process, with the flow directories
and webhooks of the server config, or against a server with ``--target``; it prints
PASS/FAIL/SKIP per dialogue (every failing turn of a failed one), the transcript of each
with ``--transcript`` (masked as the store keeps turns), then a summary; it exits 1 when a
dialogue failed or there was none to play, 0 otherwise (skipped ones too). A file reached
twice (a ``--dir`` that the config names too) is loaded once. ``replay``
(``tools.flows_replay``) replays the conversations a server recorded against a new version
of a flow and reports where it does otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import TextIO

from confab.config import bundled_path
from confab.runtime.config import ConfabConfig, ConfigError, load_config
from confab.runtime.flows import Flow
from confab.runtime.flows.authoring.dialogues import (
    DialogueFileError,
    TurnRunner,
    dialogue_files,
    load_dialogues,
    run_dialogues,
    transcript_lines,
)
from confab.runtime.flows.authoring.runner import FlowRunner
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.flows.language.document import (
    ActionSpec,
    FlowDocument,
    ResponseSpec,
    StateSpec,
    TransitionSpec,
)
from confab.runtime.flows.language.loader import (
    FLOW_SUFFIXES,
    FlowFileError,
    FlowSet,
    FlowWarning,
    load_flow_dirs,
    load_flow_paths,
)
from confab.runtime.webhooks import WebhookTarget
from confab.tools import flows_replay
from confab.tools.dialogue_client import GrpcRunner

# Texts said longer than this are cut in `show` (a graph is for the shape, not the wording);
# conditions never are: two conditions cut to the same prefix would look like one.
SHORT = 48


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``flows`` subcommand group, added to ``confab``'s subcommands."""
    flows = commands.add_parser(
        "flows", help="validate, show and test flows; replay recorded conversations against a new version"
    )
    flow_commands = flows.add_subparsers(dest="flows_command", required=True)
    validate = flow_commands.add_parser("validate", help="check flow files; exit 1 if any is invalid")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="a flow file or a directory of them")
    validate.add_argument(
        "--config",
        metavar="FILE",
        help="the server config whose model providers the flows may name (default: the bundled defaults)",
    )
    show = flow_commands.add_parser("show", help="print a flow's state graph")
    show.add_argument("name", metavar="NAME", help="a flow id (bundled or in a --dir), or a flow file")
    show.add_argument(
        "--dir", action="append", default=[], metavar="DIR", help="more flow files (repeatable)"
    )
    show.add_argument(
        "--config",
        metavar="FILE",
        help="the server config whose flow directories and model providers to use (default: defaults)",
    )
    show.add_argument(
        "--tenant", default="", help="the tenant whose flow NAME to show (default: the shared one)"
    )
    show.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of text")
    test = flow_commands.add_parser("test", help="play scripted dialogues; exit 1 if any fails")
    test.add_argument("paths", nargs="+", metavar="PATH", help="a dialogue file or a directory of them")
    test.add_argument(
        "--dir", action="append", default=[], metavar="DIR", help="flow files besides the bundled ones"
    )
    test.add_argument("--target", metavar="HOST:PORT", help="play against this server instead of in-process")
    test.add_argument("--api-key", help="with --target: the API key to send")
    test.add_argument(
        "--config",
        metavar="FILE",
        help="in-process: the server config whose flow directories and webhooks to use (default: defaults)",
    )
    test.add_argument("--transcript", action="store_true", help="print every dialogue as it went")
    flows_replay.add_parser(flow_commands)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.flows_command == "validate":
        return validate([Path(p) for p in args.paths], out, err, config=args.config)
    if args.flows_command == "replay":
        return flows_replay.run(args, out, err)
    if args.flows_command == "test":
        return play(
            [Path(p) for p in args.paths],
            args.dir,
            out,
            err,
            target=args.target,
            api_key=args.api_key,
            config=args.config,
            transcript=args.transcript,
        )
    return show(args.name, [Path(d) for d in args.dir], args.tenant, args.dot, out, err, config=args.config)


def _server_config(config: str | None, err: TextIO) -> ConfabConfig | None:
    """The server config as ``confab serve`` reads it (``config`` over the bundled defaults, or
    the defaults alone); None, said on ``err``, when it does not load."""
    try:
        return load_config(config)
    except ConfigError as exc:
        print(f"confab: {config}: {exc}", file=err)
        return None


def _providers(cfg: ConfabConfig) -> list[str]:
    return [p.name for p in cfg.models.providers]


def play(
    paths: list[Path],
    flow_dirs: list[str],
    out: TextIO,
    err: TextIO,
    *,
    target: str | None = None,
    api_key: str | None = None,
    config: str | None = None,
    transcript: bool = False,
) -> int:
    """Run every dialogue of every file; print one line per dialogue and a summary."""
    # The server's config (without --config, its defaults, as `confab serve` has them): the
    # same flow directories and webhooks a server would use.
    cfg = _server_config(config, err)
    if cfg is None:
        return 2
    dirs = [*flow_dirs, *cfg.flows.dirs]  # relative to the working directory, as the server reads them
    webhooks = tuple(
        WebhookTarget(w.name, w.url, w.timeout_s, w.retries, tuple(w.headers.items()))
        for w in cfg.flows.webhooks
    )
    # Model providers are checked by name only: a dialogue never calls one.
    flows, problems = load_flows(dirs, providers=_providers(cfg))
    for problem in problems:
        print(f"confab: flow file skipped: {problem}", file=err)
    local = FlowRunner(flows, webhooks=webhooks)
    runner: TurnRunner = local
    remote: GrpcRunner | None = None
    if target:
        remote = GrpcRunner(target, metadata=(("x-api-key", api_key),) if api_key else ())
        runner = remote
    passed = failed = skipped = 0
    try:
        for path in dialogue_files(paths):
            try:
                dialogues = load_dialogues(path)
            except DialogueFileError as exc:
                print(f"{exc}", file=err)
                failed += 1
                continue
            missing = "" if target else _missing_flow(dialogues.flow, dialogues.tenant, local, flows)
            if missing:
                failed += len(dialogues.dialogues)
                print(f"FAIL {path.name}: {missing}", file=out)
                continue
            for result in run_dialogues(dialogues, runner, local.find_flow):
                if result.skipped:
                    skipped += 1
                    print(f"SKIP {path.name}: {result.name} ({result.skipped})", file=out)
                    continue
                if result.passed:
                    passed += 1
                    print(f"PASS {path.name}: {result.name}", file=out)
                else:
                    failed += 1
                    print(f"FAIL {path.name}: {result.name}", file=out)
                    for failure in result.problems:
                        print(f"     {failure}", file=out)
                if transcript:
                    for line in transcript_lines(result):
                        print(line, file=out)
    finally:
        local.close()
        if remote is not None:
            remote.close()
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), file=out)
    # Skipped dialogues are no failure (each was said, with why); finding none to play at all is.
    if not (passed or failed or skipped):
        print(f"confab: no dialogue to play in {', '.join(map(str, paths))}", file=err)
        return 1
    return 1 if failed else 0


def _missing_flow(flow_id: str, tenant: str, runner: FlowRunner, flows: list[Flow]) -> str:
    """Why a dialogue file's flow cannot run in-process ("" when it can): which flows are loaded."""
    if not flow_id or runner.find_flow(flow_id, tenant) is not None:
        return ""
    loaded = ", ".join(sorted({f.flow_id for f in flows})) or "none"
    return f"no flow {flow_id!r} is loaded (loaded: {loaded}); --dir DIR loads the flow files in DIR"


def validate(paths: list[Path], out: TextIO, err: TextIO | None = None, *, config: str | None = None) -> int:
    cfg = _server_config(config, err or sys.stderr)
    if cfg is None:
        return 2
    providers = _providers(cfg)
    flows = load_flow_paths(paths, providers)
    problems: list[FlowFileError | FlowWarning] = [*flows.errors, *flows.warnings]
    problems.sort(key=lambda p: (p.path, p.line))
    for problem in problems:
        print(problem, file=out)
    bad_files = {e.path for e in flows.errors}
    checked = len(flows.files)
    summary = f"{checked} file{'s' * (checked != 1)}: {checked - len(bad_files & set(flows.files))} valid"
    summary += f", {len(flows.errors)} error{'s' * (len(flows.errors) != 1)}"
    summary += f", {len(flows.warnings)} warning{'s' * (len(flows.warnings) != 1)}"
    if flows.skipped:
        skipped = len(flows.skipped)
        what = "YAML file that is" if skipped == 1 else "YAML files that are"
        summary += f"; {skipped} {what} not a flow skipped"
    if not flows.files:
        summary += " (no flow files found)"
    print(summary, file=out)
    if flows.calling_models:
        print(_providers_line(providers, config), file=out)
    return 1 if flows.errors or not flows.files else 0


def _providers_line(providers: list[str], config: str | None) -> str:
    """Which model providers the files' generate steps were checked against, and from where."""
    where = config or "the bundled defaults; --config FILE checks them against a server's"
    if providers:
        return f"model providers ({where}): {', '.join(providers)}"
    return f"model providers ({where}): none, so generate steps take their failure route"


def show(
    name: str,
    dirs: list[Path],
    tenant: str,
    dot: bool,
    out: TextIO,
    err: TextIO,
    *,
    config: str | None = None,
) -> int:
    cfg = _server_config(config, err)
    if cfg is None:
        return 2
    providers = _providers(cfg)
    as_file = Path(name)
    flows: FlowSet
    if as_file.suffix in FLOW_SUFFIXES and as_file.is_file():
        flows = load_flow_paths([as_file], providers)
        candidates = flows.flows
    else:
        # As the server loads them: the bundled flows, then the config's directories.
        flows = load_flow_dirs([bundled_path("flows"), *(Path(d) for d in cfg.flows.dirs), *dirs], providers)
        candidates = [f for f in flows.flows if f.flow_id == name and f.tenant == tenant]
    document = candidates[0] if candidates else None
    if document is None:
        for error in flows.errors:
            print(error, file=err)
        known = sorted({f.flow_id for f in flows.flows})
        if as_file.suffix in FLOW_SUFFIXES:
            print(f"confab: {name} does not load", file=err)
        else:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            owner = f" for tenant {tenant!r}" if tenant else ""
            print(f"confab: no flow {name!r}{owner}{hint} (flows: {', '.join(known) or 'none'})", file=err)
        return 1
    # Other files' errors do not stop this flow from being shown, but should not go unseen.
    for problem in [*flows.errors, *(w for w in flows.warnings if w.path == document.source)]:
        print(problem, file=err)
    print(to_dot(document) if dot else to_text(document), file=out, end="")
    return 0


# --- text ---


def to_text(document: FlowDocument) -> str:
    """The flow as an indented list of states: what each says, collects and where it goes."""
    settings = document.settings
    header = f"flow {document.flow_id} (version {document.version}"
    header += f", tenant {document.tenant})" if document.tenant else ")"
    lines = [header]
    if document.description:
        lines.append(f"  {document.description}")
    if document.source:
        lines.append(f"  from {document.source}")
    fallback = f"{settings.fallback_state} after {settings.max_fallbacks} unmatched in a row"
    lines.append(f"start: {settings.start}; fallback: {fallback if settings.fallback_state else 'stay'}")
    if settings.generative_fallback is not None:
        grounded = (
            f", from {len(document.knowledge)} passages" if settings.generative_fallback.knowledge else ""
        )
        lines.append(f"generative fallback: a language model answers what nothing matched{grounded}")
    if document.routes:
        lines += ["", "routes (tried first, in every state):"]
        lines += _transition_lines(document.routes, "  ")
    lines += ["", "states:"]
    for name, state in document.states.items():
        marks = [
            m
            for m, on in (
                ("start", name == settings.start),
                ("terminal", state.terminal),
                ("confirm", state.confirm),
            )
            if on
        ]
        marker = ">" if name == settings.start else "*" if state.terminal else " "
        lines.append(f"{marker} {name}" + (f" ({', '.join(marks)})" if marks else ""))
        for action in state.on_enter:
            lines.append(f"      on enter: {describe_action(action)}")
        for slot_name in state.collect:
            lines.append(f"      collects: {slot_name}{_slot_detail(document, slot_name)}")
        if state.call is not None:
            lines.append(
                f"      calls flow {state.call.flow} (its outcome in variables.{state.call.store_as})"
            )
        if state.fallback_response is not None:
            lines.append(f"      fallback: say {_describe_response(state.fallback_response)}")
        lines += _transition_lines(state.transitions, "      ")
        for label, to in _correction_edges(state):
            lines.append(f"      {label} -> {to}")
        if state.decide:
            lines.append("      decides at once:")
            lines += _transition_lines(state.decide, "        ")
        lines += [f"      {label} -> {to}" for label, to in _failure_edges(document, state)]
    for experiment in document.experiments.values():
        weights = ", ".join(f"{v} {w:g}" for v, w in experiment.weights.items())
        lines += ["", f"experiment {experiment.name}: {weights}"]
        for variant, swaps in experiment.states.items():
            for original, replacement in swaps.items():
                lines.append(f"  {variant}: {original} is replaced by {replacement}")
        for variant, states in _variant_responses(document, experiment.weights).items():
            lines.append(f"  {variant}: says its own words in {', '.join(states)}")
    return "\n".join(lines) + "\n"


def _correction_edges(state: StateSpec) -> list[tuple[str, str]]:
    """(label, target) of the state's correction route, if it has one."""
    corrections = state.corrections
    if corrections is None:
        return []
    label = f"corrects {', '.join(corrections.slots)}"
    if corrections.actions:
        label += f"  [{'; '.join(describe_action(a) for a in corrections.actions)}]"
    return [(label, corrections.to or state.name)]


def _failure_edges(document: FlowDocument, state: StateSpec) -> list[tuple[str, str]]:
    """(label, target) of where a failing webhook, model call or slot check leads from ``state``."""
    edges = []
    corrections = state.corrections.actions if state.corrections is not None else ()
    transitions = (a for t in (*state.transitions, *state.decide) for a in t.actions)
    for action in [*state.on_enter, *transitions, *corrections]:
        if action.webhook is not None and action.webhook.on_failure:
            edges.append((f"webhook {action.webhook.name} fails", action.webhook.on_failure))
        if action.generate is not None and action.generate.on_failure:
            edges.append(("generate fails", action.generate.on_failure))
    for slot_name in state.collect:
        slot = document.slots.get(slot_name)
        for check in slot.validate if slot else ():
            if check.webhook and check.on_failure:
                edges.append((f"webhook {check.webhook} (checking {slot_name}) fails", check.on_failure))
    return edges


def _responses(document: FlowDocument) -> list[tuple[str, ResponseSpec]]:
    """(state, response) for every response a state can say."""
    found: list[tuple[str, ResponseSpec]] = []
    for name, state in document.states.items():
        actions = [*state.on_enter, *(a for t in (*state.transitions, *state.decide) for a in t.actions)]
        found += [(name, a.say) for a in actions if a.say is not None]
        if state.fallback_response is not None:
            found.append((name, state.fallback_response))
        for slot_name in state.collect:
            slot = document.slots.get(slot_name)
            if slot is not None:
                found += [(name, p) for p in (slot.prompt, *slot.reprompts) if p is not None]
    return found


def _variant_responses(document: FlowDocument, weights: dict[str, float]) -> dict[str, list[str]]:
    """Per variant of an experiment, the states with a response of their own for it."""
    by_variant: dict[str, list[str]] = {}
    for state, response in _responses(document):
        for variant in response.variants:
            if variant in weights and state not in by_variant.setdefault(variant, []):
                by_variant[variant].append(state)
    return by_variant


def _slot_detail(document: FlowDocument, name: str) -> str:
    slot = document.slots.get(name)
    if slot is None:
        return ""
    if slot.on_max_attempts:
        return f" ({slot.type}; after {slot.max_attempts} failures -> {slot.on_max_attempts})"
    return f" ({slot.type})"


def _transition_lines(transitions: tuple[TransitionSpec, ...], indent: str) -> list[str]:
    lines = []
    for transition in transitions:
        line = f"{indent}{describe_condition(transition)} -> {transition.to}"
        if transition.actions:
            line += f"  [{'; '.join(describe_action(a) for a in transition.actions)}]"
        lines.append(line)
    return lines


def describe_condition(transition: TransitionSpec) -> str:
    parts = []
    if transition.intent:
        parts.append(f"intent {transition.intent}")
    if transition.when:
        parts.append(f"when {' '.join(transition.when.split())}")
    return " and ".join(parts) or "always"


def describe_action(action: ActionSpec) -> str:
    kind = action.kind
    if kind == "say" and action.say is not None:
        return f"say {_describe_response(action.say)}"
    if kind == "set":
        return "set " + ", ".join(f"{target} = {_short(value)}" for target, value in action.set.items())
    if kind == "clear":
        return f"clear {', '.join(action.clear)}"
    if kind == "webhook" and action.webhook is not None:
        hook = action.webhook
        return f"webhook {hook.name} -> variables.{hook.store_as}" + (
            f" (fails -> {hook.on_failure})" if hook.on_failure else ""
        )
    if kind == "generate" and action.generate is not None:
        step = action.generate
        line = f'generate "{_short(step.prompt)}"' + (f" -> {step.into}" if step.into else "")
        return line + (f" (fails -> {step.on_failure})" if step.on_failure else "")
    return f'handoff "{_short(action.handoff)}"' if action.handoff else "handoff"


def _describe_response(response: ResponseSpec) -> str:
    said = f'"{_short(response.text)}"' if response.text else "(no text)"
    extras = [
        f"{len(items)} {one if len(items) == 1 else many}"
        for items, one, many in (
            (response.quick_replies, "quick reply", "quick replies"),
            (response.buttons, "button", "buttons"),
            (response.cards, "card", "cards"),
        )
        if items
    ]
    extras += [
        label for value, label in ((response.media, "media"), (response.location, "location")) if value
    ]
    if response.channels:
        extras.append(f"channels: {', '.join(response.channels)}")
    if response.variants:
        extras.append(f"variants: {', '.join(response.variants)}")
    return said + (f" (+{', '.join(extras)})" if extras else "")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHORT else text[: SHORT - 3] + "..."


# --- Graphviz ---


def to_dot(document: FlowDocument) -> str:
    """The flow as a Graphviz digraph: states are boxes, transitions labelled edges.

    Global routes and the fallback come from a pseudo-node "any state"; slots' give-up
    edges and experiments' swaps are dotted and dashed.
    """
    settings = document.settings
    lines = [
        f"digraph {_quote(document.flow_id)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        '  "__start__" [shape=point, label=""];',
        f'  "__start__" -> {_quote(settings.start)};',
    ]
    for name, state in document.states.items():
        rows = [name]
        if state.collect:
            rows.append(f"collects: {', '.join(state.collect)}")
        if state.call is not None:
            rows.append(f"calls flow {state.call.flow}")
        rows += [describe_action(a) for a in state.on_enter]
        attrs = [f"label={_quote(chr(10).join(rows))}"]
        if state.terminal:
            attrs.append("peripheries=2")
        if name == settings.start:
            attrs.append("penwidth=2")
        lines.append(f"  {_quote(name)} [{', '.join(attrs)}];")
    for name, state in document.states.items():
        for transition in state.transitions:
            lines.append(f"  {_quote(name)} -> {_quote(transition.to)} [label={_quote(_edge(transition))}];")
        for choice in state.decide:
            label = _quote("decides: " + _edge(choice))
            lines.append(f"  {_quote(name)} -> {_quote(choice.to)} [label={label}];")
        if state.corrections is not None:
            label = _quote(f"corrects {', '.join(state.corrections.slots)}")
            target = _quote(state.corrections.to or name)
            lines.append(f"  {_quote(name)} -> {target} [label={label}, style=dashed];")
        for label, target in _failure_edges(document, state):
            lines.append(
                f"  {_quote(name)} -> {_quote(target)} [label={_quote(label)}, style=dotted, color=red];"
            )
        for slot_name in state.collect:
            slot = document.slots.get(slot_name)
            if slot is not None and slot.on_max_attempts:
                give_up = _quote(f"{slot_name}: {slot.max_attempts} failures")
                target = _quote(slot.on_max_attempts)
                lines.append(f"  {_quote(name)} -> {target} [label={give_up}, style=dotted];")
    if document.routes or settings.fallback_state:
        lines.append('  "__any__" [label="any state", shape=plaintext];')
        for route in document.routes:
            lines.append(f'  "__any__" -> {_quote(route.to)} [label={_quote(_edge(route))}, style=bold];')
        if settings.fallback_state:
            label = f"{settings.max_fallbacks} unmatched"
            lines.append(
                f'  "__any__" -> {_quote(settings.fallback_state)} [label={_quote(label)}, style=dotted];'
            )
    for experiment in document.experiments.values():
        for variant, swaps in experiment.states.items():
            for original, replacement in swaps.items():
                label = f"{experiment.name}={variant}"
                lines.append(
                    f"  {_quote(original)} -> {_quote(replacement)} "
                    f"[label={_quote(label)}, style=dashed, arrowhead=empty];"
                )
        node = _quote(f"__experiment_{experiment.name}__")
        weights = ", ".join(f"{v} {w:g}" for v, w in experiment.weights.items())
        lines.append(f"  {node} [label={_quote(f'experiment {experiment.name}: {weights}')}, shape=note];")
        for variant, states in _variant_responses(document, experiment.weights).items():
            label = _quote(f"{variant}: own words")
            for state_name in states:
                lines.append(f"  {node} -> {_quote(state_name)} [label={label}, style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge(transition: TransitionSpec) -> str:
    label = describe_condition(transition)
    if transition.actions:
        label += "\n" + "\n".join(describe_action(a) for a in transition.actions)
    return label


def _quote(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines as DOT's \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
