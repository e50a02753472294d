"""The Admin API's answers as text for a terminal: tables, ``key=value`` lists, one line per event.

Values in ``key=value`` form are written the same way everywhere: a text as it is in
tables and state summaries, quoted as JSON in event lines (where a response may hold
spaces and ``=``), numbers as numbers (a whole Struct number as an integer), and lists
and objects as compact JSON. Never Python's repr.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format

from confab.protos import admin_pb2 as admin
from confab.tools.shell.json_view import struct_numbers

RESPONSE_WIDTH = 40  # a turn's response is cut to this in the turns table and in event lines
INPUT_WIDTH = 30  # a turn's input in the turns table
VALUE_WIDTH = 60  # any other single value in a table or a key=value list
ERROR_WIDTH = 40  # why a shard is not healthy, in the shards table
EVENT_TYPE_WIDTH = 10  # event types are padded to this ("activation"), so most lines align


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain text table: columns as wide as their widest cell; ``right`` columns right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    aligned = set(right)

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in aligned else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def cut(text: str, width: int = VALUE_WIDTH) -> str:
    """One line of at most ``width`` characters: a table row must stay a row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def value(item: Any) -> str:
    """One value as text: a string as it is, anything else as compact JSON."""
    item = struct_numbers(item)
    if isinstance(item, str):
        return item
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str)


def quoted(item: Any, width: int = VALUE_WIDTH) -> str:
    """One value for a ``key=value`` event line: a string quoted as JSON, cut to ``width`` first."""
    item = struct_numbers(item)
    if isinstance(item, str):
        return json.dumps(cut(item, width), ensure_ascii=False)
    return cut(value(item), width)


def pairs(mapping: dict[str, Any] | None) -> str:
    if not mapping:
        return "-"
    return " ".join(f"{k}={cut(value(v))}" for k, v in sorted(mapping.items()))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def clock(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cluster_text(cluster: admin.Cluster) -> str:
    rows = [
        (
            s.host or "-",
            s.index,
            s.pid or "-",
            s.generation,
            s.vshards,
            duration(s.uptime_s),
            s.resident_conversations,
            s.mailbox_depth,
            s.waiting_on_webhooks,
            s.commands,
            f"{s.rss_bytes / 1e6:.0f}",
            "yes" if s.healthy else f"NO {cut(s.error, ERROR_WIDTH)}",
        )
        for s in cluster.shards
    ]
    headers = (
        "HOST",
        "SHARD",
        "PID",
        "GEN",
        "VSHARDS",
        "UPTIME",
        "RESIDENT",
        "MAILBOX",
        "WEBHOOKS",
        "COMMANDS",
        "RSS MB",
        "HEALTHY",
    )
    store = cluster.store
    started = clock(cluster.started_at.seconds) if cluster.HasField("started_at") else "-"
    return "\n".join(
        [
            table(headers, rows, right=range(1, 11)),
            f"store: {store.path}  {'ok' if store.ok else 'NOT OK'}  {store.latency_ms:.1f} ms",
            f"version: {cluster.version}  started {started}  shard restarts {cluster.shard_restarts}",
        ]
    )


def hosts_text(cluster: admin.Cluster) -> str:
    """Each host: its state, its heartbeat's age, its edge, and the virtual shards it holds."""
    held: dict[str, list[int]] = {}
    epochs: dict[str, int] = {}
    for owner in cluster.vshards:
        host = owner.shard_id.rpartition("/")[0]
        held.setdefault(host, []).append(owner.vshard)
        epochs[host] = max(epochs.get(host, 0), owner.epoch)
    rows = [
        (
            h.host + (" *" if h.host == cluster.this_host else ""),
            h.state,
            h.incarnation or "-",
            f"{h.heartbeat_age_s:.1f}s",
            h.edge or "-",
            h.shards,
            len(held.get(h.host, [])),
            epochs.get(h.host, "-"),
        )
        for h in cluster.hosts
    ]
    headers = ("HOST", "STATE", "INCARNATION", "HEARTBEAT", "EDGE", "SHARDS", "VSHARDS", "TOP EPOCH")
    unheld = [o.vshard for o in cluster.vshards if not o.shard_id]
    summary = (
        f"{len(cluster.vshards)} virtual shards, all held"
        if not unheld
        else f"{len(unheld)} of {len(cluster.vshards)} virtual shards without a holder now"
    )
    return "\n".join(
        [table(headers, rows, right=(2, 4, 5, 6)), f"{summary}  (* the host whose edge answered)"]
    )


def listing_text(listing: admin.ListConversationsResponse) -> str:
    rows = [
        (
            c.tenant_id,
            c.conversation_id,
            c.current_state or "-",
            f"{c.flow_id}@{c.flow_version}" if c.flow_version else (c.flow_id or "-"),
            c.message_count,
            clock(c.last_activity.seconds) if c.HasField("last_activity") else "-",
            "yes" if c.resident else "",
            "yes" if c.in_handoff else "",
            c.shard,
            f"{c.webhook} {duration(c.webhook_waiting_s)}" if c.webhook else "",
            c.mailbox if c.webhook else "",
        )
        for c in listing.conversations
    ]
    headers = (
        "TENANT",
        "CONVERSATION",
        "STATE",
        "FLOW",
        "MSGS",
        "LAST ACTIVITY",
        "RESIDENT",
        "HANDOFF",
        "SHARD",
        "WAITING ON",
        "MAILBOX",
    )
    more = "; `ls --next` for more" if listing.next_page_token else ""
    return "\n".join([table(headers, rows, right=(4, 8, 10)), f"({plural(len(rows), 'conversation')}{more})"])


def state_of(detail: admin.ConversationDetail) -> dict[str, Any]:
    """The conversation state an inspection carries, whole numbers as integers."""
    state: dict[str, Any] = struct_numbers(json_format.MessageToDict(detail.state))
    return state


def detail_text(detail: admin.ConversationDetail) -> str:
    state = state_of(detail)
    flow = f"{state.get('flow_id') or '-'}@{state.get('flow_version') or '?'}"
    intent = state.get("current_intent") or "-"
    confidence = state.get("intent_confidence")
    known = isinstance(confidence, int | float) and intent != "-"
    previous = state.get("previous_states") or []
    lines = [
        f"{detail.tenant_id}/{detail.conversation_id}  shard {detail.shard}"
        f"  {'resident' if detail.resident else 'stored (not resident)'}",
        f"state: {state.get('current_state') or '(new)'}  flow {flow}"
        f"  messages {value(state.get('message_count', 0))}  errors {value(state.get('error_count', 0))}",
        f"intent: {intent}" + (f" ({confidence:.2f})" if known else ""),
        f"previous states: {' > '.join(map(str, previous)) if previous else '-'}",
        f"created {clock(state.get('created_at'))}  last activity {clock(state.get('last_activity'))}",
        f"slots: {pairs(state.get('slots'))}",
        f"variables: {pairs(state.get('variables'))}",
        f"flow memory: {pairs(state.get('flow_memory'))}",
        f"webhook in flight: {detail.webhook_in_flight or '-'}"
        + (f" (waiting {duration(detail.webhook_waiting_s)})" if detail.webhook_in_flight else "")
        + ("  (new: its first turn waits on it; nothing is stored yet)" if detail.first_turn_pending else ""),
        f"mailbox: {detail.mailbox_depth} queued",
    ]
    if detail.queued:
        queued = [(q.message_id, q.kind, cut(q.text)) for q in detail.queued]
        lines.append(table(("MESSAGE ID", "KIND", "TEXT"), queued))
    if not detail.last_turns:
        lines.append("last turns: none")
        return "\n".join(lines)
    lines.append(f"last {plural(len(detail.last_turns), 'turn')}:")
    rows = [
        (
            t.seq,
            cut(t.input, INPUT_WIDTH) or ("" if t.kind == "turn" else f"({t.kind})"),
            t.intent or "-",
            f"{t.state_before or '(new)'} -> {t.state_after or '-'}",
            cut(t.response, RESPONSE_WIDTH),
            f"{t.duration_ms:.0f}",
        )
        for t in detail.last_turns
    ]
    lines.append(table(("SEQ", "INPUT", "INTENT", "STATE", "RESPONSE", "MS"), rows, right=(0, 5)))
    return "\n".join(lines)


def event_line(event: admin.Event) -> str:
    """One event on one line: time, type, conversation, then its data (the known fields first)."""
    at = (
        datetime.datetime.fromtimestamp(event.at.seconds + event.at.nanos / 1e9).strftime("%H:%M:%S.%f")[:-3]
        if event.HasField("at")
        else "--:--:--"
    )
    data: dict[str, Any] = struct_numbers(json_format.MessageToDict(event.data))
    parts = [
        at,
        event.type.ljust(EVENT_TYPE_WIDTH),
        f"{event.tenant_id}/{event.conversation_id}",
        f"shard {event.shard}",
    ]
    before, after = data.pop("state_before", None), data.pop("state_after", None)
    if before is not None or after is not None:
        parts.append(f"{before or '(new)'} -> {after or '-'}")
    for key in ("input", "intent", "response"):
        if key in data:
            parts.append(f"{key}={quoted(data.pop(key), RESPONSE_WIDTH)}")
    parts += [f"{k}={quoted(v, RESPONSE_WIDTH)}" for k, v in sorted(data.items())]
    return "  ".join(parts)


def action_text(result: admin.ActionResult) -> str:
    lines = [f"{'ok' if result.ok else 'NOT DONE'}: {result.message}"]
    details: dict[str, Any] = struct_numbers(json_format.MessageToDict(result.details))
    for key, item in sorted(details.items()):
        shown = ", ".join(map(value, item)) if isinstance(item, list) else value(item)
        lines.append(f"  {key}: {shown or '-'}")
    return "\n".join(lines)
