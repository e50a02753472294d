"""ProcessMessage through the edge as bytes: what the edge reads, what the shard converts,
and that the bytes that come back are the response the edge used to build itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from confab.actors.shard import Shard
from confab.grpc_edge import convert
from confab.grpc_edge.guards import guarded, raw_wire
from confab.protos import common_pb2 as common
from confab.protos import mcp_engine_pb2 as pb
from confab.runtime.errors import InvalidArgument
from confab.runtime.model import ConversationKey, TurnResult
from confab.runtime.protocol import codec, wire_pb
from confab.runtime.protocol.records import (
    Command,
    CommandBatch,
    CommandKind,
    WireMessage,
    WireReply,
    decode_outcome,
)
from tests.shard_runner import routed

KEY = ConversationKey("acme", "conv-1")


def request(**fields: Any) -> pb.ProcessMessageRequest:
    message = pb.ProcessMessageRequest(
        tenant_context=common.TenantContext(tenant_id="acme"),
        conversation_id="conv-1",
        user_id="user-1",
        channel=common.CHANNEL_WEB,
        content=pb.MessageContent(text="hello"),
    )
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def wire_command(message: pb.ProcessMessageRequest, message_id: str, prefix: str = "") -> Command:
    data = message.SerializeToString()
    return convert.wire_turn(message, data, message_id, prefix).command()


def run(shard: Shard, *commands: Command) -> list[Any]:
    ((_, answer),) = shard.run_round([("edge", CommandBatch(7, routed(shard, commands)))])
    return answer.outcomes


def test_the_edge_reads_the_routing_fields_and_sends_the_bytes_as_they_came() -> None:
    message = request()
    message.metadata.request_id = "retry-me"
    data = message.SerializeToString()
    turn = convert.wire_turn(convert.parse_request(data), data, "m-1")
    assert (turn.key, turn.data, turn.idempotency_key, turn.said) == (KEY, data, "retry-me", "hello")
    command = turn.command()
    assert command.kind is CommandKind.WIRE_TURN and command.message_id == "c:retry-me"
    back = Command.from_wire(command.to_wire())
    assert back.body == WireMessage(data, "")  # what the edge shows operators stays at the edge


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"conversation_id": "x" * 500}, "conversation_id"),
        ({"session_id": "a\nb"}, "session_id"),
    ],
)
def test_the_edge_refuses_what_it_limits_naming_the_field(change: dict[str, Any], field: str) -> None:
    message = request(**change)
    with pytest.raises(InvalidArgument) as caught:
        convert.wire_turn(message, message.SerializeToString(), "m-1")
    assert caught.value.field == field


def test_the_edge_refuses_oversized_text_before_sending_it() -> None:
    message = request()
    message.content.text = "x" * (convert.DEFAULT_LIMITS.max_text_chars + 1)
    with pytest.raises(InvalidArgument) as caught:
        convert.wire_turn(message, message.SerializeToString(), "m-1")
    assert caught.value.field == "content.text"


def test_bytes_that_are_not_a_request_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="not a valid protobuf message"):
        convert.parse_request(b"\xff\xff\xff")


def test_the_shard_side_reads_what_the_edge_did_not() -> None:
    message = request()
    message.channel = 999  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as caught:
        wire_pb.read_turn(message.SerializeToString(), "messages[3].")
    assert caught.value.field == "messages[3].channel"
    assert wire_pb.read_turn(request().SerializeToString()) == convert.inbound_message(request())[1]


def test_the_shards_response_with_the_edges_metadata_is_the_response_the_edge_built(
    make_shard: Callable[..., Shard],
) -> None:
    shard = make_shard()
    (outcome,) = run(shard, wire_command(request(), "m-1"))
    reply = decode_outcome(outcome)
    assert isinstance(reply, WireReply) and not reply.replayed
    result = reply.result()
    assert isinstance(result, TurnResult)
    started = time.perf_counter()
    merged = pb.ProcessMessageResponse.FromString(
        reply.response + convert.metadata_tail("req-1", started, "9.9")
    )
    built = convert.process_message_response(KEY, result, "req-1", started, "9.9")
    merged.metadata.ClearField("timestamp")
    built.metadata.ClearField("timestamp")
    assert merged == built
    assert merged.status.message == "processed" and merged.performance_metrics.cache_status == "miss"


def test_a_repeat_is_answered_from_the_stored_reply_marked_replayed(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard()
    message = request()
    message.metadata.request_id = "once"
    (first,) = run(shard, wire_command(message, "m-1"))
    (again,) = run(shard, wire_command(message, "m-2"))
    first_reply, second_reply = decode_outcome(first), decode_outcome(again)
    assert isinstance(first_reply, WireReply) and isinstance(second_reply, WireReply)
    assert second_reply.replayed and second_reply.reply == first_reply.reply
    response = pb.ProcessMessageResponse.FromString(second_reply.response)
    assert response.status.message == "already processed; original reply"
    assert response.performance_metrics.cache_status == "replayed"
    assert response.conversation_state.message_count == 1
    assert second_reply.state_before() == codec.reply_state_before(first_reply.reply)


def test_a_message_the_shard_refuses_fails_alone_and_changes_nothing(
    make_shard: Callable[..., Shard],
) -> None:
    shard = make_shard()
    bad = request()
    bad.content.type = 12345  # type: ignore[assignment]
    refused, accepted = run(shard, wire_command(bad, "m-1", "messages[0]."), wire_command(request(), "m-2"))
    error = decode_outcome(refused)
    assert isinstance(error, InvalidArgument) and error.field == "messages[0].content.type"
    reply = decode_outcome(accepted)
    assert isinstance(reply, WireReply)
    assert pb.ProcessMessageResponse.FromString(reply.response).conversation_state.message_count == 1


def test_a_raw_wire_method_is_registered_without_serializers() -> None:
    @raw_wire
    async def method(request: bytes, context: Any) -> bytes:
        return request

    plain = grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=pb.ProcessMessageRequest.FromString,
        response_serializer=pb.ProcessMessageResponse.SerializeToString,
    )
    handler = guarded("/mcp.engine.v2.MCPEngine/ProcessMessage", plain, [])
    assert handler.request_deserializer is None and handler.response_serializer is None


@pytest.mark.parametrize(
    ("given", "read"),
    [(None, None), (0, 0), (3, 3), (3.0, 3), ("12", 12), (2**31 - 1, 2**31 - 1)],
)
def test_the_shard_reads_the_turn_its_user_had_seen(given: Any, read: int | None) -> None:
    message = request()
    if given is not None:
        message.metadata.custom_metadata.update({wire_pb.SEEN_TURN_KEY: given, "other": "kept out"})
    assert wire_pb.read_turn(message.SerializeToString()).seen_turn == read


@pytest.mark.parametrize("given", [-1, 2.5, "two", "", "-3", "١٢", True, None, [1], 2**31])
def test_a_seen_turn_that_is_no_turn_is_invalid_argument_naming_it(given: Any) -> None:
    message = request()
    message.metadata.custom_metadata.update({wire_pb.SEEN_TURN_KEY: given})
    with pytest.raises(InvalidArgument) as caught:
        wire_pb.read_turn(message.SerializeToString(), "messages[2].")
    assert caught.value.field == "messages[2].metadata.custom_metadata.confab.seen_turn"


def test_a_reply_carries_its_turn(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard()
    turns = []
    for n in range(3):
        (outcome,) = run(shard, wire_command(request(), f"m-{n}"))
        reply = decode_outcome(outcome)
        assert isinstance(reply, WireReply)
        response = pb.ProcessMessageResponse.FromString(reply.response)
        turns.append((response.turn, response.conversation_state.message_count))
    assert turns == [(1, 1), (2, 2), (3, 3)]
