"""Clients that open a streaming call, read a little and cancel, over and over, cannot take the server down.

The server logs every call (INFO, so the access line is written as each call ends)
and has authentication on, as in production: the health services stay open to
anyone, so a stranger can run these storms too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc

from confab.grpc_edge.auth import hash_api_key
from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import health_pb2 as health
from confab.protos import health_pb2_grpc as health_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message

pytestmark = pytest.mark.integration  # every test here starts a server or a process

KEY = "storm-key-for-tests-0123456789abcdef"
CREDENTIALS = (("x-api-key", KEY),)
ROUNDS = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("storms")
    config = root / "confab.yaml"
    config.write_text(
        "auth:\n  mode: required\n  api_keys:\n"
        f"    - {{name: storm, sha256: {hash_api_key(KEY)}, tenant: acme, roles: [admin]}}\n"
        "logging:\n  format: json\n"
    )
    process = ServerProcess(root / "data", extra=["--config", str(config)], log_level="INFO").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as channel:
        yield channel


def _assert_serving(server: ServerProcess, channel: grpc.Channel) -> None:
    assert server.alive(), "the server died:\n" + "".join(server.output[-40:])
    answer = std_health_pb2_grpc.HealthStub(channel).Check(std_health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == std_health_pb2.HealthCheckResponse.SERVING


def _stream_requests(
    conversation: str, messages: int, linger_s: float
) -> Iterator[pb.ConversationStreamRequest]:
    yield pb.ConversationStreamRequest(
        init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
    )
    for i in range(messages):
        yield pb.ConversationStreamRequest(message=message(conversation, f"m{i}"))
    time.sleep(linger_s)  # keep the request side open while the client cancels


def test_stream_conversation_open_read_cancel(server: ServerProcess, channel: grpc.Channel) -> None:
    stub = pb_grpc.MCPEngineStub(channel)
    for round_ in range(ROUNDS):
        call = stub.StreamConversation(_stream_requests(f"storm-{round_ % 5}", 1, 0.5), metadata=CREDENTIALS)
        next(call)  # the ack
        call.cancel()
    _assert_serving(server, channel)


def test_stream_conversation_client_that_never_reads(server: ServerProcess, channel: grpc.Channel) -> None:
    stub = pb_grpc.MCPEngineStub(channel)
    for round_ in range(3):
        call = stub.StreamConversation(
            _stream_requests(f"unread-{round_}", 10_000, 2.0), metadata=CREDENTIALS
        )
        time.sleep(0.5)  # the server answers into a window nobody drains
        call.cancel()
    _assert_serving(server, channel)


def test_health_watch_open_read_cancel_without_credentials(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    v2 = health_grpc.HealthStub(channel)
    v1 = std_health_pb2_grpc.HealthStub(channel)
    for _ in range(ROUNDS):
        watch = v2.Watch(health.HealthCheckRequest(service=""))
        next(watch)
        watch.cancel()
        standard = v1.Watch(std_health_pb2.HealthCheckRequest(service=""))
        next(standard)
        standard.cancel()
    _assert_serving(server, channel)


def test_tail_events_open_read_cancel(server: ServerProcess, channel: grpc.Channel) -> None:
    tail_stub = admin_grpc.AdminStub(channel)
    engine = pb_grpc.MCPEngineStub(channel)
    numbers = itertools.count()
    with ThreadPoolExecutor(1) as reader:
        for _ in range(ROUNDS):
            tail = tail_stub.TailEvents(admin.TailEventsRequest(event_types=["turn"]), metadata=CREDENTIALS)
            first = reader.submit(next, tail)
            # The tail sees turns published once it is subscribed: send until it has read one.
            while not first.done():
                engine.ProcessMessage(
                    message("tailed", f"t{next(numbers)}"), metadata=CREDENTIALS, timeout=10
                )
            assert first.result().type == "turn"
            tail.cancel()
    _assert_serving(server, channel)
