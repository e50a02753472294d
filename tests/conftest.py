"""Shared fixtures, and the rule that keeps ``make test-fast`` fast.

A test that starts a server, an actor system or any other process is an *integration*
test and says so with ``@pytest.mark.integration`` (or a module's ``pytestmark``);
``make test-fast`` (``pytest -m "not integration"``) leaves those out. The rule is
enforced, not just hoped for: while an unmarked test (or a fixture it asks for) is set
up or runs, starting a process fails that test, so a server fixture cannot slip into
the fast subset unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from confab.actors.settings import ShardSettings
from confab.actors.shard import Shard
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.models import ModelSettings
from confab.runtime.store import Retention, open_store
from confab.runtime.webhooks import WebhookTarget
from confab.tools.model_standin import ModelStandIn
from confab.tools.postgres_server import PostgresServer
from confab.tools.price_service import PriceService
from tests.hosts import Hosts, unavailable_reason
from tests.postgres import database_name, start_server
from tests.shard_runner import hold_every_vshard
from tests.support import ServerProcess, wait_until_gone

INTEGRATION = "integration"

# The test being set up or run now, while it is not marked integration; None otherwise.
_unmarked_test: pytest.Item | None = None


def _refusing(name: str, start: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _unmarked_test is not None:
            raise AssertionError(
                f"{_unmarked_test.nodeid} starts a process ({name}): mark it @pytest.mark.{INTEGRATION}"
            )
        return start(*args, **kwargs)

    return guarded


def pytest_configure(config: pytest.Config) -> None:
    # Every way a test could start a process goes through one of these: subprocess (and so
    # pexpect's spawn via its fork), multiprocessing and Thespian (os.fork), ptys (os.forkpty).
    subprocess.Popen._execute_child = _refusing(  # type: ignore[attr-defined]
        "subprocess",
        subprocess.Popen._execute_child,  # type: ignore[attr-defined]
    )
    os.fork = _refusing("os.fork", os.fork)
    os.forkpty = _refusing("os.forkpty", os.forkpty)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield from _watching(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _watching(item)


def _watching(item: pytest.Item) -> Iterator[None]:
    # Teardown is not watched: stopping a shared server may fall to whichever test ran last.
    global _unmarked_test
    _unmarked_test = None if item.get_closest_marker(INTEGRATION) else item
    try:
        yield
    finally:
        _unmarked_test = None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the tests that only talk to it."""
    process = ServerProcess(tmp_path_factory.mktemp("shared-server")).start()
    try:
        yield process
    finally:
        process.stop()
        assert not wait_until_gone(process.marker, 5.0), "the shared server left processes behind"


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.MCPEngineStub]:
    channel = server.channel()
    yield pb_grpc.MCPEngineStub(channel)
    channel.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that stop, kill or restart it."""
    process = ServerProcess(tmp_path / "data")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "shard.sqlite3"


@pytest.fixture
def make_shard(db_path: Path) -> Iterator[Callable[..., Shard]]:
    """``make_shard(...)``: a real Shard on the test's own SQLite file, holding every virtual shard."""
    opened: list[Shard] = []

    def factory(
        resident_limit: int = 1000,
        turns_kept: int = 32,
        index: int = 0,
        generation: int = 1,
        window_s: float = 3600.0,
        history_s: float = 0.0,
        flow_dirs: tuple[str, ...] = (),
        models: ModelSettings | None = None,
        webhooks: tuple[WebhookTarget, ...] = (),
    ) -> Shard:
        settings = ShardSettings(
            store_path=str(db_path),
            synchronous="NORMAL",
            resident_limit=resident_limit,
            default_flow="echo",
            retention=Retention(turns_kept, window_s, history_s),
            flow_dirs=flow_dirs,
            models=models or ModelSettings(),
            webhooks=webhooks,
        )
        store = open_store(settings.store_path, synchronous="NORMAL", retention=settings.retention)
        shard = Shard(index, generation, settings, store)
        hold_every_vshard(shard)
        opened.append(shard)
        return shard

    yield factory
    for shard in opened:
        shard.close()


@pytest.fixture
def standin() -> Iterator[ModelStandIn]:
    """A local OpenAI-compatible model provider (tools.model_standin), on a thread of the test's."""
    with ModelStandIn() as server:
        yield server


@pytest.fixture
def make_hosts() -> Iterator[Callable[[int], Hosts]]:
    """``network = make_hosts(3)``: hosts of the test's own, all removed after it (skipped if none can be)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with contextlib.ExitStack() as created:
        yield lambda count: created.enter_context(Hosts(count))


@pytest.fixture(scope="module")
def prices() -> Iterator[PriceService]:
    """The pizza flow's price webhook, answering at once (a thread, not a process), per module."""
    service = PriceService().start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (started by the first test that asks for it)."""
    server = start_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A database of the test's own on the session's server; dropped afterwards.

    Its text compares as English does ("a" < "B"), as many a production database's does,
    not byte by byte like the server's own: nothing may depend on a database's collation."""
    url = postgres.create_database(icu_locale="en-US")
    try:
        yield url
    finally:
        postgres.drop_database(database_name(url))
