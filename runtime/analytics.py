"""Conversation analytics: what a turn adds to the store's counters, and the report made of them.

A shard derives a turn's counts from the turn it ran (``runtime.flows.execution.analytics``)
and stages them with the conversation's write, so they are written in the same transaction
as the turn: a round that is not committed adds nothing, a command re-sent after a shard died
is answered from its kept reply and counted no second time, and every shard of every host
adds to the same rows (docs/analytics.md has the definitions).

What the store keeps:

- **counters**, one row per (tenant, flow, version, state, minute, name, item): a count and a
  total (the sum of webhook latencies, in ms). ``name`` is one of :data:`NAMES`; ``item`` is a
  name from the flow file (a slot, a webhook, the target state of a transition, a handoff's
  reason as written in the file, an experiment's variant) or "". Every label comes from a
  flow file or the config: the number of rows is bounded by the flows, never by what users say.
- **open sessions**, one row per conversation whose session can still be abandoned (not ended,
  not with a person, its flow has a ``session_ttl_s``): its state and when it expires. A
  session that expires is counted abandoned by the report while it stays so; when the
  conversation comes back (its next turn starts a new session) or is reset, the write that
  replaces the row turns it into an ``abandoned`` counter of the minute it expired, in the
  same transaction. So an abandonment is counted once, whether or not the user ever returns.
- **missed utterances**: the masked texts of the messages that fell back, per (tenant, flow,
  hour), at most :data:`MISSED_KEPT` distinct texts each (the rest are added up under "").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

BUCKET_S = 60  # counters are kept per minute
MISSED_BUCKET_S = 3600  # missed utterances per hour
MISSED_KEPT = 100  # distinct missed texts kept per (tenant, flow, hour); the rest go under ""
MISSED_CHARS = 200  # of one missed text
MISSED_SHOWN = 20  # in a report, per flow
REASON_CHARS = 120  # of a handoff reason
MAX_SERIES_BUCKETS = 5000  # a report's series; a longer one is INVALID_ARGUMENT
MAX_RANGE_S = 400 * 86400

# Upper bounds (ms) of the webhook latency buckets kept as counters (the last is +inf).
LATENCY_BOUNDS_MS: tuple[float, ...] = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

# Counter names (the ``name`` column) and the item each is kept by.
SESSIONS_STARTED = "sessions_started"  # state: the one the session started in
TURNS = "turns"  # state: the one the message was read in
ENTERED = "entered"
COMPLETED = "completed"  # state: the terminal one
ABANDONED = "abandoned"  # state: the one it was abandoned in (written by the store, see above)
HANDOFFS = "handoffs"  # item: the reason as the flow file writes it
FALLBACKS = "fallbacks"
REPROMPTS = "reprompts"  # item: the slot
GIVEN_UP = "given_up"  # item: the slot
TRANSITIONS = "transitions"  # state: from; item: to
WEBHOOK_CALLS = "webhook_calls"  # item: the webhook; total: the latency in ms
WEBHOOK_FAILURES = "webhook_failures"  # failed, timed out or abandoned
WEBHOOK_TIMEOUTS = "webhook_timeouts"
WEBHOOK_ABANDONED = "webhook_abandoned"
WEBHOOK_LATENCY = "webhook_latency"  # item: "webhook|bound" (the bucket's upper bound, ms; "inf")
GENERATIONS = "generations"  # item: the model provider ("default": the first); total: latency in ms
GENERATION_FAILURES = "generation_failures"  # item: why (runtime.models.REASONS, http_<status>)
GENERATIVE_FALLBACKS = "generative_fallbacks"  # fallbacks a model answered (counted in FALLBACKS too)
VARIANT_SESSIONS = "variant_sessions"  # item: "experiment=variant"
VARIANT_COMPLETED = "variant_completed"
VARIANT_HANDOFFS = "variant_handoffs"
NAMES = (
    SESSIONS_STARTED,
    TURNS,
    ENTERED,
    COMPLETED,
    ABANDONED,
    HANDOFFS,
    FALLBACKS,
    REPROMPTS,
    GIVEN_UP,
    TRANSITIONS,
    WEBHOOK_CALLS,
    WEBHOOK_FAILURES,
    WEBHOOK_TIMEOUTS,
    WEBHOOK_ABANDONED,
    WEBHOOK_LATENCY,
    GENERATIONS,
    GENERATION_FAILURES,
    GENERATIVE_FALLBACKS,
    VARIANT_SESSIONS,
    VARIANT_COMPLETED,
    VARIANT_HANDOFFS,
)

# (tenant, flow, version, state, bucket start, name, item)
CountKey = tuple[str, str, str, str, int, str, str]


def bucket_of(at: float, width: int = BUCKET_S) -> int:
    return math.floor(at / width) * width


def latency_bound(ms: float) -> str:
    for bound in LATENCY_BOUNDS_MS:
        if ms <= bound:
            return f"{bound:g}"
    return "inf"


@dataclass(frozen=True, slots=True)
class SessionMark:
    """A conversation's open session: where it is, and when it expires if nothing is said."""

    flow_id: str
    flow_version: str
    state: str
    expires_at: float


@dataclass(slots=True)
class TurnCounts:
    """What one staged write of a conversation adds to the analytics.

    ``session``: the conversation's open session after the write (None: it has none), when
    ``session_changed``. ``settle_at``: the previous open session is counted abandoned if it
    expired before this time (0: it cannot have: the turn found the session alive)."""

    counts: dict[CountKey, list[float]] = field(default_factory=dict)
    missed: list[tuple[str, str, int, str]] = field(default_factory=list)  # tenant, flow, hour, text
    session_changed: bool = False
    session: SessionMark | None = None
    settle_at: float = 0.0
    # The state of a session the turn found expired (for the live figures: the store counts it
    # from its open session row, which the turn does not read).
    expired_state: str = ""

    def add(self, key: CountKey, count: int = 1, total: float = 0.0) -> None:
        cell = self.counts.get(key)
        if cell is None:
            self.counts[key] = [count, total]
        else:
            cell[0] += count
            cell[1] += total


def merge_counts(parts: Iterable[TurnCounts]) -> dict[CountKey, list[float]]:
    """Every count of ``parts`` added up by key (a store writes each row once per transaction)."""
    merged: dict[CountKey, list[float]] = {}
    for part in parts:
        for key, (count, total) in part.counts.items():
            cell = merged.get(key)
            if cell is None:
                merged[key] = [count, total]
            else:
                cell[0] += count
                cell[1] += total
    return merged


def normalize_text(text: str) -> str:
    """A missed utterance as it is counted: whitespace collapsed, lower case, cut short."""
    return " ".join(text.split()).lower()[:MISSED_CHARS]


# The report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalyticsRows:
    """What a store holds for one report: counters, expired open sessions and missed texts."""

    # (flow, version, state, bucket, name, item, count, total) of the buckets in range
    counts: Sequence[tuple[str, str, str, int, str, str, int, float]]
    # (flow, version, state, expires_at) of open sessions that expired in range
    expired: Sequence[tuple[str, str, str, float]]
    # (flow, text, count) of the hours in range, added up
    missed: Sequence[tuple[str, str, int]]


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    tenant_id: str
    flow_id: str  # "" = every flow
    since: float
    until: float
    bucket_s: int
    by_version: bool = False

    def to_wire(self) -> list[Any]:
        return [self.tenant_id, self.flow_id, self.since, self.until, self.bucket_s, self.by_version]

    @classmethod
    def from_wire(cls, w: list[Any]) -> AnalyticsQuery:
        tenant, flow, since, until, bucket_s, by_version = w
        return cls(str(tenant), str(flow), float(since), float(until), int(bucket_s), bool(by_version))


_COUNT_FIELDS = {
    SESSIONS_STARTED: "sessions_started",
    TURNS: "turns",
    COMPLETED: "completed",
    ABANDONED: "abandoned",
    HANDOFFS: "handoffs",
    FALLBACKS: "fallbacks",
    REPROMPTS: "slot_reprompts",
    GIVEN_UP: "slots_given_up",
    WEBHOOK_CALLS: "webhook_calls",
    WEBHOOK_FAILURES: "webhook_failures",
    GENERATIVE_FALLBACKS: "generative_fallbacks",
    GENERATIONS: "generations",
    GENERATION_FAILURES: "generation_failures",
}
_STATE_FIELDS = {
    ENTERED: "entered",
    TURNS: "turns",
    FALLBACKS: "fallbacks",
    ABANDONED: "abandoned",
    HANDOFFS: "handoffs",
}
_ENDS = (COMPLETED, ABANDONED, HANDOFFS)
_STATE_REPORTED = (*_STATE_FIELDS.values(), "sessions_ended")
_WEBHOOK_FIELDS = {
    WEBHOOK_CALLS: "calls",
    WEBHOOK_FAILURES: "failures",
    WEBHOOK_TIMEOUTS: "timeouts",
    WEBHOOK_ABANDONED: "abandoned",
}
_VARIANT_FIELDS = {VARIANT_SESSIONS: "sessions", VARIANT_COMPLETED: "completed", VARIANT_HANDOFFS: "handoffs"}


def build_report(query: AnalyticsQuery, rows: AnalyticsRows) -> JsonDict:
    """The report, in the JSON mapping of ``confab.admin.v1.AnalyticsReport`` (proto field names)."""
    flows: dict[tuple[str, str], _FlowTally] = {}

    def tally(flow: str, version: str) -> _FlowTally:
        key = (flow, version if query.by_version else "")
        found = flows.get(key)
        if found is None:
            found = flows[key] = _FlowTally(query)
        return found

    for flow, version, state, bucket, name, item, count, total in rows.counts:
        tally(flow, version).add(state, bucket, name, item, int(count), float(total))
    for flow, version, state, expires_at in rows.expired:
        tally(flow, version).add(state, bucket_of(expires_at), ABANDONED, "", 1, 0.0)
    missed: dict[str, list[tuple[str, int]]] = {}
    for flow, text, count in rows.missed:
        if text:  # "" adds up the texts beyond what is kept: no text to show
            missed.setdefault(flow, []).append((text, int(count)))
    for flow in missed:
        if not any(key[0] == flow for key in flows):
            tally(flow, "")
    return {
        "tenant_id": query.tenant_id,
        "since": _timestamp(query.since),
        "until": _timestamp(query.until),
        "bucket_s": query.bucket_s,
        "flows": [flows[key].report(key[0], key[1], missed.get(key[0], [])) for key in sorted(flows)],
    }


class _FlowTally:
    def __init__(self, query: AnalyticsQuery) -> None:
        self.query = query
        self.totals: dict[str, int] = {}
        self.states: dict[str, dict[str, int]] = {}
        self.transitions: dict[tuple[str, str], int] = {}
        self.reasons: dict[str, int] = {}
        self.reprompted: dict[str, int] = {}
        self.given_up: dict[str, int] = {}
        self.webhooks: dict[str, dict[str, int]] = {}
        self.latency: dict[str, dict[str, int]] = {}
        self.variants: dict[str, dict[str, int]] = {}
        self.series: dict[int, dict[str, int]] = {}

    def add(self, state: str, bucket: int, name: str, item: str, count: int, total: float) -> None:
        field_name = _COUNT_FIELDS.get(name)
        if field_name is not None:
            self.totals[field_name] = self.totals.get(field_name, 0) + count
            index = (bucket - int(self.query.since)) // self.query.bucket_s
            cell = self.series.setdefault(index, {})
            cell[field_name] = cell.get(field_name, 0) + count
        per_state = self.states.setdefault(state, {}) if state else None
        if per_state is not None:
            state_field = _STATE_FIELDS.get(name)
            if state_field is not None:
                per_state[state_field] = per_state.get(state_field, 0) + count
            if name in _ENDS:
                per_state["sessions_ended"] = per_state.get("sessions_ended", 0) + count
        if name == TRANSITIONS:
            self.transitions[(state, item)] = self.transitions.get((state, item), 0) + count
        elif name == HANDOFFS:
            self.reasons[item] = self.reasons.get(item, 0) + count
        elif name == REPROMPTS:
            self.reprompted[item] = self.reprompted.get(item, 0) + count
        elif name == GIVEN_UP:
            self.given_up[item] = self.given_up.get(item, 0) + count
        elif name in _WEBHOOK_FIELDS:
            cell = self.webhooks.setdefault(item, {})
            cell[_WEBHOOK_FIELDS[name]] = cell.get(_WEBHOOK_FIELDS[name], 0) + count
        elif name == WEBHOOK_LATENCY:
            webhook, _, bound = item.rpartition("|")
            histogram = self.latency.setdefault(webhook, {})
            histogram[bound] = histogram.get(bound, 0) + count
        elif name in _VARIANT_FIELDS:
            cell = self.variants.setdefault(item, {})
            cell[_VARIANT_FIELDS[name]] = cell.get(_VARIANT_FIELDS[name], 0) + count

    def report(self, flow: str, version: str, missed: list[tuple[str, int]]) -> JsonDict:
        query = self.query
        buckets = _bucket_count(query)
        top = sorted(missed, key=lambda m: (-m[1], m[0]))[:MISSED_SHOWN]
        return {
            "flow_id": flow,
            "flow_version": version,
            "totals": _counts(self.totals),
            "states": [
                {"state": s, **{f: self.states[s].get(f, 0) for f in _STATE_REPORTED}}
                for s in sorted(self.states)
            ],
            "transitions": [
                {"from_state": a, "to_state": b, "count": n} for (a, b), n in sorted(self.transitions.items())
            ],
            "handoff_reasons": _by_name(self.reasons),
            "missed_utterances": [{"text": t, "count": n} for t, n in top],
            "webhooks": [
                {
                    "name": name,
                    **{field_name: cell.get(field_name, 0) for field_name in _WEBHOOK_FIELDS.values()},
                    "p50_ms": _quantile(self.latency.get(name, {}), 0.50),
                    "p95_ms": _quantile(self.latency.get(name, {}), 0.95),
                }
                for name, cell in sorted(self.webhooks.items())
            ],
            "variants": [
                {
                    "experiment": item.partition("=")[0],
                    "variant": item.partition("=")[2],
                    **{f: cell.get(f, 0) for f in _VARIANT_FIELDS.values()},
                }
                for item, cell in sorted(self.variants.items())
            ],
            "series": [
                {
                    "start": _timestamp(query.since + i * query.bucket_s),
                    "counts": dict(self.series.get(i, {})),  # zeros left out: the wire's default
                }
                for i in range(buckets)
            ],
            "slots_reprompted": _by_name(self.reprompted),
            "slots_given_up": _by_name(self.given_up),
        }


def _bucket_count(query: AnalyticsQuery) -> int:
    return max(1, math.ceil((query.until - query.since) / query.bucket_s))


def _counts(values: dict[str, int]) -> JsonDict:
    return {name: values.get(name, 0) for name in _COUNT_FIELDS.values()}


def _by_name(values: dict[str, int]) -> list[JsonDict]:
    return [{"name": n, "count": c} for n, c in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))]


def _quantile(histogram: dict[str, int], q: float) -> float:
    """The q-quantile of a latency histogram, interpolated within its bucket (as Prometheus'
    ``histogram_quantile`` does); the open last bucket answers with the highest bound."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = q * total
    seen, lower = 0, 0.0
    for bound in LATENCY_BOUNDS_MS:
        n = histogram.get(f"{bound:g}", 0)
        if n and seen + n >= rank:
            return lower + (bound - lower) * (rank - seen) / n
        seen += n
        lower = bound
    return float(LATENCY_BOUNDS_MS[-1])


def _timestamp(at: float) -> str:
    """RFC 3339, as protobuf's JSON mapping writes a Timestamp."""
    import datetime

    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_query(query: AnalyticsQuery) -> str:
    """Why ``query`` cannot be answered ("" if it can): for INVALID_ARGUMENT, with the field."""
    if query.since < 0 or query.until < 0:
        return "since: and until must be after 1970"
    if query.since >= query.until:
        return "since: must be before until"
    if query.until - query.since > MAX_RANGE_S:
        return f"since: and until may be at most {MAX_RANGE_S // 86400} days apart"
    if not 60 <= query.bucket_s <= 86400 or query.bucket_s % 60:
        return "bucket_s: must be a multiple of 60 from 60 to 86400 (0: 3600)"
    if _bucket_count(query) > MAX_SERIES_BUCKETS:
        return f"bucket_s: gives more than {MAX_SERIES_BUCKETS} buckets over this range"
    return ""


# The live figures ------------------------------------------------------------------------
#
# What each shard counted since it started, from the turns it committed, as OpenTelemetry
# instruments (so Prometheus) and GetMetrics show them: cumulative counts by tenant, flow and
# state (by webhook and outcome for webhook calls). The store's counters are the durable
# record; these restart at 0 with a shard process, as counters do.

# (figure, tenant, flow, state, webhook, outcome) -> value
LiveKey = tuple[str, str, str, str, str, str]
MAX_LIVE_KEYS = 2_000  # per shard (sent with its status every second); beyond it, not shown live

# name: (unit, description, labels)
LIVE_FIGURES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "confab.analytics.sessions_started": ("{session}", "sessions started", ("tenant", "flow")),
    "confab.analytics.turns": ("{turn}", "messages a flow answered", ("tenant", "flow", "state")),
    "confab.analytics.sessions_completed": (
        "{session}",
        "sessions that reached a terminal state",
        ("tenant", "flow", "state"),
    ),
    "confab.analytics.sessions_abandoned": (
        "{session}",
        "sessions found expired when their user came back (the store counts every one)",
        ("tenant", "flow", "state"),
    ),
    "confab.analytics.handoffs": (
        "{handoff}",
        "conversations handed to a person",
        ("tenant", "flow", "state"),
    ),
    "confab.analytics.fallbacks": (
        "{turn}",
        "messages nothing matched (no-match)",
        ("tenant", "flow", "state"),
    ),
    "confab.analytics.slot_reprompts": ("{prompt}", "slots asked again", ("tenant", "flow", "state")),
    "confab.analytics.slots_given_up": ("{slot}", "slots given up", ("tenant", "flow", "state")),
    "confab.analytics.webhook_calls": ("{call}", "webhook calls", ("tenant", "flow", "webhook", "outcome")),
    "confab.analytics.webhook_duration": ("s", "time spent in webhook calls", ("tenant", "flow", "webhook")),
}
_LIVE_BY_STATE = {
    TURNS: "confab.analytics.turns",
    COMPLETED: "confab.analytics.sessions_completed",
    HANDOFFS: "confab.analytics.handoffs",
    FALLBACKS: "confab.analytics.fallbacks",
    REPROMPTS: "confab.analytics.slot_reprompts",
    GIVEN_UP: "confab.analytics.slots_given_up",
}
_CALLS = "confab.analytics.webhook_calls"
# Each failure moves a call from the outcome before it to its own.
_OUTCOME_MOVES = {
    WEBHOOK_FAILURES: ("ok", "failed"),
    WEBHOOK_TIMEOUTS: ("failed", "timeout"),
    WEBHOOK_ABANDONED: ("failed", "abandoned"),
}


def live_deltas(part: TurnCounts) -> dict[LiveKey, float]:
    """What ``part`` adds to the live figures."""
    out: dict[LiveKey, float] = {}

    def add(key: LiveKey, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for (tenant, flow, _version, state, _bucket, name, item), (count, total) in part.counts.items():
        figure = _LIVE_BY_STATE.get(name)
        if figure is not None:
            add((figure, tenant, flow, state, "", ""), count)
        elif name == SESSIONS_STARTED:
            add(("confab.analytics.sessions_started", tenant, flow, "", "", ""), count)
        elif name == WEBHOOK_CALLS:
            add((_CALLS, tenant, flow, "", item, "ok"), count)
            add(("confab.analytics.webhook_duration", tenant, flow, "", item, ""), total / 1000.0)
        elif name in _OUTCOME_MOVES:
            before, after = _OUTCOME_MOVES[name]
            add((_CALLS, tenant, flow, "", item, before), -count)
            add((_CALLS, tenant, flow, "", item, after), count)
    if part.expired_state:
        for tenant, flow, *_rest in list(part.counts)[:1]:
            add(("confab.analytics.sessions_abandoned", tenant, flow, part.expired_state, "", ""), 1)
    return out


def live_labels(key: LiveKey) -> dict[str, str]:
    """The attributes of a live figure's point (those its figure is kept by)."""
    figure, tenant, flow, state, webhook, outcome = key
    values = {"tenant": tenant, "flow": flow, "state": state, "webhook": webhook, "outcome": outcome}
    return {label: values[label] for label in LIVE_FIGURES[figure][2]}
