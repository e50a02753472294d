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

from confab.actors.shard import Shard
from confab.runtime.analytics import AnalyticsQuery, JsonDict, build_report, check_query
from confab.runtime.errors import ConfabError, InternalError, InvalidArgument, PermissionDenied
from confab.runtime.flows import in_handoff
from confab.runtime.inspection import ConversationFilter, ConversationSummary
from confab.runtime.model import ConversationKey
from confab.runtime.protocol import codec, queries
from confab.runtime.protocol.records import Answer, Query

log = logging.getLogger(__name__)

# Stored conversations read per list query; filters are applied to what was read.
SCAN_ROWS = 2000


def answer(shard: Shard, query: Query) -> Answer:
    try:
        return Answer(query.query_id, True, _result(shard, query.name, query.args, query.scope))
    except ConfabError as exc:
        return Answer.failed(query.query_id, exc)
    except Exception as exc:  # a bug answers the query, it does not take the shard down
        log.exception("shard %d: query %s failed", shard.index, query.name)
        return Answer.failed(query.query_id, InternalError(f"query failed: {type(exc).__name__}"))


def _result(shard: Shard, name: str, args: list[Any], scope: str | None) -> Any:
    """``scope`` is the tenant the asker may see (None: every tenant). The edge has checked
    it already; checking it here too means a peer on the data plane gets no more than the
    Admin API would give the same caller."""
    if name == queries.STATUS:  # the shard's own figures: no tenant's data
        return shard.status().to_wire()
    if name == queries.INSPECT:
        return _inspect(shard, _scoped_key(args[0], args[1], scope), int(args[2]))
    if name == queries.PASSIVATE:
        return list(shard.passivate(_scoped_key(args[0], args[1], scope)))
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
    if name == queries.ANALYTICS:
        return _analytics(shard, AnalyticsQuery.from_wire(args[0]), scope)
    if name == queries.RELOAD:
        if scope is not None:
            raise PermissionDenied("reloading flows is an operator's action")
        return queries.reload_to_wire(shard.reload_flows())
    raise InvalidArgument(f"unknown query {name!r}; known: {list(queries.NAMES)}")


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
    if conversation is not None:
        packed = conversation.state
    else:
        stored = shard.store.load(key)
        packed = stored.state if stored is not None else None
    if packed is None:
        return None
    # Operators see what the flow declares sensitive masked (the stored turns are masked already).
    state = codec.unpack_state(packed)
    flow = shard.flows.for_state(state)
    packed = codec.pack_state(flow.redact_state(state))
    queued: list[tuple[str, int, str]] = []
    webhook = ""
    if conversation is not None:
        commands = [w.suspended.command for w in [conversation.waiting] if w is not None]
        commands += [queued.command for queued in conversation.mailbox]
        queued = [(c.message_id, int(c.kind), flow.redact_text(c.said)) for c in commands]
        if conversation.waiting is not None:
            webhook = conversation.waiting.suspended.call.name
    turns = [
        (t.seq, t.message_id, t.kind, t.reply, t.created_at, t.input)
        for t in shard.store.recent_turns(key, max(0, last_turns))
    ]
    return queries.inspection_to_wire(conversation is not None, packed, queued, webhook, turns)


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
