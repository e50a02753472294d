"""A reply's text as it is written, end to end: ``confab serve`` whose flow generates every answer
with the tests' OpenAI-compatible stand-in, and real StreamConversation and ProcessMessage calls.

What docs/streaming.md ("Text as it is written") promises a client: a message's
``response.delta`` events in order, numbered 0..n-1, before its answer, whose text is theirs
put together (or the failure answer when the generation failed midway); unary calls and
streams that leave the event out get the whole text only; two conversations generating at
once each get their own; cancelling the stream stops the generation (the stand-in sees its
request left) and the conversation goes on, the turn having taken its failure route; a message
queued behind it is applied without asking the model; and a unary call's deadline ends the
generation its turn waits on.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.chat import ChatClient, ChatListener, ChatOptions, Turn
from confab.tools.model_standin import ModelStandIn, Received, Script
from tests.support import ServerProcess, exit_status, message, spawn_confab, state_request

pytestmark = pytest.mark.integration  # every test here starts a server

Request = pb.ConversationStreamRequest
DELTA = "response.delta"
FAILED = "Sorry, I cannot answer that right now."
WAIT_S = 20.0
PROMPT = "you> "

# Every message has the model write the answer: the first enters the start state, every later one
# comes back into it. A failure says FAILED and leaves the conversation in `failed`.
WRITER = f"""\
flow: writer
description: Every message answered by what the model writes
settings:
  start: writing
states:
  writing:
    on_enter:
      - generate:
          prompt: "Answer: {{{{ message }}}}"
          on_failure: failed
          failure_response: "{FAILED}"
    transitions:
      - to: writing
  failed:
    transitions:
      - to: writing
"""
# Two generations in one reply: the reply's text is both, a line each.
TWICE = """\
flow: twice
description: Every message answered twice by the model
settings:
  start: writing
states:
  writing:
    on_enter:
      - generate: {prompt: "First: {{ message }}"}
      - generate: {prompt: "Second: {{ message }}"}
    transitions:
      - to: writing
"""


class Scripts:
    """The stand-in's answer to each request, by words of the user's message: the prompt, the
    request's last message, has it (the messages before are the conversation's history)."""

    def __init__(self) -> None:
        self.by_word: dict[str, Script] = {}
        self.default = Script(text="You asked, and here is the answer.")

    def __call__(self, body: dict[str, Any]) -> Script:
        messages = body.get("messages") or [{}]
        prompt = str(messages[-1].get("content", ""))
        for word, script in self.by_word.items():
            if word in prompt:
                return script
        return self.default


@pytest.fixture(scope="module")
def scripts() -> Scripts:
    return Scripts()


@pytest.fixture(scope="module")
def scripted_model(scripts: Scripts) -> Iterator[ModelStandIn]:
    """The stand-in provider for this module's server, answering each request by ``scripts``."""
    with ModelStandIn() as model:
        model.choose = scripts
        yield model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scripted_model: ModelStandIn) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("deltas")
    flows = directory / "flows"
    flows.mkdir()
    (flows / "writer.yaml").write_text(WRITER, encoding="utf-8")
    (flows / "twice.yaml").write_text(TWICE, encoding="utf-8")
    config = directory / "confab.yaml"
    config.write_text(
        f"flows:\n  default: writer\n  dirs: ['{flows}']\n"
        "models:\n  providers:\n"
        f"    - {{name: standin, base_url: '{scripted_model.url}', model: test, timeout_s: 5.0,"
        " retries: 0}\n",
        encoding="utf-8",
    )
    process = ServerProcess(directory / "data", shards=2, extra=["--config", str(config)]).start()
    try:
        yield process
    finally:
        process.stop()


def new_id() -> str:
    return f"deltas-{uuid.uuid4().hex[:12]}"


def init(conversation: str, *event_types: str) -> Request:
    return Request(
        init=pb.StreamInit(
            tenant_context={"tenant_id": "acme"}, conversation_id=conversation, event_types=list(event_types)
        )
    )


def say(conversation: str, text: str) -> Request:
    return Request(message=message(conversation, text))


def kind(response: pb.ConversationStreamResponse) -> str:
    which = str(response.WhichOneof("response_type"))
    return f"event:{response.event.event_type}" if which == "event" else which


def delta(response: pb.ConversationStreamResponse) -> tuple[str, int, str, str]:
    """(stream id, sequence, text, request id) of a response.delta event."""
    fields = response.event.event_data.fields
    return (
        fields["stream_id"].string_value,
        int(fields["sequence"].number_value),
        fields["text"].string_value,
        fields["request_id"].string_value,
    )


def deltas_of(responses: list[pb.ConversationStreamResponse]) -> list[tuple[str, int, str, str]]:
    return [delta(r) for r in responses if kind(r) == f"event:{DELTA}"]


def answers(responses: list[pb.ConversationStreamResponse]) -> list[pb.ProcessMessageResponse]:
    return [r.message_response for r in responses if kind(r) == "message_response"]


def last_request(model: ModelStandIn, word: str) -> Received:
    found = [r for r in model.received() if word in str(r.body["messages"][-1].get("content", ""))]
    assert found, f"the stand-in got no request about {word!r}"
    return found[-1]


class OpenStream:
    """A StreamConversation fed from a queue, its responses read on a thread as they come."""

    def __init__(self, stub: pb_grpc.MCPEngineStub, conversation: str, *event_types: str) -> None:
        self.outbox: queue.Queue[Request | None] = queue.Queue()
        self.outbox.put(init(conversation, *event_types))
        self.call = stub.StreamConversation(self._requests())
        self.responses: queue.Queue[pb.ConversationStreamResponse | BaseException | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert kind(self.next()) == "ack"

    def _requests(self) -> Iterator[Request]:
        while (item := self.outbox.get()) is not None:
            yield item

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
            self.responses.put(None)
        except grpc.RpcError as exc:
            self.responses.put(exc)

    def next(self) -> pb.ConversationStreamResponse:
        item = self.responses.get(timeout=WAIT_S)
        assert isinstance(item, pb.ConversationStreamResponse), item
        return item

    def until_answer(self) -> list[pb.ConversationStreamResponse]:
        """Every response up to and with the next message_response (or error)."""
        got = [self.next()]
        while kind(got[-1]) not in ("message_response", "error"):
            got.append(self.next())
        return got

    def close(self) -> None:
        self.outbox.put(None)
        self.reader.join(WAIT_S)


def test_a_streams_deltas_come_in_order_before_the_answer_and_make_its_text(
    stub: pb_grpc.MCPEngineStub, scripts: Scripts
) -> None:
    pieces = [f"piece{n} " for n in range(40)]
    scripts.by_word["ordered"] = Script(chunks=pieces)
    conversation = new_id()
    responses = list(stub.StreamConversation(iter([init(conversation), say(conversation, "ordered please")])))
    assert [kind(r) for r in responses] == (
        ["ack"] + [f"event:{DELTA}"] * 40 + ["message_response", "event:state_changed"]
    )
    deltas = deltas_of(responses)
    (answer,) = answers(responses)
    assert [n for _, n, _, _ in deltas] == list(range(40))
    assert [text for _, _, text, _ in deltas] == pieces
    assert "".join(pieces) == answer.response.text
    assert {stream for stream, _, _, _ in deltas} == {deltas[0][0]}  # one generation, one stream id
    assert {request for _, _, _, request in deltas} == {answer.metadata.request_id}
    assert all(r.event.conversation_id == conversation for r in responses if kind(r).startswith("event:"))


def test_pipelined_messages_keep_their_deltas_behind_the_earlier_answer(
    stub: pb_grpc.MCPEngineStub, scripts: Scripts
) -> None:
    scripts.by_word["first-of-two"] = Script(chunks=["a1 ", "a2 ", "a3"], chunk_delay_s=0.05)
    scripts.by_word["second-of-two"] = Script(chunks=["b1 ", "b2"])
    conversation = new_id()
    requests = [init(conversation), say(conversation, "first-of-two"), say(conversation, "second-of-two")]
    responses = list(stub.StreamConversation(iter(requests)))
    first, second = answers(responses)
    assert [kind(r) for r in responses] == (
        ["ack"]
        + [f"event:{DELTA}"] * 3
        + ["message_response", "event:state_changed"]
        + [f"event:{DELTA}"] * 2
        + ["message_response"]
    )
    deltas = deltas_of(responses)
    assert [request for _, _, _, request in deltas] == [first.metadata.request_id] * 3 + [
        second.metadata.request_id
    ] * 2
    assert (first.response.text, second.response.text) == ("a1 a2 a3", "b1 b2")


def test_unary_calls_and_streams_that_leave_the_event_out_get_the_whole_text_only(
    stub: pb_grpc.MCPEngineStub, scripts: Scripts, scripted_model: ModelStandIn
) -> None:
    scripts.by_word["whole"] = Script(chunks=["all ", "of ", "it"])
    unary = stub.ProcessMessage(message(new_id(), "whole, unary"))
    assert unary.response.text == "all of it"
    assert last_request(scripted_model, "whole, unary").completed
    conversation = new_id()
    requests = [init(conversation, "state_changed"), say(conversation, "whole, quiet stream")]
    responses = list(stub.StreamConversation(iter(requests)))
    assert [kind(r) for r in responses] == ["ack", "message_response", "event:state_changed"]
    assert answers(responses)[0].response.text == "all of it"


def test_a_generation_that_fails_after_some_deltas_is_answered_by_the_failure_route(
    stub: pb_grpc.MCPEngineStub, scripts: Scripts
) -> None:
    scripts.by_word["cut short"] = Script(chunks=["one ", "two ", "three ", "four"], cut_after=2)
    conversation = new_id()
    responses = list(stub.StreamConversation(iter([init(conversation), say(conversation, "cut short")])))
    deltas = deltas_of(responses)
    (answer,) = answers(responses)
    assert [text for _, _, text, _ in deltas] == ["one ", "two "]  # what was written before the cut
    assert answer.response.text == FAILED  # the final message replaces it
    assert answer.conversation_state.current_state == "failed"


def test_two_conversations_generating_at_once_each_get_only_their_own_deltas(
    server: ServerProcess, scripts: Scripts
) -> None:
    scripts.by_word["the long one"] = Script(chunks=[f"long{n} " for n in range(60)], chunk_delay_s=0.05)
    scripts.by_word["the short one"] = Script(chunks=[f"short{n} " for n in range(10)])
    with server.channel() as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        slow_conversation, quick_conversation = new_id(), new_id()
        slow = OpenStream(stub, slow_conversation)
        quick = OpenStream(stub, quick_conversation)
        slow.outbox.put(say(slow_conversation, "the long one"))
        first_slow = slow.next()
        assert kind(first_slow) == f"event:{DELTA}"  # the long generation is under way...
        quick.outbox.put(say(quick_conversation, "the short one"))
        quick_responses = quick.until_answer()  # ...and the short one is written meanwhile:
        so_far = list(slow.responses.queue)  # the long one is not answered yet
        assert not any(
            isinstance(r, pb.ConversationStreamResponse) and kind(r) == "message_response" for r in so_far
        )
        slow_responses = [first_slow, *slow.until_answer()]
        slow.close()
        quick.close()
    quick_deltas, slow_deltas = deltas_of(quick_responses), deltas_of(slow_responses)
    assert [text for _, _, text, _ in quick_deltas] == [f"short{n} " for n in range(10)]
    assert [text for _, _, text, _ in slow_deltas] == [f"long{n} " for n in range(60)]
    assert {s for s, _, _, _ in quick_deltas}.isdisjoint({s for s, _, _, _ in slow_deltas})
    assert answers(quick_responses)[0].response.text == "".join(t for _, _, t, _ in quick_deltas)


def test_cancelling_the_stream_stops_the_generation_and_the_conversation_goes_on(
    stub: pb_grpc.MCPEngineStub, scripts: Scripts, scripted_model: ModelStandIn
) -> None:
    scripts.by_word["never ending"] = Script(chunks=[f"w{n} " for n in range(400)], chunk_delay_s=0.05)
    conversation = new_id()
    stream = OpenStream(stub, conversation)
    stream.outbox.put(say(conversation, "never ending"))
    assert kind(stream.next()) == f"event:{DELTA}"
    stream.call.cancel()
    request = last_request(scripted_model, "never ending")
    assert request.ended.wait(WAIT_S), "the stand-in's request did not end"
    assert request.left and not request.completed and request.chunks_sent < 400
    stream.close()
    # The turn took its failure route and was kept: the conversation goes on from there.
    state = stub.GetConversationState(state_request(conversation)).conversation_state
    assert (state.current_state, state.message_count) == ("failed", 1)
    again = list(stub.StreamConversation(iter([init(conversation), say(conversation, "and now?")])))
    (answer,) = answers(again)
    assert answer.response.text == "You asked, and here is the answer."
    assert "".join(text for _, _, text, _ in deltas_of(again)) == answer.response.text
    assert answer.conversation_state.message_count == 2
    unary = stub.ProcessMessage(message(conversation, "and unary?"))
    assert unary.response.text == "You asked, and here is the answer."


def inspect(stub: admin_grpc.AdminStub, conversation: str) -> admin.ConversationDetail:
    detail: admin.ConversationDetail = stub.InspectConversation(
        admin.InspectConversationRequest(tenant_id="acme", conversation_id=conversation, last_turns=10)
    )
    return detail


def test_cancelling_the_stream_applies_its_queued_message_without_asking_the_model(
    server: ServerProcess, stub: pb_grpc.MCPEngineStub, scripts: Scripts, scripted_model: ModelStandIn
) -> None:
    scripts.by_word["first in line"] = Script(chunks=[f"w{n} " for n in range(400)], chunk_delay_s=0.05)
    scripts.by_word["second in line"] = Script(text="Nobody would have read this.")
    conversation = new_id()
    stream = OpenStream(stub, conversation)
    stream.outbox.put(say(conversation, "first in line"))
    stream.outbox.put(say(conversation, "second in line"))
    assert kind(stream.next()) == f"event:{DELTA}"  # the first message's generation is under way
    with server.channel() as channel:
        admin_stub = admin_grpc.AdminStub(channel)
        give_up = time.monotonic() + WAIT_S
        while len(inspect(admin_stub, conversation).queued) < 2:  # the second waits at the shard
            assert time.monotonic() < give_up, "the second message did not reach its shard"
            time.sleep(0.02)
        stream.call.cancel()
        first = last_request(scripted_model, "first in line")
        assert first.ended.wait(WAIT_S), "the stand-in's request did not end"
        assert first.left and not first.completed and first.chunks_sent < 400
        while (detail := inspect(admin_stub, conversation)).queued:
            assert time.monotonic() < give_up, "the queued message was not applied"
            time.sleep(0.02)
    stream.close()
    # Both turns were applied, once each, by their failure route; only the first asked the model.
    turns = list(detail.last_turns)
    assert [t.input for t in turns] == ["first in line", "second in line"]
    for turn in turns:
        assert turn.state_after == "failed" and turn.response == FAILED
        assert "generate_failed:cancelled" in turn.actions
    assert not [r for r in scripted_model.received() if "second in line" in r.user_text]
    state = stub.GetConversationState(state_request(conversation)).conversation_state
    assert (state.current_state, state.message_count) == ("failed", 2)


def test_a_unary_callers_deadline_ends_the_generation_its_turn_waits_on(
    stub: pb_grpc.MCPEngineStub, scripts: Scripts, scripted_model: ModelStandIn
) -> None:
    scripts.by_word["too long to wait for"] = Script(
        chunks=[f"w{n} " for n in range(1000)], chunk_delay_s=0.05
    )
    conversation = new_id()
    assert stub.ProcessMessage(message(conversation, "hello")).response.text  # it exists, in `writing`
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessMessage(message(conversation, "too long to wait for"), timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    request = last_request(scripted_model, "too long to wait for")
    assert request.ended.wait(WAIT_S), "the stand-in's request did not end"
    assert request.left and not request.completed and request.chunks_sent < 1000
    # The turn took its failure route and was kept, as a cancelled one is.
    give_up = time.monotonic() + WAIT_S
    state = stub.GetConversationState(state_request(conversation)).conversation_state
    while state.message_count < 2:
        assert time.monotonic() < give_up, "the turn was not stored"
        time.sleep(0.02)
        state = stub.GetConversationState(state_request(conversation)).conversation_state
    assert (state.current_state, state.message_count) == ("failed", 2)


# confab chat -------------------------------------------------------------------------------


class Heard(ChatListener):
    """The pieces and replies a chat's link tells of, in order."""

    def __init__(self) -> None:
        self.news: list[tuple[str, str]] = []

    def delta(self, turn: Turn | None, stream_id: str, sequence: int, text: str) -> None:
        self.news.append(("delta", text))

    def replied(self, turn: Turn | None, reply: pb.ProcessMessageResponse) -> None:
        self.news.append(("replied", reply.response.text))


def test_the_chat_client_hears_the_pieces_before_the_reply(server: ServerProcess, scripts: Scripts) -> None:
    scripts.by_word["tell a story"] = Script(chunks=["Once ", "upon ", "a ", "time."], chunk_delay_s=0.02)
    heard = Heard()
    options = ChatOptions(target=server.address, tenant="acme", conversation_id=new_id())
    with ChatClient(options, heard) as client:
        assert client.wait_connected(WAIT_S)
        turn = client.send("tell a story")
        assert client.wait(turn, WAIT_S) and turn.reply is not None
    assert heard.news == [
        ("delta", "Once "),
        ("delta", "upon "),
        ("delta", "a "),
        ("delta", "time."),
        ("replied", "Once upon a time."),
    ]
    assert turn.streamed == turn.reply.response.text


def test_confab_chat_prints_a_reply_as_it_is_written_once_and_marks_it_replaced_by_a_failure(
    server: ServerProcess, scripts: Scripts
) -> None:
    scripts.by_word["a poem"] = Script(chunks=["Roses ", "are ", "red."], chunk_delay_s=0.02)
    scripts.by_word["a broken poem"] = Script(chunks=["Violets ", "are ", "blue."], cut_after=2)
    child = spawn_confab("chat", "--target", server.address, "--tenant", "acme", "--conversation", new_id())
    try:
        child.expect_exact(PROMPT)
        child.sendline("a poem")
        child.expect_exact(PROMPT)
        shown = str(child.before)
        assert "bot> Roses are red.\r\n" in shown and shown.count("Roses are red.") == 1
        child.sendline("a broken poem")
        child.expect_exact(PROMPT)
        shown = str(child.before)
        # What was written, marked as replaced, then the answer.
        assert f"bot> Violets are \r\n     (replaced)\r\nbot> {FAILED}\r\n" in shown
        child.sendline("/quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


def test_two_generations_in_one_reply_are_a_line_each_as_the_reply_has_them(
    server: ServerProcess, scripts: Scripts
) -> None:
    scripts.by_word["First: two parts"] = Script(chunks=["AB", "C"], chunk_delay_s=0.02)
    scripts.by_word["Second: two parts"] = Script(chunks=["DE", "F"], chunk_delay_s=0.02)
    options = ChatOptions(target=server.address, tenant="acme", conversation_id=new_id(), flow="twice")
    with ChatClient(options) as client:
        assert client.wait_connected(WAIT_S)
        turn = client.send("two parts")
        assert client.wait(turn, WAIT_S) and turn.reply is not None
    assert turn.reply.response.text == "ABC\nDEF" and turn.streamed == turn.reply.response.text
    child = spawn_confab(
        "chat", "--target", server.address, "--tenant", "acme", "--conversation", new_id(), "--flow", "twice"
    )
    try:
        child.expect_exact(PROMPT)
        child.sendline("two parts")
        child.expect_exact(PROMPT)
        shown = str(child.before)
        assert "bot> ABC\r\n     DEF\r\n" in shown and shown.count("ABC") == 1 and "(replaced)" not in shown
        child.sendline("/quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)
