"""Versioned schemas: each store records the version it is at and applies the steps after it.

SQLite keeps the version in ``PRAGMA user_version``; PostgreSQL in a ``schema_version``
table, one row per step applied.

A step is applied inside the same transaction that records its version, so a store is
never left between two versions. A store at a version newer than this code knows is
refused: it was written by a newer Confab, and an older one must not guess.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    what: str
    statements: tuple[str, ...]


SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and their recent turns",
        (
            """CREATE TABLE IF NOT EXISTS conversations (
                tenant_id       TEXT NOT NULL,
                conversation_id TEXT NOT NULL,
                state           BLOB NOT NULL,
                seq             INTEGER NOT NULL,
                updated_at      REAL NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)
            ) WITHOUT ROWID""",
            """CREATE TABLE IF NOT EXISTS turns (
                tenant_id       TEXT NOT NULL,
                conversation_id TEXT NOT NULL,
                seq             INTEGER NOT NULL,
                message_id      TEXT NOT NULL,
                kind            INTEGER NOT NULL,
                reply           BLOB NOT NULL,
                created_at      REAL NOT NULL,
                input           TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (tenant_id, conversation_id, seq)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "a row that health checks write to find out whether writes work",
        ("CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL)",),
    ),
    Migration(
        3,
        "a fingerprint of what a client sent under its own request id (the kept input may be masked)",
        ("ALTER TABLE turns ADD COLUMN fingerprint BLOB NOT NULL DEFAULT x''",),
    ),
    Migration(
        4,
        "the message each turn answered, for replays of recorded traffic against new flow versions",
        ("ALTER TABLE turns ADD COLUMN recorded BLOB NOT NULL DEFAULT x''",),
    ),
    Migration(
        5,
        "virtual shards: who holds each, at which epoch, and until when (single activation)",
        (
            """CREATE TABLE IF NOT EXISTS vshards (
                vshard      INTEGER PRIMARY KEY,
                owner       TEXT NOT NULL DEFAULT '',
                epoch       INTEGER NOT NULL DEFAULT 0,
                lease_until REAL NOT NULL DEFAULT 0,
                wanted_by   TEXT NOT NULL DEFAULT ''
            )""",
        ),
    ),
    Migration(
        6,
        "conversation analytics: counters per minute, open sessions, missed utterances",
        (
            """CREATE TABLE IF NOT EXISTS analytics_counts (
                tenant_id    TEXT NOT NULL,
                bucket       INTEGER NOT NULL,
                flow_id      TEXT NOT NULL,
                flow_version TEXT NOT NULL,
                state        TEXT NOT NULL,
                name         TEXT NOT NULL,
                item         TEXT NOT NULL,
                count        INTEGER NOT NULL,
                total        REAL NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id, bucket, flow_id, flow_version, state, name, item)
            ) WITHOUT ROWID""",
            """CREATE TABLE IF NOT EXISTS analytics_sessions (
                tenant_id       TEXT NOT NULL,
                conversation_id TEXT NOT NULL,
                flow_id         TEXT NOT NULL,
                flow_version    TEXT NOT NULL,
                state           TEXT NOT NULL,
                expires_at      REAL NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS analytics_sessions_expiry"
            " ON analytics_sessions (tenant_id, expires_at)",
            """CREATE TABLE IF NOT EXISTS analytics_missed (
                tenant_id TEXT NOT NULL,
                flow_id   TEXT NOT NULL,
                bucket    INTEGER NOT NULL,
                text      TEXT NOT NULL,
                count     INTEGER NOT NULL,
                PRIMARY KEY (tenant_id, flow_id, bucket, text)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        7,
        "tokens each tenant's model calls spent per UTC day (generate steps' budgets)",
        (
            """CREATE TABLE IF NOT EXISTS model_usage (
                tenant_id TEXT NOT NULL,
                day       TEXT NOT NULL,
                tokens    INTEGER NOT NULL,
                PRIMARY KEY (tenant_id, day)
            ) WITHOUT ROWID""",
        ),
    ),
)

# Columns a version-1 store may lack: data dirs from before versions were recorded.
SQLITE_V1_COLUMNS = {"turns": [("input", "TEXT NOT NULL DEFAULT ''")]}

SQLITE_VERSION = SQLITE[-1].version


# What confab_refuse_stale raises: a write computed from a state the store no longer holds (its
# DETAIL lists the refused conversations by their 1-based position in the write).
STALE_SQLSTATE = "CF409"

# PostgreSQL: the same tables at the same versions (and, from 6, a function SQLite does
# without). Keys compare byte by byte (COLLATE "C"), as SQLite's do, so that paging through
# conversations sees one order whichever store it is; times the writer stamps stay Unix
# seconds, and a lease ends at a time of the server's clock.
POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and their recent turns",
        (
            """CREATE TABLE conversations (
                tenant_id       TEXT COLLATE "C" NOT NULL,
                conversation_id TEXT COLLATE "C" NOT NULL,
                state           BYTEA NOT NULL,
                seq             BIGINT NOT NULL,
                updated_at      DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)
            )""",
            """CREATE TABLE turns (
                tenant_id       TEXT COLLATE "C" NOT NULL,
                conversation_id TEXT COLLATE "C" NOT NULL,
                seq             BIGINT NOT NULL,
                message_id      TEXT NOT NULL,
                kind            INTEGER NOT NULL,
                reply           BYTEA NOT NULL,
                created_at      DOUBLE PRECISION NOT NULL,
                input           TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (tenant_id, conversation_id, seq)
            )""",
        ),
    ),
    Migration(
        2,
        "a row that health checks write to find out whether writes work",
        (
            """CREATE TABLE write_probe (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
    Migration(
        3,
        "a fingerprint of what a client sent under its own request id (the kept input may be masked)",
        ("ALTER TABLE turns ADD COLUMN fingerprint BYTEA NOT NULL DEFAULT ''",),
    ),
    Migration(
        4,
        "the message each turn answered, for replays of recorded traffic against new flow versions",
        ("ALTER TABLE turns ADD COLUMN recorded BYTEA NOT NULL DEFAULT ''",),
    ),
    Migration(
        5,
        "virtual shards: who holds each, at which epoch, and until when (single activation)",
        (
            """CREATE TABLE vshards (
                vshard      INTEGER PRIMARY KEY,
                owner       TEXT NOT NULL DEFAULT '',
                epoch       BIGINT NOT NULL DEFAULT 0,
                lease_until TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
                wanted_by   TEXT NOT NULL DEFAULT ''
            )""",
        ),
    ),
    Migration(
        6,
        "writes conditional on the stored seq: a function that refuses a write from a stale state",
        # Called by the write's own statement, so the condition costs no round trip: its error
        # aborts the transaction before COMMIT. (SQLite checks each statement's row count.)
        (
            f"""CREATE FUNCTION confab_refuse_stale(stale INTEGER[]) RETURNS void
                LANGUAGE plpgsql AS $$
            BEGIN
                IF cardinality(stale) > 0 THEN
                    RAISE EXCEPTION 'the store holds another version of % conversation(s) of this write',
                        cardinality(stale)
                        USING ERRCODE = '{STALE_SQLSTATE}', DETAIL = array_to_string(stale, ',');
                END IF;
            END
            $$""",
        ),
    ),
    Migration(
        7,
        "the cluster's members: every host's heartbeat by the server's clock (no host leads)",
        (
            """CREATE TABLE members (
                host         TEXT PRIMARY KEY,
                cluster      TEXT NOT NULL,
                incarnation  BIGINT NOT NULL,
                state        TEXT NOT NULL,
                edge         TEXT NOT NULL DEFAULT '',
                detail       TEXT NOT NULL DEFAULT '',
                started_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
                heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
            )""",
        ),
    ),
    Migration(
        8,
        "conversation analytics: counters per minute, open sessions, missed utterances",
        (
            """CREATE TABLE analytics_counts (
                tenant_id    TEXT COLLATE "C" NOT NULL,
                bucket       BIGINT NOT NULL,
                flow_id      TEXT COLLATE "C" NOT NULL,
                flow_version TEXT COLLATE "C" NOT NULL,
                state        TEXT COLLATE "C" NOT NULL,
                name         TEXT COLLATE "C" NOT NULL,
                item         TEXT COLLATE "C" NOT NULL,
                count        BIGINT NOT NULL,
                total        DOUBLE PRECISION NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant_id, bucket, flow_id, flow_version, state, name, item)
            )""",
            """CREATE TABLE analytics_sessions (
                tenant_id       TEXT COLLATE "C" NOT NULL,
                conversation_id TEXT COLLATE "C" NOT NULL,
                flow_id         TEXT NOT NULL,
                flow_version    TEXT NOT NULL,
                state           TEXT NOT NULL,
                expires_at      DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)
            )""",
            "CREATE INDEX analytics_sessions_expiry ON analytics_sessions (tenant_id, expires_at)",
            """CREATE TABLE analytics_missed (
                tenant_id TEXT COLLATE "C" NOT NULL,
                flow_id   TEXT COLLATE "C" NOT NULL,
                bucket    BIGINT NOT NULL,
                text      TEXT COLLATE "C" NOT NULL,
                count     BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, flow_id, bucket, text)
            )""",
        ),
    ),
    Migration(
        9,
        "tokens each tenant's model calls spent per UTC day (generate steps' budgets)",
        (
            """CREATE TABLE model_usage (
                tenant_id TEXT COLLATE "C" NOT NULL,
                day       TEXT COLLATE "C" NOT NULL,
                tokens    BIGINT NOT NULL,
                PRIMARY KEY (tenant_id, day)
            )""",
        ),
    ),
)

POSTGRES_VERSION = POSTGRES[-1].version
