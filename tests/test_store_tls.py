"""The PostgreSQL store over TLS: ``sslmode`` and ``sslrootcert`` in the URL reach libpq as given.

A server of this module's own takes TLS connections only (``hostssl``), with a certificate
signed by a CA made for it (``tools.postgres_server``). With ``sslmode=verify-full`` and that
CA the store opens and ``confab serve`` serves; a wrong CA, or TLS required of a server that
has none, is refused in one line that says why.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.store import StoreError
from confab.runtime.store.postgres import PostgresStore
from confab.tools.postgres_server import PostgresServer, make_tls_files
from tests.postgres import start_server
from tests.support import ServerProcess, message, run_confab, serve_args

pytestmark = pytest.mark.integration  # PostgreSQL servers, and confab serve


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[PostgresServer]:
    server = start_server(tls=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def tls_database(tls_postgres: PostgresServer) -> Iterator[str]:
    name = f"db_{uuid.uuid4().hex[:12]}"
    tls_postgres.create_database(name)
    try:
        yield name
    finally:
        tls_postgres.drop_database(name)


def verified(server: PostgresServer, name: str, ca: Path) -> str:
    return server.url(name) + f"?sslmode=verify-full&sslrootcert={ca}"


def refusal(url: str) -> str:
    with pytest.raises(StoreError) as caught:
        PostgresStore(url).close()
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_verify_full_with_the_servers_ca_opens_the_store_over_tls(
    tls_postgres: PostgresServer, tls_database: str
) -> None:
    url = verified(tls_postgres, tls_database, tls_postgres.ca_path)
    store = PostgresStore(url)
    try:
        assert store.url == url  # nothing of it is dropped, shown or used
        store.probe_write()
        assert store.count_conversations() == 0
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)
    # The server takes nothing else over TCP: what the store opened was TLS.
    assert "no encryption" in refusal(tls_postgres.url(tls_database) + "?sslmode=disable")


def test_a_wrong_ca_is_refused_in_one_line(
    tls_postgres: PostgresServer, tls_database: str, tmp_path: Path
) -> None:
    wrong = make_tls_files(tmp_path / "other", "127.0.0.1").ca
    url = verified(tls_postgres, tls_database, wrong)
    text = refusal(url)
    assert text.startswith(url + ": ") and "certificate verify failed" in text
    done = run_confab(*serve_args("--store", url, data_dir=tmp_path / "data"), timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"confab: {url}: ") and "certificate verify failed" in line


def test_tls_required_of_a_server_without_it_is_refused_in_one_line(
    postgres: PostgresServer, postgres_url: str
) -> None:
    text = refusal(postgres_url + "?sslmode=require")
    assert "server does not support SSL, but SSL was required" in text


def test_confab_serve_on_a_store_over_verified_tls(
    tls_postgres: PostgresServer, tls_database: str, tmp_path: Path
) -> None:
    url = verified(tls_postgres, tls_database, tls_postgres.ca_path)
    server = ServerProcess(tmp_path / "data", shards=2, extra=["--store", url], log_level="INFO")
    server.start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            for count, text in enumerate(["hello", "again"], start=1):
                reply = stub.ProcessMessage(message("c-1", text), timeout=20)
                assert reply.conversation_state.message_count == count
    finally:
        server.stop()
    # The server takes TCP connections over TLS only: the shards' writes went over it.
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT seq FROM conversations WHERE conversation_id = 'c-1'").fetchall() == [(2,)]
    assert f"store {url} checked" in "".join(server.output)
