"""The declarative flow interpreter, played through scripted dialogues and direct turns."""

from __future__ import annotations

import collections
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confab.runtime.errors import InvalidArgument
from confab.runtime.flows.authoring.dialogues import (
    dialogue_files,
    load_dialogues,
    run_dialogues,
)
from confab.runtime.flows.authoring.runner import FlowRunner
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.flows.language.loader import load_flow_file
from confab.runtime.model import Content, ConversationKey, InboundMessage, ProcessingHints
from confab.runtime.webhooks import WebhookTarget
from confab.tools.dialogue_client import GrpcRunner
from confab.tools.price_service import PriceService
from tests.shard_runner import LocalRunner
from tests.support import ServerProcess, message, pizza, pizza_server

DIALOGUES = Path(__file__).parent / "dialogues"
KEY = ConversationKey("acme", "c-1")


def price_webhook(url: str, timeout_s: float = 2.0) -> tuple[WebhookTarget, ...]:
    return (WebhookTarget("price", url, timeout_s, 0),)


@pytest.mark.parametrize("path", list(dialogue_files([DIALOGUES])), ids=lambda p: p.stem)
def test_bundled_flows_play_their_dialogues(path: Path, prices: PriceService) -> None:
    flows, problems = load_flows()
    assert not problems
    with FlowRunner(flows, webhooks=price_webhook(prices.url)) as runner:
        results = run_dialogues(load_dialogues(path), runner, runner.find_flow)
    failures = {r.name: r.problems or r.skipped for r in results if not r.passed}
    assert not failures
    assert len(results) >= 2


EXAMPLES = DIALOGUES / "examples"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "flows.md"


def test_the_docs_dialogue_plays_against_the_docs_flow(tmp_path: Path) -> None:
    text = DOCS.read_text()
    flow = re.search(r"^## A complete example\n.*?^```yaml\n(.*?)^```", text, re.S | re.M)
    dialogue = re.search(r"^## Testing a flow\n.*?^```yaml\n(.*?)^```", text, re.S | re.M)
    assert flow and dialogue, "docs/flows.md lost its example flow or dialogue"
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "docs_pizza.yaml").write_text(
        flow.group(1).replace("flow: pizza", "flow: docs_pizza")
    )
    (tmp_path / "dialogue.yaml").write_text(dialogue.group(1).replace("flow: pizza", "flow: docs_pizza"))
    flows, problems = load_flows([tmp_path / "flows"])
    assert not problems
    with FlowRunner(flows) as runner:
        (result,) = run_dialogues(load_dialogues(tmp_path / "dialogue.yaml"), runner, runner.find_flow)
    assert result.passed, result.problems


@pytest.mark.parametrize("path", list(dialogue_files([EXAMPLES])), ids=lambda p: p.stem)
def test_example_flows_play_their_dialogues(path: Path) -> None:
    """A bank's card support calling an identity sub-flow, a survey, and a concierge whose notes and
    answers a language model writes (tests/dialogues/examples)."""
    flows, problems = load_flows([EXAMPLES / "flows"])
    assert not problems
    with FlowRunner(flows) as runner:
        results = run_dialogues(load_dialogues(path), runner, runner.find_flow)
    assert not {r.name: r.problems or r.skipped for r in results if not r.passed}
    assert len(results) >= 3


@pytest.mark.parametrize("path", list(dialogue_files([DIALOGUES])), ids=lambda p: p.stem)
def test_bundled_dialogues_on_a_real_shard(path: Path, prices: PriceService) -> None:
    """The same dialogues through a shard's conversations (those that pin the clock are skipped)."""
    with LocalRunner(webhooks=price_webhook(prices.url)) as runner:
        results = run_dialogues(load_dialogues(path), runner, FlowRunner(load_flows()[0]).find_flow)
    assert not {r.name: r.problems for r in results if r.problems}
    assert any(r.passed for r in results)


def write_flow(directory: Path, greeting: str, version: str = "", tenant: str = "") -> Path:
    path = directory / "tiny.yaml"
    lines = [
        "flow: tiny",
        *([f"version: '{version}'"] if version else []),
        *([f"tenant: {tenant}"] if tenant else []),
        "settings: {start: hello, session_ttl_s: 60, carry_over_slots: [name]}",
        "intents: {again: {keywords: [again]}}",
        "slots: {name: {type: text, prompt: 'Your name?'}}",
        "states:",
        "  hello:",
        f"    on_enter: [{{say: {{text: '{greeting}'}}}}]",
        "    collect: [name]",
        "    transitions: [{to: known}]",
        "  known:",
        "    on_enter: [{say: {text: 'Nice to meet you, {{ slots.name }}.'}}]",
        "    transitions: [{intent: again, to: hello}]",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def turn(text: str = "", payload: str = "", **hints: object) -> InboundMessage:
    return InboundMessage("u", Content(text=text, payload=payload), hints=ProcessingHints(**hints))  # type: ignore[arg-type]


def test_a_running_conversation_keeps_its_version_after_a_reload(tmp_path: Path) -> None:
    write_flow(tmp_path, "Hello from version one!")
    with LocalRunner([str(tmp_path)], default_flow="tiny") as runner:
        old = ConversationKey("acme", "old")
        first = runner.send(old, "hi", "", "web", "")
        assert "version one" in first.text
        write_flow(tmp_path, "Hello from version two!")
        reloaded = runner.shard.reload_flows()
        assert (
            not reloaded.skipped
            and f"tiny@{load_flow_file(tmp_path / 'tiny.yaml').version}" in reloaded.loaded
        )
        # The old conversation answers its pending question on the version it started on ...
        assert runner.send(old, "Ada", "", "web", "").text == "Nice to meet you, Ada."
        again = runner.send(old, "again", "", "web", "")
        assert "version one" in again.text
        # ... while a new conversation starts on the new one.
        assert "version two" in runner.send(ConversationKey("acme", "new"), "hi", "", "web", "").text


def test_an_invalid_file_on_reload_keeps_the_flows_that_were_loaded(tmp_path: Path) -> None:
    write_flow(tmp_path, "Still here.")
    with LocalRunner([str(tmp_path)], default_flow="tiny") as runner:
        (tmp_path / "tiny.yaml").write_text("flow: tiny\nsettings: {start: nowhere}\nstates: {}\n")
        reloaded = runner.shard.reload_flows()
        assert reloaded.skipped and "tiny.yaml" in reloaded.skipped[0]
        assert "Still here." in runner.send(ConversationKey("acme", "x"), "hi", "", "web", "").text


def test_tenant_flows_and_unknown_forced_flows(tmp_path: Path) -> None:
    write_flow(tmp_path, "Hello acme!", tenant="acme")
    with LocalRunner([str(tmp_path)]) as runner:
        assert "Hello acme!" in runner.send(ConversationKey("acme", "t"), "hi", "", "web", "").text
        assert runner.send(ConversationKey("globex", "t"), "hi", "", "web", "").text.startswith(
            "Hello! You said"
        )
        with pytest.raises(InvalidArgument) as caught:
            runner.send(ConversationKey("acme", "f"), "hi", "", "web", "no-such-flow")
        assert caught.value.field == "processing_hints.force_flow"


def test_session_ttl_starts_a_new_session_keeping_carry_over_slots(tmp_path: Path) -> None:
    flow = DeclarativeFlow(load_flow_file(write_flow(tmp_path, "Welcome!")))
    state = flow.start(1000.0, KEY)
    flow.handle(state, turn("hi"), 1000.0)
    reply = flow.handle(state, turn("Grace"), 1001.0)
    assert state.current_state == "known" and reply.context_updates == {"slots": {"name": "Grace"}}
    state.last_activity = 1001.0
    later = flow.handle(state, turn("hello again"), 1001.0 + 61)
    assert "session_restarted" in later.actions_performed
    assert state.slots == {"name": "Grace"}  # carried over; so the greeting state moves on at once
    assert state.current_state == "known"


def test_handoff_stops_automation_until_resumed() -> None:
    flow = DeclarativeFlow(load_flow_file(Path(__file__).parent.parent / "config" / "flows" / "support.yaml"))
    state = flow.start(0.0, KEY)
    flow.handle(state, turn("hi"), 1.0)
    handed = flow.handle(state, turn(payload="HUMAN"), 2.0)
    assert "handoff" in handed.actions_performed and state.current_state == "human"
    held = flow.handle(state, turn("is anyone there?"), 3.0)
    assert held.actions_performed == ["handoff_hold"] and "queue" in held.response.text
    assert state.flow_memory["handoff_log"][-1]["text"] == "is anyone there?"
    resumed = flow.handle(state, InboundMessage("agent", Content(type="system", payload="resume")), 4.0)
    assert "handoff_resumed" in resumed.actions_performed
    assert state.current_state == "menu" and "handoff" not in state.flow_memory
    bypass = DeclarativeFlow(flow.document)
    other = bypass.start(0.0, KEY)
    reply = bypass.handle(other, turn("hello", bypass_automation=True), 1.0)
    assert reply.actions_performed == ["handoff"] and "handoff" in other.flow_memory


def test_review_hint_marks_response_and_state() -> None:
    flow = DeclarativeFlow(load_flow_file(Path(__file__).parent.parent / "config" / "flows" / "support.yaml"))
    state = flow.start(0.0, KEY)
    reply = flow.handle(state, turn("hi", require_human_review=True), 1.0)
    assert reply.response.metadata["held_for_review"] is True
    assert state.flow_memory["review_required"] is True


def test_ab_variants_are_sticky_and_follow_the_weights() -> None:
    flow = DeclarativeFlow(load_flow_file(Path(__file__).parent.parent / "config" / "flows" / "pizza.yaml"))
    assert (
        flow.start(0.0, KEY).flow_memory == flow.start(5.0, KEY).flow_memory
    )  # same conversation, same variant
    counts = collections.Counter(
        flow.start(0.0, ConversationKey("t", f"c{i}")).flow_memory["ab"]["greeting"] for i in range(2000)
    )
    assert set(counts) == {"plain", "friendly"} and abs(counts["plain"] - 1000) < 120
    state = flow.start(0.0, KEY)
    reply = flow.handle(state, turn("hi"), 1.0)
    assert reply.ab_variant == f"greeting:{state.flow_memory['ab']['greeting']}"


@pytest.fixture(scope="module")
def priced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, PriceService]]:
    """One shard (so every conversation shares it) and a slow, switchable price service."""
    with pizza_server(tmp_path_factory.mktemp("priced"), timeout_s=1.0) as running:
        yield running


@pytest.mark.integration
@pytest.mark.parametrize("path", list(dialogue_files([DIALOGUES])), ids=lambda p: p.stem)
def test_bundled_dialogues_through_the_real_server(
    priced_server: tuple[ServerProcess, PriceService], path: Path
) -> None:
    server, _ = priced_server
    with GrpcRunner(server.address) as runner:
        results = run_dialogues(load_dialogues(path), runner, FlowRunner(load_flows()[0]).find_flow)
    assert not {r.name: r.problems for r in results if r.problems}
    assert any(r.passed for r in results)


@pytest.mark.integration
def test_a_slow_webhook_holds_its_conversation_only(
    priced_server: tuple[ServerProcess, PriceService],
) -> None:
    server, prices = priced_server
    stub = server.stub()
    stub.ProcessMessage(pizza("slow", "hi"))
    prices.delay_s = 0.8
    try:
        started = time.monotonic()
        waiting = stub.ProcessMessage.future(pizza("slow", "2 large pizzas"))
        time.sleep(0.1)
        queued = stub.ProcessMessage.future(pizza("slow", "yes"))  # behind the webhook, in order
        # Meanwhile another conversation on the same (only) shard is served at once.
        other = [stub.ProcessMessage(pizza("other", text)) for text in ("hi", "talk to a person")]
        other_done = time.monotonic() - started
        first, second = waiting.result(), queued.result()
    finally:
        prices.delay_s = 0.0
    assert other_done < 0.6 and other[-1].current_state == "human"
    assert first.current_state == "confirm" and "24" in first.response.text
    assert "webhook:price" in first.actions_performed
    assert second.current_state == "ordered"
    assert second.conversation_state.message_count == first.conversation_state.message_count + 1


@pytest.mark.integration
def test_a_failing_or_timed_out_webhook_takes_the_failure_route(
    priced_server: tuple[ServerProcess, PriceService],
) -> None:
    server, prices = priced_server
    stub = server.stub()
    for conversation, setting in (("fails", "fail"), ("times-out", "delay")):
        stub.ProcessMessage(pizza(conversation, "hi"))
        if setting == "fail":
            prices.fail = True
        else:
            prices.delay_s = 1.5  # beyond the webhook's 1 s timeout
        try:
            reply = stub.ProcessMessage(pizza(conversation, "3 small pizzas"))
        finally:
            prices.fail, prices.delay_s = False, 0.0
        assert reply.current_state == "price_unavailable", conversation
        assert "webhook_failed:price" in reply.actions_performed
        assert "can't get a price" in reply.response.text
        assert "error" in reply.conversation_state.variables["quote"]


@pytest.mark.integration
def test_sighup_reloads_flows_without_dropping_traffic(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    write_flow(flows, "Hello from version one!")
    config = tmp_path / "confab.yaml"
    config.write_text(f"flows:\n  default: tiny\n  dirs: [{flows}]\n")
    server = ServerProcess(tmp_path / "data", extra=["--config", str(config)]).start()
    try:
        stub = server.stub()
        first = stub.ProcessMessage(message("old", "hi"))
        assert "version one" in first.response.text
        old_version = first.conversation_state.flow_version
        write_flow(flows, "Hello from version two!")
        os.kill(server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        fresh = stub.ProcessMessage(message("probe-0", "hi"))
        n = 0
        while "version two" not in fresh.response.text and time.monotonic() < deadline:
            time.sleep(0.1)
            n += 1
            fresh = stub.ProcessMessage(message(f"probe-{n}", "hi"))
        assert "version two" in fresh.response.text
        assert fresh.conversation_state.flow_version != old_version
        # The conversation that started before the reload finishes on its own version.
        answered = stub.ProcessMessage(message("old", "Ada"))
        assert answered.response.text == "Nice to meet you, Ada."
        assert answered.conversation_state.flow_version == old_version
        assert "version one" in stub.ProcessMessage(message("old", "again")).response.text
    finally:
        server.stop()
