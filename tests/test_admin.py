"""The admin service against a real server with real actors (one shard, the pizza flow, a price webhook)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.price_service import PriceService
from tests.support import ServerProcess, message, pizza, pizza_server, status_details

pytestmark = pytest.mark.integration  # every test here starts a server or a process

ADMIN_KEY, PLAIN_KEY = "admin-key-for-tests-0123456789", "plain-key-for-tests-0123456789"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, PriceService]]:
    with pizza_server(tmp_path_factory.mktemp("admin")) as running:
        yield running


@pytest.fixture
def stubs(
    cluster: tuple[ServerProcess, PriceService],
) -> Iterator[tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]]:
    server, _ = cluster
    with server.channel() as channel:
        yield admin_grpc.AdminStub(channel), pb_grpc.MCPEngineStub(channel)


def action(conversation: str) -> admin.ConversationAction:
    return admin.ConversationAction(tenant_id="acme", conversation_id=conversation, reason="test")


def inspect(stub: admin_grpc.AdminStub, conversation: str, turns: int = 10) -> admin.ConversationDetail:
    detail: admin.ConversationDetail = stub.InspectConversation(
        admin.InspectConversationRequest(tenant_id="acme", conversation_id=conversation, last_turns=turns)
    )
    return detail


def state_of(detail: admin.ConversationDetail) -> dict[str, Any]:
    return json_format.MessageToDict(detail.state)


def test_cluster_overview(stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("overview", "hi"))
    cluster = stub.GetCluster(admin.GetClusterRequest())
    assert cluster.version and cluster.started_at.seconds > 0
    (shard,) = cluster.shards
    assert shard.healthy and shard.pid > 0 and shard.resident_conversations >= 1 and shard.commands >= 1
    assert shard.uptime_s > 0 and shard.rss_bytes > 1_000_000
    assert shard.address.startswith("unix:") and shard.messages_per_s > 0 and shard.last_heard_s >= 0
    assert cluster.store.ok and cluster.store.path.endswith("confab.sqlite3")


def test_inspect_shows_state_and_the_last_turns(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("seen", "hi"))
    engine.ProcessMessage(pizza("seen", payload="ORDER"))
    detail = inspect(stub, "seen")
    assert detail.resident and detail.mailbox_depth == 0 and not detail.webhook_in_flight
    assert detail.state["current_state"] == "take_order" and detail.state["flow_id"] == "pizza"
    assert state_of(detail)["flow_memory"]["asking"] == "size"
    first, second = detail.last_turns
    assert (first.input, first.state_before, first.state_after) == ("hi", "", "greet")
    assert (second.input, second.intent, second.state_after) == ("ORDER", "order", "take_order")
    assert "Which size" in second.response and second.duration_ms >= 0
    with pytest.raises(grpc.RpcError) as caught:
        inspect(stub, "never-existed")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_inspect_shows_messages_queued_behind_a_slow_webhook(
    cluster: tuple[ServerProcess, PriceService], stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]
) -> None:
    _, prices = cluster
    stub, engine = stubs
    engine.ProcessMessage(pizza("slow", "hi"))
    prices.delay_s = 1.0
    try:
        pricing = engine.ProcessMessage.future(pizza("slow", "2 large pizzas"))
        time.sleep(0.2)
        confirming = engine.ProcessMessage.future(pizza("slow", "yes"))
        time.sleep(0.2)
        detail = inspect(stub, "slow")
        assert detail.webhook_in_flight == "price"
        assert [q.text for q in detail.queued] == ["2 large pizzas", "yes"]
        assert detail.mailbox_depth == 2
        assert pricing.result().current_state == "confirm" and confirming.result().current_state == "ordered"
    finally:
        prices.delay_s = 0.0
    assert inspect(stub, "slow").mailbox_depth == 0


def test_a_forced_state_is_where_the_next_message_starts(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("forced", "hi"))
    result = stub.ForceState(
        admin.ForceStateRequest(tenant_id="acme", conversation_id="forced", state="take_order", reason="test")
    )
    assert result.ok and result.details["state"] == "take_order"
    reply = engine.ProcessMessage(pizza("forced", "3 medium"))  # in greet this would not be understood
    assert reply.current_state == "confirm" and reply.conversation_state.slots["quantity"] == 3
    with pytest.raises(grpc.RpcError) as caught:
        stub.ForceState(admin.ForceStateRequest(tenant_id="acme", conversation_id="forced", state="nowhere"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_resume_from_handoff_and_reset(stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("handed", "hi"))
    assert engine.ProcessMessage(pizza("handed", payload="HUMAN")).current_state == "human"
    held = engine.ProcessMessage(pizza("handed", "hello?"))
    assert "handoff_hold" in held.actions_performed
    assert state_of(inspect(stub, "handed"))["flow_memory"]["handoff"]
    resumed = stub.ResumeConversation(action("handed"))
    # Back to the flow's start, which reads the next message as a session's first.
    assert resumed.ok and resumed.details["resumed"] and resumed.details["state"] == "begin"
    assert "handoff" not in state_of(inspect(stub, "handed"))["flow_memory"]
    reset = stub.ResetConversation(action("handed"))
    assert reset.ok and inspect(stub, "handed").state["message_count"] == 0


def test_passivate_then_the_conversation_comes_back_from_the_store(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    engine.ProcessMessage(pizza("sleepy", "hi"))
    assert stub.PassivateConversation(action("sleepy")).ok
    detail = inspect(stub, "sleepy")
    assert not detail.resident and detail.state["message_count"] == 1
    assert not stub.PassivateConversation(action("sleepy")).ok  # not resident any more
    assert engine.ProcessMessage(pizza("sleepy", "hi")).conversation_state.message_count == 2


def test_reload_flows_and_restart_a_shard(stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]) -> None:
    stub, engine = stubs
    reloaded = stub.ReloadFlows(admin.ReloadFlowsRequest())
    assert reloaded.ok and any(v.startswith("pizza@") for v in reloaded.details["loaded"])
    engine.ProcessMessage(pizza("survivor", "hi"))
    before = stub.GetCluster(admin.GetClusterRequest()).shards[0]
    assert stub.RestartShard(admin.ShardAction(shard=0, reason="drill")).ok
    deadline = time.monotonic() + 15
    after = stub.GetCluster(admin.GetClusterRequest()).shards[0]
    while (after.pid == before.pid or not after.healthy) and time.monotonic() < deadline:
        time.sleep(0.2)
        after = stub.GetCluster(admin.GetClusterRequest()).shards[0]
    assert after.pid != before.pid and after.generation == before.generation + 1
    assert engine.ProcessMessage(pizza("survivor", "hi")).conversation_state.message_count == 2
    with pytest.raises(grpc.RpcError) as caught:
        stub.RestartShard(admin.ShardAction(shard=7))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_action_is_logged_with_its_conversation_arguments_and_who_asked(
    cluster: tuple[ServerProcess, PriceService], stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]
) -> None:
    server, _ = cluster
    stub, engine = stubs
    engine.ProcessMessage(pizza("audited", "hi"))
    stub.ForceState(
        admin.ForceStateRequest(
            tenant_id="acme", conversation_id="audited", state="take_order", reason="stuck\nafter a bug"
        )
    )
    stub.ResetConversation(admin.ConversationAction(tenant_id="acme", conversation_id="audited"))
    lines = [json.loads(line) for line in server.output if "audited" in line and "admin action" in line]
    assert [line["msg"] for line in lines] == [
        "admin action force_state on tenant 'acme' conversation 'audited'"
        " by anonymous (authentication is off) (state='take_order', reason='stuck\\nafter a bug')",
        "admin action reset on tenant 'acme' conversation 'audited'"
        " by anonymous (authentication is off) (reason='')",
    ]
    # The same, as fields of the JSON line.
    assert {key: lines[0][key] for key in ("admin_action", "tenant", "conversation", "state", "reason")} == {
        "admin_action": "force_state",
        "tenant": "acme",
        "conversation": "audited",
        "state": "take_order",
        "reason": "stuck\nafter a bug",
    }


def test_admin_calls_need_an_admin_role(tmp_path: Path) -> None:
    def entry(name: str, key: str, roles: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"    - {{name: {name}, sha256: {digest}, tenant: acme, roles: [{roles}]}}\n"

    config = tmp_path / "confab.yaml"
    config.write_text(
        "auth:\n  mode: required\n  api_keys:\n"
        + entry("ops", ADMIN_KEY, "operator")
        + entry("app", PLAIN_KEY, "")
    )
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        with server.channel() as channel:
            stub = admin_grpc.AdminStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetCluster(admin.GetClusterRequest(), metadata=(("x-api-key", PLAIN_KEY),))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetCluster(admin.GetClusterRequest())
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.GetCluster(admin.GetClusterRequest(), metadata=(("x-api-key", ADMIN_KEY),)).shards
            assert stub.ReloadFlows(admin.ReloadFlowsRequest(), metadata=(("x-api-key", ADMIN_KEY),)).ok
    finally:
        server.stop()
    audit = [line for line in server.output if "admin action reload_flows" in line]
    assert len(audit) == 1 and "ops" in audit[0]  # every action is logged with who asked


def test_admin_ids_are_held_to_the_configured_limit(tmp_path: Path) -> None:
    config = tmp_path / "confab.yaml"
    config.write_text("limits:\n  max_id_chars: 12\n")
    at_limit, over, long_tenant = "c" * 12, "c" * 13, "t" * 13  # 13 is well within the default, 128
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        with server.channel() as channel:
            stub, engine = admin_grpc.AdminStub(channel), pb_grpc.MCPEngineStub(channel)
            assert engine.ProcessMessage(message(at_limit, "hi")).status.success
            detail = inspect(stub, at_limit)
            assert detail.state["message_count"] == 1
            refused: list[tuple[Callable[[], object], str]] = [
                (lambda: inspect(stub, over), "conversation_id"),
                (
                    lambda: stub.ResetConversation(
                        admin.ConversationAction(tenant_id=long_tenant, conversation_id=at_limit)
                    ),
                    "tenant_id",
                ),
                (
                    lambda: stub.ForceState(
                        admin.ForceStateRequest(tenant_id="acme", conversation_id=over, state="chatting")
                    ),
                    "conversation_id",
                ),
                (lambda: stub.ResumeConversation(action(over)), "conversation_id"),
                (lambda: stub.PassivateConversation(action(over)), "conversation_id"),
                (
                    lambda: stub.ListConversations(admin.ListConversationsRequest(tenant_id=long_tenant)),
                    "tenant_id",
                ),
                (lambda: next(stub.TailEvents(admin.TailEventsRequest(tenant_id=long_tenant))), "tenant_id"),
                (
                    lambda: next(stub.TailEvents(admin.TailEventsRequest(conversation_id=over))),
                    "conversation_id",
                ),
            ]
            for call, field in refused:
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
                assert status_details(caught.value) == ("INVALID_ARGUMENT", [field])
                assert "at most 12" in (caught.value.details() or "")
            # Nothing changed: the one conversation is as it was, and no other was made.
            listed = stub.ListConversations(admin.ListConversationsRequest()).conversations
            assert [(c.conversation_id, c.message_count, c.current_state) for c in listed] == [
                (at_limit, 1, "chatting")
            ]
    finally:
        server.stop()


def test_list_conversations_with_filters_and_paging(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    for i in range(5):
        engine.ProcessMessage(pizza(f"listed-{i}", "hi"))
    engine.ProcessMessage(pizza("listed-2", payload="HUMAN"))
    everything = stub.ListConversations(admin.ListConversationsRequest(tenant_id="acme", page_size=500))
    ids = [c.conversation_id for c in everything.conversations]
    assert {f"listed-{i}" for i in range(5)} <= set(ids) and ids == sorted(ids)
    listed = {c.conversation_id: c for c in everything.conversations}
    assert listed["listed-0"].current_state == "greet" and listed["listed-0"].flow_id == "pizza"
    assert listed["listed-0"].resident and listed["listed-0"].message_count == 1
    handed = stub.ListConversations(admin.ListConversationsRequest(tenant_id="acme", in_handoff=True))
    assert [c.conversation_id for c in handed.conversations if c.conversation_id.startswith("listed")] == [
        "listed-2"
    ]
    by_state = stub.ListConversations(admin.ListConversationsRequest(state="human", page_size=500))
    assert "listed-2" in {c.conversation_id for c in by_state.conversations}
    pages, token = [], ""
    while True:
        page = stub.ListConversations(
            admin.ListConversationsRequest(tenant_id="acme", page_size=2, page_token=token)
        )
        pages.append([c.conversation_id for c in page.conversations])
        token = page.next_page_token
        if not token:
            break
    assert [c for p in pages for c in p] == ids and all(len(p) <= 2 for p in pages)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListConversations(admin.ListConversationsRequest(page_token="not-a-token"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tail_shows_the_turns_of_messages_sent_meanwhile(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    events = stub.TailEvents(
        admin.TailEventsRequest(
            tenant_id="acme", conversation_id="tailed", event_types=["turn", "transition"]
        )
    )
    time.sleep(0.3)  # the subscription is in place before the message is sent
    engine.ProcessMessage(pizza("tailed", "hi"))
    engine.ProcessMessage(pizza("tailed", payload="ORDER"))
    seen = [next(events) for _ in range(4)]
    events.cancel()
    assert [e.type for e in seen] == ["turn", "transition", "turn", "transition"]
    assert seen[2].data["state"] == "take_order" and seen[2].data["intent"] == "order"
    assert (seen[3].data["from"], seen[3].data["to"]) == ("greet", "take_order")
    assert all(e.conversation_id == "tailed" and e.tenant_id == "acme" for e in seen)


def test_tail_shows_activations_and_passivations(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    events = stub.TailEvents(
        admin.TailEventsRequest(tenant_id="acme", event_types=["activation", "passivation"])
    )
    time.sleep(0.3)
    engine.ProcessMessage(pizza("woken", "hi"))  # a new conversation: activated
    assert stub.PassivateConversation(action("woken")).ok
    engine.ProcessMessage(pizza("woken", "hi"))  # the reply carries the passivation; then activated again
    seen = [(e.type, e.conversation_id) for e in (next(events) for _ in range(3))]
    events.cancel()
    assert seen == [("activation", "woken"), ("passivation", "woken"), ("activation", "woken")]


def test_a_card_number_typed_by_mistake_is_masked_in_what_is_kept_and_shown(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    card = "4111 1111 1111 1111"  # passes the Luhn check: a real-looking card number
    request = message("masked", f"my card {card} was stolen")
    request.processing_hints.force_flow = "support"
    request.metadata.request_id = "masked-1"
    first = engine.ProcessMessage(request)
    # The client's own retry of the very same message is a repeat, not a reuse of its id.
    again = engine.ProcessMessage(request)
    assert again.performance_metrics.cache_status == "replayed"
    assert again.conversation_state.message_count == first.conversation_state.message_count == 1
    detail = inspect(stub, "masked")
    said = detail.last_turns[-1].input
    assert card not in said and card.replace(" ", "") not in said and "stolen" in said
    assert card not in str(detail.state)


# A free-text slot keeps what the user typed: a card number in it is masked as the flow's mask
# patterns say, though the slot is not sensitive (its value is the user's words, for the flow).
NOTE_FLOW = """\
flow: note
settings:
  start: asking
  mask: [card_number]
slots:
  note: {type: text, prompt: "What happened?"}
states:
  asking:
    collect: [note]
    transitions: [{to: noted}]
  noted:
    on_enter: [{say: {text: "Noted."}}]
"""


def test_a_card_number_in_a_free_text_slot_is_masked_in_the_state_operators_see(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "note.yaml").write_text(NOTE_FLOW, encoding="utf-8")
    config = tmp_path / "confab.yaml"
    config.write_text(f"flows: {{default: note, dirs: ['{flows}']}}\n", encoding="utf-8")
    card = "4111 1111 1111 1111"  # passes the Luhn check
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        with server.channel() as channel:
            stub, engine = admin_grpc.AdminStub(channel), pb_grpc.MCPEngineStub(channel)
            assert engine.ProcessMessage(message("noted", "hello")).response.text == "What happened?"
            reply = engine.ProcessMessage(message("noted", f"my card {card} was stolen"))
            assert reply.response.text == "Noted."
            slots = state_of(inspect(stub, "noted"))["slots"]
    finally:
        server.stop()
    note = slots["note"]
    assert "stolen" in note and card not in note and card.replace(" ", "") not in note
