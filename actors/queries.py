"""A shard's answers to the edge's queries (``runtime.protocol.queries``), between rounds.

They read the shard's live conversations and its store, never change a turn, and
run on the shard's data-plane thread like its rounds, so what they see is
consistent with the outcomes already sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from confab.actors.conversation import Conversation
from confab.actors.shard import NOT_RUN, Shard
from confab.runtime.analytics import AnalyticsQuery, JsonDict, build_report, check_query
from confab.runtime.errors import (
    ConfabError,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    PermissionDenied,
)
from confab.runtime.flows import in_handoff
from confab.runtime.flows.execution import turn
from confab.runtime.inspection import ConversationFilter, ConversationSummary
from confab.runtime.model import ConversationKey, ConversationState
from confab.runtime.protocol import codec, queries
from confab.runtime.protocol.records import Answer, Query

log = logging.getLogger(__name__)

# Stored conversations read per list query; filters are applied to what was read.
SCAN_ROWS = 2000


def answer(shard: Shard, query: Query) -> Answer:
    try:
        return Answer(query.query_id, True, _result(shard, query))
    except ConfabError as exc:
        return Answer.failed(query.query_id, exc)
    except Exception as exc:  # a bug answers the query, it does not take the shard down
        log.exception("shard %d: query %s failed", shard.index, query.name)
        return Answer.failed(query.query_id, InternalError(f"query failed: {type(exc).__name__}"))


def _result(shard: Shard, query: Query) -> Any:
    """``scope`` is the tenant the asker may see (None: every tenant). The edge has checked
    it already; checking it here too means a peer on the data plane gets no more than the
    Admin API would give the same caller."""
    name, args, scope = query.name, query.args, query.scope
    if name == queries.STATUS:  # the shard's own figures: no tenant's data
        return shard.status().to_wire()
    if name == queries.INSPECT:
        return _inspect(shard, _scoped_key(args[0], args[1], scope), int(args[2]))
    if name == queries.PASSIVATE:
        key = _scoped_key(args[0], args[1], scope)
        _within_budget(query, args[2] if len(args) > 2 else None)
        return list(shard.passivate(key))
    if name == queries.LIST:
        wanted = queries.filter_from_wire(args[0])
        if scope is not None:
            if wanted.tenant_id and wanted.tenant_id != scope:
                raise PermissionDenied(
                    f"a caller scoped to tenant {scope!r} may not list tenant {wanted.tenant_id!r}"
                )
            wanted = replace(wanted, tenant_id=scope)
        after = _scoped_key(args[1][0], args[1][1], scope) if args[1] else None
        return _list(shard, wanted, after, int(args[2]))
    if name == queries.RESIDENT:
        return [
            k
            for k in args[0]
            if (scope is None or k[0] == scope) and ConversationKey(k[0], k[1]) in shard.residents
        ]
    if name == queries.ABANDON:
        key = _scoped_key(args[0], args[1], scope)
        _within_budget(query, args[4])
        return shard.abandon_webhook(key, str(args[2]), str(args[3])).to_wire()
    if name == queries.WAITING:
        return _waiting(shard, scope)
    if name == queries.ANALYTICS:
        return _analytics(shard, AnalyticsQuery.from_wire(args[0]), scope)
    if name == queries.RELOAD:
        if scope is not None:
            raise PermissionDenied("reloading flows is an operator's action")
        return queries.reload_to_wire(shard.reload_flows())
    raise InvalidArgument(f"unknown query {name!r}; known: {list(queries.NAMES)}")


def _within_budget(query: Query, budget: Any) -> None:
    """Raise DeadlineExceeded if the edge's deadline for an action passed before the shard read it:
    the edge has answered (or is about to) that it was not done, so it must not be done now."""
    if budget is not None and time.perf_counter() - query.received_at > float(budget):
        raise DeadlineExceeded(NOT_RUN)


def _analytics(shard: Shard, query: AnalyticsQuery, scope: str | None) -> JsonDict:
    """A tenant's report from the store's analytics tables (every shard of every host adds to them)."""
    if scope is not None and query.tenant_id != scope:
        raise PermissionDenied(f"a caller scoped to tenant {scope!r} may not see tenant {query.tenant_id!r}")
    problem = check_query(query)
    if problem:
        field, _, message = problem.partition(": ")
        raise InvalidArgument(f"{field} {message}", field=field)
    return build_report(query, shard.store.analytics(query, time.time()))


def _scoped_key(tenant_id: Any, conversation_id: Any, scope: str | None) -> ConversationKey:
    if not isinstance(tenant_id, str) or not isinstance(conversation_id, str):
        raise InvalidArgument("a conversation is named by two strings: tenant and conversation id")
    if scope is not None and tenant_id != scope:
        raise PermissionDenied(f"a caller scoped to tenant {scope!r} may not see tenant {tenant_id!r}")
    return ConversationKey(tenant_id, conversation_id)


def _inspect(shard: Shard, key: ConversationKey, last_turns: int) -> list[Any] | None:
    """One conversation as it is now, without activating it (None: it does not exist)."""
    conversation = shard.residents.get(key)
    state: ConversationState | None = None
    if conversation is not None:
        state = _state_of(conversation)
    else:
        stored = shard.store.load(key)
        state = codec.unpack_state(stored.state) if stored is not None else None
    if state is None:
        return None
    # Operators see what the flow declares sensitive masked (the stored turns are masked already).
    flow = shard.flows.for_state(state)
    packed = codec.pack_state(flow.redact_state(state))
    queued: list[tuple[str, int, str]] = []
    webhook, waiting_s = "", 0.0
    if conversation is not None:
        commands = [w.suspended.command for w in [conversation.waiting] if w is not None]
        commands += [queued.command for queued in conversation.mailbox]
        queued = [(c.message_id, int(c.kind), flow.redact_text(c.said)) for c in commands]
        if conversation.waiting is not None:
            webhook = conversation.waiting.suspended.call.label
            waiting_s = max(0.0, time.time() - conversation.waiting.since)
    turns = [
        (t.seq, t.message_id, t.kind, t.reply, t.created_at, t.input)
        for t in shard.store.recent_turns(key, max(0, last_turns))
    ]
    first_turn_pending = conversation is not None and not conversation.exists
    return queries.inspection_to_wire(
        conversation is not None, packed, queued, webhook, turns, waiting_s, first_turn_pending
    )


def _state_of(conversation: Conversation) -> ConversationState | None:
    """A resident conversation's committed state; for one its first message creates, while that
    turn waits on a webhook, the state the turn began with (None: it does not exist)."""
    if conversation.state is not None:
        return codec.unpack_state(conversation.state)
    if conversation.waiting is not None:
        return turn.starting_state(conversation.waiting.suspended.pending)
    return None


def _waiting(shard: Shard, scope: str | None) -> list[Any]:
    """Every conversation whose turn waits on a webhook (within ``scope``), stored or new."""
    now = time.time()
    found: list[list[Any]] = []
    for conversation in shard.waiting:
        key, waiting = conversation.key, conversation.waiting
        if waiting is None or (scope is not None and key.tenant_id != scope):
            continue
        state = _state_of(conversation)
        if state is None:
            continue
        summary = ConversationSummary(
            key,
            state.current_state,
            state.flow_id,
            state.flow_version,
            state.message_count,
            state.last_activity,
            in_handoff(state),
            resident=True,
            shard=shard.index,
            webhook=waiting.suspended.call.label,
            webhook_waiting_s=max(0.0, now - waiting.since),
            mailbox=len(conversation.mailbox),
            stored=conversation.exists,
        )
        found.append(queries.summary_to_wire(summary))
    return found


def _list(shard: Shard, wanted: ConversationFilter, after: ConversationKey | None, limit: int) -> list[Any]:
    """Up to ``limit`` stored conversations after ``after`` that pass ``wanted``, and the last key read."""
    rows = shard.store.scan(after, wanted.tenant_id, SCAN_ROWS)
    now = time.time()
    chosen: list[list[Any]] = []
    last: list[str] | None = None
    for key, packed, _ in rows:
        last = [key.tenant_id, key.conversation_id]
        state = codec.unpack_state(packed)
        handed_over = in_handoff(state)
        if (
            (wanted.state and state.current_state != wanted.state)
            or (wanted.flow_id and state.flow_id != wanted.flow_id)
            or (wanted.idle_longer_than_s and now - state.last_activity <= wanted.idle_longer_than_s)
            or (wanted.in_handoff and not handed_over)
        ):
            continue
        summary = ConversationSummary(
            key,
            state.current_state,
            state.flow_id,
            state.flow_version,
            state.message_count,
            state.last_activity,
            handed_over,
            resident=False,  # the engine asks each conversation's own shard
            shard=-1,
        )
        chosen.append(queries.summary_to_wire(summary))
        if len(chosen) == limit:
            break
    # More may follow when the scan filled up or the page did: the next one starts after `last`.
    more = len(rows) == SCAN_ROWS or len(chosen) == limit
    return [chosen, last if more else None]
