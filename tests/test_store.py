"""Store: SQLite persistence of conversation states and recent turns."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from confab.runtime.model import ConversationKey
from confab.runtime.store import ConversationWrite, Store, StoredConversation, TurnRecord

KEY = ConversationKey("tenant-a", "conv-1")
OTHER = ConversationKey("tenant-a", "conv-2")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "confab.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path, synchronous="NORMAL", turns_kept=4)
    yield s
    s.close()


def turn(seq: int, message_id: str | None = None, kind: int = 1) -> TurnRecord:
    return TurnRecord(seq, message_id or f"m-{seq}", kind, f"reply-{seq}".encode())


def write_one(store: Store, key: ConversationKey, seq: int, message_id: str | None = None) -> None:
    store.write([ConversationWrite(key, f"state-{seq}".encode(), seq, [turn(seq, message_id)])])


def turn_rows(path: Path, key: ConversationKey) -> list[int]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT seq FROM turns WHERE tenant_id=? AND conversation_id=? ORDER BY seq",
            (key.tenant_id, key.conversation_id),
        ).fetchall()
    return [r[0] for r in rows]


def test_creates_parent_directory(db_path: Path, store: Store) -> None:
    assert db_path.parent.is_dir()
    assert db_path.exists()


def test_load_unknown_is_none(store: Store) -> None:
    assert store.load(KEY) is None
    assert store.load_reply(KEY, "m-1") is None


def test_write_then_load(store: Store) -> None:
    store.write(
        [ConversationWrite(KEY, b"\x93state", 3, [turn(1, "first"), turn(2, "second"), turn(3, "third")])]
    )
    loaded = store.load(KEY)
    assert loaded == StoredConversation(
        state=b"\x93state", seq=3, recent_message_ids=["first", "second", "third"]
    )
    assert isinstance(loaded.state, bytes)
    assert store.load(OTHER) is None


def test_recent_ids_in_seq_order_across_writes(store: Store) -> None:
    # Ids chosen so that alphabetical order differs from seq order.
    for seq, message_id in [(1, "zulu"), (2, "alpha"), (3, "mike")]:
        write_one(store, KEY, seq, message_id)
    loaded = store.load(KEY)
    assert loaded is not None
    assert loaded.seq == 3
    assert loaded.state == b"state-3"
    assert loaded.recent_message_ids == ["zulu", "alpha", "mike"]


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


def test_load_reply(store: Store) -> None:
    store.write([ConversationWrite(KEY, b"s", 2, [turn(1, "a"), turn(2, "b")])])
    write_one(store, OTHER, 1, "a")
    assert store.load_reply(KEY, "a") == b"reply-1"
    assert store.load_reply(KEY, "b") == b"reply-2"
    assert store.load_reply(OTHER, "a") == b"reply-1"
    assert store.load_reply(OTHER, "b") is None
    assert store.load_reply(KEY, "c") is None
    reply = store.load_reply(KEY, "a")
    assert type(reply) is bytes


def test_keys_are_per_tenant(store: Store) -> None:
    write_one(store, ConversationKey("t1", "same"), 1, "m")
    assert store.load(ConversationKey("t2", "same")) is None
    assert store.load_reply(ConversationKey("t2", "same"), "m") is None


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
    assert store.load_reply(KEY, "good-1") is None
    other = store.load(OTHER)
    assert other is not None
    assert (other.state, other.seq, other.recent_message_ids) == (b"state-1", 1, ["m-1"])
    assert store.count_conversations() == 1
    # The failed transaction was rolled back: the store is usable afterwards.
    write_one(store, KEY, 1, "after")
    loaded = store.load(KEY)
    assert loaded is not None
    assert loaded.recent_message_ids == ["after"]


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


def test_pruning_keeps_at_least_turns_kept(store: Store, db_path: Path) -> None:
    kept = store.turns_kept
    for seq in range(1, 31):
        write_one(store, KEY, seq)
        loaded = store.load(KEY)
        assert loaded is not None
        expected = [f"m-{s}" for s in range(max(1, seq - kept + 1), seq + 1)]
        assert loaded.recent_message_ids == expected
        for message_id in expected:
            assert store.load_reply(KEY, message_id) is not None
        rows = turn_rows(db_path, KEY)
        assert rows[-min(seq, kept) :] == list(range(max(1, seq - kept + 1), seq + 1))
        # Pruning is in steps, but the table never grows without bound.
        assert len(rows) < 2 * kept
    assert store.load_reply(KEY, "m-1") is None


def test_pruning_with_multi_turn_writes(store: Store, db_path: Path) -> None:
    kept = store.turns_kept
    seq = 0
    for size in [3, 5, 1, 7, 2, 9]:
        turns = [turn(seq + i + 1) for i in range(size)]
        seq += size
        store.write([ConversationWrite(KEY, b"s", seq, turns)])
        loaded = store.load(KEY)
        assert loaded is not None
        assert loaded.recent_message_ids == [f"m-{s}" for s in range(seq - kept + 1, seq + 1) if s >= 1]
        rows = turn_rows(db_path, KEY)
        assert set(range(max(1, seq - kept + 1), seq + 1)) <= set(rows)
        assert len(rows) < 2 * kept  # old rows do get pruned
    assert min(turn_rows(db_path, KEY)) > 1


def test_pruning_is_per_conversation(store: Store, db_path: Path) -> None:
    for seq in range(1, 3):
        write_one(store, OTHER, seq)
    for seq in range(1, 20):
        write_one(store, KEY, seq)
    assert turn_rows(db_path, OTHER) == [1, 2]


def test_second_store_on_same_file_sees_writes(db_path: Path) -> None:
    first = Store(db_path, synchronous="NORMAL", turns_kept=4)
    second = Store(db_path, synchronous="NORMAL", turns_kept=4)
    try:
        assert second.load(KEY) is None  # read before the write: no stale snapshot afterwards
        write_one(first, KEY, 1, "from-first")
        loaded = second.load(KEY)
        assert loaded is not None
        assert (loaded.state, loaded.seq, loaded.recent_message_ids) == (b"state-1", 1, ["from-first"])
        assert second.load_reply(KEY, "from-first") == b"reply-1"

        write_one(second, OTHER, 1, "from-second")
        write_one(second, KEY, 2, "again")
        seen_by_first = first.load(KEY)
        assert seen_by_first is not None
        assert seen_by_first.recent_message_ids == ["from-first", "again"]
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


def test_count_conversations(store: Store) -> None:
    assert store.count_conversations() == 0
    write_one(store, KEY, 1)
    assert store.count_conversations() == 1
    write_one(store, KEY, 2)
    assert store.count_conversations() == 1
    store.write(
        [
            ConversationWrite(OTHER, b"s", 1, [turn(1)]),
            ConversationWrite(ConversationKey("tenant-b", "conv-1"), b"s", 1, [turn(1)]),
        ]
    )
    assert store.count_conversations() == 3


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
