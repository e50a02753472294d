"""The PostgreSQL store beyond the contract: opening, migrations, failures and recovery, and a
real ``confab serve`` on it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql

from confab.protos import admin_pb2, admin_pb2_grpc, health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.model import ConversationKey
from confab.runtime.store import ConversationWrite, StoreError, TurnRecord, open_store
from confab.runtime.store.migrations import POSTGRES, POSTGRES_VERSION
from confab.runtime.store.postgres import PostgresStore
from confab.runtime.store.sqlite import SqliteStore
from confab.tools.postgres_server import PostgresServer, free_port
from tests.hosts import Hosts
from tests.postgres import database_name, start_server
from tests.support import ServerProcess, message, processes_marked

pytestmark = pytest.mark.integration  # every test here runs a PostgreSQL server or confab serve

KEY = ConversationKey("tenant-a", "conv-1")


def rows(url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(query, args)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def opened(url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(url)
    try:
        yield store
    finally:
        store.close()


def write_one(store: PostgresStore, seq: int) -> None:
    store.write(
        [ConversationWrite(KEY, f"state-{seq}".encode(), seq, [TurnRecord(seq, f"m-{seq}", 1, b"r")])]
    )


def new_user(postgres: PostgresServer, password: str) -> str:
    """A role that logs in with ``password``, its name unique to this run."""
    name = f"user_{uuid.uuid4().hex[:8]}"
    postgres.add_user(name, password)
    return name


def one_line_error(opening: Callable[[], object]) -> str:
    with pytest.raises(StoreError) as caught:
        opening()
    text = str(caught.value)
    assert "\n" not in text
    return text


# Opening --------------------------------------------------------------------------------


def test_open_store_opens_postgresql_for_either_url_scheme_and_sqlite_for_a_path(
    postgres_url: str, tmp_path: Path
) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url, synchronous="OFF")
        try:
            assert isinstance(store, PostgresStore)
        finally:
            store.close()
    file_store = open_store(str(tmp_path / "c.sqlite3"))
    try:
        assert isinstance(file_store, SqliteStore)
    finally:
        file_store.close()


def test_a_new_database_gets_every_schema_version_with_the_types_of_the_design(postgres_url: str) -> None:
    with opened(postgres_url):
        pass
    assert rows(postgres_url, "SELECT version, what FROM schema_version ORDER BY version") == [
        (m.version, m.what) for m in POSTGRES
    ]
    types = dict(
        rows(
            postgres_url,
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public'",
        )
    )
    assert types["conversations.state"] == types["turns.reply"] == types["turns.recorded"] == "bytea"
    assert types["conversations.updated_at"] == types["turns.created_at"] == "double precision"
    assert types["write_probe.at"] == "double precision"
    assert types["vshards.lease_until"] == "timestamp with time zone"
    assert types["vshards.epoch"] == types["conversations.seq"] == "bigint"


def test_opening_again_applies_nothing_and_keeps_the_data(postgres_url: str) -> None:
    with opened(postgres_url) as store:
        write_one(store, 1)
    with opened(postgres_url) as store:
        loaded = store.load(KEY)
        assert loaded is not None and loaded.seq == 1
    assert rows(postgres_url, "SELECT COUNT(*) FROM schema_version") == [(POSTGRES_VERSION,)]


def test_a_database_at_an_older_version_gets_the_steps_after_it_and_keeps_its_data(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, what TEXT NOT NULL)")
        for migration in POSTGRES[:2]:
            for statement in migration.statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (%s, %s)", (migration.version, migration.what))
        db.execute("INSERT INTO conversations VALUES ('tenant-a', 'conv-1', '\\x93', 4, 1.0)")
        db.execute("INSERT INTO turns VALUES ('tenant-a', 'conv-1', 4, 'old', 1, '\\x01', 1.0, 'hi')")
    with opened(postgres_url) as store:
        kept = store.load_turn(KEY, "old")
        assert kept is not None and (kept.input, kept.fingerprint, kept.recorded) == ("hi", b"", b"")
        assert store.claim([1], "shard-a", 30.0) == {1: 1}  # the tables of later versions are there
    assert [v for (v,) in rows(postgres_url, "SELECT version FROM schema_version ORDER BY 1")] == [
        m.version for m in POSTGRES
    ]


def test_a_step_that_fails_leaves_the_database_at_the_version_it_had(postgres_url: str) -> None:
    with opened(postgres_url):
        pass
    rows(postgres_url, "DROP TABLE vshards")
    rows(postgres_url, "ALTER TABLE turns DROP COLUMN recorded")
    rows(postgres_url, "DELETE FROM schema_version WHERE version >= 4")
    rows(postgres_url, "CREATE TABLE vshards (anything INTEGER)")  # step 5 cannot create it now
    text = one_line_error(lambda: PostgresStore(postgres_url))
    assert 'relation "vshards" already exists' in text
    # Step 4 ran in the same transaction as the failed step 5: neither is there.
    assert [v for (v,) in rows(postgres_url, "SELECT version FROM schema_version ORDER BY 1")] == [1, 2, 3]
    assert (
        rows(
            postgres_url, "SELECT column_name FROM information_schema.columns WHERE column_name = 'recorded'"
        )
        == []
    )


def test_a_database_written_by_a_newer_version_is_refused(postgres_url: str) -> None:
    with opened(postgres_url):
        pass
    rows(
        postgres_url,
        "INSERT INTO schema_version (version, what) VALUES (%s, 'from the future')",
        POSTGRES_VERSION + 1,
    )
    text = one_line_error(lambda: PostgresStore(postgres_url))
    assert "newer Confab" in text and f"schema {POSTGRES_VERSION + 1}" in text


def test_shards_opening_a_new_database_at_once_migrate_it_once(postgres_url: str) -> None:
    count = 6
    start = threading.Barrier(count)
    stores: list[PostgresStore] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            stores.append(PostgresStore(postgres_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    assert failures == []
    assert len(stores) == count
    assert [v for (v,) in rows(postgres_url, "SELECT version FROM schema_version ORDER BY 1")] == [
        m.version for m in POSTGRES
    ]


def test_a_closed_store_leaves_no_thread_behind(postgres_url: str) -> None:
    # `confab serve` opens the store once before it forks the actor system.
    before = set(threading.enumerate())
    with opened(postgres_url) as store:
        store.ping()
    assert set(threading.enumerate()) == before


# Failing to open: one line, the URL without its password, the reason -------------------


def test_a_wrong_password_is_refused_and_never_shown(postgres: PostgresServer) -> None:
    alice = new_user(postgres, "right-password")
    url = postgres.url("postgres", user=alice, password="wrong-password")
    text = one_line_error(lambda: PostgresStore(url))
    assert text.startswith(postgres.url("postgres", user=alice, password="***") + ": ")
    assert f'password authentication failed for user "{alice}"' in text
    assert "wrong-password" not in text


def test_the_password_may_come_from_pgpassword_or_a_password_file(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = new_user(postgres, "bobs-secret")
    name = database_name(postgres_url)
    with postgres.connect() as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(bob))
        )
    url = postgres.url(name, user=bob)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "nothing-here"))
    assert "password" in one_line_error(lambda: PostgresStore(url))
    monkeypatch.setenv("PGPASSWORD", "bobs-secret")
    with opened(url) as store:
        store.probe_write()
    monkeypatch.delenv("PGPASSWORD")
    password_file = tmp_path / "pgpass"
    password_file.write_text(f"{postgres.listen}:{postgres.port}:{name}:{bob}:bobs-secret\n")
    password_file.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(password_file))
    with opened(url) as store:
        store.probe_write()


def test_a_missing_database_is_named(postgres: PostgresServer) -> None:
    text = one_line_error(lambda: PostgresStore(postgres.url("no_such_db")))
    assert text.startswith(postgres.url("no_such_db") + ": ")
    assert 'database "no_such_db" does not exist' in text


def test_a_server_that_is_not_there_is_said_so(postgres: PostgresServer) -> None:
    url = f"postgresql://confab:pw@127.0.0.1:{free_port('127.0.0.1')}/confab"
    text = one_line_error(lambda: PostgresStore(url))
    assert text.startswith(url.replace(":pw@", ":***@") + ": ")
    assert "Connection refused" in text and ":pw@" not in text


def test_a_user_who_may_not_create_tables_cannot_migrate_a_new_database(
    postgres: PostgresServer, postgres_url: str
) -> None:
    carol = new_user(postgres, "carols-secret")
    url = postgres.url(database_name(postgres_url), user=carol, password="carols-secret")
    text = one_line_error(lambda: PostgresStore(url))
    assert "permission denied for schema public" in text and "carols-secret" not in text


def test_a_user_allowed_only_rows_opens_a_database_already_migrated(
    postgres: PostgresServer, postgres_url: str
) -> None:
    with opened(postgres_url):
        pass
    dave = new_user(postgres, "daves-secret")
    rows(postgres_url, f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {dave}")
    with opened(postgres.url(database_name(postgres_url), user=dave, password="daves-secret")) as store:
        write_one(store, 1)
        assert store.claim([1], "shard-a", 30.0) == {1: 1}


def test_a_url_libpq_cannot_read_is_refused_with_its_reason(postgres: PostgresServer) -> None:
    url = postgres.url("postgres") + "?sslmode=sometimes"
    text = one_line_error(lambda: PostgresStore(url))
    assert 'invalid sslmode value: "sometimes"' in text


# The server goes away and comes back ----------------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, to stop and start."""
    server = start_server()
    try:
        yield server
    finally:
        server.close()


def test_writes_fail_while_the_server_is_down_and_work_once_it_is_back(own_postgres: PostgresServer) -> None:
    with opened(own_postgres.create_database()) as store:
        write_one(store, 1)
        own_postgres.stop()
        with pytest.raises(psycopg.Error):
            write_one(store, 2)
        with pytest.raises(psycopg.Error):
            store.ping()
        own_postgres.start()
        failed = 0
        deadline = time.monotonic() + 30
        while True:
            try:
                write_one(store, 2)
                break
            except psycopg.Error:
                failed += 1
                assert time.monotonic() < deadline, "writes never worked again"
        for seq in range(3, 6):
            write_one(store, seq)
        loaded = store.load(KEY)
        assert loaded is not None and loaded.seq == 5
        assert [m for m, _ in loaded.message_ids] == ["m-1", "m-2", "m-3", "m-4", "m-5"]


def test_confab_serve_on_postgresql_answers_unavailable_while_it_is_down_and_recovers(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    erin = new_user(own_postgres, "erins-secret")
    url = own_postgres.create_database()
    rows(url, f"ALTER DATABASE {database_name(url)} OWNER TO {erin}")
    url = own_postgres.url(database_name(url), user=erin, password="erins-secret")
    server = ServerProcess(tmp_path / "data", shards=2, extra=["--store", url], log_level="INFO").start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            assert (
                stub.ProcessMessage(message("c-1", "hello"), timeout=20).conversation_state.message_count == 1
            )
            health = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(
                health_pb2.DetailedHealthRequest(include_dependencies=True), timeout=10
            )
            assert [d.type for d in health.dependencies if d.name == "store"] == ["postgresql"]
            own_postgres.stop()
            with pytest.raises(grpc.RpcError) as caught:
                stub.ProcessMessage(message("c-1", "again"), timeout=20)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            own_postgres.start()
            deadline = time.monotonic() + 40
            while True:
                try:
                    reply = stub.ProcessMessage(message("c-1", "back"), timeout=20)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    assert time.monotonic() < deadline, "the server never recovered"
                    time.sleep(0.2)
            assert reply.conversation_state.message_count == 2  # the failed turn left nothing
    finally:
        server.stop()
    assert not (tmp_path / "data" / "confab.sqlite3").exists()
    assert rows(url, "SELECT seq FROM conversations WHERE conversation_id = 'c-1'") == [(2,)]
    output = "".join(server.output)
    assert "erins-secret" not in output
    # confab serve took the password off the URL (it is in the shards' PGPASSWORD).
    assert own_postgres.url(database_name(url), user=erin) in output


def test_confab_serve_keeps_the_stores_password_out_of_process_arguments_and_logs(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    frank = new_user(postgres, password)
    name = database_name(postgres_url)
    rows(postgres_url, f"ALTER DATABASE {name} OWNER TO {frank}")
    # The URL with its password, where an operator would put it: in the config file (on the
    # command line, the serving process's own arguments would show it before Confab runs).
    config = tmp_path / "confab.yaml"
    config.write_text(f"store:\n  path: '{postgres.url(name, user=frank, password=password)}'\n")
    server = ServerProcess(tmp_path / "data", shards=2, extra=["--config", str(config)], log_level="DEBUG")
    server.start()
    try:
        with server.channel() as channel:
            reply = pb_grpc.MCPEngineStub(channel).ProcessMessage(message("c-1", "hello"), timeout=20)
            assert reply.conversation_state.message_count == 1  # the shards logged in: they have it
            cluster = admin_pb2_grpc.AdminStub(channel).GetCluster(admin_pb2.GetClusterRequest(), timeout=10)
        tree = processes_marked(server.marker)
        assert len(tree) >= 1 + 2  # the server and its shards at least
        for process in tree:
            arguments = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            assert password.encode() not in arguments, process.cmdline()
    finally:
        server.stop()
    assert cluster.store.path == postgres.url(name, user=frank)
    assert rows(postgres_url, "SELECT seq FROM conversations WHERE conversation_id = 'c-1'") == [(1,)]
    output = "".join(server.output)
    assert "DEBUG" in output and password not in output


def test_confab_serve_refuses_to_start_on_a_store_it_cannot_reach(tmp_path: Path) -> None:
    url = f"postgresql://confab:hunter2@127.0.0.1:{free_port('127.0.0.1')}/confab"
    done = subprocess.run(
        [sys.executable, "-m", "confab.tools.cli", "serve", "--data-dir", str(tmp_path), "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"confab: {url.replace(':hunter2@', '@')}: connection to server at")
    )
    assert "hunter2" not in done.stderr + done.stdout


# A store shared by hosts ----------------------------------------------------------------

# Runs on a host: writes a conversation every 0.2 s, saying how each write went.
HOST_WRITER = """
import sys, time
from confab.runtime.model import ConversationKey
from confab.runtime.store import ConversationWrite, open_store
store = open_store(sys.argv[1])
for seq in range(1, 1000):
    started = time.monotonic()
    try:
        store.write([ConversationWrite(ConversationKey("t", "from-host"), b"s", seq)])
        print(f"ok {seq}", flush=True)
    except Exception as exc:
        print(f"failed after {time.monotonic() - started:.1f}s: {type(exc).__name__}", flush=True)
    time.sleep(0.2)
"""


def test_a_host_cut_off_from_the_store_fails_its_writes_within_seconds_and_writes_again_once_healed(
    make_hosts: Callable[[int], Hosts], tmp_path: Path
) -> None:
    network = make_hosts(1)
    postgres = start_server(listen=network.bridge_address)
    try:
        url = postgres.create_database()
        log = tmp_path / "writer.log"
        network.spawn(0, [sys.executable, "-c", HOST_WRITER, url], log=log)

        def lines() -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        def wait_for_line(start: int, prefix: str, timeout: float) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = [line for line in lines()[start:] if line.startswith(prefix)]
                if found:
                    return found[0]
                time.sleep(0.1)
            raise AssertionError(f"no {prefix!r} line in {timeout:.0f}s:\n" + "\n".join(lines()))

        wait_for_line(0, "ok", 30)
        network.cut(0)
        cut_at = len(lines())
        failure = wait_for_line(cut_at, "failed", 60)
        # Not the kernel's quarter of an hour: keepalives and the TCP user timeout end the write.
        assert float(failure.split()[2].rstrip("s:")) < 20.0, failure
        network.heal(0)
        wait_for_line(len(lines()), "ok", 60)
        assert rows(url, "SELECT seq > 1 FROM conversations WHERE conversation_id = 'from-host'") == [(True,)]
    finally:
        network.close()
        postgres.close()
