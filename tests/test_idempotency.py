"""A client's request id is an idempotency key: a repeat gets the first reply and changes nothing.

A unary call, a batch item and a stream message may each carry
``metadata.request_id``; within ``engine.idempotency_window_s`` a repeat with the same
key for the same conversation is answered with the reply the first one got, marked
as replayed, and is not applied again. Without a key nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, state_request

pytestmark = pytest.mark.integration  # every test here starts a server or a process

# What the README tells clients to use: retry UNAVAILABLE and DEADLINE_EXCEEDED, keys on every message.
RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": "mcp.engine.v2.MCPEngine"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"],
            },
        }
    ]
}


def keyed(conversation: str, text: str, key: str) -> pb.ProcessMessageRequest:
    request = message(conversation, text)
    request.metadata.request_id = key
    return request


def count_of(stub: pb_grpc.MCPEngineStub, conversation: str) -> int:
    reply: pb.GetConversationStateResponse = stub.GetConversationState(state_request(conversation))
    return reply.conversation_state.message_count


def comparable(reply: pb.ProcessMessageResponse) -> pb.ProcessMessageResponse:
    """A reply without what differs by design between a first answer and its replays."""
    copy = pb.ProcessMessageResponse()
    copy.CopyFrom(reply)
    copy.ClearField("metadata")
    copy.ClearField("performance_metrics")
    copy.status.ClearField("message")
    return copy


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.MCPEngineStub]:
    options = [("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        yield pb_grpc.MCPEngineStub(channel)


def test_the_same_request_three_times_is_applied_once_with_three_equal_replies(
    stub: pb_grpc.MCPEngineStub,
) -> None:
    replies = [stub.ProcessMessage(keyed("idem-unary", "pay 10", "order-77")) for _ in range(3)]
    assert count_of(stub, "idem-unary") == 1
    assert comparable(replies[1]) == comparable(replies[0]) == comparable(replies[2])
    assert [r.performance_metrics.cache_status for r in replies] == ["miss", "replayed", "replayed"]
    assert replies[0].status.message == "processed"
    assert replies[1].status.message == "already processed; original reply"


def test_without_a_key_every_request_is_applied(stub: pb_grpc.MCPEngineStub) -> None:
    for _ in range(3):
        stub.ProcessMessage(message("idem-none", "again"))
    assert count_of(stub, "idem-none") == 3


def test_keys_are_per_conversation(stub: pb_grpc.MCPEngineStub) -> None:
    stub.ProcessMessage(keyed("idem-a", "x", "shared-key"))
    stub.ProcessMessage(keyed("idem-b", "x", "shared-key"))
    assert count_of(stub, "idem-a") == count_of(stub, "idem-b") == 1


def test_a_key_reused_for_a_different_message_is_refused_and_changes_nothing(
    stub: pb_grpc.MCPEngineStub,
) -> None:
    stub.ProcessMessage(keyed("idem-reuse", "pay 10", "k-1"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessMessage(keyed("idem-reuse", "pay 99", "k-1"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (caught.value.details() or "")
    assert count_of(stub, "idem-reuse") == 1


def test_batch_items_with_keys_are_applied_once_across_repeated_batches(stub: pb_grpc.MCPEngineStub) -> None:
    batch = pb.BatchProcessMessagesRequest(
        tenant_context={"tenant_id": "acme"},
        messages=[keyed("idem-batch", f"m{i}", f"item-{i}") for i in range(5)],
        parallel_processing=True,
    )
    first = stub.BatchProcessMessages(batch)
    again = stub.BatchProcessMessages(batch)
    assert first.successful_count == again.successful_count == 5
    assert [r.conversation_state.message_count for r in again.responses] == [1, 2, 3, 4, 5]
    assert all(r.performance_metrics.cache_status == "replayed" for r in again.responses)
    assert count_of(stub, "idem-batch") == 5


def test_stream_messages_with_keys_are_applied_once(stub: pb_grpc.MCPEngineStub) -> None:
    init = pb.ConversationStreamRequest(
        init=pb.StreamInit(
            tenant_context={"tenant_id": "acme"}, conversation_id="idem-stream", event_types=["heartbeat"]
        )
    )
    sent = [pb.ConversationStreamRequest(message=keyed("idem-stream", "hello", "s-1")) for _ in range(3)]
    close = pb.ConversationStreamRequest(close=pb.StreamClose())
    answers = [
        r for r in stub.StreamConversation(iter([init, *sent, close])) if r.HasField("message_response")
    ]
    assert [a.message_response.conversation_state.message_count for a in answers] == [1, 1, 1]
    assert [a.message_response.performance_metrics.cache_status for a in answers] == [
        "miss",
        "replayed",
        "replayed",
    ]
    assert count_of(stub, "idem-stream") == 1


def test_an_unusable_key_is_refused_naming_the_field(stub: pb_grpc.MCPEngineStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessMessage(keyed("idem-bad", "x", "k" * 500))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata.request_id" in (caught.value.details() or "")
