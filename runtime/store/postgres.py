"""The shared store: one PostgreSQL database for the shards of every host of a cluster.

Each shard process opens its own :class:`PostgresStore` and uses it from one thread,
through a pool of one connection (two while a broken one is being replaced): the pool
reconnects in the background once the server is back, while a call that finds no
working connection fails within ``pool_timeout_s`` (the shard answers UNAVAILABLE).

A :meth:`~PostgresStore.write` is one transaction sent as one pipeline: one statement per
table, carrying the whole round's rows as arrays, all sent together: one round trip, plus
one for the fence. Each state is written only where the stored seq is the one it was
computed from; the statement itself refuses the transaction otherwise (``STALE_SQLSTATE``),
so the condition adds no round trip.
Leases are judged by the server's clock (``clock_timestamp()``, which keeps running
inside a transaction, unlike ``now()``), so the hosts' clocks never matter. A fenced
write share-locks the rows of its virtual shards until it commits: a claim that would
take one of them waits for the write, so a write of the old owner is either wholly
before the new owner's claim or refused.

Durability is the server's: a commit returns once the server's ``synchronous_commit``
says it is safe (``store.synchronous`` is for SQLite only).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from confab.runtime.analytics import MISSED_BUCKET_S, AnalyticsQuery, AnalyticsRows, bucket_of
from confab.runtime.config import passwords_in, without_password
from confab.runtime.model import ConversationKey
from confab.runtime.store import (
    AnalyticsWrite,
    ConversationWrite,
    Fence,
    FencedOut,
    KeptTurn,
    Lease,
    Member,
    MemberBeat,
    MemberConflict,
    Retention,
    StaleWrite,
    StoredConversation,
    StoreError,
    conditions,
    plan_analytics,
)
from confab.runtime.store.migrations import POSTGRES, POSTGRES_VERSION, STALE_SQLSTATE
from confab.runtime.store.paging import key_page

# Connection settings a URL may set itself; these are used where it does not. Keepalives and
# the TCP user timeout turn a server that went silent (a cut network) into an error within
# seconds instead of the kernel's quarter of an hour.
CONNECTION_DEFAULTS: dict[str, str | int] = {
    "application_name": "confab",
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms
}
# A transaction left open by a client that vanished (its host cut off between the fence and
# the commit) would hold its virtual shards' rows and stall their next claim. The server ends
# it after IDLE_IN_TRANSACTION if it idles, and its own keepalives on the connection find a
# client gone in the middle of a pipeline (the session is "active" then, waiting for the rest
# of it, which no timeout of the transaction's covers) within seconds instead of two hours.
# Confab's own transactions never idle between two statements.
IDLE_IN_TRANSACTION = "5s"
SERVER_SIDE_SETTINGS = (
    f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'",
    "SET tcp_keepalives_idle = 2",
    "SET tcp_keepalives_interval = 1",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 5000",
    # Never wait long for a row another session holds: a shard's loop waits on its store,
    # and a claim or write that cannot get its rows soon fails and is tried again.
    "SET lock_timeout = '2s'",
)
# One key for every Confab store: schema changes of one database are applied one at a time.
MIGRATION_LOCK = 0x436F_6E66_6162  # "Confab"


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        retention: Retention | None = None,
        connect_timeout_s: int = 5,
        pool_timeout_s: float = 5.0,
    ) -> None:
        self.url = without_password(url)  # the only form of the URL ever shown
        self.retention = retention or Retention()
        # What no message may show: the password as libpq reads it, and as the URL spells it
        # (libpq quotes a piece of a URL it cannot read).
        secrets = [p for p in {_password_in(url), *passwords_in(url)} if p]
        try:
            given = conninfo_to_dict(url)
            missing = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
            if "connect_timeout" not in given:
                missing["connect_timeout"] = connect_timeout_s
            conninfo = make_conninfo(url, **missing)
            with psycopg.connect(conninfo, autocommit=True) as db:
                _configure(db)
                self._migrate(db)
        except psycopg.Error as exc:
            raise StoreError(f"{self.url}: {_reason(exc, secrets)}") from exc
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True},
            configure=_configure,
            timeout=pool_timeout_s,
            # Give up a reconnection soon: the next call then starts a new one at once, instead
            # of waiting out a back-off that doubles up to minutes while the server is away.
            reconnect_timeout=pool_timeout_s,
            name="confab-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s + pool_timeout_s)
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"{self.url}: {_reason(exc, secrets)}") from exc

    # Opening --------------------------------------------------------------------------

    def _migrate(self, db: psycopg.Connection[tuple[Any, ...]]) -> None:
        with db.transaction():
            # Held to the end of this transaction: shards opening at once migrate one by one.
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            # Checked before creating it: a user allowed only to read and write rows may open
            # a database an administrator has brought up to date.
            if _one(db, "SELECT to_regclass('schema_version') IS NULL"):
                db.execute(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, what TEXT NOT NULL,"
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
                )
            version = int(_one(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version"))
            if version > POSTGRES_VERSION:
                raise StoreError(
                    f"{self.url}: written by a newer Confab (schema {version}; this one knows up to"
                    f" {POSTGRES_VERSION})"
                )
            for migration in POSTGRES:
                if migration.version <= version:
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_version (version, what) VALUES (%s, %s)",
                    (migration.version, migration.what),
                )

    def close(self) -> None:
        self._pool.close()

    # Reads ----------------------------------------------------------------------------

    def load(self, key: ConversationKey) -> StoredConversation | None:
        # The ids a conversation must recognise: its last turns_kept, and the idempotency window's.
        since = time.time() - self.retention.idempotency_window_s
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT c.state, c.seq, k.ids, k.ats FROM conversations c LEFT JOIN LATERAL ("
                " SELECT array_agg(t.message_id ORDER BY t.seq) AS ids,"
                " array_agg(t.created_at ORDER BY t.seq) AS ats FROM turns t"
                " WHERE t.tenant_id = c.tenant_id AND t.conversation_id = c.conversation_id"
                " AND (t.seq > c.seq - %s OR t.created_at >= %s)) k ON TRUE"
                " WHERE c.tenant_id = %s AND c.conversation_id = %s",
                (self.retention.turns_kept, since, key.tenant_id, key.conversation_id),
            ).fetchone()
        if row is None:
            return None
        return StoredConversation(
            state=row[0], seq=row[1], message_ids=list(zip(row[2] or [], row[3] or [], strict=True))
        )

    def load_turn(self, key: ConversationKey, message_id: str) -> KeptTurn | None:
        with self._pool.connection() as db:
            row = db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE tenant_id = %s AND conversation_id = %s"
                " AND message_id = %s ORDER BY seq DESC LIMIT 1",
                (key.tenant_id, key.conversation_id, message_id),
            ).fetchone()
        return None if row is None else _kept(row)

    def scan(
        self, after: ConversationKey | None, tenant_id: str, limit: int
    ) -> list[tuple[ConversationKey, bytes, float]]:
        page, args = key_page([], [], tenant_id=tenant_id, after=after, limit=limit, mark="%s")
        query = "SELECT tenant_id, conversation_id, state, updated_at FROM conversations" + page
        with self._pool.connection() as db:
            rows = db.execute(query, args).fetchall()
        return [(ConversationKey(r[0], r[1]), r[2], r[3]) for r in rows]

    def recent_turns(self, key: ConversationKey, count: int) -> list[KeptTurn]:
        with self._pool.connection() as db:
            rows = db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE tenant_id = %s AND conversation_id = %s"
                " ORDER BY seq DESC LIMIT %s",
                (key.tenant_id, key.conversation_id, count),
            ).fetchall()
        return [_kept(r) for r in reversed(rows)]

    def recorded_turns(self, key: ConversationKey) -> list[KeptTurn]:
        with self._pool.connection() as db:
            rows = db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE tenant_id = %s AND conversation_id = %s"
                " AND recorded <> ''::bytea ORDER BY seq",
                (key.tenant_id, key.conversation_id),
            ).fetchall()
        return [_kept(r) for r in rows]

    def recorded_conversations(
        self, tenant_id: str, since: float, after: ConversationKey | None, limit: int
    ) -> list[ConversationKey]:
        page, args = key_page(
            ["recorded <> ''::bytea", "created_at >= %s"],
            [since],
            tenant_id=tenant_id,
            after=after,
            limit=limit,
            mark="%s",
        )
        query = "SELECT DISTINCT tenant_id, conversation_id FROM turns" + page
        with self._pool.connection() as db:
            rows = db.execute(query, args).fetchall()
        return [ConversationKey(r[0], r[1]) for r in rows]

    def count_conversations(self) -> int:
        with self._pool.connection() as db:
            return int(_one(db, "SELECT COUNT(*) FROM conversations"))

    def model_tokens_used(self, tenant_id: str, day: str) -> int:
        with self._pool.connection() as db:
            row = db.execute(
                "SELECT tokens FROM model_usage WHERE tenant_id = %s AND day = %s", (tenant_id, day)
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def add_model_tokens(self, spent: Mapping[tuple[str, str], int]) -> None:
        if not spent:
            return
        rows = sorted(spent.items())  # in key order, as every writer locks them
        with self._pool.connection() as db:
            db.execute(
                "INSERT INTO model_usage (tenant_id, day, tokens)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
                " ON CONFLICT (tenant_id, day) DO UPDATE SET tokens = model_usage.tokens + excluded.tokens",
                ([t for (t, _), _n in rows], [d for (_, d), _n in rows], [n for _, n in rows]),
            )

    def ping(self) -> float:
        started = time.perf_counter()
        with self._pool.connection() as db:
            db.execute("SELECT 1 FROM conversations LIMIT 1").fetchall()
        return time.perf_counter() - started

    # Writes ---------------------------------------------------------------------------

    def write(self, writes: Sequence[ConversationWrite], fence: Fence | None = None) -> None:
        now = time.time()
        expected = conditions(writes)
        # One row per conversation and per turn, the last given winning as if each were written
        # in turn: a single statement may not change one row twice.
        states = {w.key: w for w in writes}
        keys = list(states)
        turns = {(w.key.tenant_id, w.key.conversation_id, r.seq): r for w in writes for r in w.turns}
        prunes = [
            (w.key.tenant_id, w.key.conversation_id, w.prune_through, w.prune_before)
            for w in writes
            if w.prune_through > 0
        ]
        planned = plan_analytics(writes)
        # The rows go as columns, one array each in binary (%b): a statement per table whatever
        # the round's size, which costs the shard far less than one statement per row.
        try:
            with self._pool.connection() as db, db.pipeline(), db.transaction():
                if fence is not None:
                    self._check_fence(db, fence)
                if states:
                    # The states and their condition in one statement, which refuses the whole
                    # transaction if a conversation is not at the seq it was computed from: the
                    # server checks it, so the write stays one round trip (the pipeline is not
                    # waited on for a row count).
                    db.execute(
                        _PUT_STATES,
                        {
                            "now": now,
                            "tenants": [k.tenant_id for k in keys],
                            "conversations": [k.conversation_id for k in keys],
                            "states": [states[k].state for k in keys],
                            "seqs": [states[k].seq for k in keys],
                            "bases": [expected[k] for k in keys],
                        },
                    )
                if turns:
                    db.execute(
                        "INSERT INTO turns (tenant_id, conversation_id, seq, message_id, kind, reply,"
                        " created_at, input, fingerprint, recorded)"
                        " SELECT tenant_id, conversation_id, seq, message_id, kind, reply, %b, input,"
                        " fingerprint, recorded FROM unnest(%b::text[], %b::text[], %b::bigint[],"
                        " %b::text[], %b::integer[], %b::bytea[], %b::text[], %b::bytea[], %b::bytea[])"
                        " AS r (tenant_id, conversation_id, seq, message_id, kind, reply, input, fingerprint,"
                        " recorded)"
                        " ON CONFLICT (tenant_id, conversation_id, seq) DO UPDATE SET"
                        " message_id = excluded.message_id, kind = excluded.kind, reply = excluded.reply,"
                        " created_at = excluded.created_at, input = excluded.input,"
                        " fingerprint = excluded.fingerprint, recorded = excluded.recorded",
                        (
                            now,
                            [t for t, _, _ in turns],
                            [c for _, c, _ in turns],
                            [seq for _, _, seq in turns],
                            [r.message_id for r in turns.values()],
                            [r.kind for r in turns.values()],
                            [r.reply for r in turns.values()],
                            [r.input for r in turns.values()],
                            [r.fingerprint for r in turns.values()],
                            [r.recorded for r in turns.values()],
                        ),
                    )
                if prunes:
                    # One statement per conversation, each on the turns' primary key: rare (once every
                    # turns_kept turns of a conversation) and never a plan that could scan every turn.
                    db.cursor().executemany(
                        "DELETE FROM turns WHERE tenant_id = %s AND conversation_id = %s"
                        " AND seq <= %s AND created_at < %s",
                        prunes,
                    )
                if planned is not None:
                    _write_analytics(db, planned)
        except psycopg.Error as exc:
            if exc.sqlstate != STALE_SQLSTATE or exc.diag.message_detail is None:
                raise
            stale = frozenset(keys[int(n) - 1] for n in exc.diag.message_detail.split(","))
            raise StaleWrite(stale) from None

    def analytics(self, query: AnalyticsQuery, now: float) -> AnalyticsRows:
        flow = " AND flow_id = %(flow)s" if query.flow_id else ""
        args = {
            "tenant": query.tenant_id,
            "flow": query.flow_id,
            "since": int(query.since),
            "until": int(query.until),
            "expired_until": min(float(query.until), now),
            "hours_from": bucket_of(query.since, MISSED_BUCKET_S),
        }
        with self._pool.connection() as db, db.pipeline():
            counts = db.execute(
                "SELECT flow_id, flow_version, state, bucket, name, item, count, total FROM analytics_counts"
                f" WHERE tenant_id = %(tenant)s AND bucket >= %(since)s AND bucket < %(until)s{flow}",
                args,
            )
            expired = db.execute(
                "SELECT flow_id, flow_version, state, expires_at FROM analytics_sessions"
                " WHERE tenant_id = %(tenant)s AND expires_at >= %(since)s"
                f" AND expires_at < %(expired_until)s{flow}",
                args,
            )
            missed = db.execute(
                "SELECT flow_id, text, SUM(count)::bigint FROM analytics_missed WHERE tenant_id = %(tenant)s"
                f" AND bucket >= %(hours_from)s AND bucket < %(until)s{flow} GROUP BY flow_id, text",
                args,
            )
            return AnalyticsRows(counts.fetchall(), expired.fetchall(), missed.fetchall())

    def _check_fence(self, db: psycopg.Connection[tuple[Any, ...]], fence: Fence) -> None:
        # FOR SHARE, to the end of the write: a claim of any of these rows waits for the commit,
        # and a claim already made is seen here (it changed the owner or the epoch). In order,
        # as claims lock them, so that a claim and a write never wait for each other.
        rows = db.execute(
            "SELECT vshard, epoch FROM vshards WHERE vshard = ANY(%s::integer[]) AND owner = %s"
            " AND lease_until > clock_timestamp() ORDER BY vshard FOR SHARE",
            (sorted(fence.epochs), fence.owner),
        ).fetchall()
        held = {vshard for vshard, epoch in rows if fence.epochs.get(vshard) == epoch}
        lost = frozenset(fence.epochs) - held
        if lost:
            raise FencedOut(lost)

    def probe_write(self) -> float:
        started = time.perf_counter()
        with self._pool.connection() as db:
            db.execute(
                "INSERT INTO write_probe (id, at) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (time.time(),),
            )
        return time.perf_counter() - started

    # Virtual shards ---------------------------------------------------------------------
    #
    # Claims, renewals and releases are planned afresh each time (prepare=False): they run about
    # once a second, and a plan kept for any number of virtual shards (the generic plan a
    # prepared statement falls back to) joins their list with the table row by row, 10x slower
    # for a few hundred.

    def claim(self, vshards: Sequence[int], owner: str, lease_s: float) -> dict[int, int]:
        if not vshards:
            return {}
        wanted = sorted(set(vshards))
        with self._pool.connection() as db, db.pipeline(), db.transaction():
            db.execute(
                "INSERT INTO vshards (vshard) SELECT unnest(%s::integer[]) ON CONFLICT DO NOTHING", (wanted,)
            )
            # One statement, its rows locked in order as fenced writes lock them: a row a write
            # holds is waited for, then taken (nobody else holds it any more) or marked wanted.
            rows = db.execute(
                "WITH asked AS (SELECT vshard,"
                " (owner = '' OR lease_until <= clock_timestamp()"
                " OR (owner = %(owner)s AND wanted_by IN ('', %(owner)s))) AS free"
                " FROM vshards WHERE vshard = ANY(%(wanted)s::integer[]) ORDER BY vshard FOR UPDATE)"
                " UPDATE vshards SET"
                " owner = CASE WHEN asked.free THEN %(owner)s ELSE vshards.owner END,"
                " epoch = CASE WHEN asked.free THEN vshards.epoch + 1 ELSE vshards.epoch END,"
                " lease_until = CASE WHEN asked.free"
                " THEN clock_timestamp() + make_interval(secs => %(lease_s)s) ELSE vshards.lease_until END,"
                " wanted_by = CASE WHEN asked.free THEN '' ELSE %(owner)s END"
                " FROM asked WHERE vshards.vshard = asked.vshard"
                " RETURNING vshards.vshard, vshards.epoch, asked.free",
                {"wanted": wanted, "owner": owner, "lease_s": float(lease_s)},
                prepare=False,
            ).fetchall()
        return {vshard: epoch for vshard, epoch, taken in rows if taken}

    def renew(self, owner: str, epochs: Mapping[int, int], lease_s: float) -> set[int]:
        if not epochs:
            return set()
        held = sorted(epochs.items())
        with self._pool.connection() as db:
            rows = db.execute(
                "UPDATE vshards SET lease_until = clock_timestamp() + make_interval(secs => %s)"
                " FROM unnest(%s::integer[], %s::bigint[]) AS held (vshard, epoch)"
                " WHERE vshards.vshard = held.vshard AND vshards.epoch = held.epoch AND vshards.owner = %s"
                " AND vshards.wanted_by IN ('', %s) RETURNING vshards.vshard",
                (float(lease_s), [v for v, _ in held], [e for _, e in held], owner, owner),
                prepare=False,
            ).fetchall()
        return {row[0] for row in rows}

    def release(self, owner: str, epochs: Mapping[int, int]) -> None:
        if not epochs:
            return
        held = sorted(epochs.items())
        with self._pool.connection() as db:
            db.execute(
                "UPDATE vshards SET owner = '', lease_until = 'epoch'"
                " FROM unnest(%s::integer[], %s::bigint[]) AS held (vshard, epoch)"
                " WHERE vshards.vshard = held.vshard AND vshards.epoch = held.epoch AND vshards.owner = %s",
                ([v for v, _ in held], [e for _, e in held], owner),
                prepare=False,
            )

    def leases(self) -> list[Lease]:
        with self._pool.connection() as db:
            rows = db.execute(
                "SELECT vshard, owner, epoch,"
                " EXTRACT(EPOCH FROM lease_until - clock_timestamp())::double precision, wanted_by"
                " FROM vshards ORDER BY vshard"
            ).fetchall()
        return [Lease(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    # The cluster's members ----------------------------------------------------------------
    #
    # Short autocommit statements, one pipeline per heartbeat, nothing bound to a session:
    # a host is alive while its row's heartbeat is young by the server's clock, whichever
    # connection wrote it (a pooler or a reconnection changes nothing).

    def beat(self, beat: MemberBeat, stale_after_s: float, forget_after_s: float) -> list[Member]:
        """Write this host's heartbeat; every member's row of its cluster, this one's included.

        The row of a host id is taken over by a new incarnation only once the old one's
        heartbeat is ``stale_after_s`` old: MemberConflict while another live host has it.
        Rows silent for ``forget_after_s`` are removed."""
        with self._pool.connection() as db, db.pipeline():
            claimed = db.execute(
                "INSERT INTO members AS m (host, cluster, incarnation, state, edge, detail)"
                " VALUES (%(host)s, %(cluster)s, %(incarnation)s, %(state)s, %(edge)s, %(detail)s)"
                " ON CONFLICT (host) DO UPDATE SET cluster = excluded.cluster,"
                " incarnation = excluded.incarnation, state = excluded.state, edge = excluded.edge,"
                " detail = excluded.detail, heartbeat_at = clock_timestamp(),"
                " started_at = CASE WHEN m.incarnation = excluded.incarnation THEN m.started_at"
                " ELSE clock_timestamp() END"
                " WHERE m.incarnation = excluded.incarnation"
                " OR m.heartbeat_at < clock_timestamp() - make_interval(secs => %(stale)s)"
                " RETURNING m.incarnation",
                {
                    "host": beat.host,
                    "cluster": beat.cluster,
                    "incarnation": beat.incarnation,
                    "state": beat.state,
                    "edge": beat.edge,
                    "detail": beat.detail,
                    "stale": float(stale_after_s),
                },
            )
            db.execute(
                "DELETE FROM members WHERE heartbeat_at < clock_timestamp() - make_interval(secs => %s)",
                (float(forget_after_s),),
            )
            rows = db.execute(
                "SELECT host, cluster, incarnation, state, edge, detail,"
                " EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::double precision,"
                " EXTRACT(EPOCH FROM started_at)::double precision"
                " FROM members ORDER BY host"
            )
            mine = claimed.fetchone()
            members = [Member(*row) for row in rows.fetchall()]
        if mine is None:
            raise MemberConflict(
                f"another host of the cluster already calls itself {beat.host!r} and is alive:"
                " host ids must be unique (--host-id)"
            )
        return members

    def remove_member(self, host: str, incarnation: int) -> None:
        """This host left the cluster (after handing its share off): its row goes."""
        with self._pool.connection() as db:
            db.execute("DELETE FROM members WHERE host = %s AND incarnation = %s", (host, incarnation))


# The counters of a write, and the stored open sessions it settles (each one that expired before
# its time is counted abandoned in the minute it expired, and removed: the write puts back what
# it holds now), added up per row and taken in key order.
_ADD_COUNTS = (
    "WITH settled AS (DELETE FROM analytics_sessions s USING unnest(%(settle_tenants)b::text[],"
    " %(settle_conversations)b::text[], %(settle_at)b::float8[]) AS w (tenant_id, conversation_id, at)"
    " WHERE s.tenant_id = w.tenant_id AND s.conversation_id = w.conversation_id AND s.expires_at < w.at"
    " RETURNING s.tenant_id, s.flow_id, s.flow_version, s.state, s.expires_at),"
    " rows AS (SELECT * FROM unnest(%(tenants)b::text[], %(flows)b::text[], %(versions)b::text[],"
    " %(states)b::text[], %(buckets)b::bigint[], %(names)b::text[], %(items)b::text[],"
    " %(counts)b::bigint[], %(totals)b::float8[])"
    " AS r (tenant_id, flow_id, flow_version, state, bucket, name, item, count, total)"
    " UNION ALL SELECT tenant_id, flow_id, flow_version, state, (floor(expires_at / 60) * 60)::bigint,"
    " 'abandoned', '', 1, 0 FROM settled)"
    " INSERT INTO analytics_counts AS a (tenant_id, flow_id, flow_version, state, bucket, name, item, count,"
    " total) SELECT tenant_id, flow_id, flow_version, state, bucket, name, item, sum(count), sum(total)"
    " FROM rows GROUP BY tenant_id, bucket, flow_id, flow_version, state, name, item"
    " ORDER BY tenant_id, bucket, flow_id, flow_version, state, name, item"
    " ON CONFLICT (tenant_id, bucket, flow_id, flow_version, state, name, item)"
    " DO UPDATE SET count = a.count + excluded.count, total = a.total + excluded.total"
)
_ADD_MISSED = (
    "INSERT INTO analytics_missed AS m (tenant_id, flow_id, bucket, text, count)"
    " SELECT %(t)s, %(f)s, %(b)s, CASE WHEN EXISTS (SELECT FROM analytics_missed"
    " WHERE tenant_id = %(t)s AND flow_id = %(f)s AND bucket = %(b)s AND text = %(x)s)"
    " OR (SELECT count(*) FROM analytics_missed WHERE tenant_id = %(t)s AND flow_id = %(f)s"
    " AND bucket = %(b)s) < %(k)s THEN %(x)s ELSE '' END, %(n)s"
    " ON CONFLICT (tenant_id, flow_id, bucket, text) DO UPDATE SET count = m.count + excluded.count"
)

_TURN_COLUMNS = "seq, message_id, kind, reply, created_at, input, fingerprint, recorded"

# Each conversation's new state, by its condition: a NULL base writes over whatever is stored;
# 0, a conversation nobody has written (a row already there is not touched); any other, one
# stored at exactly that seq (a row changed meanwhile is re-read by the UPDATE and no longer
# matches). Those neither added nor updated go, by their position, to confab_refuse_stale,
# which raises STALE_SQLSTATE and so rolls the whole transaction back.
_PUT_STATES = (
    "WITH w AS (SELECT * FROM unnest(%(tenants)b::text[], %(conversations)b::text[],"
    " %(states)b::bytea[], %(seqs)b::bigint[], %(bases)b::bigint[]) WITH ORDINALITY"
    " AS w (tenant_id, conversation_id, state, seq, base, n)),"
    " overwritten AS (INSERT INTO conversations (tenant_id, conversation_id, state, seq, updated_at)"
    " SELECT tenant_id, conversation_id, state, seq, %(now)b FROM w WHERE base IS NULL"
    " ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET state = excluded.state,"
    " seq = excluded.seq, updated_at = excluded.updated_at),"
    " added AS (INSERT INTO conversations (tenant_id, conversation_id, state, seq, updated_at)"
    " SELECT tenant_id, conversation_id, state, seq, %(now)b FROM w WHERE base = 0"
    " ON CONFLICT (tenant_id, conversation_id) DO NOTHING RETURNING tenant_id, conversation_id),"
    " updated AS (UPDATE conversations c SET state = w.state, seq = w.seq, updated_at = %(now)b"
    " FROM w WHERE w.base > 0 AND c.tenant_id = w.tenant_id"
    " AND c.conversation_id = w.conversation_id AND c.seq = w.base"
    " RETURNING c.tenant_id, c.conversation_id)"
    " SELECT confab_refuse_stale(ARRAY(SELECT w.n::integer FROM w WHERE w.base IS NOT NULL"
    " AND NOT EXISTS (SELECT FROM added a"
    " WHERE a.tenant_id = w.tenant_id AND a.conversation_id = w.conversation_id)"
    " AND NOT EXISTS (SELECT FROM updated u"
    " WHERE u.tenant_id = w.tenant_id AND u.conversation_id = w.conversation_id)"
    " ORDER BY w.n))"
)


def _write_analytics(db: psycopg.Connection[tuple[Any, ...]], planned: AnalyticsWrite) -> None:
    """Inside the write's transaction and pipeline: the stored open sessions that ended are settled
    and the counters added to in one statement (its rows in key order, as every writer takes
    them, so two writers never wait for each other), then the sessions replaced and the missed
    texts counted (runtime.analytics)."""
    counts = sorted(planned.counts.items())
    if counts or planned.settles:
        db.execute(
            _ADD_COUNTS,
            {
                "tenants": [k[0] for k, _ in counts],
                "flows": [k[1] for k, _ in counts],
                "versions": [k[2] for k, _ in counts],
                "states": [k[3] for k, _ in counts],
                "buckets": [k[4] for k, _ in counts],
                "names": [k[5] for k, _ in counts],
                "items": [k[6] for k, _ in counts],
                "counts": [int(c) for _, (c, _t) in counts],
                "totals": [float(t) for _, (_c, t) in counts],
                "settle_tenants": [t for t, _, _ in planned.settles],
                "settle_conversations": [c for _, c, _ in planned.settles],
                "settle_at": [float(at) for _, _, at in planned.settles],
            },
        )
    marks = [(k, m) for k, m in planned.sessions.items() if m is not None]
    if marks:
        db.execute(
            "INSERT INTO analytics_sessions (tenant_id, conversation_id, flow_id, flow_version, state,"
            " expires_at) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::float8[]) ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET"
            " flow_id = excluded.flow_id, flow_version = excluded.flow_version, state = excluded.state,"
            " expires_at = excluded.expires_at",
            (
                [k.tenant_id for k, _ in marks],
                [k.conversation_id for k, _ in marks],
                [m.flow_id for _, m in marks],
                [m.flow_version for _, m in marks],
                [m.state for _, m in marks],
                [m.expires_at for _, m in marks],
            ),
        )
    gone = [k for k, m in planned.sessions.items() if m is None]
    if gone:
        db.execute(
            "DELETE FROM analytics_sessions s USING unnest(%b::text[], %b::text[]) AS g (tenant_id,"
            " conversation_id) WHERE s.tenant_id = g.tenant_id AND s.conversation_id = g.conversation_id",
            ([k.tenant_id for k in gone], [k.conversation_id for k in gone]),
        )
    if planned.missed:
        db.cursor().executemany(
            _ADD_MISSED,
            [{"t": t, "f": f, "b": b, "x": x, "n": n, "k": k} for t, f, b, x, n, k in planned.missed_rows],
        )


def _kept(row: tuple[Any, ...]) -> KeptTurn:
    return KeptTurn(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def _one(db: psycopg.Connection[tuple[Any, ...]], query: str) -> Any:
    row = db.execute(query).fetchone()
    assert row is not None
    return row[0]


def _configure(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    for setting in SERVER_SIDE_SETTINGS:
        db.execute(setting)


def _password_in(url: str) -> str:
    try:
        return str(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        return ""


def _reason(error: psycopg.Error, secrets: list[str]) -> str:
    """The server's or libpq's complaint on one line, never with a password in it."""
    text = str(error)
    for secret in sorted(secrets, key=len, reverse=True):  # before a shorter one breaks it up
        text = text.replace(secret, "***")
    text = "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    if text.startswith("connection failed: "):
        text = text.removeprefix("connection failed: ")
    return text or type(error).__name__
