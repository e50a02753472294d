from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from confab.protos import mcp_engine_pb2_grpc as pb_grpc

from .hosts import Hosts, unavailable_reason
from .support import ServerProcess, wait_until_gone


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
def make_hosts() -> Iterator[Callable[[int], Hosts]]:
    """``network = make_hosts(3)``: hosts of the test's own, all removed after it (skipped if none can be)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with contextlib.ExitStack() as created:
        yield lambda count: created.enter_context(Hosts(count))
