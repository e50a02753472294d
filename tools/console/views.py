"""What the console's pages show, made from the server's answers: plain values, no I/O.

The handlers (``app``) ask the server and hand these to the templates; everything here is
a function of its arguments, so the unit tests check it without a server.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from confab.protos import admin_pb2 as admin
from confab.protos import mcp_engine_pb2 as pb

SERVER_MASK = "****"  # what the server shows for a slot its flow declares sensitive
SORTS = {
    "stuck": "stuck first",
    "idle": "longest idle",
    "recent": "most recent",
    "messages": "most messages",
    "id": "tenant and id",
}


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def ago(seconds: float) -> str:
    """A duration as a person reads it: 4.2 s, 3 min, 2 h 5 min, 3 d."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        hours, minutes = divmod(int(seconds // 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{int(seconds // 86400)} d"


def stamp_text(seconds: float) -> str:
    if seconds <= 0:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def seconds_of(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


# Conversations ---------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    tenant: str
    conversation: str
    state: str
    flow: str
    version: str
    messages: int
    last_activity: float  # epoch seconds; 0 unknown
    resident: bool
    in_handoff: bool
    shard: int
    webhook: str = ""
    webhook_waiting_s: float = 0.0
    mailbox: int = 0
    why_stuck: list[str] = field(default_factory=list)

    @property
    def idle_s(self) -> float:
        return time.time() - self.last_activity if self.last_activity else 0.0

    @property
    def stuck(self) -> bool:
        return bool(self.why_stuck)

    @property
    def score(self) -> float:
        """How much it needs a person's look: a webhook waited on, a long mailbox, a handoff."""
        score = 0.0
        if self.webhook:
            score += 1000.0 + self.webhook_waiting_s
        score += 100.0 * self.mailbox
        if self.in_handoff:
            score += 10.0
        return score


def row(
    summary: admin.ConversationSummary, webhook: str = "", waiting_s: float = 0.0, mailbox: int = 0
) -> Row:
    webhook = summary.webhook or webhook
    waiting_s = summary.webhook_waiting_s or waiting_s
    mailbox = summary.mailbox or mailbox
    why = []
    if webhook:
        why.append(f"webhook {webhook}" + (f" for {ago(waiting_s)}" if waiting_s else " in flight"))
    if mailbox:
        why.append(f"{mailbox} queued")
    if summary.in_handoff:
        why.append("handed off")
    return Row(
        tenant=summary.tenant_id,
        conversation=summary.conversation_id,
        state=summary.current_state,
        flow=summary.flow_id,
        version=summary.flow_version,
        messages=summary.message_count,
        last_activity=seconds_of(summary.last_activity) if summary.HasField("last_activity") else 0.0,
        resident=summary.resident,
        in_handoff=summary.in_handoff,
        shard=summary.shard,
        webhook=webhook,
        webhook_waiting_s=waiting_s,
        mailbox=mailbox,
        why_stuck=why,
    )


def sort_rows(rows: list[Row], how: str) -> list[Row]:
    by_id = sorted(rows, key=lambda r: (r.tenant, r.conversation))
    if how == "stuck":
        return sorted(by_id, key=lambda r: -r.score)  # stable: equals stay in id order
    if how == "idle":
        return sorted(by_id, key=lambda r: r.last_activity or math.inf)
    if how == "recent":
        return sorted(by_id, key=lambda r: -r.last_activity)
    if how == "messages":
        return sorted(by_id, key=lambda r: -r.messages)
    return by_id


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    number: int  # 1-based
    pages: int
    total: int


def page_of(rows: list[Row], number: int, size: int) -> Page:
    pages = max(1, math.ceil(len(rows) / size))
    number = min(max(1, number), pages)
    return Page(rows[(number - 1) * size : number * size], number, pages, len(rows))


# One conversation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    value: str
    masked_by_flow: bool


def slots_of(state: dict[str, Any]) -> list[Slot]:
    """The conversation's slots, for a table that hides each value until a person asks."""
    out = []
    for name, value in sorted((state.get("slots") or {}).items()):
        text = value if isinstance(value, str) else json_format_value(value)
        out.append(Slot(name, text, text == SERVER_MASK))
    return out


def json_format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class Turn:
    seq: int
    kind: str
    input: str
    response: str
    intent: str
    state_before: str
    state_after: str
    duration_ms: float
    at: str
    actions: list[str]


def transcript(detail: admin.ConversationDetail) -> list[Turn]:
    return [
        Turn(
            seq=t.seq,
            kind=t.kind,
            input=t.input,
            response=t.response,
            intent=t.intent,
            state_before=t.state_before,
            state_after=t.state_after,
            duration_ms=t.duration_ms,
            at=stamp_text(seconds_of(t.at)) if t.HasField("at") else "",
            actions=list(t.actions),
        )
        for t in detail.last_turns
    ]


def known_states(state: dict[str, Any], turns: Iterable[Turn]) -> list[str]:
    """The flow's states this conversation has shown (for the force-state field's suggestions)."""
    seen: set[str] = set()
    for name in [state.get("current_state"), *(state.get("previous_states") or [])]:
        if isinstance(name, str) and name:
            seen.add(name)
    for t in turns:
        seen.update(s for s in (t.state_before, t.state_after) if s)
    return sorted(seen)


def in_handoff(state: dict[str, Any]) -> bool:
    memory = state.get("flow_memory") or {}
    return bool(memory.get("handoff")) if isinstance(memory, dict) else False


# Events ------------------------------------------------------------------------------


def event_json(event: admin.Event) -> dict[str, Any]:
    data = to_dict(event.data)
    at = seconds_of(event.at) if event.HasField("at") else time.time()
    return {
        "type": event.type,
        "tenant": event.tenant_id,
        "conversation": event.conversation_id,
        "shard": event.shard,
        "at": time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}",
        "summary": event_summary(event.type, data),
    }


def event_summary(kind: str, data: dict[str, Any]) -> str:
    if kind == "turn":
        parts = [f"state {data.get('state', '')}"]
        if data.get("intent"):
            parts.append(f"intent {data['intent']}")
        if data.get("duration_ms") is not None:
            parts.append(f"{float(data['duration_ms']):.1f} ms")
        if data.get("actions"):
            parts.append("actions " + ", ".join(str(a) for a in data["actions"]))
        return "; ".join(parts)
    if kind == "transition":
        return f"{data.get('from', '')} → {data.get('to', '')}"
    if kind == "error":
        return str(data.get("reason", ""))
    return ", ".join(f"{k} {v}" for k, v in sorted(data.items()) if k != "message_id")


# Metrics -----------------------------------------------------------------------------


def rates(response: pb.GetMetricsResponse, step_s: float, start: float, end: float) -> dict[str, Any]:
    """Calls and failed calls per second, and the slowest method's p99, for every interval of
    ``step_s`` from ``start`` to ``end`` (none missing, so a quiet server draws a flat line):
    uPlot's columns, times first."""
    calls: dict[float, float] = defaultdict(float)
    failed: dict[float, float] = defaultdict(float)
    p99: dict[float, float] = defaultdict(float)
    in_flight = 0.0
    for metric in response.metrics:
        for point in metric.points:
            at = math.floor(seconds_of(point.timestamp) / step_s) * step_s
            code = dict(point.attributes.items()).get("code", "OK")
            if metric.name == "rpc.requests":
                calls[at] += point.value / step_s
                if code != "OK":
                    failed[at] += point.value / step_s
            elif metric.name == "rpc.latency.p99_ms":
                p99[at] = max(p99[at], point.value)
            elif metric.name == "rpc.in_flight":
                in_flight += point.value
    first = math.floor(start / step_s) * step_s
    times = [first + k * step_s for k in range(int((end - first) // step_s) + 1)]
    last_full = times[-2] if len(times) > 1 else times[-1]  # the newest interval is still filling
    return {
        "t": times,
        "calls": [round(calls[t], 3) for t in times],
        "failed": [round(failed[t], 3) for t in times],
        "p99_ms": [round(p99[t], 2) for t in times],
        "in_flight": in_flight,
        "now_calls": round(calls[last_full], 2),
    }


# Analytics ---------------------------------------------------------------------------

SERIES = ("sessions_started", "completed", "abandoned", "handoffs", "fallbacks", "turns")


def series_columns(flow: admin.FlowAnalytics) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {"t": []}
    for name in SERIES:
        columns[name] = []
    for bucket in flow.series:
        columns["t"].append(seconds_of(bucket.start))
        for name in SERIES:
            columns[name].append(float(getattr(bucket.counts, name)))
    return columns


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    abandoned: int
    width: float  # 0..100, of the largest


def end_states(flow: admin.FlowAnalytics) -> list[Bar]:
    ended = sorted((s for s in flow.states if s.sessions_ended), key=lambda s: (-s.sessions_ended, s.state))
    top = max((s.sessions_ended for s in ended), default=0) or 1
    return [Bar(s.state, s.sessions_ended, s.abandoned, 100.0 * s.sessions_ended / top) for s in ended]


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    x: float
    y: float
    entered: int
    ended: int


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    count: int
    path: str  # SVG path data
    width: float
    label_x: float
    label_y: float


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


NODE_W, NODE_H, COLUMN_GAP, ROW_GAP, MARGIN = 150.0, 44.0, 90.0, 36.0, 24.0
LOOP_ROOM = 40.0  # above the first row, for the arrows that go back


def flow_graph(flow: admin.FlowAnalytics) -> Graph:
    """The flow's states in columns by their distance from where sessions start, with its
    transitions as arrows as thick as their traffic."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for t in flow.transitions:
        if t.from_state and t.to_state and t.from_state != t.to_state:
            counts[(t.from_state, t.to_state)] += t.count
    states = {s.state: s for s in flow.states}
    names = sorted(set(states) | {a for a, _ in counts} | {b for _, b in counts})
    if not names:
        return Graph([], [], 0.0, 0.0)
    into = {b for _, b in counts}
    starts = [n for n in names if n not in into] or [
        max(names, key=lambda n: states[n].entered if n in states else 0)
    ]
    column = layers(names, starts, counts)
    by_column: dict[int, list[str]] = defaultdict(list)
    for name in names:
        by_column[column[name]].append(name)
    place: dict[str, tuple[float, float]] = {}
    for index, members in sorted(by_column.items()):
        for position, name in enumerate(members):
            place[name] = (
                MARGIN + index * (NODE_W + COLUMN_GAP),
                LOOP_ROOM + MARGIN + position * (NODE_H + ROW_GAP),
            )
    nodes = [
        Node(
            n,
            *place[n],
            states[n].entered if n in states else 0,
            states[n].sessions_ended if n in states else 0,
        )
        for n in names
    ]
    top = max(counts.values(), default=1) or 1
    edges = []
    for (a, b), count in sorted(counts.items()):
        (ax, ay), (bx, by) = place[a], place[b]
        width = 1.5 + 8.0 * count / top
        if bx > ax:  # forward: right side to left side
            x1, y1, x2, y2 = ax + NODE_W, ay + NODE_H / 2, bx, by + NODE_H / 2
            mid = (x1 + x2) / 2
            path = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = mid, min(y1, y2) - width / 2 - 5  # over the arrow
        else:  # back or within a column: a loop over the top
            x1, y1, x2, y2 = ax + NODE_W / 2 + 10, ay, bx + NODE_W / 2 - 10, by
            lift = min(y1, y2) - 30 - 10 * abs(column[a] - column[b])
            path = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{lift:.0f} {x2:.0f},{lift:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = (x1 + x2) / 2, lift + 8
        edges.append(Edge(a, b, count, path, round(width, 1), lx, ly))
    width = MARGIN * 2 + (max(column.values()) + 1) * (NODE_W + COLUMN_GAP) - COLUMN_GAP
    height = LOOP_ROOM + MARGIN * 2 + max(len(m) for m in by_column.values()) * (NODE_H + ROW_GAP) - ROW_GAP
    return Graph(nodes, edges, width, height)


def layers(names: Sequence[str], starts: Sequence[str], counts: dict[tuple[str, str], int]) -> dict[str, int]:
    """Each state's column: its shortest distance from a start state (unreached ones last)."""
    following: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(counts):
        following[a].append(b)
    column = {s: 0 for s in starts}
    queue = deque(starts)
    while queue:
        here = queue.popleft()
        for there in following[here]:
            if there not in column:
                column[there] = column[here] + 1
                queue.append(there)
    last = max(column.values(), default=0) + 1
    for name in names:
        column.setdefault(name, last)
    return column
