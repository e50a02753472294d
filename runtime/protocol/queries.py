"""The questions an edge asks a shard between batches, and their answers on the wire.

Each query has a name, positional arguments and a positional result; the functions
here build the arguments on the edge's side and turn results into the records of
``runtime.inspection`` (the shard side builds results in ``actors.queries``).
"""

from __future__ import annotations

from typing import Any

from confab.runtime.inspection import (
    Abandoned,
    ConversationFilter,
    ConversationInspection,
    ConversationSummary,
    FlowReload,
    Passivation,
    QueuedCommand,
    ShardStatus,
    TurnSummary,
)
from confab.runtime.model import ConversationKey, TurnResult
from confab.runtime.protocol import codec
from confab.runtime.protocol.records import CommandKind

STATUS = "status"  # [] -> ShardStatus wire (also the heartbeat)
INSPECT = "inspect"  # [tenant, conversation, last turns] -> inspection wire, or None
PASSIVATE = "passivate"  # [tenant, conversation, budget s or None] -> [done, reason]
LIST = "list"  # [filter wire, after (tenant, conversation) or None, limit] -> [summaries, last key seen]
RESIDENT = "resident"  # [[tenant, conversation], ...] -> the resident ones, same form
RELOAD = "reload"  # [] -> [loaded, skipped, failed]
# [tenant, conversation, who, reason, budget s or None] -> [done, message, webhook, state, actions]
ABANDON = "abandon"
# [] -> [waiting wire, ...]: every conversation whose turn waits on a webhook (stored or not)
WAITING = "waiting"
# [AnalyticsQuery wire] -> the report: confab.admin.v1.AnalyticsReport's JSON mapping (runtime.analytics)
ANALYTICS = "analytics"
NAMES = (STATUS, INSPECT, PASSIVATE, LIST, RESIDENT, RELOAD, ABANDON, WAITING, ANALYTICS)


def filter_to_wire(f: ConversationFilter) -> list[Any]:
    return [
        f.tenant_id,
        f.state,
        f.flow_id,
        f.idle_longer_than_s,
        f.in_handoff,
        f.resident_only,
        f.waiting_on_webhook,
    ]


def filter_from_wire(w: list[Any]) -> ConversationFilter:
    return ConversationFilter(*w)


def summary_to_wire(s: ConversationSummary) -> list[Any]:
    return [
        s.key.tenant_id,
        s.key.conversation_id,
        s.current_state,
        s.flow_id,
        s.flow_version,
        s.message_count,
        s.last_activity,
        s.in_handoff,
        s.resident,
        s.shard,
        s.webhook,
        s.webhook_waiting_s,
        s.mailbox,
        s.stored,
    ]


def summary_from_wire(w: list[Any]) -> ConversationSummary:
    return ConversationSummary(ConversationKey(w[0], w[1]), *w[2:])


def status_from_wire(w: list[Any]) -> ShardStatus:
    return ShardStatus.from_wire(w)


def passivation_from_wire(w: list[Any]) -> Passivation:
    return Passivation(bool(w[0]), str(w[1]))


def abandoned_from_wire(w: list[Any]) -> Abandoned:
    return Abandoned.from_wire(w)


def reload_to_wire(r: FlowReload) -> list[Any]:
    return [r.loaded, r.skipped, r.failed]


def reload_from_wire(w: list[Any]) -> FlowReload:
    return FlowReload(list(w[0]), list(w[1]), list(w[2]))


def inspection_to_wire(
    resident: bool,
    state: bytes,
    queued: list[tuple[str, int, str]],
    webhook_in_flight: str,
    turns: list[tuple[int, str, int, bytes, float, str]],
    webhook_waiting_s: float = 0.0,
    first_turn_pending: bool = False,
) -> list[Any]:
    """``queued``: (message id, command kind, text); ``turns``: (seq, message id, kind, reply, at, input)."""
    return [
        resident,
        state,
        [list(q) for q in queued],
        webhook_in_flight,
        [list(t) for t in turns],
        webhook_waiting_s,
        first_turn_pending,
    ]


def inspection_from_wire(w: list[Any], key: ConversationKey, shard: int) -> ConversationInspection:
    resident, state, queued, webhook, turns, waiting_s, first_turn_pending = w
    return ConversationInspection(
        key=key,
        shard=shard,
        resident=resident,
        state=codec.unpack_state(state),
        queued=tuple(QueuedCommand(q[0], _kind(q[1]), q[2]) for q in queued),
        webhook_in_flight=webhook,
        turns=tuple(_turn_summary(*t) for t in turns),
        webhook_waiting_s=waiting_s,
        first_turn_pending=first_turn_pending,
    )


def _kind(value: int) -> str:
    return CommandKind(value).name.lower()


def _turn_summary(seq: int, message_id: str, kind: int, reply: bytes, at: float, said: str) -> TurnSummary:
    result = codec.unpack_reply(reply)
    if isinstance(result, TurnResult):
        return TurnSummary(
            seq,
            message_id,
            _kind(kind),
            at,
            said,
            intent=result.state.current_intent,
            state_before=result.state_before,
            state_after=result.state.current_state,
            response=result.response.text,
            duration_ms=result.execution_time_ms,
            actions=tuple(result.actions_performed),
        )
    return TurnSummary(seq, message_id, _kind(kind), at, said, state_after=result.state.current_state)
