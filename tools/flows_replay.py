"""``confab flows replay``: what a new version of a flow would have done with real, recorded traffic.

    confab flows replay --flow NAME[@VERSION] --from STORE [--dir DIR ...] [--config FILE]
                        [--tenant T] [--since 24h|7d|2026-12-01] [--limit N]
                        [--webhooks FILE] [--json]

The flow ``NAME`` is taken from the ``--dir`` directories (the new version), else from the
flows a server with ``--config`` runs (the bundled ones, the config's ``flows.dirs``); a
``--dir`` file replaces the server's file of the same flow id and tenant. ``@VERSION``, when
given, must be its version. ``STORE`` is the SQLite file a server writes
(``data_dir``/``store.path``, e.g. ``var/confab.sqlite3``); it can be read while the server
runs. The conversations with a turn recorded since ``--since`` (default: all) that ran
``NAME`` are replayed, in key order, up to ``--limit``; ``--webhooks FILE`` gives answers
(``name: {json}`` or ``name: {fail: reason}``) for webhook calls the recording cannot answer,
which otherwise fail. ``runtime.flows.authoring.replay`` says how a replay runs.

It prints each conversation that diverges (the first turn that differs, what each version
did there, how many later turns differ), fails or is skipped, then a summary with the
states where divergences begin; ``--json`` prints it all, every conversation included.
Exit status: 0 when no conversation diverges or fails, 1 when one does, 2 when the replay
cannot run (no such flow, no store, a ``--dir`` that is not a directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from confab.runtime.config import ConfigError, load_config
from confab.runtime.flows import GENERATE, Flow, builtin_flows
from confab.runtime.flows.authoring.replay import (
    FAILED,
    ConversationReplay,
    Divergence,
    Replayer,
    ReplayError,
    ReplaySummary,
    TurnOutcome,
    choose_flow,
    summarize,
)
from confab.runtime.flows.execution.catalog import bundled_flow_dir, declarative_flows, flow_set_over
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.store import StoreError
from confab.tools.replay_store import UnreadableTurn, open_history, read_conversation, recorded_keys

DEFAULT_LIMIT = 1000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TARGET = re.compile(r"^[\w.\-\[\]:]+:\d+$")  # HOST:PORT


def add_parser(flow_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``replay``, added to the ``flows`` subcommands."""
    replay = flow_commands.add_parser(
        "replay", help="replay recorded conversations against a new version of a flow; exit 1 if any diverges"
    )
    replay.add_argument("--flow", required=True, metavar="NAME[@VERSION]", help="the flow to replay against")
    replay.add_argument(
        "--from", dest="store", required=True, metavar="STORE", help="the store file a server writes"
    )
    replay.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="DIR",
        help="flow files of the new version, in place of the server's (repeatable)",
    )
    replay.add_argument(
        "--config", metavar="FILE", help="the server config: its flow directories and default flow"
    )
    replay.add_argument("--tenant", default="", help="only this tenant's conversations (and its own flow)")
    replay.add_argument(
        "--since",
        type=since_time,
        default=0.0,
        metavar="WHEN",
        help="only conversations with a turn since then: a duration back (30m, 24h, 7d) or an ISO date",
    )
    replay.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"conversations at most (default {DEFAULT_LIMIT})"
    )
    replay.add_argument(
        "--webhooks", metavar="FILE", help="answers for webhook calls the recording has none for (YAML)"
    )
    replay.add_argument("--json", action="store_true", help="print the whole report as JSON")


def since_time(text: str) -> float:
    """``--since``: a duration back from now (``24h``, ``7d``) or an ISO date or date-time (local time)."""
    duration = _DURATION.fullmatch(text.strip())
    if duration:
        return time.time() - float(duration.group(1)) * _SECONDS[duration.group(2)]
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a duration (30m, 24h, 7d, 2w) or an ISO date (2026-12-01)"
        ) from None


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    name, _, version = args.flow.partition("@")
    if args.limit < 1:
        print("confab: --limit must be at least 1", file=err)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"confab: {args.config}: {exc}", file=err)
        return 2
    # A --dir that is not there would replay the version the server runs: a false pass.
    for directory in args.dir:
        if not Path(directory).is_dir():
            what = "not a directory" if Path(directory).exists() else "no such directory"
            print(f"confab: --dir {directory}: {what}", file=err)
            return 2
    flow_set = flow_set_over(args.dir, [bundled_flow_dir(), *config.flows.dirs])
    for problem in flow_set.errors:
        print(f"confab: flow file skipped: {problem}", file=err)
    try:
        chosen = choose_flow(flow_set.flows, name, version, args.tenant)
        answers = _webhook_answers(args.webhooks)
    except ReplayError as exc:
        print(f"confab: {exc}", file=err)
        return 2
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    new = next(f for f in flows if isinstance(f, DeclarativeFlow) and f.document is chosen)
    try:
        store = open_history(Path(args.store))
    except StoreError as exc:
        print(f"confab: {exc}{_target_hint(args.store)}", file=err)
        return 2
    # A tenant's own flow is only ever run by that tenant's conversations (the report says so too).
    args.tenant = chosen.tenant or args.tenant
    replayer = Replayer(flows, new, default_flow=config.flows.default, answers=answers)
    replays: list[ConversationReplay] = []
    more = False
    try:
        for key in recorded_keys(store, args.tenant, args.since):
            unreadable = None
            try:
                conversation = read_conversation(store, key)
            except UnreadableTurn as exc:  # which flow it ran cannot be told: reported
                unreadable = ConversationReplay(key, error=str(exc))
            else:
                if not replayer.concerns(conversation):
                    continue
            if len(replays) == args.limit:
                more = True
                break
            replays.append(unreadable or replayer.replay(conversation))
    finally:
        store.close()
    summary = summarize(new, replays)
    source = chosen.source
    if args.json:
        print(json.dumps(_report(summary, replays, source, args, more), indent=2, default=str), file=out)
    else:
        _print_report(summary, replays, source, args, more, out)
    return 1 if summary.diverging or summary.errors else 0


def _webhook_answers(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReplayError(f"{path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReplayError(f"{path}: expected a mapping of webhook names to answers")
    return {str(k): v for k, v in data.items()}


def _target_hint(store: str) -> str:
    if Path(store).exists() or not _TARGET.match(store):
        return ""
    return (
        f" ({store} looks like a server address: a server serves no history over its API;"
        " give its store file instead, data_dir/store.path, e.g. var/confab.sqlite3,"
        " which can be read while it runs)"
    )


# --- text ---


def _print_report(
    summary: ReplaySummary,
    replays: list[ConversationReplay],
    source: str,
    args: argparse.Namespace,
    more: bool,
    out: TextIO,
) -> None:
    scope = f" of tenant {args.tenant!r}" if args.tenant else ""
    since = f" since {_when(args.since)}" if args.since else ""
    print(
        f"replay of {summary.flow}@{summary.version}"
        + (f" ({source})" if source else "")
        + f" against the conversations{scope} recorded in {args.store}{since}",
        file=out,
    )
    for replay in replays:
        outcome = replay.outcome
        if outcome == "same" and not replay.unrecorded_calls:
            continue
        print(f"{outcome.upper():<9}{replay.key}" + _headline(replay), file=out)
        for line in _details(replay, summary.flow):
            print(f"         {line}", file=out)
    if not replays:
        print(
            f"no recorded conversation ran {summary.flow}: is history on where they ran"
            " (engine.history_retention_s)?",
            file=out,
        )
        return
    counts = f"{summary.same} same, {summary.diverging} diverge"
    counts += f", {summary.errors} failed" if summary.errors else ""
    replayed = _count(summary.conversations, "conversation")
    line = f"{replayed} replayed ({_count(summary.turns, 'turn')}): {counts}"
    line += f"; {summary.skipped} skipped" if summary.skipped else ""
    line += f" (stopped at --limit {args.limit}: more are recorded)" if more else ""
    print(line, file=out)
    if summary.by_state:
        states = ", ".join(f"{_state_name(s)} {n}" for s, n in summary.by_state.items())
        print(f"first divergences by state: {states}", file=out)
    if summary.masked:
        print(
            f"{summary.masked} of them at a message masked when recorded (the new version read the masks)",
            file=out,
        )
    if summary.unrecorded_calls:
        calls = [c for r in replays for c in r.unrecorded_calls]
        given = sum(c.answered == "given" for c in calls)
        models = sum(c.kind == GENERATE for c in calls)
        kinds = [
            _count(n, what)
            for n, what in ((len(calls) - models, "webhook call"), (models, "model call"))
            if n
        ]
        print(
            f"{' and '.join(kinds)} had no recorded answer:"
            f" {given} answered as given, {summary.unrecorded_calls - given} as failures",
            file=out,
        )


def _headline(replay: ConversationReplay) -> str:
    if replay.outcome == "same":
        return f"  {_count(replay.turns, 'turn')}"
    if replay.skipped:
        return f"  {replay.skipped}"
    if replay.error:
        return f"  {replay.error}"
    first = replay.first
    assert first is not None
    on = f', on "{_one_line(first.sent)}"' if first.sent else ""
    if FAILED in first.differs:
        what = "the new version fails it"
    else:
        what = "differs in " + " and ".join(", ".join(first.differs).rsplit(", ", 1))
    return f"  turn {first.seq} in {_state_name(first.at_state)}{on}: {what}"


def _details(replay: ConversationReplay, flow_id: str) -> list[str]:
    """Under a conversation's line: its divergence (when it diverges), then its unanswered calls."""
    lines = []
    first = replay.first
    if first is not None and replay.outcome == "diverges":
        lines += [
            f"recorded  {_outcome(first.recorded, flow_id)}",
            f"replayed  {_outcome(first.replayed, flow_id)}",
        ]
        for name in first.changed_slots:
            was, now = first.recorded.slots.get(name), first.replayed.slots.get(name)
            lines.append(f"slot {name}: {_value(was)} -> {_value(now)}")
        if replay.later:
            lines.append(f"+ {_count(replay.later, 'later turn')} differ{'s' * (replay.later == 1)}")
        if replay.stopped:
            lines.append(f"! {replay.stopped}")
        if first.masked:
            lines.append("! the message was masked when recorded: the new version read the masks")
    for call in replay.unrecorded_calls:
        how = "answered as given" if call.answered == "given" else "answered as a failure"
        lines.append(f"! turn {call.seq}: {call.label} has no recorded answer, {how}")
    return lines


def _outcome(outcome: TurnOutcome, flow_id: str) -> str:
    if outcome.failed:
        where = f" (stays in {_state_name(outcome.state)})" if outcome.state else ""
        return f"fails: {outcome.failed}{where}"
    state = outcome.state if outcome.flow == flow_id else f"{outcome.state} (flow {outcome.flow})"
    said = f'  "{_one_line(outcome.text)}"' if outcome.text else "  (says nothing)"
    choices = "".join(f" [{c}]" for c in outcome.choices)
    return f"{state}{said}{choices}"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' * (n != 1)}"


def _state_name(state: str) -> str:
    return state or "(new session)"


def _one_line(text: str) -> str:
    return " / ".join(text.splitlines())


def _value(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).isoformat(sep=" ", timespec="minutes")


# --- JSON ---


def _report(
    summary: ReplaySummary,
    replays: list[ConversationReplay],
    source: str,
    args: argparse.Namespace,
    more: bool,
) -> dict[str, Any]:
    return {
        "flow": summary.flow,
        "version": summary.version,
        "source": source,
        "store": args.store,
        "tenant": args.tenant,
        "since": args.since or None,
        "limit_reached": more,
        "summary": dataclasses.asdict(summary),
        "conversations": [_conversation(r) for r in replays],
    }


def _conversation(replay: ConversationReplay) -> dict[str, Any]:
    return {
        "tenant_id": replay.key.tenant_id,
        "conversation_id": replay.key.conversation_id,
        "outcome": replay.outcome,
        "turns": replay.turns,
        "first_divergence": _divergence(replay.first) if replay.first is not None else None,
        "later_divergences": replay.later,
        "unrecorded_webhook_calls": [dataclasses.asdict(c) for c in replay.unrecorded_calls],
        "stopped": replay.stopped,
        "skipped": replay.skipped,
        "error": replay.error,
    }


def _divergence(divergence: Divergence) -> dict[str, Any]:
    found = dataclasses.asdict(divergence)
    found["turn"] = found.pop("seq")
    return found
