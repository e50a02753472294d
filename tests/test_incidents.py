"""A conversation in trouble, as the people around it meet it. Stuck on a webhook: seen (new ones
too), cleared by abandoning the call, and actions that cannot be done in time reported as not done
and never done later. Handed over: a person's messages and operators' actions reach the user's
open stream at once. A real server with authentication on, the pizza flow, and its price webhook
made to hang."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from confab.grpc_edge.auth import hash_api_key
from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.flows.authoring.replay import RecordedAgentMessage
from confab.runtime.model import ConversationKey
from confab.tools.price_service import PriceService
from confab.tools.replay_store import open_history, read_conversation
from tests.support import ServerProcess, pizza, price_webhook_config, run_confab, status_details

pytestmark = pytest.mark.integration  # every test here starts a server or a process

WEBHOOK_TIMEOUT_S = 3.0  # the price webhook's, in this server's config
HANG_S = 60.0  # the price service's delay while a test makes it hang: longer than any test waits

KEYS = {
    "ops-acme": ("acme", "[admin]"),
    "ops-other": ("other", "[admin]"),
    "app-acme": ("acme", "[]"),
    "alice-acme": ("acme", "[agent]"),
    "bob-other": ("other", "[agent]"),
}


def secret(name: str) -> str:
    return f"{name}-secret-for-tests-0123456789"


def as_(name: str) -> tuple[tuple[str, str]]:
    return (("x-api-key", secret(name)),)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, PriceService]]:
    root = tmp_path_factory.mktemp("admin-webhooks")
    prices = PriceService().start()
    entries = "".join(
        f"    - {{name: {name}, sha256: {hash_api_key(secret(name))}, tenant: '{tenant}', roles: {roles}}}\n"
        for name, (tenant, roles) in KEYS.items()
    )
    config = price_webhook_config(
        root / "confab.yaml",
        prices.url,
        timeout_s=WEBHOOK_TIMEOUT_S,
        more_yaml="auth:\n  mode: required\n  api_keys:\n" + entries,
    )
    server = ServerProcess(root / "data", shards=1, extra=["--config", str(config)], log_level="INFO")
    try:
        yield server.start(), prices
    finally:
        prices.delay_s = 0.0
        server.stop()
        prices.stop()


@pytest.fixture
def stubs(
    running: tuple[ServerProcess, PriceService],
) -> Iterator[tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]]:
    server, _ = running
    with server.channel() as channel:
        yield admin_grpc.AdminStub(channel), pb_grpc.MCPEngineStub(channel)


@pytest.fixture
def hanging(running: tuple[ServerProcess, PriceService]) -> Iterator[PriceService]:
    """The price service hangs (each call until the webhook's timeout) for the test's length."""
    _, prices = running
    prices.delay_s = HANG_S
    try:
        yield prices
    finally:
        prices.delay_s = 0.0


def action(conversation: str, reason: str = "stuck on price") -> admin.ConversationAction:
    return admin.ConversationAction(tenant_id="acme", conversation_id=conversation, reason=reason)


def inspect(stub: admin_grpc.AdminStub, conversation: str) -> admin.ConversationDetail:
    detail: admin.ConversationDetail = stub.InspectConversation(
        admin.InspectConversationRequest(tenant_id="acme", conversation_id=conversation),
        metadata=as_("ops-acme"),
    )
    return detail


def until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


def waiting_on_price(stub: admin_grpc.AdminStub, conversation: str) -> bool:
    try:
        return inspect(stub, conversation).webhook_in_flight == "price"
    except grpc.RpcError:
        return False


def test_abandoning_a_hanging_webhook_takes_the_failure_route_at_once_and_names_who(
    running: tuple[ServerProcess, PriceService],
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
    hanging: PriceService,
) -> None:
    server, _ = running
    stub, engine = stubs
    engine.ProcessMessage(pizza("abandon-1", "hi"), metadata=as_("app-acme"))
    pricing = engine.ProcessMessage.future(pizza("abandon-1", "2 large pizzas"), metadata=as_("app-acme"))
    until(lambda: waiting_on_price(stub, "abandon-1"))
    started = time.monotonic()
    result = stub.AbandonWebhook(action("abandon-1", "price service hangs"), metadata=as_("ops-acme"))
    reply = pricing.result(timeout=WEBHOOK_TIMEOUT_S)  # long before the call itself would time out
    took = time.monotonic() - started
    print(f"abandoned; the user's turn answered {took * 1000:.0f} ms after the request")
    assert result.ok and result.details["state"] == "price_unavailable", result
    assert result.details["webhook"] == "price"
    assert reply.current_state == "price_unavailable"
    assert "webhook_failed:price" in reply.actions_performed
    assert "webhook_abandoned:price" in reply.actions_performed
    quote = json_format.MessageToDict(reply.conversation_state.variables)["quote"]
    assert quote["error"] == "abandoned by key:ops-acme: price service hangs"
    detail = inspect(stub, "abandon-1")
    assert not detail.webhook_in_flight and detail.mailbox_depth == 0
    assert "webhook_abandoned:price" in detail.last_turns[-1].actions
    audit = [line for line in server.output if "admin action abandon_webhook" in line]
    assert len(audit) == 1, audit
    assert "tenant 'acme' conversation 'abandon-1' by key:ops-acme" in audit[0]
    assert "price service hangs" in audit[0]
    # The conversation goes on at once; the call's late answer (its timeout) changes nothing.
    again = engine.ProcessMessage(pizza("abandon-1", payload="NO"), metadata=as_("app-acme"))
    assert again.current_state == "take_order"
    time.sleep(WEBHOOK_TIMEOUT_S)
    assert inspect(stub, "abandon-1").state["current_state"] == "take_order"
    nothing = stub.AbandonWebhook(action("abandon-1"), metadata=as_("ops-acme"))
    assert not nothing.ok and "no webhook" in nothing.message


def test_a_reset_that_cannot_run_in_time_answers_not_done_and_never_runs(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub], hanging: PriceService
) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("late-reset", "hi"), metadata=as_("app-acme"))
    pricing = engine.ProcessMessage.future(pizza("late-reset", "2 large pizzas"), metadata=as_("app-acme"))
    until(lambda: waiting_on_price(stub, "late-reset"))
    asked = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        stub.ResetConversation(action("late-reset"), metadata=as_("ops-acme"), timeout=1.5)
    answered = time.monotonic() - asked
    error = caught.value
    print(f"reset answered {error.code().name} after {answered * 1000:.0f} ms: {error.details()}")
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server said so itself (its ErrorInfo), before the deadline: not the client's own timer.
    assert status_details(error)[0] == "DEADLINE_EXCEEDED", error.details()
    assert "reset not done" in (error.details() or "") and "nothing was changed" in (error.details() or "")
    assert inspect(stub, "late-reset").mailbox_depth == 1  # the user's turn alone: the reset is gone
    # The webhook times out; the turn takes its failure route, and no reset follows.
    reply = pricing.result(timeout=WEBHOOK_TIMEOUT_S + 5)
    assert reply.current_state == "price_unavailable"
    time.sleep(0.5)
    detail = inspect(stub, "late-reset")
    assert detail.state["current_state"] == "price_unavailable"
    assert [t.kind for t in detail.last_turns] == ["turn", "turn"]


def test_a_new_conversation_stuck_on_its_first_webhook_is_listed_and_inspectable(
    running: tuple[ServerProcess, PriceService],
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
    hanging: PriceService,
) -> None:
    server, _ = running
    stub, engine = stubs
    first = engine.ProcessMessage.future(
        pizza("brand-new", "2 large pizzas please"), metadata=as_("app-acme")
    )
    detail = until(lambda: waiting_on_price(stub, "brand-new") and inspect(stub, "brand-new"))
    behind = engine.ProcessMessage.future(pizza("brand-new", "hello?"), metadata=as_("app-acme"))
    assert detail.first_turn_pending and detail.resident and detail.webhook_waiting_s >= 0
    assert (
        detail.state["flow_id"] == "pizza" and next(q.text for q in detail.queued) == "2 large pizzas please"
    )
    until(lambda: inspect(stub, "brand-new").mailbox_depth == 2)
    listing = stub.ListConversations(
        admin.ListConversationsRequest(tenant_id="acme", waiting_on_webhook=True), metadata=as_("ops-acme")
    )
    (found,) = [c for c in listing.conversations if c.conversation_id == "brand-new"]
    assert found.webhook == "price" and found.webhook_waiting_s > 0 and found.mailbox == 1
    assert found.resident and found.flow_id == "pizza"
    everything = stub.ListConversations(
        admin.ListConversationsRequest(tenant_id="acme"), metadata=as_("ops-acme")
    )
    assert "brand-new" in [c.conversation_id for c in everything.conversations]  # not stored, still listed
    shell = run_confab(
        "shell",
        "--target",
        server.address,
        "--api-key",
        secret("ops-acme"),
        "-c",
        "ls --tenant acme --waiting",
    )
    print(shell.stdout)
    assert shell.returncode == 0, shell.stderr
    row = next(line for line in shell.stdout.splitlines() if "brand-new" in line)
    assert "price" in row
    as_json = run_confab(
        "shell", "--target", server.address, "--api-key", secret("ops-acme"), "--json", "-c", "ls --waiting"
    )
    assert [c["conversation_id"] for c in json.loads(as_json.stdout)["conversations"]] == ["brand-new"]
    # Another tenant's admin sees none of it, and can neither abandon nor inspect it.
    theirs = stub.ListConversations(
        admin.ListConversationsRequest(waiting_on_webhook=True), metadata=as_("ops-other")
    )
    assert not theirs.conversations
    with pytest.raises(grpc.RpcError) as caught:
        stub.AbandonWebhook(action("brand-new"), metadata=as_("ops-other"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        stub.AbandonWebhook(action("brand-new"), metadata=as_("app-acme"))  # no admin role
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    abandoned = run_confab(
        "shell",
        "--target",
        server.address,
        "--api-key",
        secret("ops-acme"),
        "-c",
        "abandon-webhook acme brand-new price service down",
    )
    print(abandoned.stdout)
    assert abandoned.returncode == 0 and abandoned.stdout.startswith("ok: abandoned"), abandoned.stderr
    assert first.result(timeout=5).current_state == "price_unavailable"
    assert behind.result(timeout=5).status.success
    assert not inspect(stub, "brand-new").first_turn_pending


class OpenStream:
    """A user's StreamConversation kept open on a thread; each response with when it came."""

    def __init__(self, engine: pb_grpc.MCPEngineStub, conversation: str) -> None:
        self.responses: queue.Queue[tuple[float, pb.ConversationStreamResponse]] = queue.Queue()
        self._done = threading.Event()
        init = pb.ConversationStreamRequest(
            init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
        )

        def requests() -> Iterator[pb.ConversationStreamRequest]:
            yield init
            self._done.wait(30)

        self.call = engine.StreamConversation(requests(), metadata=as_("app-acme"))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.next(5).HasField("ack")

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put((time.monotonic(), response))
        except grpc.RpcError:
            pass

    def next(self, timeout: float) -> pb.ConversationStreamResponse:
        return self.responses.get(timeout=timeout)[1]

    def event(self, timeout: float) -> tuple[float, pb.StreamEvent]:
        at, response = self.responses.get(timeout=timeout)
        assert response.HasField("event"), response
        return at, response.event

    def close(self) -> None:
        self._done.set()
        self.call.cancel()


def agent_message(conversation: str, text: str, request_id: str = "", agent: str = "") -> admin.AgentMessage:
    return admin.AgentMessage(
        tenant_id="acme", conversation_id=conversation, text=text, agent=agent, request_id=request_id
    )


def test_a_persons_message_reaches_the_open_stream_at_once_and_is_kept_as_a_turn(
    running: tuple[ServerProcess, PriceService], stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]
) -> None:
    server, _ = running
    stub, engine = stubs
    engine.ProcessMessage(pizza("handed", "hi"), metadata=as_("app-acme"))
    assert (
        engine.ProcessMessage(pizza("handed", payload="HUMAN"), metadata=as_("app-acme")).current_state
        == "human"
    )
    stream = OpenStream(engine, "handed")
    try:
        sent = time.monotonic()
        result = stub.SendAgentMessage(
            agent_message("handed", "Hello, I'm Alice. Which pizza?", "answer-1", "Alice"),
            metadata=as_("alice-acme"),
        )
        at, event = stream.event(5)
        latency = at - sent
        print(f"a person's message reached the open stream {latency * 1000:.1f} ms after it was sent")
        assert latency < 1.0
        assert result.ok and result.message == "sent" and result.details["message_id"] == "answer-1"
        assert event.event_type == "agent_message" and event.conversation_id == "handed"
        data = json_format.MessageToDict(event.event_data)
        assert data == {"agent": "Alice", "text": "Hello, I'm Alice. Which pizza?", "message_id": "answer-1"}
        # Sent again under its request id: answered, not sent twice.
        again = stub.SendAgentMessage(
            agent_message("handed", "Hello, I'm Alice. Which pizza?", "answer-1", "Alice"),
            metadata=as_("alice-acme"),
        )
        assert again.ok and "already sent" in again.message
        # The tenant's admin may speak too, under its key's name.
        stub.SendAgentMessage(agent_message("handed", "Still there?"), metadata=as_("ops-acme"))
        _, second = stream.event(5)
        assert json_format.MessageToDict(second.event_data)["agent"] == "ops-acme"
        # An operator's resume reaches the stream at once too, not with the user's next message.
        sent = time.monotonic()
        stub.ResumeConversation(action("handed", "back to the bot"), metadata=as_("ops-acme"))
        at, resumed = stream.event(5)
        print(f"an operator's resume reached the open stream {(at - sent) * 1000:.1f} ms after it was sent")
        assert resumed.event_type == "operator_action"
        assert json_format.MessageToDict(resumed.event_data)["action"] == "resume"
        stub.ResetConversation(action("handed", "start over"), metadata=as_("ops-acme"))
        _, reset = stream.event(5)
        assert json_format.MessageToDict(reset.event_data) == {
            "action": "reset",
            "state": "",  # started over: the next message enters the flow's first state
            "reason": "start over",
        }
        with pytest.raises(queue.Empty):
            stream.next(0.3)  # the repeat sent nothing
    finally:
        stream.close()
    detail = inspect(stub, "handed")
    kept = [(t.kind, t.response) for t in detail.last_turns if t.kind == "agent_message"]
    assert kept == [("agent_message", "Hello, I'm Alice. Which pizza?"), ("agent_message", "Still there?")]
    history = read_conversation(
        open_history(Path(server.data_dir) / "confab.sqlite3"), ConversationKey("acme", "handed")
    )
    said = [(s.agent, s.text) for s in history.steps if isinstance(s, RecordedAgentMessage)]
    assert said == [("Alice", "Hello, I'm Alice. Which pizza?"), ("ops-acme", "Still there?")]


def test_a_persons_message_needs_a_handed_over_conversation_of_its_own_tenant(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("with-the-bot", "hi"), metadata=as_("app-acme"))

    def refused(request: admin.AgentMessage, key: str) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            stub.SendAgentMessage(request, metadata=as_(key))
        code: grpc.StatusCode = caught.value.code()
        return code

    assert refused(agent_message("with-the-bot", "hi"), "alice-acme") == grpc.StatusCode.FAILED_PRECONDITION
    assert refused(agent_message("nobody", "hi"), "alice-acme") == grpc.StatusCode.NOT_FOUND
    assert refused(agent_message("with-the-bot", ""), "alice-acme") == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(agent_message("with-the-bot", "hi"), "bob-other") == grpc.StatusCode.PERMISSION_DENIED
    assert refused(agent_message("with-the-bot", "hi"), "ops-other") == grpc.StatusCode.PERMISSION_DENIED
    assert refused(agent_message("with-the-bot", "hi"), "app-acme") == grpc.StatusCode.PERMISSION_DENIED
    # An agent's key speaks, and nothing more: the Admin API's other calls are refused.
    with pytest.raises(grpc.RpcError) as caught:
        stub.ResetConversation(action("with-the-bot"), metadata=as_("alice-acme"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert inspect(stub, "with-the-bot").state["current_state"] == "greet"
