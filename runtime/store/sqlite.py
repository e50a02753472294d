"""The embedded store: one SQLite file shared by the shards of one host.

Each shard process opens its own :class:`SqliteStore` on the same file; WAL mode
lets readers and the single active writer proceed together. Transactions are
explicit (autocommit mode otherwise), and SQLite's own busy handler is off: it
sleeps 1, 2, 5, 10... 100 ms between tries, which is ruinous when shards take turns
committing every few milliseconds; :meth:`_when_free` retries at sub-millisecond
intervals instead.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from confab.runtime.analytics import MISSED_BUCKET_S, AnalyticsQuery, AnalyticsRows, bucket_of
from confab.runtime.model import ConversationKey
from confab.runtime.store import (
    AnalyticsWrite,
    ConversationWrite,
    Fence,
    FencedOut,
    KeptTurn,
    Lease,
    Retention,
    StaleWrite,
    StoredConversation,
    StoreError,
    plan_analytics,
)
from confab.runtime.store.migrations import SQLITE, SQLITE_V1_COLUMNS, SQLITE_VERSION
from confab.runtime.store.paging import key_page

T = TypeVar("T")


class SqliteStore:
    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        retention: Retention | None = None,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self.busy_timeout_s = busy_timeout_ms / 1000
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            self._when_free(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._when_free(self._migrate)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: {_problem(exc)}") from exc

    # Opening --------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SQLITE_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer Confab (schema {version}; this one knows up to"
                    f" {SQLITE_VERSION})"
                )
            for migration in SQLITE:
                if migration.version <= version:
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                if migration.version == 1:
                    self._add_missing_v1_columns()
                db.execute(f"PRAGMA user_version = {migration.version}")
            db.execute("COMMIT")
        except BaseException:
            _roll_back(db)
            raise

    def _add_missing_v1_columns(self) -> None:
        for table, columns in SQLITE_V1_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns:
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

    def check_integrity(self) -> None:
        """SQLite's quick check of every page (raises StoreError naming the first problem)."""
        try:
            rows = self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {_problem(exc)}") from exc
        if rows != [("ok",)]:
            raise StoreError(f"{self.path}: failed its integrity check: {rows[0][0]}")

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

    # Reads ----------------------------------------------------------------------------

    def load(self, key: ConversationKey) -> StoredConversation | None:
        row = self._when_free(
            lambda: self._db.execute(
                "SELECT state, seq FROM conversations WHERE tenant_id=? AND conversation_id=?",
                (key.tenant_id, key.conversation_id),
            ).fetchone()
        )
        if row is None:
            return None
        # The ids a conversation must recognise: its last turns_kept, and the idempotency window's.
        since = time.time() - self.retention.idempotency_window_s
        ids = self._when_free(
            lambda: self._db.execute(
                "SELECT message_id, created_at FROM turns WHERE tenant_id=? AND conversation_id=?"
                " AND (seq > ? OR created_at >= ?) ORDER BY seq",
                (key.tenant_id, key.conversation_id, row[1] - self.retention.turns_kept, since),
            ).fetchall()
        )
        return StoredConversation(state=row[0], seq=row[1], message_ids=[(r[0], r[1]) for r in ids])

    def load_turn(self, key: ConversationKey, message_id: str) -> KeptTurn | None:
        row = self._when_free(
            lambda: self._db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns"
                " WHERE tenant_id=? AND conversation_id=? AND message_id=? ORDER BY seq DESC LIMIT 1",
                (key.tenant_id, key.conversation_id, message_id),
            ).fetchone()
        )
        if row is None:
            return None
        return _kept(row)

    def scan(
        self, after: ConversationKey | None, tenant_id: str, limit: int
    ) -> list[tuple[ConversationKey, bytes, float]]:
        page, args = key_page([], [], tenant_id=tenant_id, after=after, limit=limit, mark="?")
        sql = "SELECT tenant_id, conversation_id, state, updated_at FROM conversations" + page
        rows = self._when_free(lambda: self._db.execute(sql, args).fetchall())
        return [(ConversationKey(r[0], r[1]), bytes(r[2]), r[3]) for r in rows]

    def recent_turns(self, key: ConversationKey, count: int) -> list[KeptTurn]:
        rows = self._when_free(
            lambda: self._db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns"
                " WHERE tenant_id=? AND conversation_id=? ORDER BY seq DESC LIMIT ?",
                (key.tenant_id, key.conversation_id, count),
            ).fetchall()
        )
        return [_kept(r) for r in reversed(rows)]

    def recorded_turns(self, key: ConversationKey) -> list[KeptTurn]:
        rows = self._when_free(
            lambda: self._db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns"
                " WHERE tenant_id=? AND conversation_id=? AND recorded != x'' ORDER BY seq",
                (key.tenant_id, key.conversation_id),
            ).fetchall()
        )
        return [_kept(r) for r in rows]

    def recorded_conversations(
        self, tenant_id: str, since: float, after: ConversationKey | None, limit: int
    ) -> list[ConversationKey]:
        page, args = key_page(
            ["recorded != x''", "created_at >= ?"],
            [since],
            tenant_id=tenant_id,
            after=after,
            limit=limit,
            mark="?",
        )
        sql = "SELECT DISTINCT tenant_id, conversation_id FROM turns" + page
        rows = self._when_free(lambda: self._db.execute(sql, args).fetchall())
        return [ConversationKey(r[0], r[1]) for r in rows]

    def count_conversations(self) -> int:
        return int(
            self._when_free(lambda: self._db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])
        )

    def model_tokens_used(self, tenant_id: str, day: str) -> int:
        row = self._when_free(
            lambda: self._db.execute(
                "SELECT tokens FROM model_usage WHERE tenant_id=? AND day=?", (tenant_id, day)
            ).fetchone()
        )
        return int(row[0]) if row is not None else 0

    def add_model_tokens(self, spent: Mapping[tuple[str, str], int]) -> None:
        if not spent:
            return
        db = self._db
        self._when_free(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            db.executemany(
                "INSERT INTO model_usage (tenant_id, day, tokens) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, day) DO UPDATE SET tokens = tokens + excluded.tokens",
                [(tenant, day, tokens) for (tenant, day), tokens in sorted(spent.items())],
            )
            self._when_free(lambda: db.execute("COMMIT"))
        except BaseException:
            _roll_back(db)
            raise

    def ping(self) -> float:
        started = time.perf_counter()
        self._when_free(lambda: self._db.execute("SELECT 1 FROM conversations LIMIT 1").fetchall())
        return time.perf_counter() - started

    # Writes ---------------------------------------------------------------------------

    def write(self, writes: Sequence[ConversationWrite], fence: Fence | None = None) -> None:
        now = time.time()
        db = self._db
        self._when_free(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            if fence is not None:
                # Inside the write lock: no claim can change hands until this commits.
                self._check_fence(fence)
            stale: set[ConversationKey] = set()
            for w in writes:
                t, c = w.key.tenant_id, w.key.conversation_id
                if not self._put_state(w, now):
                    stale.add(w.key)
                    continue
                if w.turns:
                    db.executemany(
                        "INSERT OR REPLACE INTO turns (tenant_id, conversation_id, seq, message_id, kind,"
                        " reply, created_at, input, fingerprint, recorded)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                t,
                                c,
                                r.seq,
                                r.message_id,
                                r.kind,
                                r.reply,
                                now,
                                r.input,
                                r.fingerprint,
                                r.recorded,
                            )
                            for r in w.turns
                        ],
                    )
                if w.prune_through > 0:
                    db.execute(
                        "DELETE FROM turns"
                        " WHERE tenant_id=? AND conversation_id=? AND seq<=? AND created_at<?",
                        (t, c, w.prune_through, w.prune_before),
                    )
            if stale:
                raise StaleWrite(frozenset(stale))
            planned = plan_analytics(writes)
            if planned is not None:
                self._write_analytics(planned)
            self._when_free(lambda: db.execute("COMMIT"))
        except BaseException:
            _roll_back(db)
            raise

    def _write_analytics(self, planned: AnalyticsWrite) -> None:
        """Inside the write's transaction: the open sessions that ended settled, then replaced,
        the counters added to, the missed texts counted (runtime.analytics)."""
        db = self._db
        if planned.settles:
            db.executemany(_SETTLE, planned.settles)
        gone = [(k.tenant_id, k.conversation_id) for k, mark in planned.sessions.items() if mark is None]
        if gone:
            db.executemany("DELETE FROM analytics_sessions WHERE tenant_id=? AND conversation_id=?", gone)
        marks = [
            (k.tenant_id, k.conversation_id, m.flow_id, m.flow_version, m.state, m.expires_at)
            for k, m in planned.sessions.items()
            if m is not None
        ]
        if marks:
            db.executemany(
                "INSERT INTO analytics_sessions (tenant_id, conversation_id, flow_id, flow_version, state,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, conversation_id) DO UPDATE"
                " SET flow_id=excluded.flow_id, flow_version=excluded.flow_version, state=excluded.state,"
                " expires_at=excluded.expires_at",
                marks,
            )
        if planned.counts:
            db.executemany(
                "INSERT INTO analytics_counts (tenant_id, flow_id, flow_version, state, bucket, name, item,"
                " count, total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, bucket, flow_id, flow_version, state, name, item)"
                " DO UPDATE SET count = count + excluded.count, total = total + excluded.total",
                [(*key, int(count), total) for key, (count, total) in planned.counts.items()],
            )
        if planned.missed:
            db.executemany(_ADD_MISSED, planned.missed_rows)

    def analytics(self, query: AnalyticsQuery, now: float) -> AnalyticsRows:
        flow = " AND flow_id = ?" if query.flow_id else ""
        flow_args: tuple[str, ...] = (query.flow_id,) if query.flow_id else ()
        tenant, since, until = query.tenant_id, int(query.since), int(query.until)

        def read() -> AnalyticsRows:
            db = self._db
            counts = db.execute(
                "SELECT flow_id, flow_version, state, bucket, name, item, count, total FROM analytics_counts"
                f" WHERE tenant_id = ? AND bucket >= ? AND bucket < ?{flow}",
                (tenant, since, until, *flow_args),
            ).fetchall()
            expired = db.execute(
                "SELECT flow_id, flow_version, state, expires_at FROM analytics_sessions"
                f" WHERE tenant_id = ? AND expires_at >= ? AND expires_at < ?{flow}",
                (tenant, since, min(float(until), now), *flow_args),
            ).fetchall()
            missed = db.execute(
                "SELECT flow_id, text, SUM(count) FROM analytics_missed"
                f" WHERE tenant_id = ? AND bucket >= ? AND bucket < ?{flow} GROUP BY flow_id, text",
                (tenant, bucket_of(since, MISSED_BUCKET_S), until, *flow_args),
            ).fetchall()
            return AnalyticsRows(counts, expired, missed)

        return self._when_free(read)

    def _put_state(self, w: ConversationWrite, now: float) -> bool:
        """Write ``w``'s state if the stored one is the one it was computed from (its ``base_seq``);
        whether it was written. One statement either way: the condition is the statement's own."""
        t, c = w.key.tenant_id, w.key.conversation_id
        if w.base_seq is None:
            self._db.execute(
                "INSERT INTO conversations (tenant_id, conversation_id, state, seq, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, conversation_id)"
                " DO UPDATE SET state=excluded.state, seq=excluded.seq,"
                " updated_at=excluded.updated_at",
                (t, c, w.state, w.seq, now),
            )
            return True
        if w.base_seq == 0:  # a new conversation: nobody may have written it meanwhile
            cursor = self._db.execute(
                "INSERT INTO conversations (tenant_id, conversation_id, state, seq, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, conversation_id) DO NOTHING",
                (t, c, w.state, w.seq, now),
            )
        else:
            cursor = self._db.execute(
                "UPDATE conversations SET state=?, seq=?, updated_at=?"
                " WHERE tenant_id=? AND conversation_id=? AND seq=?",
                (w.state, w.seq, now, t, c, w.base_seq),
            )
        return cursor.rowcount == 1

    def _check_fence(self, fence: Fence) -> None:
        if not fence.epochs:
            return
        marks = ",".join("?" * len(fence.epochs))
        held = {
            row[0]
            for row in self._db.execute(
                f"SELECT vshard, epoch FROM vshards WHERE vshard IN ({marks}) AND owner = ?"
                f" AND lease_until > {_NOW}",
                (*fence.epochs, fence.owner),
            )
            if fence.epochs[row[0]] == row[1]
        }
        lost = frozenset(fence.epochs) - held
        if lost:
            raise FencedOut(lost)

    # Virtual shards ---------------------------------------------------------------------

    def claim(self, vshards: Sequence[int], owner: str, lease_s: float) -> dict[int, int]:
        if not vshards:
            return {}

        def claim() -> dict[int, int]:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO vshards (vshard) VALUES (?)", [(v,) for v in vshards])
                taken: dict[int, int] = {}
                for v in vshards:
                    row = db.execute(
                        f"UPDATE vshards SET owner = ?, epoch = epoch + 1, lease_until = {_NOW} + ?,"
                        " wanted_by = ''"
                        " WHERE vshard = ? AND (owner = ''"
                        f" OR lease_until <= {_NOW} OR (owner = ? AND wanted_by IN ('', ?)))"
                        " RETURNING epoch",
                        (owner, lease_s, v, owner, owner),
                    ).fetchone()
                    if row is not None:
                        taken[v] = row[0]
                    else:
                        db.execute("UPDATE vshards SET wanted_by = ? WHERE vshard = ?", (owner, v))
                db.execute("COMMIT")
            except BaseException:
                _roll_back(db)
                raise
            return taken

        return self._when_free(claim)

    def renew(self, owner: str, epochs: Mapping[int, int], lease_s: float) -> set[int]:
        if not epochs:
            return set()

        def renew() -> set[int]:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                renewed = {
                    v
                    for v, epoch in epochs.items()
                    if db.execute(
                        f"UPDATE vshards SET lease_until = {_NOW} + ? WHERE vshard = ? AND owner = ?"
                        " AND epoch = ? AND wanted_by IN ('', ?) RETURNING vshard",
                        (lease_s, v, owner, epoch, owner),
                    ).fetchone()
                }
                db.execute("COMMIT")
            except BaseException:
                _roll_back(db)
                raise
            return renewed

        return self._when_free(renew)

    def release(self, owner: str, epochs: Mapping[int, int]) -> None:
        if not epochs:
            return

        def release() -> None:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE vshards SET owner = '', lease_until = 0"
                    " WHERE vshard = ? AND owner = ? AND epoch = ?",
                    [(v, owner, epoch) for v, epoch in epochs.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                _roll_back(db)
                raise

        self._when_free(release)

    def leases(self) -> list[Lease]:
        rows = self._when_free(
            lambda: self._db.execute(
                f"SELECT vshard, owner, epoch, lease_until - {_NOW}, wanted_by FROM vshards ORDER BY vshard"
            ).fetchall()
        )
        return [Lease(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def probe_write(self) -> float:
        started = time.perf_counter()
        db = self._db
        self._when_free(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            db.execute("INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?)", (time.time(),))
            self._when_free(lambda: db.execute("COMMIT"))
        except BaseException:
            _roll_back(db)
            raise
        return time.perf_counter() - started


# The store's clock (Unix seconds): leases are judged by it, whichever process asks.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

# A stored open session that expired before the given time is counted abandoned, in the minute
# it expired (runtime.analytics); the write then replaces or removes the row.
_SETTLE = (
    "INSERT INTO analytics_counts (tenant_id, bucket, flow_id, flow_version, state, name, item, count, total)"
    " SELECT tenant_id, (CAST(expires_at AS INTEGER) / 60) * 60, flow_id, flow_version, state, 'abandoned',"
    " '', 1, 0 FROM analytics_sessions WHERE tenant_id = ? AND conversation_id = ? AND expires_at < ?"
    " ON CONFLICT (tenant_id, bucket, flow_id, flow_version, state, name, item)"
    " DO UPDATE SET count = count + excluded.count"
)
# A missed text is kept if it is kept already or its hour keeps fewer than ?6 texts; else it is
# added to the hour's "" row.
_ADD_MISSED = (
    "INSERT INTO analytics_missed (tenant_id, flow_id, bucket, text, count)"
    " SELECT ?1, ?2, ?3, CASE WHEN EXISTS (SELECT 1 FROM analytics_missed"
    " WHERE tenant_id = ?1 AND flow_id = ?2 AND bucket = ?3 AND text = ?4)"
    " OR (SELECT COUNT(*) FROM analytics_missed WHERE tenant_id = ?1 AND flow_id = ?2 AND bucket = ?3) < ?6"
    " THEN ?4 ELSE '' END, ?5"
    " ON CONFLICT (tenant_id, flow_id, bucket, text) DO UPDATE SET count = count + excluded.count"
)

_TURN_COLUMNS = "seq, message_id, kind, reply, created_at, input, fingerprint, recorded"


def _kept(row: tuple[Any, ...]) -> KeptTurn:
    return KeptTurn(row[0], row[1], row[2], bytes(row[3]), row[4], row[5], bytes(row[6]), bytes(row[7]))


def _roll_back(db: sqlite3.Connection) -> None:
    # A failed COMMIT may already have ended the transaction; a second error would hide the first.
    if db.in_transaction:
        db.execute("ROLLBACK")


def _problem(error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "file is not a database" in text:
        return "not an SQLite database (file is not a database)"
    if "malformed" in text:
        return f"damaged ({text})"
    return text
