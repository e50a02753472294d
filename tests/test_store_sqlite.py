"""The SQLite store: conversation states and their kept turns, migrations and integrity."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from confab.runtime.model import ConversationKey
from confab.runtime.store import ConversationWrite, StoredConversation, StoreError, TurnRecord
from confab.runtime.store.migrations import SQLITE_VERSION
from confab.runtime.store.sqlite import SqliteStore as Store

KEY = ConversationKey("tenant-a", "conv-1")
OTHER = ConversationKey("tenant-a", "conv-2")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "confab.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path, synchronous="NORMAL")
    yield s
    s.close()


def turn(seq: int, message_id: str | None = None, kind: int = 1) -> TurnRecord:
    return TurnRecord(seq, message_id or f"m-{seq}", kind, f"reply-{seq}".encode())


def write_one(store: Store, key: ConversationKey, seq: int, message_id: str | None = None) -> None:
    store.write([ConversationWrite(key, f"state-{seq}".encode(), seq, [turn(seq, message_id)])])


def ids(stored: StoredConversation) -> list[str]:
    return [message_id for message_id, _ in stored.message_ids]


def test_creates_parent_directory(db_path: Path, store: Store) -> None:
    assert db_path.parent.is_dir()
    assert db_path.exists()


def test_load_unknown_is_none(store: Store) -> None:
    assert store.load(KEY) is None
    assert store.load_turn(KEY, "m-1") is None


def test_recent_ids_in_seq_order_across_writes(store: Store) -> None:
    # Ids chosen so that alphabetical order differs from seq order.
    for seq, message_id in [(1, "zulu"), (2, "alpha"), (3, "mike")]:
        write_one(store, KEY, seq, message_id)
    loaded = store.load(KEY)
    assert loaded is not None
    assert loaded.seq == 3
    assert loaded.state == b"state-3"
    assert ids(loaded) == ["zulu", "alpha", "mike"]


def test_write_overwrites_state(store: Store) -> None:
    write_one(store, KEY, 1)
    write_one(store, KEY, 2)
    loaded = store.load(KEY)
    assert loaded is not None
    assert (loaded.state, loaded.seq) == (b"state-2", 2)
    assert store.count_conversations() == 1


def test_write_without_turns(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s", 5)])
    loaded = store.load(KEY)
    assert loaded == StoredConversation(b"s", 5, [])


def reply_of(store: Store, key: ConversationKey, message_id: str) -> bytes | None:
    kept = store.load_turn(key, message_id)
    return None if kept is None else kept.reply


def test_load_turn(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s", 2, [turn(1, "a"), TurnRecord(2, "b", 3, b"reply-2", "hello")])])
    write_one(store, OTHER, 1, "a")
    assert reply_of(store, KEY, "a") == b"reply-1"
    kept = store.load_turn(KEY, "b")
    assert kept is not None and (kept.seq, kept.kind, kept.reply, kept.input) == (2, 3, b"reply-2", "hello")
    assert type(kept.reply) is bytes
    assert reply_of(store, OTHER, "a") == b"reply-1"
    assert store.load_turn(OTHER, "b") is None
    assert store.load_turn(KEY, "c") is None


def test_write_of_several_conversations_is_atomic(store: Store) -> None:
    write_one(store, OTHER, 1)  # a prior state of a conversation also in the failing write
    bad_state = cast(Any, object())  # sqlite3 cannot bind this
    with pytest.raises((sqlite3.Error, TypeError)):
        store.write(
            [
                ConversationWrite(KEY, b"good", 1, [turn(1, "good-1")]),
                ConversationWrite(OTHER, bad_state, 2, [turn(2, "bad-2")]),
            ]
        )
    assert store.load(KEY) is None
    assert store.load_turn(KEY, "good-1") is None
    other = store.load(OTHER)
    assert other is not None
    assert (other.state, other.seq, ids(other)) == (b"state-1", 1, ["m-1"])
    assert store.count_conversations() == 1
    # The failed transaction was rolled back: the store is usable afterwards.
    write_one(store, KEY, 1, "after")
    loaded = store.load(KEY)
    assert loaded is not None
    assert ids(loaded) == ["after"]


def test_write_failure_in_later_turn_rolls_back_earlier_conversation(store: Store) -> None:
    bad_reply = cast(Any, object())
    with pytest.raises((sqlite3.Error, TypeError)):
        store.write(
            [
                ConversationWrite(KEY, b"good", 1, [turn(1)]),
                ConversationWrite(OTHER, b"good", 1, [TurnRecord(1, "x", 1, bad_reply)]),
            ]
        )
    assert store.load(KEY) is None
    assert store.count_conversations() == 0


def test_second_store_on_same_file_sees_writes(db_path: Path) -> None:
    first = Store(db_path, synchronous="NORMAL")
    second = Store(db_path, synchronous="NORMAL")
    try:
        assert second.load(KEY) is None  # read before the write: no stale snapshot afterwards
        write_one(first, KEY, 1, "from-first")
        loaded = second.load(KEY)
        assert loaded is not None
        assert (loaded.state, loaded.seq, ids(loaded)) == (b"state-1", 1, ["from-first"])
        assert reply_of(second, KEY, "from-first") == b"reply-1"

        write_one(second, OTHER, 1, "from-second")
        write_one(second, KEY, 2, "again")
        seen_by_first = first.load(KEY)
        assert seen_by_first is not None
        assert ids(seen_by_first) == ["from-first", "again"]
        assert first.load(OTHER) is not None
        assert first.count_conversations() == second.count_conversations() == 2
    finally:
        first.close()
        second.close()


def test_reopen_keeps_data(db_path: Path) -> None:
    s = Store(db_path)
    write_one(s, KEY, 1)
    s.close()
    reopened = Store(db_path)
    try:
        loaded = reopened.load(KEY)
        assert loaded is not None
        assert loaded.seq == 1
    finally:
        reopened.close()


def test_ping(store: Store, db_path: Path) -> None:
    latency = store.ping()
    assert isinstance(latency, float)
    assert 0.0 <= latency < 5.0
    store.close()
    with pytest.raises(sqlite3.Error):
        store.ping()
    # The fixture closes again; sqlite3 allows closing twice.


def test_wal_mode(store: Store, db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_probe_write(store: Store) -> None:
    assert 0.0 <= store.probe_write() < 5.0


def test_recent_turns_and_scan(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s1", 3, [turn(1), turn(2), TurnRecord(3, "m-3", 1, b"r", "said")])])
    write_one(store, OTHER, 1)
    write_one(store, ConversationKey("tenant-b", "x"), 1)
    recent = store.recent_turns(KEY, 2)
    assert [(t.seq, t.input) for t in recent] == [(2, ""), (3, "said")]
    assert [k for k, _, _ in store.scan(None, "tenant-a", 10)] == [KEY, OTHER]
    assert [k for k, _, _ in store.scan(KEY, "", 10)] == [OTHER, ConversationKey("tenant-b", "x")]


# Opening: versions, damage -------------------------------------------------------------


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_store_is_at_the_latest_schema_version(store: Store, db_path: Path) -> None:
    assert user_version(db_path) == SQLITE_VERSION


def test_a_store_from_before_schema_versions_is_migrated_and_keeps_its_data(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:  # the first layout: no version, no input column
        db.executescript(
            """
            CREATE TABLE conversations (tenant_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
                state BLOB NOT NULL, seq INTEGER NOT NULL, updated_at REAL NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id)) WITHOUT ROWID;
            CREATE TABLE turns (tenant_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
                seq INTEGER NOT NULL, message_id TEXT NOT NULL, kind INTEGER NOT NULL,
                reply BLOB NOT NULL, created_at REAL NOT NULL,
                PRIMARY KEY (tenant_id, conversation_id, seq)) WITHOUT ROWID;
            INSERT INTO conversations VALUES ('tenant-a', 'conv-1', x'93', 1, 1.0);
            INSERT INTO turns VALUES ('tenant-a', 'conv-1', 1, 'old', 1, x'01', 1.0);
            """
        )
    store = Store(db_path)
    try:
        loaded = store.load(KEY)
        assert loaded is not None and ids(loaded) == ["old"]
        kept = store.load_turn(KEY, "old")
        assert kept is not None and kept.input == ""
        store.probe_write()  # the tables of later versions are there
    finally:
        store.close()
    assert user_version(db_path) == SQLITE_VERSION


def test_a_store_written_by_a_newer_version_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {SQLITE_VERSION + 1}")
    with pytest.raises(StoreError, match="newer Confab"):
        Store(db_path)


def test_a_file_that_is_not_a_database_is_refused_with_its_name(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError) as caught:
        Store(db_path)
    assert str(db_path) in str(caught.value) and "not an SQLite database" in str(caught.value)


def test_a_truncated_database_fails_its_integrity_check(db_path: Path) -> None:
    store = Store(db_path, synchronous="NORMAL")
    store.write(
        [ConversationWrite(ConversationKey("t", f"c-{i}"), b"s" * 500, 1, [turn(1)]) for i in range(2000)]
    )
    store.close()
    with sqlite3.connect(db_path) as db:  # everything in the main file, nothing left in the WAL
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db_path.stat().st_size
    with db_path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreError) as caught:
        damaged = Store(db_path)
        try:
            damaged.check_integrity()
        finally:
            damaged.close()
    assert str(db_path) in str(caught.value)
