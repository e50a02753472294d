"""Several edge processes on one port (``confab serve --edges N``): any edge serves any call,
one edge killed is replaced while the others serve, SIGTERM drains every edge, and a second
server on the same port is still refused in one line.

Which edge answered is told by the ``edge_pid`` of the health details; a channel of its own
(``grpc.use_local_subchannel_pool``) is a connection of its own, which the kernel gives to
one of the edges.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc

from confab.protos import admin_pb2, admin_pb2_grpc, health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.price_service import PriceService
from tests.support import (
    ServerProcess,
    confab_argv,
    message,
    pizza,
    price_webhook_config,
    processes_marked,
    serve_args,
    state_request,
    wait_until_gone,
)
from tests.test_idempotency import comparable

pytestmark = pytest.mark.integration  # every test here starts a server or a process

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def edge_pid(channel: grpc.Channel) -> int:
    health = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(
        health_pb2.DetailedHealthRequest(), timeout=10
    )
    return int(health.details["edge_pid"])


def channels_to_edges(address: str, count: int) -> dict[int, grpc.Channel]:
    """A channel to each of ``count`` different edges (by pid), new connections until there are."""
    found: dict[int, grpc.Channel] = {}
    for _ in range(200):
        channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
        pid = edge_pid(channel)
        if pid in found or len(found) == count:
            channel.close()
        else:
            found[pid] = channel
        if len(found) == count:
            return found
    raise AssertionError(f"only {len(found)} of {count} edges answered 200 new connections")


def pushed_to_a_stream_on(channel: grpc.Channel, conversation: str, act: Callable[[], object]) -> float:
    """Open a stream of ``conversation`` on ``channel``, ``act``, and return how long the
    agent_message event it pushes took to arrive on that stream."""
    done = threading.Event()

    def requests() -> Iterator[pb.ConversationStreamRequest]:
        yield pb.ConversationStreamRequest(
            init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
        )
        done.wait(30)

    call = pb_grpc.MCPEngineStub(channel).StreamConversation(requests(), timeout=30)
    try:
        responses = iter(call)
        assert next(responses).HasField("ack")
        sent = time.monotonic()
        act()
        event = next(responses)
        assert event.event.event_type == "agent_message", event
        return time.monotonic() - sent
    finally:
        done.set()
        call.cancel()


def keyed(conversation: str, text: str, key: str) -> pb.ProcessMessageRequest:
    request = message(conversation, text)
    request.metadata.request_id = key
    return request


@pytest.fixture
def two_edges(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", shards=2, edges=2, log_level="INFO")
    try:
        yield server.start(timeout=60.0)
    finally:
        server.stop()


def test_edges_share_one_port_each_serves_and_a_retry_on_another_edge_gets_the_original_reply(
    two_edges: ServerProcess,
) -> None:
    # Host, 2 edges, launcher, admin, logger, supervisor, 2 shards.
    (line,) = [line for line in two_edges.output if "serving on" in line]
    assert "2 edges" in line
    assert len(processes_marked(two_edges.marker)) >= 8
    channels = channels_to_edges(two_edges.address, 2)
    (first_pid, first), (second_pid, second) = channels.items()
    assert first_pid != second_pid and two_edges.pid not in channels
    one, other = pb_grpc.MCPEngineStub(first), pb_grpc.MCPEngineStub(second)

    # A message applied through one edge, retried through the other: the original reply, applied once.
    original = one.ProcessMessage(keyed("across", "hello", "key-1"), timeout=10)
    again = other.ProcessMessage(keyed("across", "hello", "key-1"), timeout=10)
    assert again.conversation_state.message_count == original.conversation_state.message_count == 1
    assert comparable(again) == comparable(original)
    assert [r.performance_metrics.cache_status for r in (original, again)] == ["miss", "replayed"]
    for stub in (one, other):
        state = stub.GetConversationState(state_request("across"), timeout=10).conversation_state
        assert state.message_count == 1
    # One conversation's messages alternate between edges, applied in order, each once.
    for i in range(2, 8):
        reply = (one if i % 2 else other).ProcessMessage(message("across", f"m{i}"), timeout=10)
        assert reply.conversation_state.message_count == i

    # Streams work on either edge.
    for channel in channels.values():
        stream = pb_grpc.MCPEngineStub(channel).StreamConversation(
            iter(
                [
                    pb.ConversationStreamRequest(
                        init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id="streamed")
                    ),
                    pb.ConversationStreamRequest(message=message("streamed", "hi")),
                    pb.ConversationStreamRequest(close=pb.StreamClose(reason="done")),
                ]
            ),
            timeout=10,
        )
        kinds = [r.WhichOneof("response_type") for r in stream]
        assert "message_response" in kinds

    # A person's message sent through one edge reaches a stream open on the other at once.
    one.ProcessMessage(pizza("handed-across", "hi"), timeout=10)
    assert one.ProcessMessage(pizza("handed-across", payload="HUMAN"), timeout=10).current_state == "human"
    heard = pushed_to_a_stream_on(
        first,
        "handed-across",
        lambda: admin_pb2_grpc.AdminStub(second).SendAgentMessage(
            admin_pb2.AgentMessage(tenant_id="acme", conversation_id="handed-across", text="I'm here"),
            timeout=10,
        ),
    )
    print(
        f"a person's message sent through edge {second_pid} reached"
        f" edge {first_pid}'s stream in {heard * 1000:.1f} ms"
    )
    assert heard < 1.0

    # A second server on the same port is refused in one line, as with one edge.
    for edges in ("1", "2"):
        done = subprocess.run(
            confab_argv(
                *serve_args(
                    "--shards",
                    "1",
                    "--edges",
                    edges,
                    data_dir=two_edges.data_dir.parent / f"other-{edges}",
                    listen=two_edges.address,
                )
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CONFAB_TEST_RUN": uuid.uuid4().hex},
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            f"confab: cannot listen on {two_edges.address}: Address already in use"
        ]

    # SIGHUP to the printed pid reloads the flows (one edge does it for every shard).
    os.kill(two_edges.pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while not any("flows reloaded" in line for line in two_edges.output):
        assert time.monotonic() < deadline, "no flow reload logged"
        time.sleep(0.1)
    for channel in channels.values():
        channel.close()


def test_kill_9_of_one_edge_under_load_the_other_serves_and_no_acknowledged_message_is_lost(
    two_edges: ServerProcess,
) -> None:
    conversations = [f"edge-load-{i}" for i in range(8)]
    acked: dict[str, list[int]] = {c: [] for c in conversations}
    # When each acknowledgement came and which edge gave it.
    served: list[tuple[float, int]] = []
    stop = threading.Event()
    lock = threading.Lock()
    found = channels_to_edges(two_edges.address, 2)
    victim, survivor = found
    for channel in found.values():
        channel.close()

    def run(conversation: str, wanted: int) -> None:
        # Half the conversations start on each edge: a connection of its own until it lands there.
        channel = grpc.insecure_channel(two_edges.address, options=OWN_CONNECTION)
        for _ in range(200):
            if (pid := edge_pid(channel)) == wanted:
                break
            channel.close()
            channel = grpc.insecure_channel(two_edges.address, options=OWN_CONNECTION)
        i = 0
        while not stop.is_set():
            request = keyed(conversation, f"n{i}", f"{conversation}-{i}")
            try:
                reply = pb_grpc.MCPEngineStub(channel).ProcessMessage(request, timeout=20)
            except grpc.RpcError as error:
                # The edge died under this call: the same message, same key, on a new connection.
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), error
                channel.close()
                time.sleep(0.05)
                channel = grpc.insecure_channel(two_edges.address, options=OWN_CONNECTION)
                with contextlib.suppress(grpc.RpcError):
                    pid = edge_pid(channel)
                continue
            with lock:
                acked[conversation].append(reply.conversation_state.message_count)
                served.append((time.monotonic(), pid))
            i += 1
        channel.close()

    threads = [
        threading.Thread(target=run, args=(c, victim if n % 2 else survivor), daemon=True)
        for n, c in enumerate(conversations)
    ]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    with lock:
        assert {pid for _, pid in served} >= {victim, survivor}, "the load did not reach both edges"
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    time.sleep(3.0)
    stop.set()
    for thread in threads:
        thread.join(30)

    # The survivor kept serving right after the kill (a reply the victim sent just before it
    # may still arrive in the first moments).
    with lock:
        soon_after = [pid for at, pid in served if killed_at + 0.2 < at < killed_at + 1.2]
    assert survivor in soon_after and victim not in soon_after
    # The dead edge was replaced: a new edge pid answers.
    log = "".join(two_edges.output)
    assert re.search(rf"edge \d \(pid {victim}\) exited \(killed by SIGKILL\); starting another", log)
    replaced = channels_to_edges(two_edges.address, 2)
    assert survivor in replaced and victim not in replaced
    stub = pb_grpc.MCPEngineStub(next(iter(replaced.values())))
    for conversation, counts in acked.items():
        # Gap-free: nothing acknowledged was lost; a retry of one applied before the kill got its reply.
        assert counts == list(range(1, len(counts) + 1)), conversation
        stored = stub.GetConversationState(state_request(conversation), timeout=10).conversation_state
        assert stored.message_count == len(counts)
    assert sum(len(c) for c in acked.values()) > 40
    for channel in replaced.values():
        channel.close()
    # SIGKILL of the host process takes every edge and actor process with it.
    os.kill(two_edges.pid, signal.SIGKILL)
    two_edges.process.wait(5)  # type: ignore[union-attr]
    assert wait_until_gone(two_edges.marker, 5.0) == []


def _requests(
    outbox: queue.Queue[pb.ConversationStreamRequest | None],
) -> Iterator[pb.ConversationStreamRequest]:
    while (item := outbox.get()) is not None:
        yield item


def test_sigterm_drains_every_edge(tmp_path: Path) -> None:
    prices = PriceService(delay_s=1.5).start()  # a turn still running on each edge when the drain begins
    config = price_webhook_config(
        tmp_path / "confab.yaml", prices.url, more_yaml="server:\n  shutdown_grace_s: 5.0\n"
    )
    server = ServerProcess(tmp_path / "data", shards=1, edges=2, extra=["--config", str(config)])
    server.start(timeout=60.0)
    try:
        channels = channels_to_edges(server.address, 2)
        watches = [
            std_health_pb2_grpc.HealthStub(channel).Watch(std_health_pb2.HealthCheckRequest(service=""))
            for channel in channels.values()
        ]
        for watch in watches:
            assert next(watch).status == std_health_pb2.HealthCheckResponse.SERVING
        streams = []
        for n, channel in enumerate(channels.values()):
            outbox: queue.Queue[pb.ConversationStreamRequest | None] = queue.Queue()
            conversation = f"drained-{n}"
            stream = pb_grpc.MCPEngineStub(channel).StreamConversation(_requests(outbox))
            init = pb.StreamInit(
                tenant_context={"tenant_id": "acme"}, conversation_id=conversation, event_types=["heartbeat"]
            )
            outbox.put(pb.ConversationStreamRequest(init=init))
            assert next(stream).HasField("ack")
            outbox.put(pb.ConversationStreamRequest(message=pizza(conversation, "hi")))
            assert next(stream).HasField("message_response")
            # This one waits 1.5 s for the price webhook: in flight when SIGTERM comes.
            outbox.put(pb.ConversationStreamRequest(message=pizza(conversation, "2 large pizzas")))
            streams.append((stream, outbox))
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for watch in watches:
            assert next(watch).status == std_health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
        for stream, outbox in streams:
            answers = []
            with pytest.raises(grpc.RpcError) as ended:
                for response in stream:
                    answers.append(response)
            outbox.put(None)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert answers[0].message_response.current_state == "confirm"  # the turn in flight was answered
            assert answers[-1].error.error_code == "SERVER_SHUTTING_DOWN"
        assert server.process.wait(30) == 0  # type: ignore[union-attr]
        assert wait_until_gone(server.marker, 5.0) == []
    finally:
        server.stop()
        prices.stop()
