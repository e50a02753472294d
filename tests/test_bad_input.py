"""Hostile and broken input at every RPC: a clear status or a valid answer, never a crash,
never a leaked parser error, and no stored conversation changes because of a rejected request.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confab.protos import health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, state_request

pytestmark = pytest.mark.integration  # every test here starts a server or a process

ENGINE = "/mcp.engine.v2.MCPEngine/"
UNARY_METHODS = [
    ENGINE + "ProcessMessage",
    ENGINE + "GetConversationState",
    ENGINE + "ResetConversation",
    ENGINE + "BatchProcessMessages",
    ENGINE + "HealthCheck",
    ENGINE + "GetMetrics",
    "/mcp.health.v2.Health/Check",
    "/mcp.health.v2.Health/GetDetailedHealth",
]
# What a rejected request may get back: each one says what was wrong. Never UNKNOWN or INTERNAL.
CLEAR_REJECTIONS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VICTIM = "victim-conversation"


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as channel:
        yield channel


@pytest.fixture(scope="module")
def victim(channel: grpc.Channel) -> pb.ConversationState:
    """A conversation that every rejected request below aims at and must leave as it was."""
    stub = pb_grpc.MCPEngineStub(channel)
    stub.ProcessMessage(message(VICTIM, "original"))
    reply: pb.GetConversationStateResponse = stub.GetConversationState(state_request(VICTIM))
    return reply.conversation_state


def assert_clear(error: grpc.RpcError) -> None:
    assert error.code() in CLEAR_REJECTIONS, (error.code(), error.details())
    assert "Traceback" not in (error.details() or "")


def assert_serving(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == 1  # HEALTH_SERVING


@FUZZ
@given(method=st.sampled_from(UNARY_METHODS), raw=st.binary(max_size=300))
def test_random_bytes_at_every_unary_rpc(channel: grpc.Channel, method: str, raw: bytes) -> None:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(raw, timeout=10)
    except grpc.RpcError as error:
        assert_clear(error)


@FUZZ
@given(frames=st.lists(st.binary(max_size=120), max_size=6))
def test_random_frames_on_the_stream(channel: grpc.Channel, frames: list[bytes]) -> None:
    call = channel.stream_stream(
        ENGINE + "StreamConversation", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        for _ in call(iter(frames), timeout=10):
            pass
    except grpc.RpcError as error:
        assert_clear(error)


def deep_struct(depth: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    node = root
    for _ in range(depth):
        node = node.fields["deeper"].struct_value
    node.fields["leaf"].string_value = "x"
    return root


texts = st.one_of(st.text(max_size=50), st.text(min_size=1, max_size=5).map(lambda s: s * 20_000))
ids = st.sampled_from(["", VICTIM, "other", "ü-ñ-✓", "x" * 300])


@st.composite
def process_requests(draw: st.DrawFn) -> pb.ProcessMessageRequest:
    request = pb.ProcessMessageRequest(
        tenant_context={"tenant_id": draw(st.sampled_from(["", "acme", "fuzz-tenant"]))},
        conversation_id=draw(ids),
        user_id=draw(st.sampled_from(["", "u"])),
        content={
            "type": draw(st.integers(min_value=0, max_value=2**31 - 1)),
            "text": draw(texts),
            "payload": draw(st.text(max_size=20)),
        },
    )
    # Unknown enum values too: proto3 enums are open, so they arrive as plain numbers.
    request.channel = draw(st.integers(min_value=0, max_value=2**31 - 1))  # type: ignore[assignment]
    request.processing_hints.priority = draw(st.integers(min_value=0, max_value=1000))  # type: ignore[assignment]
    request.content.metadata.CopyFrom(deep_struct(draw(st.integers(min_value=0, max_value=40))))
    return request


@FUZZ
@given(request=process_requests())
def test_random_process_message_requests(channel: grpc.Channel, request: pb.ProcessMessageRequest) -> None:
    stub = pb_grpc.MCPEngineStub(channel)
    try:
        reply = stub.ProcessMessage(request, timeout=10)
    except grpc.RpcError as error:
        assert_clear(error)
        return
    assert reply.status.success and reply.conversation_id == request.conversation_id


def test_too_deep_structs_are_rejected_clearly(channel: grpc.Channel) -> None:
    # protobuf refuses to parse nesting beyond its recursion limit (100): that must be INVALID_ARGUMENT.
    request = message("deep", "hi")
    request.content.metadata.CopyFrom(deep_struct(150))
    call = channel.unary_unary(
        ENGINE + "ProcessMessage", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(request.SerializeToString(deterministic=True), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving(channel)


@st.composite
def rejected_at_victim(draw: st.DrawFn) -> tuple[str, bytes]:
    """A request aimed at the victim conversation that must be rejected without touching it."""
    bad = message(VICTIM, draw(st.text(max_size=30)))
    flaw = draw(st.sampled_from(["no-user", "no-content", "corrupt", "bad-utf8"]))
    if flaw == "no-user":
        bad.ClearField("user_id")
    elif flaw == "no-content":
        bad.ClearField("content")
    raw = bad.SerializeToString()
    if flaw == "corrupt":
        raw = raw[: draw(st.integers(min_value=1, max_value=max(1, len(raw) - 1)))] + b"\xff\xff"
    elif flaw == "bad-utf8":
        raw = raw.replace(b"user-1", b"us\xff\xfe-1")
    kind = draw(st.sampled_from(["unary", "batch", "stream"]))
    return kind, raw


@FUZZ
@given(case=rejected_at_victim())
def test_rejected_requests_leave_the_conversation_unchanged(
    channel: grpc.Channel, victim: pb.ConversationState, case: tuple[str, bytes]
) -> None:
    kind, raw = case
    identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if kind == "unary":
            channel.unary_unary(ENGINE + "ProcessMessage", **identity)(raw, timeout=10)
        elif kind == "batch":
            # field 2 of BatchProcessMessagesRequest is the repeated ProcessMessageRequest
            framed = b"\x12" + _varint(len(raw)) + raw
            reply = pb.BatchProcessMessagesResponse.FromString(
                channel.unary_unary(ENGINE + "BatchProcessMessages", **identity)(framed, timeout=10)
            )
            assert reply.failed_count == 1 and reply.successful_count == 0
        else:
            init = pb.ConversationStreamRequest(
                init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=VICTIM)
            ).SerializeToString()
            framed = b"\x12" + _varint(len(raw)) + raw  # field 2 of ConversationStreamRequest: message
            replies = channel.stream_stream(ENGINE + "StreamConversation", **identity)(
                iter([init, framed]), timeout=10
            )
            answers = [pb.ConversationStreamResponse.FromString(r) for r in replies]
            assert not any(a.HasField("message_response") for a in answers)
    except grpc.RpcError as error:
        assert_clear(error)
    now = pb_grpc.MCPEngineStub(channel).GetConversationState(state_request(VICTIM)).conversation_state
    assert now == victim


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_the_server_still_serves_after_all_that(channel: grpc.Channel) -> None:
    assert_serving(channel)
    reply = pb_grpc.MCPEngineStub(channel).ProcessMessage(message("after-fuzz", "still here"))
    assert reply.conversation_state.message_count == 1
