"""Durable conversation state in one SQLite file.

Each shard process opens its own :class:`Store` on the same file (WAL mode lets
readers and the single active writer proceed together). A shard writes a whole
batch of turns in one transaction and answers only after the commit: one fsync is
shared by every message of the batch (group commit), and an acknowledged message
survives ``kill -9`` of every Confab process.

Tables:
  conversations  the latest state of each conversation (msgpack blob) and its turn sequence
  turns          the last ``turns_kept`` turns of each conversation: message id and the
                 reply that was sent, so a re-sent message is answered, not re-applied
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .model import ConversationKey

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    state           BLOB NOT NULL,
    seq             INTEGER NOT NULL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS turns (
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    message_id      TEXT NOT NULL,
    kind            INTEGER NOT NULL,
    reply           BLOB NOT NULL,
    created_at      REAL NOT NULL,
    input           TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, conversation_id, seq)
) WITHOUT ROWID;
"""
# Columns added after a data dir may first have been created, with their definitions.
ADDED_COLUMNS = {"turns": [("input", "TEXT NOT NULL DEFAULT ''")]}


@dataclass(slots=True)
class TurnRecord:
    seq: int
    message_id: str
    kind: int
    reply: bytes
    input: str = ""  # what the user sent, for operators


@dataclass(slots=True)
class ConversationWrite:
    """The new state of one conversation and the turns that produced it."""

    key: ConversationKey
    state: bytes
    seq: int
    turns: list[TurnRecord] = field(default_factory=list)


@dataclass(slots=True)
class StoredConversation:
    state: bytes
    seq: int
    recent_message_ids: list[str]


class Store:
    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        turns_kept: int = 32,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.path = Path(path)
        self.turns_kept = turns_kept
        self.busy_timeout_s = busy_timeout_ms / 1000
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly in write(). SQLite's own busy
        # handler is off (timeout=0): it sleeps 1, 2, 5, 10... 100 ms between tries, which is
        # ruinous when shards take turns committing every few milliseconds. _when_free()
        # retries at sub-millisecond intervals instead.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        self._when_free(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._when_free(lambda: self._db.executescript(SCHEMA))
        self._when_free(self._add_missing_columns)

    def _add_missing_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns:
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

    def _when_free(self, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying while another process holds the lock it needs."""
        give_up = time.monotonic() + self.busy_timeout_s
        pause = 0.0001
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= give_up:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)

    def close(self) -> None:
        self._db.close()

    def load(self, key: ConversationKey) -> StoredConversation | None:
        row = self._when_free(
            lambda: self._db.execute(
                "SELECT state, seq FROM conversations WHERE tenant_id=? AND conversation_id=?",
                (key.tenant_id, key.conversation_id),
            ).fetchone()
        )
        if row is None:
            return None
        rows = self._when_free(
            lambda: self._db.execute(
                "SELECT message_id FROM turns WHERE tenant_id=? AND conversation_id=?"
                " ORDER BY seq DESC LIMIT ?",
                (key.tenant_id, key.conversation_id, self.turns_kept),
            ).fetchall()
        )
        ids = [r[0] for r in rows]
        ids.reverse()
        return StoredConversation(state=row[0], seq=row[1], recent_message_ids=ids)

    def load_reply(self, key: ConversationKey, message_id: str) -> bytes | None:
        row = self._when_free(
            lambda: self._db.execute(
                "SELECT reply FROM turns WHERE tenant_id=? AND conversation_id=? AND message_id=?"
                " ORDER BY seq DESC LIMIT 1",
                (key.tenant_id, key.conversation_id, message_id),
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    def scan(
        self, after: ConversationKey | None, tenant_id: str, limit: int
    ) -> list[tuple[ConversationKey, bytes, float]]:
        """Up to ``limit`` conversations after ``after`` in key order: (key, state, updated_at)."""
        where, args = ["1"], []
        if tenant_id:
            where.append("tenant_id = ?")
            args.append(tenant_id)
        if after is not None:
            where.append("(tenant_id, conversation_id) > (?, ?)")
            args += [after.tenant_id, after.conversation_id]
        sql = (
            "SELECT tenant_id, conversation_id, state, updated_at FROM conversations"
            f" WHERE {' AND '.join(where)} ORDER BY tenant_id, conversation_id LIMIT ?"
        )
        rows = self._when_free(lambda: self._db.execute(sql, (*args, limit)).fetchall())
        return [(ConversationKey(r[0], r[1]), bytes(r[2]), r[3]) for r in rows]

    def recent_turns(self, key: ConversationKey, count: int) -> list[tuple[int, str, int, bytes, float, str]]:
        """The last ``count`` turns kept: (seq, message id, kind, reply, created_at, input), oldest first."""
        rows = self._when_free(
            lambda: self._db.execute(
                "SELECT seq, message_id, kind, reply, created_at, input FROM turns"
                " WHERE tenant_id=? AND conversation_id=? ORDER BY seq DESC LIMIT ?",
                (key.tenant_id, key.conversation_id, count),
            ).fetchall()
        )
        return [(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in reversed(rows)]

    def write(self, writes: Iterable[ConversationWrite]) -> None:
        """Write every conversation of a batch in one transaction (all or nothing)."""
        now = time.time()
        db = self._db
        self._when_free(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            for w in writes:
                t, c = w.key.tenant_id, w.key.conversation_id
                db.execute(
                    "INSERT INTO conversations (tenant_id, conversation_id, state, seq, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, conversation_id)"
                    " DO UPDATE SET state=excluded.state, seq=excluded.seq,"
                    " updated_at=excluded.updated_at",
                    (t, c, w.state, w.seq, now),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO turns"
                    " (tenant_id, conversation_id, seq, message_id, kind, reply, created_at, input)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t, c, r.seq, r.message_id, r.kind, r.reply, now, r.input) for r in w.turns],
                )
                # Prune in steps of turns_kept rather than on every write.
                if w.turns and w.seq // self.turns_kept != (w.turns[0].seq - 1) // self.turns_kept:
                    db.execute(
                        "DELETE FROM turns WHERE tenant_id=? AND conversation_id=? AND seq<=?",
                        (t, c, w.seq - self.turns_kept),
                    )
            self._when_free(lambda: db.execute("COMMIT"))
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def count_conversations(self) -> int:
        return int(
            self._when_free(lambda: self._db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])
        )

    def ping(self) -> float:
        """Run a trivial query; return its latency in seconds (raises if the file is unusable)."""
        started = time.perf_counter()
        self._when_free(lambda: self._db.execute("SELECT 1 FROM conversations LIMIT 1").fetchall())
        return time.perf_counter() - started
