"""A commit whose outcome the shard cannot know: the connection to PostgreSQL drops during COMMIT.

A proxy between the store and the server cuts the connection at the COMMIT of a write, either
before the server sees it (nothing was written) or after the server committed it but before
its answer comes back (everything was). Either way the shard is told only that the write
failed; the client gets UNAVAILABLE, and what the shard does next must agree with the store:
the next turn sees exactly the stored state, a re-sent message id is applied once in total,
and every conversation counts as many messages as were acknowledged.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Literal

import psycopg
import pytest

from confab.actors.settings import ShardSettings
from confab.actors.shard import Shard
from confab.runtime.errors import Unavailable
from confab.runtime.model import Content, ConversationKey, InboundMessage, TurnResult
from confab.runtime.protocol import codec
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind, Outcome, decode_outcome
from confab.runtime.store import Retention
from confab.runtime.store.postgres import PostgresStore
from confab.tools.postgres_server import PostgresServer
from tests.postgres import database_name
from tests.shard_runner import hold_every_vshard, routed

pytestmark = pytest.mark.integration  # a PostgreSQL server

Cut = Literal["before", "after"]
TENANT = "tenant-a"
_STARTUP_CODES = (80877103, 80877104)  # SSLRequest, GSSENCRequest: untyped, before the startup message


class CommitCutter:
    """A TCP proxy to PostgreSQL that, once armed, cuts the connection that sends a COMMIT:
    ``before`` forwarding it, or ``after`` the server answered it (withholding the answer).

    It reads the protocol's framing (a type byte and a length) both ways, so it cuts exactly at
    a message; the store connects through it with TLS and GSS encryption off, as plain bytes."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._armed: Cut | None = None
        self.cuts = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept)

    def arm(self, cut: Cut) -> None:
        with self._lock:
            self._armed = cut

    def url(self, dbname: str) -> str:
        return f"postgresql://confab@127.0.0.1:{self.port}/{dbname}?sslmode=disable&gssencmode=disable"

    def close(self) -> None:
        self._closed = True
        _shut(self._listener)  # shutdown() wakes the accept() waiting on it; close() alone would not
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        for thread in self._threads:
            thread.join(10)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            pair = _Pair(client, server)
            self._start(self._pump, pair, client, server, True)
            self._start(self._pump, pair, server, client, False)

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        buffer = b""
        typed = not from_client  # the client's first messages have no type byte
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while True:
                    message, buffer, typed = _next_message(buffer, typed)
                    if message is None:
                        break
                    if self._cuts_here(pair, message, from_client):
                        pair.cut()
                        return
                    sink.sendall(message)
        except OSError:
            pass
        pair.cut()

    def _cuts_here(self, pair: _Pair, message: bytes, from_client: bool) -> bool:
        with self._lock:
            if from_client and self._armed is not None and _is_commit(message):
                cut, self._armed = self._armed, None
                if cut == "before":
                    self.cuts += 1
                    return True
                pair.commit_forwarded = True
                return False
            answered = message[:1] == b"C" and message[5:11] == b"COMMIT"  # CommandComplete
            if not from_client and pair.commit_forwarded and answered:
                self.cuts += 1  # the server committed; its answer never reaches the client
                return True
        return False


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.commit_forwarded = False

    def cut(self) -> None:
        _shut(self.client)
        _shut(self.server)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _next_message(buffer: bytes, typed: bool) -> tuple[bytes | None, bytes, bool]:
    """The first whole message of ``buffer`` (None if it is not all there yet), the rest, and
    whether the message after it has a type byte."""
    if not typed:  # the length comes first, and includes itself
        if len(buffer) < 8:
            return None, buffer, typed
        (length, code) = struct.unpack("!II", buffer[:8])
        if len(buffer) < length:
            return None, buffer, typed
        return buffer[:length], buffer[length:], code not in _STARTUP_CODES
    if len(buffer) < 5:
        return None, buffer, typed
    (length,) = struct.unpack("!I", buffer[1:5])
    if len(buffer) < 1 + length:
        return None, buffer, typed
    return buffer[: 1 + length], buffer[1 + length :], typed


def _is_commit(message: bytes) -> bool:
    """A simple query (Q) or a parse (P, what a pipeline sends) of COMMIT."""
    kind, body = message[:1], message[5:]
    if kind == b"Q":
        query = body.split(b"\0", 1)[0]
    elif kind == b"P":
        query = body.split(b"\0", 2)[1]  # after the statement's name
    else:
        return False
    return query.strip().upper() == b"COMMIT"


# The shard, its store behind the proxy ------------------------------------------------------


@pytest.fixture
def cutter(postgres: PostgresServer) -> Iterator[CommitCutter]:
    proxy = CommitCutter((postgres.listen, postgres.port))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def shard(cutter: CommitCutter, postgres_url: str) -> Iterator[Shard]:
    url = cutter.url(database_name(postgres_url))
    settings = ShardSettings(store_path=url, synchronous="FULL", resident_limit=1000, default_flow="echo")
    store = PostgresStore(url, retention=Retention())
    shard = Shard(0, 1, settings, store)
    try:
        hold_every_vshard(shard)
        yield shard
    finally:
        shard.close()


def key(conversation_id: str) -> ConversationKey:
    return ConversationKey(TENANT, conversation_id)


def turn(conversation_id: str, text: str, message_id: str) -> Command:
    message = InboundMessage(user_id="user-1", content=Content(text=text))
    return Command(CommandKind.TURN, message_id, key(conversation_id), message)


def run(shard: Shard, *commands: Command) -> list[Outcome]:
    ((_, answer),) = shard.run_round([("edge", CommandBatch(1, routed(shard, commands)))])
    return [decode_outcome(w) for w in answer.outcomes]


def as_turn(outcome: Outcome) -> TurnResult:
    assert isinstance(outcome, TurnResult), outcome
    return outcome


def stored(url: str, conversation_id: str) -> tuple[int, int, list[str]] | None:
    """(seq, message count of the stored state, message ids of its turns), read past the proxy."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "SELECT state, seq FROM conversations WHERE tenant_id = %s AND conversation_id = %s",
            (TENANT, conversation_id),
        ).fetchone()
        turns = db.execute(
            "SELECT message_id FROM turns WHERE tenant_id = %s AND conversation_id = %s ORDER BY seq",
            (TENANT, conversation_id),
        ).fetchall()
    if row is None:
        return None
    return row[1], codec.unpack_state(row[0]).message_count, [m for (m,) in turns]


def turn_row(url: str, conversation_id: str, message_id: str) -> list[tuple[int, bytes, float]]:
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT seq, reply, created_at FROM turns"
            " WHERE tenant_id = %s AND conversation_id = %s AND message_id = %s",
            (TENANT, conversation_id, message_id),
        ).fetchall()
    return [(r[0], bytes(r[1]), r[2]) for r in rows]


@pytest.mark.parametrize("cut", ["before", "after"])
def test_a_commit_cut_off_leaves_memory_and_store_in_agreement(
    shard: Shard, cutter: CommitCutter, postgres_url: str, cut: Cut
) -> None:
    acknowledged: dict[str, set[str]] = {"old": set(), "new": set()}

    def note(conversation_id: str, message_id: str, outcome: Outcome) -> TurnResult:
        result = as_turn(outcome)
        acknowledged[conversation_id].add(message_id)
        return result

    first = run(shard, turn("old", "one", "o-1"))
    note("old", "o-1", first[0])

    # A round of a known conversation and a new one; its COMMIT is cut.
    cutter.arm(cut)
    outcomes = run(shard, turn("old", "two", "o-2"), turn("new", "hello", "n-1"))
    assert cutter.cuts == 1
    for outcome in outcomes:
        assert isinstance(outcome, Unavailable), outcome  # retryable: the client sends them again
    committed = cut == "after"
    assert stored(postgres_url, "old") == ((2, 2, ["o-1", "o-2"]) if committed else (1, 1, ["o-1"]))
    assert stored(postgres_url, "new") == ((1, 1, ["n-1"]) if committed else None)
    # Neither conversation stays in memory as it was: their next command loads them.
    assert key("old") not in shard.residents and key("new") not in shard.residents
    written = {m: turn_row(postgres_url, c, m) for c, m in (("old", "o-2"), ("new", "n-1"))}

    # The client retries with the same message ids: applied now, or the first reply again.
    retried = run(shard, turn("old", "two", "o-2"), turn("new", "hello", "n-1"))
    old, new = note("old", "o-2", retried[0]), note("new", "n-1", retried[1])
    assert old.replayed is committed and new.replayed is committed
    assert old.state.message_count == 2 and new.state.message_count == 1
    if committed:  # the turns written by the cut round stand, untouched
        assert {m: turn_row(postgres_url, c, m) for c, m in (("old", "o-2"), ("new", "n-1"))} == written

    # The next turn continues from exactly what the store holds.
    after = note("old", "o-3", run(shard, turn("old", "three", "o-3"))[0])
    assert after.state.message_count == 3 and after.state.variables == {"last_message": "three"}
    assert not after.replayed
    assert stored(postgres_url, "old") == (3, 3, ["o-1", "o-2", "o-3"])
    assert stored(postgres_url, "new") == (1, 1, ["n-1"])
    for conversation_id, ids in acknowledged.items():
        state = stored(postgres_url, conversation_id)
        assert state is not None and state[1] == len(ids)  # one message per acknowledgement
        assert all(len(turn_row(postgres_url, conversation_id, m)) == 1 for m in ids)  # each applied once
