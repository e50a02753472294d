"""StreamConversation as docs/streaming.md describes it, against real servers: every statement it makes
that a client can see (init, events, order, close, errors, idle timeout, resume with request ids)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, state_request

pytestmark = pytest.mark.integration  # every test here talks to a real server

Request = pb.ConversationStreamRequest


def new_id() -> str:
    return f"stream-{uuid.uuid4().hex[:12]}"


def init(conversation: str, *event_types: str, tenant: str = "acme") -> Request:
    return Request(
        init=pb.StreamInit(
            tenant_context={"tenant_id": tenant}, conversation_id=conversation, event_types=list(event_types)
        )
    )


def say(conversation: str, text: str, key: str = "") -> Request:
    request = message(conversation, text)
    if key:
        request.metadata.request_id = key
    return Request(message=request)


HEARTBEAT = Request(heartbeat=pb.StreamHeartbeat())


def close(reason: str = "done") -> Request:
    return Request(close=pb.StreamClose(reason=reason))


def kinds(responses: list[pb.ConversationStreamResponse]) -> list[str]:
    """Each response as its kind, events as event:TYPE."""
    named = []
    for r in responses:
        kind = r.WhichOneof("response_type")
        named.append(f"event:{r.event.event_type}" if kind == "event" else str(kind))
    return named


def test_responses_come_in_request_order_and_state_changed_follows_its_turn(
    stub: pb_grpc.MCPEngineStub,
) -> None:
    conversation = new_id()
    requests = [init(conversation), say(conversation, "one"), HEARTBEAT, say(conversation, "two"), HEARTBEAT]
    responses = list(stub.StreamConversation(iter(requests)))  # ended by the half-close: OK, no raise
    assert kinds(responses) == [
        "ack",
        "message_response",
        "event:state_changed",  # the first turn moved the conversation from "" to its first state
        "event:heartbeat",
        "message_response",  # the second stayed in its state: no event
        "event:heartbeat",
    ]
    ack = responses[0].ack
    assert ack.status.success and ack.status.message == f"stream bound to conversation {conversation}"
    assert dict(responses[2].event.event_data) == {"from": "", "to": "chatting"}
    assert responses[3].event.event_data["stream_id"] == ack.stream_id
    assert responses[3].event.conversation_id == conversation
    assert "event:stream_closed" not in kinds(responses)  # a half-close is not a close


def test_events_are_only_those_the_init_asked_for(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    requests = [init(conversation, "stream_closed"), say(conversation, "hi"), HEARTBEAT, close("bye")]
    responses = list(stub.StreamConversation(iter(requests)))
    assert kinds(responses) == ["ack", "message_response", "event:stream_closed"]
    assert responses[-1].event.event_data["reason"] == "bye"


def test_close_answers_what_was_read_then_ends_ok_and_reads_nothing_more(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    requests = [init(conversation), say(conversation, "before"), close(), say(conversation, "after")]
    responses = list(stub.StreamConversation(iter(requests)))
    assert kinds(responses) == ["ack", "message_response", "event:state_changed", "event:stream_closed"]
    state = stub.GetConversationState(state_request(conversation)).conversation_state
    assert state.message_count == 1  # the message after the close was never read


def test_protocol_mistakes_are_recoverable_errors_and_the_stream_goes_on(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    no_user = say(conversation, "who am I")
    no_user.message.ClearField("user_id")
    requests = [
        Request(),
        say(conversation, "too early"),
        init(conversation, "nope"),
        init("x" * 129),
        init(conversation, "heartbeat"),
        init(new_id()),
        no_user,
        say(new_id(), "elsewhere"),
        say(conversation, "at last"),
    ]
    responses = list(stub.StreamConversation(iter(requests)))
    assert kinds(responses) == ["error"] * 4 + ["ack"] + ["error"] * 3 + ["message_response"]
    errors = [r.error for r in responses if r.HasField("error")]
    assert [e.error_code for e in errors] == [
        "EMPTY_REQUEST",
        "STREAM_NOT_INITIALIZED",
        "UNKNOWN_EVENT_TYPE",
        "INVALID_ARGUMENT",
        "ALREADY_INITIALIZED",
        "INVALID_ARGUMENT",
        "CONVERSATION_MISMATCH",
    ]
    assert all(e.recoverable for e in errors)
    assert "init.conversation_id" in errors[3].message
    assert errors[5].message == "message.user_id is required"  # user_id is required in a stream too
    assert len(errors[5].metadata.request_id) == 32  # an error about a message names the message
    assert responses[-1].message_response.conversation_state.message_count == 1


def test_a_message_resent_on_a_new_stream_with_its_request_id_is_replayed_not_applied_again(
    stub: pb_grpc.MCPEngineStub,
) -> None:
    conversation = new_id()
    first = list(stub.StreamConversation(iter([init(conversation), say(conversation, "pay", key="pay-1")])))
    again = list(stub.StreamConversation(iter([init(conversation), say(conversation, "pay", key="pay-1")])))
    assert kinds(first) == kinds(again) == ["ack", "message_response", "event:state_changed"]
    original, replayed = first[1].message_response, again[1].message_response
    assert (original.status.message, original.performance_metrics.cache_status) == ("processed", "miss")
    assert replayed.status.message == "already processed; original reply"
    assert replayed.performance_metrics.cache_status == "replayed"
    assert replayed.response == original.response
    assert again[2].event.event_data == first[2].event.event_data  # the original turn's event again
    assert replayed.metadata.request_id != "pay-1"  # the server's id of the message, not the key
    assert stub.GetConversationState(state_request(conversation)).conversation_state.message_count == 1


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that closes streams after two quiet seconds."""
    root = tmp_path_factory.mktemp("idle-streams")
    config = root / "confab.yaml"
    config.write_text("server:\n  stream_idle_timeout_s: 2.0\n", encoding="utf-8")
    server = ServerProcess(root / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_quiet_stream_times_out_and_ends_ok(impatient: ServerProcess) -> None:
    release = threading.Event()

    def quiet() -> Iterator[Request]:
        yield init(new_id())
        release.wait(30)  # then nothing: the client keeps the stream open and says no more

    with impatient.channel() as channel:
        started = time.monotonic()
        try:
            responses = list(pb_grpc.MCPEngineStub(channel).StreamConversation(quiet(), timeout=20))
        finally:
            release.set()
    assert kinds(responses) == ["ack", "error"]
    error = responses[1].error
    assert error.error_code == "STREAM_IDLE_TIMEOUT" and not error.recoverable
    assert 1.9 <= time.monotonic() - started < 15


def test_heartbeats_keep_a_quiet_stream_open(impatient: ServerProcess) -> None:
    def beating() -> Iterator[Request]:
        yield init(new_id(), "heartbeat", "stream_closed")
        for _ in range(6):  # 3 s in all, longer than the idle timeout, never 2 s without a request
            time.sleep(0.5)
            yield HEARTBEAT
        yield close()

    with impatient.channel() as channel:  # an idle timeout would end it early, without the close
        responses = list(pb_grpc.MCPEngineStub(channel).StreamConversation(beating(), timeout=20))
    assert kinds(responses) == ["ack", *["event:heartbeat"] * 6, "event:stream_closed"]
