"""A store's recorded history, as the records a replay runs on (``runtime.flows.authoring.replay``).

The flows layer knows nothing of stores and codecs; this module reads a store (the
file a server writes, while it runs too: SQLite's WAL lets readers be) and turns each
kept turn into a domain record: a message with its clock, its webhook answers and the
reply it got; a reset; a forced state; or a turn kept without its message.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from confab.runtime.flows.authoring.replay import (
    RecordedAgentMessage,
    RecordedConversation,
    RecordedForce,
    RecordedReset,
    RecordedStep,
    RecordedTurn,
    UnrecordedTurn,
)
from confab.runtime.model import ConversationKey, ResetResult, StateResult, TurnResult
from confab.runtime.protocol import codec
from confab.runtime.protocol.records import AGENT_PREFIX, CommandKind
from confab.runtime.store import KeptTurn, Store, StoreError, open_store
from confab.runtime.store.migrations import SQLITE_VERSION

PAGE = 200  # conversations asked of the store at a time


class UnreadableTurn(ValueError):
    """A kept turn this Confab cannot decode."""


def open_history(path: Path) -> Store:
    """The store at ``path``, to read its history (StoreError if it cannot be read as it is).

    Opening a store brings its schema up to date, and creates a missing one: a reader must
    do neither. A store of an older schema is refused (upgraded, an older server could no
    longer open it; and before schema 4 no turn kept its message anyway), a newer one is
    refused by ``open_store`` itself.
    """
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    try:
        # A plain read-only look at the schema version, before the store opens it read-write.
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as probe:
            version = int(probe.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: {exc}") from exc
    if version < SQLITE_VERSION:
        raise StoreError(
            f"{path}: a store of schema {version}, older than this Confab's ({SQLITE_VERSION}); "
            "a replay does not upgrade it (the server that wrote it could no longer open it)"
        )
    return open_store(str(path))


def recorded_keys(store: Store, tenant_id: str, since: float) -> Iterator[ConversationKey]:
    """Every conversation with a turn recorded since ``since``, of ``tenant_id`` ("" = all), in key order."""
    after: ConversationKey | None = None
    while True:
        page = store.recorded_conversations(tenant_id, since, after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]


def read_conversation(store: Store, key: ConversationKey) -> RecordedConversation:
    """Every kept turn of the conversation, oldest first (UnreadableTurn if one cannot be decoded)."""
    stored = store.load(key)
    # Every kept turn, not only those with a message: resets and forced states shape a replay too.
    kept = store.recent_turns(key, stored.seq) if stored is not None else []
    return RecordedConversation(key, tuple(_step(turn) for turn in kept))


def _step(turn: KeptTurn) -> RecordedStep:
    try:
        kind = CommandKind(turn.kind)
        reply = codec.unpack_reply(turn.reply)
        if kind is CommandKind.TURN and not turn.recorded:
            return UnrecordedTurn(turn.seq)
        if kind is CommandKind.TURN and isinstance(reply, TurnResult):
            message, now, results = codec.unpack_recorded(turn.recorded)
            return RecordedTurn(
                seq=turn.seq,
                message=message,
                now=now,
                webhook_results=results,
                response=reply.response,
                state=reply.state,
                state_before=reply.state_before,
                actions=tuple(reply.actions_performed),
            )
        if kind is CommandKind.AGENT_MESSAGE and isinstance(reply, TurnResult):
            agent, at = "", reply.state.last_activity
            if turn.recorded:
                said, at, _ = codec.unpack_recorded(turn.recorded)
                agent = said.user_id.removeprefix(AGENT_PREFIX)
            return RecordedAgentMessage(turn.seq, agent, reply.response.text, at)
        if kind is CommandKind.RESET and isinstance(reply, ResetResult):
            # The reset's clock is the one its new state started at.
            return RecordedReset(turn.seq, reply.state.last_activity, reply.state.flow_id)
        if kind is CommandKind.FORCE_STATE and isinstance(reply, StateResult):
            return RecordedForce(turn.seq, reply.state.current_state, reply.state)
    # Whatever a damaged or foreign blob raises (msgpack's errors, ValueError, IndexError,
    # TypeError...): that conversation is reported, the others are replayed.
    except Exception as exc:
        raise UnreadableTurn(f"turn {turn.seq} cannot be read: {type(exc).__name__}: {exc}") from exc
    raise UnreadableTurn(f"turn {turn.seq}: a kind-{turn.kind} turn with a reply that does not fit it")
