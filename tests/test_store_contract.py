"""What every store promises (``runtime.store.Store``), checked on SQLite and on PostgreSQL alike.

Each test runs once per store, with the same body; a :class:`Backend` opens stores on one
shared location and gives the test a plain connection of its own, to look underneath and
to hold a write transaction open from outside the store under test.
"""

from __future__ import annotations

import abc
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from confab.runtime.analytics import MISSED_KEPT, AnalyticsQuery, SessionMark, TurnCounts, bucket_of
from confab.runtime.model import ConversationKey
from confab.runtime.store import (
    ConversationWrite,
    Fence,
    FencedOut,
    Retention,
    StaleWrite,
    Store,
    StoredConversation,
    TurnRecord,
    open_store,
)
from confab.runtime.store.sqlite import SqliteStore

KEY = ConversationKey("tenant-a", "conv-1")
OTHER = ConversationKey("tenant-a", "conv-2")
ELSEWHERE = ConversationKey("tenant-b", "x")
WAIT_S = 20.0  # the longest any step here waits for another thread: only reached if it hangs


class Backend(abc.ABC):
    """One store's location, stores opened on it, and a connection of the test's own."""

    name = ""

    def __init__(self, location: str) -> None:
        self.location = location
        self.opened: list[Store] = []

    def open(self, retention: Retention | None = None) -> Store:
        store = open_store(self.location, synchronous="NORMAL", retention=retention)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()

    @abc.abstractmethod
    def rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        """``query`` (``?`` placeholders) on the test's own connection, committed."""

    @abc.abstractmethod
    def held_write(self, store: Store, key: ConversationKey) -> contextlib.AbstractContextManager[HeldWrite]:
        """While inside, a write of ``store`` that updates ``key`` stops after its fence check
        until :meth:`HeldWrite.release`."""


class HeldWrite(abc.ABC):
    @abc.abstractmethod
    def wait_until_held(self) -> None:
        """Returns once the write is inside its transaction, held."""

    @abc.abstractmethod
    def wait_until_blocked(self, claim: threading.Thread) -> None:
        """Returns once ``claim`` is seen waiting for the held write (fails if it finished)."""

    @abc.abstractmethod
    def release(self) -> None: ...


class SqliteBackend(Backend):
    name = "sqlite"

    def rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.location)) as db, db:
            return db.execute(query, args).fetchall()

    @contextlib.contextmanager
    def held_write(self, store: Store, key: ConversationKey) -> Iterator[HeldWrite]:
        # A temporary trigger on the writer's own connection calls back into the test, which
        # keeps the write there: inside its transaction, after its fence check.
        held = SqliteHeldWrite()
        assert isinstance(store, SqliteStore)
        db = store._db
        db.create_function("hold", 0, held.hold)
        db.execute(
            "CREATE TEMP TRIGGER held_write AFTER UPDATE ON conversations"
            f" WHEN new.conversation_id = '{key.conversation_id}' BEGIN SELECT hold(); END"
        )
        try:
            yield held
        finally:
            held.release()
            db.execute("DROP TRIGGER IF EXISTS held_write")


class SqliteHeldWrite(HeldWrite):
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def hold(self) -> int:
        self.entered.set()
        self.go.wait(WAIT_S)
        return 0

    def wait_until_held(self) -> None:
        assert self.entered.wait(WAIT_S), "the write never reached its hold"

    def release(self) -> None:
        self.go.set()

    def wait_until_blocked(self, claim: threading.Thread) -> None:
        # SQLite cannot say who waits for whom: a claim that did not wait would be done by now.
        claim.join(0.5)
        assert claim.is_alive(), "the claim did not wait for the write"


class PostgresBackend(Backend):
    name = "postgres"

    def rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.location, autocommit=True) as db:
            cursor = db.execute(query.replace("?", "%s"), args)
            return cursor.fetchall() if cursor.description else []

    @contextlib.contextmanager
    def held_write(self, store: Store, key: ConversationKey) -> Iterator[HeldWrite]:
        # The test's connection locks the conversation's row: the write's upsert waits for it,
        # inside the write's transaction and after its fence check.
        with psycopg.connect(self.location) as db:
            db.execute(
                "SELECT 1 FROM conversations WHERE tenant_id = %s AND conversation_id = %s FOR UPDATE",
                (key.tenant_id, key.conversation_id),
            )
            held = PostgresHeldWrite(self.location, db)
            try:
                yield held
            finally:
                held.release()

    def waiting(self, like: str) -> list[tuple[int, list[int]]]:
        """(pid, pids it waits for) of each backend waiting for a lock in a statement like ``like``."""
        return [
            (row[0], list(row[1]))
            for row in self.rows(
                "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE ?",
                like,
            )
        ]


class PostgresHeldWrite(HeldWrite):
    def __init__(self, location: str, db: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.backend = PostgresBackend(location)
        self.db = db
        self.holder = int(db.info.backend_pid)
        self.writer = 0

    def release(self) -> None:
        self.db.rollback()

    def wait_until_held(self) -> None:
        def writer_waits() -> bool:
            waiting = [
                pid for pid, on in self.backend.waiting("%INSERT INTO conversations%") if self.holder in on
            ]
            self.writer = waiting[0] if waiting else 0
            return bool(waiting)

        wait_for(writer_waits, "the write never waited for the test's row lock")

    def wait_until_blocked(self, claim: threading.Thread) -> None:
        wait_for(
            lambda: any(self.writer in on for _, on in self.backend.waiting("%UPDATE vshards%")),
            "the claim never waited for the write",
            give_up=lambda: not claim.is_alive(),
        )


def wait_for(
    condition: Callable[[], bool], failure: str, give_up: Callable[[], bool] = lambda: False
) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert not give_up() and time.monotonic() < deadline, failure
        time.sleep(0.01)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen: Backend
    if request.param == "sqlite":
        chosen = SqliteBackend(str(tmp_path / "data" / "confab.sqlite3"))
    else:
        chosen = PostgresBackend(request.getfixturevalue("postgres_url"))
    try:
        yield chosen
    finally:
        chosen.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def turn(seq: int, message_id: str | None = None, kind: int = 1) -> TurnRecord:
    return TurnRecord(seq, message_id or f"m-{seq}", kind, f"reply-{seq}".encode())


def write_one(store: Store, key: ConversationKey, seq: int, message_id: str | None = None) -> None:
    store.write([ConversationWrite(key, f"state-{seq}".encode(), seq, [turn(seq, message_id)])])


def ids(stored: StoredConversation | None) -> list[str]:
    assert stored is not None
    return [message_id for message_id, _ in stored.message_ids]


def turn_rows(backend: Backend, key: ConversationKey) -> list[int]:
    rows = backend.rows(
        "SELECT seq FROM turns WHERE tenant_id = ? AND conversation_id = ? ORDER BY seq",
        key.tenant_id,
        key.conversation_id,
    )
    return [r[0] for r in rows]


# Conversations and their turns ----------------------------------------------------------


def test_what_was_never_written_is_not_there(store: Store) -> None:
    assert store.load(KEY) is None
    assert store.load_turn(KEY, "m-1") is None
    assert store.recent_turns(KEY, 5) == []
    assert store.scan(None, "", 10) == []
    assert store.count_conversations() == 0


def test_write_then_load(store: Store) -> None:
    store.write(
        [ConversationWrite(KEY, b"\x93\x00state", 3, [turn(1, "first"), turn(2, "second"), turn(3, "third")])]
    )
    loaded = store.load(KEY)
    assert loaded is not None
    assert (loaded.state, loaded.seq) == (b"\x93\x00state", 3)
    assert type(loaded.state) is bytes
    assert ids(loaded) == ["first", "second", "third"]
    assert all(abs(written_at - time.time()) < 60 for _, written_at in loaded.message_ids)
    assert store.load(OTHER) is None


def test_ids_come_in_seq_order_across_writes(store: Store) -> None:
    for seq, message_id in [(1, "zulu"), (2, "alpha"), (3, "mike")]:  # not alphabetical
        write_one(store, KEY, seq, message_id)
    loaded = store.load(KEY)
    assert loaded is not None and (loaded.state, loaded.seq) == (b"state-3", 3)
    assert ids(loaded) == ["zulu", "alpha", "mike"]


def test_a_write_replaces_the_state_and_a_turn_written_again_replaces_the_turn(store: Store) -> None:
    write_one(store, KEY, 1)
    store.write([ConversationWrite(KEY, b"again", 1, [TurnRecord(1, "m-1b", 2, b"other reply")])])
    loaded = store.load(KEY)
    assert loaded is not None and (loaded.state, loaded.seq, ids(loaded)) == (b"again", 1, ["m-1b"])
    kept = store.load_turn(KEY, "m-1b")
    assert kept is not None and (kept.kind, kept.reply) == (2, b"other reply")
    assert store.load_turn(KEY, "m-1") is None
    assert store.count_conversations() == 1


def test_a_write_without_turns(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s", 5)])
    assert store.load(KEY) == StoredConversation(b"s", 5, [])


def test_load_turn_has_everything_a_turn_kept(store: Store) -> None:
    store.write(
        [
            ConversationWrite(
                KEY,
                b"s",
                2,
                [turn(1, "a"), TurnRecord(2, "b", 3, b"reply-2", "hello", b"\x01fp", b"\x02recorded")],
            )
        ]
    )
    write_one(store, OTHER, 1, "a")
    kept = store.load_turn(KEY, "b")
    assert kept is not None
    assert (kept.seq, kept.message_id, kept.kind, kept.reply, kept.input) == (2, "b", 3, b"reply-2", "hello")
    assert (kept.fingerprint, kept.recorded) == (b"\x01fp", b"\x02recorded")
    assert all(type(v) is bytes for v in (kept.reply, kept.fingerprint, kept.recorded))
    assert abs(kept.created_at - time.time()) < 60
    other = store.load_turn(OTHER, "a")
    assert other is not None and other.reply == b"reply-1"
    assert store.load_turn(OTHER, "b") is None
    assert store.load_turn(KEY, "c") is None


def test_the_same_message_id_twice_finds_the_later_turn(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s", 2, [turn(1, "same"), TurnRecord(2, "same", 1, b"later")])])
    kept = store.load_turn(KEY, "same")
    assert kept is not None and (kept.seq, kept.reply) == (2, b"later")


def test_a_write_that_names_a_conversation_or_a_turn_twice_keeps_the_last(store: Store) -> None:
    store.write(
        [
            ConversationWrite(KEY, b"first", 1, [turn(1, "a"), TurnRecord(1, "a2", 1, b"second reply")]),
            ConversationWrite(OTHER, b"other", 1, [turn(1)]),
            ConversationWrite(KEY, b"second", 2, [turn(2, "b")]),
        ]
    )
    loaded = store.load(KEY)
    assert loaded is not None and (loaded.state, loaded.seq, ids(loaded)) == (b"second", 2, ["a2", "b"])
    kept = store.load_turn(KEY, "a2")
    assert kept is not None and kept.reply == b"second reply"
    assert store.count_conversations() == 2


def based(key: ConversationKey, base: int, seq: int, state: bytes = b"") -> ConversationWrite:
    """A write of ``key``'s turns base+1..seq, computed from its stored state at ``base``."""
    turns = [turn(s, f"{key.conversation_id}-{s}") for s in range(base + 1, seq + 1)]
    return ConversationWrite(key, state or f"state-{seq}".encode(), seq, turns, base_seq=base)


def stored_at(store: Store, key: ConversationKey) -> tuple[bytes, int, list[str]] | None:
    loaded = store.load(key)
    return None if loaded is None else (loaded.state, loaded.seq, ids(loaded))


def test_a_write_from_a_state_the_store_no_longer_holds_is_refused_whole(store: Store) -> None:
    store.write([based(KEY, 0, 1), based(OTHER, 0, 2)])
    before = {k: stored_at(store, k) for k in (KEY, OTHER, ELSEWHERE)}
    refusals = [
        [based(KEY, 0, 2), based(OTHER, 2, 3)],  # KEY is in the store already: not new
        [based(OTHER, 2, 3), based(KEY, 2, 3)],  # KEY is at 1, not 2
        [based(ELSEWHERE, 4, 5), based(KEY, 1, 2)],  # ELSEWHERE was never written
    ]
    for writes, stale in zip(refusals, [KEY, KEY, ELSEWHERE], strict=True):
        with pytest.raises(StaleWrite) as refused:
            store.write(writes)
        assert refused.value.keys == {stale}
        assert str(stale) in str(refused.value)
        assert {k: stored_at(store, k) for k in before} == before  # not even the others were written
        assert store.load_turn(OTHER, "conv-2-3") is None
    store.write([based(KEY, 1, 2), based(OTHER, 2, 3), based(ELSEWHERE, 0, 1)])
    assert stored_at(store, KEY) == (b"state-2", 2, ["conv-1-1", "conv-1-2"])
    assert stored_at(store, ELSEWHERE) == (b"state-1", 1, ["x-1"])


def test_every_stale_conversation_of_a_write_is_named(store: Store) -> None:
    store.write([based(KEY, 0, 3), based(OTHER, 0, 1)])
    with pytest.raises(StaleWrite) as refused:
        store.write([based(KEY, 1, 2), based(ELSEWHERE, 0, 1), based(OTHER, 0, 1)])
    assert refused.value.keys == {KEY, OTHER}
    assert store.load(ELSEWHERE) is None


def test_of_two_writers_from_one_state_only_the_first_is_written(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.write([based(KEY, 0, 1)])
    loaded = second.load(KEY)
    assert loaded is not None and loaded.seq == 1
    first.write([based(KEY, 1, 2, b"first's")])
    with pytest.raises(StaleWrite):
        second.write([based(KEY, loaded.seq, 2, b"second's")])  # it never saw seq 2
    assert stored_at(first, KEY) == (b"first's", 2, ["conv-1-1", "conv-1-2"])
    kept = first.load_turn(KEY, "conv-1-2")
    assert kept is not None and kept.seq == 2


def test_two_writes_of_one_conversation_in_one_call_must_follow_on(store: Store) -> None:
    store.write([based(KEY, 0, 1), based(KEY, 1, 3)])
    assert stored_at(store, KEY) == (b"state-3", 3, ["conv-1-1", "conv-1-2", "conv-1-3"])
    with pytest.raises(StaleWrite) as refused:
        store.write([based(KEY, 3, 4), based(KEY, 5, 6)])  # the second is not from the first's 4
    assert refused.value.keys == {KEY}
    assert stored_at(store, KEY) == (b"state-3", 3, ["conv-1-1", "conv-1-2", "conv-1-3"])


def test_keys_are_per_tenant(store: Store) -> None:
    write_one(store, ConversationKey("t1", "same"), 1, "m")
    assert store.load(ConversationKey("t2", "same")) is None
    assert store.load_turn(ConversationKey("t2", "same"), "m") is None


def test_a_write_of_several_conversations_is_all_or_nothing(store: Store) -> None:
    write_one(store, OTHER, 1)
    unbindable = cast(Any, object())
    with pytest.raises((sqlite3.Error, psycopg.Error, TypeError)):
        store.write(
            [
                ConversationWrite(KEY, b"good", 1, [turn(1, "good-1")]),
                ConversationWrite(OTHER, unbindable, 2, [turn(2, "bad-2")]),
            ]
        )
    assert store.load(KEY) is None
    assert store.load_turn(KEY, "good-1") is None
    other = store.load(OTHER)
    assert other is not None and (other.state, other.seq, ids(other)) == (b"state-1", 1, ["m-1"])
    write_one(store, KEY, 1, "after")  # the failed transaction is gone: the store goes on
    assert ids(store.load(KEY)) == ["after"]


def test_a_turn_that_cannot_be_written_undoes_the_conversations_before_it(store: Store) -> None:
    with pytest.raises((sqlite3.Error, psycopg.Error, TypeError)):
        store.write(
            [
                ConversationWrite(KEY, b"good", 1, [turn(1)]),
                ConversationWrite(OTHER, b"good", 1, [TurnRecord(1, "x", 1, cast(Any, object()))]),
            ]
        )
    assert store.load(KEY) is None
    assert store.count_conversations() == 0


def test_a_write_deletes_the_turns_its_writer_says_are_beyond_retention(
    backend: Backend, store: Store
) -> None:
    store.write([ConversationWrite(KEY, b"s", 5, [turn(s) for s in range(1, 6)])])
    store.write([ConversationWrite(KEY, b"s", 6, [turn(6)], prune_through=3, prune_before=time.time() - 60)])
    assert turn_rows(backend, KEY) == [1, 2, 3, 4, 5, 6]  # young enough to stay
    store.write([ConversationWrite(KEY, b"s", 6, [turn(6)], prune_through=3, prune_before=time.time() + 1)])
    assert turn_rows(backend, KEY) == [4, 5, 6]
    assert ids(store.load(KEY)) == ["m-4", "m-5", "m-6"]
    assert store.load_turn(KEY, "m-3") is None
    store.write([ConversationWrite(KEY, b"s", 6)])  # no prune_through: nothing goes
    assert turn_rows(backend, KEY) == [4, 5, 6]


def test_pruning_is_per_conversation(backend: Backend, store: Store) -> None:
    write_one(store, OTHER, 1)
    write_one(store, OTHER, 2)
    store.write(
        [
            ConversationWrite(
                KEY, b"s", 19, [turn(s) for s in range(1, 20)], prune_through=15, prune_before=time.time() + 1
            )
        ]
    )
    assert turn_rows(backend, OTHER) == [1, 2]
    assert turn_rows(backend, KEY) == [16, 17, 18, 19]


def test_load_knows_the_last_turns_kept_and_the_windows_ids_only(backend: Backend) -> None:
    store = backend.open(Retention(turns_kept=2, idempotency_window_s=60.0))
    store.write([ConversationWrite(KEY, b"s", 5, [turn(s) for s in range(1, 6)])])
    backend.rows("UPDATE turns SET created_at = created_at - 120 WHERE seq <= 3")  # two minutes old
    assert ids(store.load(KEY)) == ["m-4", "m-5"]
    assert store.load_turn(KEY, "m-1") is not None  # still kept, only no longer recognised
    backend.rows("UPDATE turns SET created_at = created_at + 120 WHERE seq = 2")  # young again
    assert ids(store.load(KEY)) == ["m-2", "m-4", "m-5"]


def test_two_stores_on_one_location_see_each_others_writes(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    assert second.load(KEY) is None  # read before the write: no stale snapshot afterwards
    write_one(first, KEY, 1, "from-first")
    loaded = second.load(KEY)
    assert loaded is not None and (loaded.state, loaded.seq, ids(loaded)) == (b"state-1", 1, ["from-first"])
    write_one(second, OTHER, 1, "from-second")
    write_one(second, KEY, 2, "again")
    assert ids(first.load(KEY)) == ["from-first", "again"]
    assert first.count_conversations() == second.count_conversations() == 2


def test_a_reopened_store_keeps_what_was_written(backend: Backend) -> None:
    store = backend.open()
    write_one(store, KEY, 1)
    store.close()
    loaded = backend.open().load(KEY)
    assert loaded is not None and loaded.seq == 1


def test_model_tokens_add_up_per_tenant_and_day(store: Store) -> None:
    assert store.model_tokens_used("acme", "2026-03-12") == 0
    store.add_model_tokens({("acme", "2026-03-12"): 30, ("globex", "2026-03-12"): 5})
    store.add_model_tokens({("acme", "2026-03-12"): 12, ("acme", "2026-03-13"): 1})
    store.add_model_tokens({})
    assert store.model_tokens_used("acme", "2026-03-12") == 42
    assert store.model_tokens_used("acme", "2026-03-13") == 1
    assert store.model_tokens_used("globex", "2026-03-12") == 5
    assert store.model_tokens_used("globex", "2026-03-13") == 0


def test_every_store_on_one_location_counts_the_same_model_tokens(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.add_model_tokens({("acme", "2026-03-12"): 30})
    second.add_model_tokens({("acme", "2026-03-12"): 20})
    assert (
        first.model_tokens_used("acme", "2026-03-12") == second.model_tokens_used("acme", "2026-03-12") == 50
    )


def test_count_conversations(store: Store) -> None:
    assert store.count_conversations() == 0
    write_one(store, KEY, 1)
    assert store.count_conversations() == 1
    write_one(store, KEY, 2)
    assert store.count_conversations() == 1
    store.write([ConversationWrite(OTHER, b"s", 1, [turn(1)]), ConversationWrite(ELSEWHERE, b"s", 1)])
    assert store.count_conversations() == 3


def test_scan_pages_through_every_conversation_in_key_order(store: Store) -> None:
    # Keys compare character code by character code, whichever store: "B" < "a" < "z" < "é".
    keys = [ConversationKey(t, c) for t in ("B", "a", "é") for c in ("Z", "y", "ä")]
    store.write([ConversationWrite(k, f"{k.tenant_id}/{k.conversation_id}".encode(), 1) for k in keys])
    expected = sorted(keys, key=lambda k: (k.tenant_id, k.conversation_id))
    pages: list[list[ConversationKey]] = []
    after: ConversationKey | None = None
    while page := store.scan(after, "", 4):
        pages.append([k for k, _, _ in page])
        after = page[-1][0]
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [k for p in pages for k in p] == expected
    first = store.scan(None, "", 1)[0]
    assert first[0] == ConversationKey("B", "Z") and first[1] == b"B/Z" and abs(first[2] - time.time()) < 60


def test_scan_of_one_tenant(store: Store) -> None:
    write_one(store, KEY, 1)
    write_one(store, OTHER, 1)
    write_one(store, ELSEWHERE, 1)
    assert [k for k, _, _ in store.scan(None, "tenant-a", 10)] == [KEY, OTHER]
    assert [k for k, _, _ in store.scan(KEY, "tenant-a", 10)] == [OTHER]
    assert [k for k, _, _ in store.scan(None, "tenant-a", 1)] == [KEY]
    assert [k for k, _, _ in store.scan(KEY, "", 10)] == [OTHER, ELSEWHERE]
    assert store.scan(None, "nobody", 10) == []


def test_recent_turns_are_the_last_ones_oldest_first(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s", 3, [turn(1), turn(2), TurnRecord(3, "m-3", 1, b"r", "said")])])
    write_one(store, OTHER, 1)
    assert [(t.seq, t.input) for t in store.recent_turns(KEY, 2)] == [(2, ""), (3, "said")]
    assert [t.seq for t in store.recent_turns(KEY, 10)] == [1, 2, 3]


def test_recorded_turns_and_the_conversations_that_have_them(store: Store) -> None:
    store.write(
        [
            ConversationWrite(
                KEY, b"s", 2, [TurnRecord(1, "a", 1, b"r1", recorded=b"m1"), TurnRecord(2, "b", 3, b"r2")]
            ),
            ConversationWrite(OTHER, b"s", 1, [TurnRecord(1, "c", 1, b"r", recorded=b"m")]),
            ConversationWrite(
                ConversationKey("tenant-b", "y"), b"s", 1, [TurnRecord(1, "d", 1, b"r", recorded=b"m")]
            ),
            ConversationWrite(ELSEWHERE, b"s", 1, [turn(1)]),
        ]
    )
    assert [(t.seq, t.recorded) for t in store.recorded_turns(KEY)] == [(1, b"m1")]
    assert store.recorded_turns(ELSEWHERE) == []
    assert store.recorded_conversations("", 0.0, None, 10) == [KEY, OTHER, ConversationKey("tenant-b", "y")]
    assert store.recorded_conversations("", 0.0, None, 2) == [KEY, OTHER]
    assert store.recorded_conversations("", 0.0, OTHER, 10) == [ConversationKey("tenant-b", "y")]
    assert store.recorded_conversations("tenant-a", 0.0, KEY, 10) == [OTHER]
    assert store.recorded_conversations("", time.time() + 60, None, 10) == []


def test_ping_and_probe_write(backend: Backend, store: Store) -> None:
    assert 0.0 <= store.ping() < 5.0
    before = time.time()
    assert 0.0 <= store.probe_write() < 5.0
    assert store.probe_write() >= 0.0  # the one row is written again
    (row,) = backend.rows("SELECT id, at FROM write_probe")
    assert row[0] == 1 and before <= row[1] <= time.time()
    store.close()
    with pytest.raises((sqlite3.Error, psycopg.Error)):
        store.ping()


# Virtual shards: claims, leases, fences -------------------------------------------------


def lease_of(store: Store, vshard: int) -> tuple[str, int, float, str]:
    (lease,) = [lease for lease in store.leases() if lease.vshard == vshard]
    return lease.owner, lease.epoch, lease.remaining_s, lease.wanted_by


def test_a_claim_takes_what_nobody_holds_and_starts_its_lease(store: Store) -> None:
    assert store.claim([3, 1], "shard-a", 30.0) == {1: 1, 3: 1}
    assert [lease.vshard for lease in store.leases()] == [1, 3]
    owner, epoch, remaining, wanted_by = lease_of(store, 3)
    assert (owner, epoch, wanted_by) == ("shard-a", 1, "")
    assert 25.0 < remaining <= 30.0
    assert store.claim([], "shard-a", 30.0) == {}


def test_a_claim_of_what_the_claimer_holds_bumps_the_epoch(store: Store) -> None:
    store.claim([1], "shard-a", 30.0)
    assert store.claim([1], "shard-a", 60.0) == {1: 2}  # a replacement process with the same id
    owner, epoch, remaining, _ = lease_of(store, 1)
    assert (owner, epoch) == ("shard-a", 2) and remaining > 55.0


def test_a_lease_another_holds_is_not_taken_and_is_marked_wanted(store: Store) -> None:
    store.claim([1, 2], "shard-a", 30.0)
    assert store.claim([1, 2, 3], "shard-b", 30.0) == {3: 1}
    assert lease_of(store, 1)[:2] == ("shard-a", 1)
    assert lease_of(store, 1)[3] == "shard-b"
    # The holder's next renewal lets go of what another wants, and so does its own claim.
    assert store.renew("shard-a", {1: 1, 2: 1}, 30.0) == set()
    assert store.claim([1], "shard-a", 30.0) == {}
    store.release("shard-a", {1: 1})
    assert store.claim([1], "shard-b", 30.0) == {1: 2}
    assert lease_of(store, 1)[::3] == ("shard-b", "")  # taken: nobody wants it any more


def test_a_lease_that_ran_out_is_taken(store: Store) -> None:
    store.claim([1], "shard-a", 0.2)
    time.sleep(0.4)
    assert lease_of(store, 1)[2] <= 0.0
    assert store.claim([1], "shard-b", 30.0) == {1: 2}
    assert lease_of(store, 1)[:2] == ("shard-b", 2)


def test_renew_extends_only_leases_still_held_at_their_epoch(store: Store) -> None:
    store.claim([1, 2], "shard-a", 1.0)
    assert store.renew("shard-a", {1: 1, 2: 1}, 60.0) == {1, 2}
    assert lease_of(store, 1)[2] > 55.0
    assert store.renew("shard-a", {1: 7}, 60.0) == set()  # a wrong epoch
    assert store.renew("shard-b", {1: 1}, 60.0) == set()  # not its holder
    assert store.renew("shard-a", {}, 60.0) == set()


def test_renew_after_a_takeover_renews_nothing(store: Store) -> None:
    store.claim([1], "shard-a", 0.2)
    time.sleep(0.4)
    store.claim([1], "shard-b", 30.0)
    assert store.renew("shard-a", {1: 1}, 60.0) == set()
    owner, epoch, remaining, _ = lease_of(store, 1)
    assert (owner, epoch) == ("shard-b", 2) and remaining <= 30.0


def test_release_lets_the_next_claim_take_it_at_once(store: Store) -> None:
    store.claim([1, 2], "shard-a", 60.0)
    store.release("shard-a", {1: 5})  # a wrong epoch releases nothing
    store.release("shard-b", {1: 1})  # nor does another owner
    assert store.claim([1], "shard-b", 30.0) == {}
    store.release("shard-a", {1: 1})
    owner, _, remaining, _ = lease_of(store, 1)
    assert owner == "" and remaining <= 0.0
    assert store.claim([1, 2], "shard-b", 30.0) == {1: 2}
    assert lease_of(store, 2)[0] == "shard-a"


def test_a_fenced_write_of_the_holder_is_written(store: Store) -> None:
    epochs = store.claim([1, 2], "shard-a", 30.0)
    store.write([ConversationWrite(KEY, b"s", 1, [turn(1)])], Fence("shard-a", epochs))
    assert ids(store.load(KEY)) == ["m-1"]


def test_a_fenced_write_of_a_stale_owner_is_refused_and_writes_nothing(backend: Backend) -> None:
    stale, new = backend.open(), backend.open()
    epochs = stale.claim([1, 2], "shard-a", 0.2)
    write_one(stale, OTHER, 1)
    time.sleep(0.4)
    assert new.claim([2], "shard-b", 30.0) == {2: 2}
    with pytest.raises(FencedOut) as refused:
        stale.write(
            [ConversationWrite(KEY, b"s", 1, [turn(1)]), ConversationWrite(OTHER, b"changed", 2, [turn(2)])],
            Fence("shard-a", epochs),
        )
    assert refused.value.lost == {1, 2}  # 1 ran out, 2 was taken
    assert new.load(KEY) is None
    assert ids(new.load(OTHER)) == ["m-1"]
    assert new.count_conversations() == 1


def test_a_fenced_write_is_refused_whole_when_one_of_its_virtual_shards_changed_hands(store: Store) -> None:
    epochs = store.claim([1, 2], "shard-a", 30.0)
    store.release("shard-a", {2: epochs[2]})
    store.claim([2], "shard-b", 30.0)
    with pytest.raises(FencedOut) as refused:
        store.write([ConversationWrite(KEY, b"s", 1, [turn(1)])], Fence("shard-a", epochs))
    assert refused.value.lost == {2}
    assert store.load(KEY) is None


def test_a_fenced_write_after_the_lease_ran_out_is_refused(store: Store) -> None:
    epochs = store.claim([1], "shard-a", 0.3)
    store.write([ConversationWrite(KEY, b"in time", 1, [turn(1)])], Fence("shard-a", epochs))
    time.sleep(0.5)  # nobody claimed it: the lease alone ran out
    with pytest.raises(FencedOut) as refused:
        store.write([ConversationWrite(KEY, b"too late", 2, [turn(2)])], Fence("shard-a", epochs))
    assert refused.value.lost == {1}
    loaded = store.load(KEY)
    assert loaded is not None and (loaded.state, ids(loaded)) == (b"in time", ["m-1"])


def test_a_fenced_write_of_an_older_epoch_is_refused(store: Store) -> None:
    old = store.claim([1], "shard-a", 30.0)
    store.claim([1], "shard-a", 30.0)  # the same id, a new process: epoch 2
    with pytest.raises(FencedOut):
        store.write([ConversationWrite(KEY, b"s", 1)], Fence("shard-a", old))
    assert store.load(KEY) is None


@pytest.mark.parametrize("claimer", ["its successor of the same id", "another once the lease ran out"])
def test_a_claim_waits_for_a_fenced_write_in_progress(backend: Backend, claimer: str) -> None:
    writer, other = backend.open(), backend.open()
    write_one(writer, KEY, 1)  # the row the held write updates
    lease_s = 1.0
    epochs = writer.claim([7], "shard-a", lease_s)
    claimed_by = "shard-a" if claimer.startswith("its successor") else "shard-b"
    done: list[str] = []
    claimed: dict[int, int] = {}
    failures: list[BaseException] = []

    def run(name: str, action: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            try:
                result = action()
                if isinstance(result, dict):
                    claimed.update(result)
            except BaseException as exc:
                failures.append(exc)
            done.append(name)

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    with backend.held_write(writer, KEY) as held:
        write = run(
            "write",
            lambda: writer.write(
                [ConversationWrite(KEY, b"written", 2, [turn(2)])], Fence("shard-a", epochs)
            ),
        )
        held.wait_until_held()
        if claimed_by == "shard-b":
            time.sleep(lease_s + 0.2)  # past the lease: only the open write keeps the claim out now
        claim = run("claim", lambda: other.claim([7], claimed_by, 30.0))
        held.wait_until_blocked(claim)
        assert done == []
        held.release()
        write.join(WAIT_S)
        claim.join(WAIT_S)
    # The write was not fenced out, so it committed before the claim took the row; which thread
    # then got back to Python first is the scheduler's choice, not the store's.
    assert failures == []
    assert sorted(done) == ["claim", "write"]
    assert claimed == {7: 2}
    loaded = other.load(KEY)
    assert loaded is not None and (loaded.state, ids(loaded)) == (b"written", ["m-1", "m-2"])
    with pytest.raises(FencedOut):  # and the write after the claim is refused
        writer.write([ConversationWrite(KEY, b"late", 3, [turn(3)])], Fence("shard-a", epochs))


def test_leases_lists_every_virtual_shard_ever_claimed(store: Store) -> None:
    assert store.leases() == []
    store.claim([5, 2], "shard-a", 30.0)
    store.claim([2, 9], "shard-b", 30.0)  # 2 is held: wanted, not taken
    assert [(lease.vshard, lease.owner, lease.epoch) for lease in store.leases()] == [
        (2, "shard-a", 1),
        (5, "shard-a", 1),
        (9, "shard-b", 1),
    ]


# Analytics ------------------------------------------------------------------------------

T0 = 1_800_000_000  # a multiple of 3600: buckets are easy to predict


def counted(
    key: ConversationKey,
    state: str,
    name: str,
    item: str = "",
    *,
    at: float = T0,
    count: int = 1,
    total: float = 0.0,
    flow: str = "pizza",
    version: str = "3",
) -> TurnCounts:
    part = TurnCounts()
    part.add((key.tenant_id, flow, version, state, bucket_of(at), name, item), count, total)
    return part


def report_rows(store: Store, tenant: str = "tenant-a", flow: str = "", *, now: float = T0 + 86400) -> Any:
    rows = store.analytics(AnalyticsQuery(tenant, flow, T0 - 3600, T0 + 7200, 60), now)
    return (
        sorted((tuple(r) for r in rows.counts), key=repr),
        sorted(tuple(r) for r in rows.expired),
        sorted(tuple(r) for r in rows.missed),
    )


def with_counts(write: ConversationWrite, *parts: TurnCounts) -> ConversationWrite:
    write.analytics = list(parts)
    return write


def test_counters_are_added_up_across_writes_and_writers(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    twice = [counted(KEY, "greet", "turns"), counted(KEY, "greet", "turns")]
    first.write([with_counts(based(KEY, 0, 1), *twice)])
    second.write([with_counts(based(OTHER, 0, 1), counted(OTHER, "greet", "turns", count=3))])
    first.write(
        [with_counts(based(KEY, 1, 2), counted(KEY, "take_order", "webhook_calls", "price", total=12.5))]
    )
    counts, expired, missed = report_rows(first)
    assert counts == sorted(
        [
            ("pizza", "3", "greet", T0, "turns", "", 5, 0.0),
            ("pizza", "3", "take_order", T0, "webhook_calls", "price", 1, 12.5),
        ],
        key=repr,
    )
    assert (expired, missed) == ([], [])
    assert report_rows(first, "tenant-b") == ([], [], [])  # another tenant's rows are its own


def test_counters_are_written_with_the_turns_or_not_at_all(store: Store) -> None:
    store.write([based(KEY, 0, 1)])
    with pytest.raises(StaleWrite):
        store.write([with_counts(based(OTHER, 0, 1), counted(OTHER, "greet", "turns")), based(KEY, 0, 1)])
    epochs = store.claim([1], "shard-a", 30.0)
    store.release("shard-a", epochs)
    store.claim([1], "shard-b", 30.0)
    with pytest.raises(FencedOut):
        write = with_counts(based(OTHER, 0, 1), counted(OTHER, "greet", "turns"))
        store.write([write], Fence("shard-a", epochs))
    assert report_rows(store) == ([], [], [])


def test_the_range_and_the_flow_choose_the_rows(store: Store) -> None:
    parts = [
        counted(KEY, "greet", "turns", at=T0 - 3601),  # before the range
        counted(KEY, "greet", "turns", at=T0 + 59),
        counted(KEY, "greet", "turns", at=T0 + 7200),  # at its end: not in it
        counted(KEY, "hello", "turns", at=T0, flow="support"),
    ]
    store.write([with_counts(based(KEY, 0, 1), *parts)])
    counts, _, _ = report_rows(store, flow="pizza")
    assert counts == [("pizza", "3", "greet", T0, "turns", "", 1, 0.0)]
    assert len(report_rows(store)[0]) == 2


def session(
    key: ConversationKey, state: str | None, expires_at: float = 0.0, *, settle_at: float = 0.0
) -> TurnCounts:
    part = TurnCounts(session_changed=True, settle_at=settle_at)
    part.session = None if state is None else SessionMark("pizza", "3", state, expires_at)
    return part


def test_an_open_session_that_expired_is_abandoned_once(store: Store) -> None:
    store.write([with_counts(based(KEY, 0, 1), session(KEY, "take_order", T0 + 1800))])
    assert report_rows(store, now=T0 + 1800)[1] == []  # not yet expired
    assert report_rows(store, now=T0 + 1801)[1] == [("pizza", "3", "take_order", T0 + 1800)]
    # The user comes back after the expiry: the write settles it into a counter and starts anew.
    store.write([with_counts(based(KEY, 1, 2), session(KEY, "greet", T0 + 5000, settle_at=T0 + 3000))])
    counts, expired, _ = report_rows(store, now=T0 + 3001)
    assert counts == [("pizza", "3", "take_order", T0 + 1800, "abandoned", "", 1, 0.0)]
    assert expired == []  # the new session has not expired
    # A turn that found its session alive settles nothing, whatever the row says.
    store.write([with_counts(based(KEY, 2, 3), session(KEY, "confirm", T0 + 6000))])
    assert report_rows(store, now=T0 + 7000)[0] == counts
    assert report_rows(store, now=T0 + 7000)[1] == [("pizza", "3", "confirm", T0 + 6000)]


def test_a_session_that_ended_leaves_nothing_to_abandon(store: Store) -> None:
    store.write([with_counts(based(KEY, 0, 1), session(KEY, "take_order", T0 + 60))])
    store.write([with_counts(based(KEY, 1, 2), session(KEY, None, settle_at=T0 + 30))])  # completed in time
    assert report_rows(store) == ([], [], [])


def test_sessions_replaced_twice_in_one_write_are_settled_in_order(store: Store) -> None:
    store.write([with_counts(based(KEY, 0, 1), session(KEY, "greet", T0 + 10))])
    store.write(
        [
            with_counts(
                based(KEY, 1, 2),
                session(KEY, "take_order", T0 + 100, settle_at=T0 + 20),  # the stored one expired
                session(KEY, "confirm", T0 + 300, settle_at=T0 + 200),  # and so did the one before it
            ),
            with_counts(based(OTHER, 0, 1), session(OTHER, "greet", T0 + 10, settle_at=T0 + 5)),
        ]
    )
    counts, expired, _ = report_rows(store, now=T0 + 250)
    assert counts == [
        ("pizza", "3", "greet", T0, "abandoned", "", 1, 0.0),
        ("pizza", "3", "take_order", T0 + 60, "abandoned", "", 1, 0.0),
    ]
    assert expired == [("pizza", "3", "greet", T0 + 10)]  # OTHER's, open and expired


def test_missed_texts_are_kept_up_to_a_bound_per_hour(store: Store) -> None:
    part = TurnCounts()
    part.missed = [("tenant-a", "pizza", T0, "hawaii?")] * 3 + [
        ("tenant-a", "pizza", T0, f"text {i}") for i in range(MISSED_KEPT + 5)
    ]
    store.write([with_counts(based(KEY, 0, 1), part)])
    _, _, missed = report_rows(store)
    by_text = {text: n for _, text, n in missed}
    assert by_text["hawaii?"] == 3
    assert len(by_text) == MISSED_KEPT + 1  # the kept ones, and "" adding up the rest
    assert sum(by_text.values()) == 3 + MISSED_KEPT + 5
    again = TurnCounts()
    again.missed = [("tenant-a", "pizza", T0, "hawaii?")]
    store.write([with_counts(based(KEY, 1, 2), again)])
    assert {text: n for _, text, n in report_rows(store)[2]}["hawaii?"] == 4
