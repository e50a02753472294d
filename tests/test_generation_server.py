"""Generate steps through a real server (``confab serve``: edge, shard processes, SQLite store)
whose config names a local OpenAI-compatible stand-in (tools.model_standin) as its provider;
the flow is the one the shard-level tests run (tests.test_generation)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.runtime.flows.execution.interpreter import BUDGET_SPENT
from confab.tools.model_standin import ModelStandIn, Script
from tests.support import ServerProcess, message
from tests.test_generation import FLOW

pytestmark = pytest.mark.integration

KEY = "sk-test-served-0123456789"


Served = tuple[ServerProcess, ModelStandIn]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One shard (every conversation shares it), the stand-in as its one provider, a budget of two
    answers (30 tokens each) a day for two tenants, the key in the environment only."""
    directory = tmp_path_factory.mktemp("generation")
    flows = directory / "flows"
    flows.mkdir()
    (flows / "helper.yaml").write_text(FLOW)
    standin = ModelStandIn().start()
    config = directory / "confab.yaml"
    config.write_text(
        f"flows: {{dirs: ['{flows}']}}\n"
        "models:\n"
        f"  providers: [{{name: standin, base_url: '{standin.url}', model: standin-model,"
        " api_key_env: CONFAB_TEST_MODEL_KEY, timeout_s: 10}]\n"
        "  budget: {tenants: {budgeted: 60, another: 60}}\n"
    )
    server = ServerProcess(
        directory / "data",
        shards=1,
        extra=["--config", str(config)],
        env={"CONFAB_TEST_MODEL_KEY": KEY},
        log_level="DEBUG",
    )
    try:
        yield server.start(), standin
    finally:
        server.stop()
        standin.close()


def ask(conversation: str, text: str, tenant: str) -> pb.ProcessMessageRequest:
    request = message(conversation, text, tenant=tenant)
    request.processing_hints.force_flow = "helper"
    return request


def test_a_unary_turn_that_generates_gets_the_whole_answer(served: Served) -> None:
    server, standin = served
    standin.script = Script(text="We open at nine.", chunk_delay_s=0.01)
    stub = server.stub()
    assert stub.ProcessMessage(ask("c1", "hello", "unary")).response.text == "Ask me."
    reply = stub.ProcessMessage(ask("c1", "explain the hours", "unary"))
    assert reply.response.text == "We open at nine."
    assert reply.current_state == "explain" and "generate:default" in reply.actions_performed
    (request,) = [r for r in standin.received() if "explain the hours" in r.user_text]
    assert request.header("Authorization") == f"Bearer {KEY}"  # from the environment, to the provider only
    assert request.completed and request.body["model"] == "standin-model"
    assert not any(KEY in line for line in server.output)


def test_a_slow_generation_holds_only_its_own_conversation(served: Served) -> None:
    server, standin = served
    gate = threading.Event()

    def choose(body: dict[str, Any]) -> Script:
        slow = "slowly" in str(body["messages"][-1]["content"])
        return Script(text="Slow answer.", gate=gate) if slow else Script(text="Quick answer.")

    standin.choose = choose
    stub = server.stub()
    try:
        for conversation in ("slow", "quick"):
            stub.ProcessMessage(ask(conversation, "hello", "waiting"))
        slow = stub.ProcessMessage.future(ask("slow", "explain slowly", "waiting"))
        queued = stub.ProcessMessage.future(ask("slow", "explain it all again", "waiting"))
        quick = stub.ProcessMessage(ask("quick", "explain quickly", "waiting"))  # the same, only shard
        assert quick.response.text == "Quick answer."
        (slow_request,) = [r for r in standin.received() if "slowly" in r.user_text]
        assert not slow_request.ended.is_set() and not slow.done() and not queued.done()
        gate.set()
        first, second = slow.result(timeout=30), queued.result(timeout=30)
    finally:
        gate.set()
        standin.choose = None
    assert first.response.text == "Slow answer."
    assert second.response.text == "Quick answer."  # after the slow one, in order
    assert second.conversation_state.message_count == first.conversation_state.message_count + 1


def test_a_tenants_budget_holds_on_the_server_and_other_tenants_go_on(served: Served) -> None:
    server, standin = served
    standin.script = Script(text="An answer.")  # 30 tokens each: two per tenant and day
    stub = server.stub()
    answers = [stub.ProcessMessage(ask(f"b{n}", "explain", "budgeted")) for n in range(3)]
    assert [a.current_state for a in answers] == ["explain", "explain", "sorry"]
    assert "generate_failed:budget" in answers[2].actions_performed
    assert BUDGET_SPENT in answers[2].response.text
    other = stub.ProcessMessage(ask("o1", "explain", "another"))
    assert other.current_state == "explain" and other.response.text.endswith("An answer.")
