"""Which turn the user has seen, through a real server: a reply carries its turn, a message may
say the turn its user had seen (``metadata.custom_metadata["confab.seen_turn"]``), and a
confirmation never takes an answer written before its question was seen -- the pizza flow's
"yes" typed while its price webhook ran. A bad value is refused and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.protocol.wire_pb import SEEN_TURN_KEY
from confab.tools.chat import ChatClient, ChatOptions
from tests.support import (
    GatedPrices,
    ServerProcess,
    pizza,
    pizza_server,
    state_request,
    status_details,
)

pytestmark = pytest.mark.integration  # every test here starts a server

WAIT_S = 20.0
SEEN_TURN_FIELD = f"metadata.custom_metadata.{SEEN_TURN_KEY}"


@pytest.fixture(scope="module")
def prices() -> GatedPrices:
    return GatedPrices(WAIT_S)  # started and stopped with the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prices: GatedPrices) -> Iterator[ServerProcess]:
    with pizza_server(tmp_path_factory.mktemp("seen-turn"), timeout_s=WAIT_S, prices=prices) as (process, _):
        yield process


@pytest.fixture()
def stub(server: ServerProcess) -> Iterator[pb_grpc.MCPEngineStub]:
    with server.channel() as channel:
        yield pb_grpc.MCPEngineStub(channel)


def said(conversation: str, text: str = "", payload: str = "", seen: Any = None) -> pb.ProcessMessageRequest:
    request = pizza(conversation, text, payload)
    if seen is not None:
        request.metadata.custom_metadata.update({SEEN_TURN_KEY: seen})
    return request


def test_a_yes_written_while_the_price_was_asked_is_not_taken(
    stub: pb_grpc.MCPEngineStub, prices: GatedPrices
) -> None:
    first = stub.ProcessMessage(said("typed-ahead", payload="ORDER", seen=0), timeout=WAIT_S)
    assert (first.current_state, first.turn) == ("take_order", 1)
    prices.hold()
    with ThreadPoolExecutor(2) as pool:
        order: Future[pb.ProcessMessageResponse] = pool.submit(
            stub.ProcessMessage, said("typed-ahead", "2 large", seen=1), timeout=WAIT_S
        )
        assert prices.asked.acquire(timeout=WAIT_S)  # the turn waits on the price webhook now
        # Written by a user who had seen turn 1 only: the question it lands on is not asked yet.
        early_yes = pool.submit(stub.ProcessMessage, said("typed-ahead", "yes", seen=1), timeout=WAIT_S)
        assert not early_yes.done()
        prices.release()
        asked, again = order.result(WAIT_S), early_yes.result(WAIT_S)
    assert (asked.current_state, asked.turn) == ("confirm", 2)
    assert "Shall I place the order?" in asked.response.text
    assert (again.current_state, again.turn) == ("confirm", 3)
    assert again.response.text.startswith("Just to be sure:\n2 large pizzas for 24.00 EUR.")
    assert [b.title for b in again.response.buttons] == ["Yes", "No, change it"]
    assert "typed_ahead:confirm" in again.actions_performed
    assert again.conversation_state.error_count == 0
    # The same "yes", from a user who has seen the question asked again, confirms.
    done = stub.ProcessMessage(said("typed-ahead", "yes", seen=again.turn), timeout=WAIT_S)
    assert (done.current_state, done.turn) == ("ordered", 4)


def test_a_yes_from_a_user_who_saw_the_question_confirms(stub: pb_grpc.MCPEngineStub) -> None:
    stub.ProcessMessage(said("seen", payload="ORDER", seen=0), timeout=WAIT_S)
    asked = stub.ProcessMessage(said("seen", "2 large", seen=1), timeout=WAIT_S)
    assert (asked.current_state, asked.turn) == ("confirm", 2)
    done = stub.ProcessMessage(said("seen", "yes", seen=asked.turn), timeout=WAIT_S)
    assert done.current_state == "ordered"


def test_a_message_that_does_not_say_what_it_saw_is_taken_as_it_comes(stub: pb_grpc.MCPEngineStub) -> None:
    stub.ProcessMessage(said("unsaid", payload="ORDER"), timeout=WAIT_S)
    stub.ProcessMessage(said("unsaid", "2 large"), timeout=WAIT_S)
    assert stub.ProcessMessage(said("unsaid", "yes"), timeout=WAIT_S).current_state == "ordered"


def test_the_stream_carries_it_both_ways(stub: pb_grpc.MCPEngineStub) -> None:
    """Pipelined on a stream, in order: the "yes" lands on the question its user had not seen."""
    init = pb.ConversationStreamRequest(
        init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id="streamed")
    )
    messages = [said("streamed", payload="ORDER", seen=0), said("streamed", "2 large", seen=1)]
    messages += [said("streamed", "yes", seen=1), said("streamed", "yes", seen="3rd")]  # refused alone
    messages += [said("streamed", "yes", seen=3)]
    requests = [init, *(pb.ConversationStreamRequest(message=m) for m in messages)]
    requests.append(pb.ConversationStreamRequest(close=pb.StreamClose(reason="done")))
    answers = [
        r
        for r in stub.StreamConversation(iter(requests), timeout=WAIT_S)
        if r.WhichOneof("response_type") in ("message_response", "error")
    ]
    errors = [r.error for r in answers if r.HasField("error")]
    assert [(e.error_code, e.recoverable) for e in errors] == [("INVALID_ARGUMENT", True)]
    assert SEEN_TURN_FIELD in errors[0].message
    replies = [r.message_response for r in answers if r.HasField("message_response")]
    assert [(r.turn, r.current_state) for r in replies] == [
        (1, "take_order"),
        (2, "confirm"),
        (3, "confirm"),
        (4, "ordered"),
    ]
    assert "typed_ahead:confirm" in replies[2].actions_performed


@pytest.mark.parametrize("bad", ["three", "", "-1", -1, 2.5, True, {"turn": 1}])
def test_a_bad_seen_turn_is_refused_and_changes_nothing(stub: pb_grpc.MCPEngineStub, bad: Any) -> None:
    conversation = f"bad-seen-{bad!r}"
    stub.ProcessMessage(said(conversation, payload="ORDER", seen=0), timeout=WAIT_S)
    stub.ProcessMessage(said(conversation, "2 large", seen=1), timeout=WAIT_S)
    before = stub.GetConversationState(state_request(conversation), timeout=WAIT_S).conversation_state
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessMessage(said(conversation, "yes", seen=bad), timeout=WAIT_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_details(caught.value) == ("INVALID_ARGUMENT", [SEEN_TURN_FIELD])
    after = stub.GetConversationState(state_request(conversation), timeout=WAIT_S).conversation_state
    assert after == before and after.current_state == "confirm" and after.message_count == 2


def test_in_a_batch_a_bad_seen_turn_fails_its_item_alone(stub: pb_grpc.MCPEngineStub) -> None:
    batch = pb.BatchProcessMessagesRequest(
        messages=[said("batch-good", payload="ORDER", seen=0), said("batch-bad", payload="ORDER", seen=-3)]
    )
    reply = stub.BatchProcessMessages(batch, timeout=WAIT_S)
    good, bad = reply.responses
    assert good.status.success and good.turn == 1
    assert not bad.status.success and bad.status.error_code == "INVALID_ARGUMENT"
    assert dict(bad.status.details)["field"] == f"messages[1].{SEEN_TURN_FIELD}"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetConversationState(state_request("batch-bad"), timeout=WAIT_S)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # the refused message created nothing


def test_confab_chat_says_what_its_user_has_seen(server: ServerProcess, prices: GatedPrices) -> None:
    """The chat client sends the turn of the last reply it showed: a "yes" sent before the price
    came back is asked again, as a user of ``confab chat`` typing ahead would see."""
    options = ChatOptions(target=server.address, tenant="acme", conversation_id="chat-ahead", flow="pizza")
    with ChatClient(options) as client:
        assert client.wait_connected(WAIT_S)
        first = client.send("", "ORDER", quick_reply=True)
        assert client.wait(first, WAIT_S) and first.reply is not None and first.reply.turn == 1
        prices.hold()
        order = client.send("2 large")
        assert prices.asked.acquire(timeout=WAIT_S)
        early_yes = client.send("yes")  # typed before the reply to "2 large" was shown
        prices.release()
        assert client.wait(order, WAIT_S) and client.wait(early_yes, WAIT_S)
        assert early_yes.reply is not None and early_yes.reply.current_state == "confirm"
        assert "Just to be sure" in early_yes.reply.response.text
        sure = client.send("yes")  # now its user has seen the question asked again
        assert client.wait(sure, WAIT_S) and sure.reply is not None
        assert sure.reply.current_state == "ordered"
    sent = [t.request.metadata.custom_metadata[SEEN_TURN_KEY] for t in (first, order, early_yes, sure)]
    assert sent == [0, 1, 1, 3]
