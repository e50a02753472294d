"""Generate steps on a real shard, against a local OpenAI-compatible stand-in (tools.model_standin).

The shard makes a model call as it makes a webhook call (suspended turn, mailbox, late outcome);
these tests look at what is particular to models: chunks handed to ``on_delta`` in order, a
cancelled generation (and a cancelled message still queued behind one, or whose turn waits on
a webhook, which runs without asking the model), a generation ended by its caller's deadline,
each way a call fails taking the flow's failure route, sensitive data kept out of every request,
per-tenant budgets counted in the store, and a slow generation in one conversation leaving the
others alone.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confab.actors.shard import Origin, Shard
from confab.runtime.flows import UnknownFlow
from confab.runtime.flows.execution.interpreter import BUDGET_SPENT, GENERATE_FAILED
from confab.runtime.model import (
    Content,
    ConversationKey,
    InboundMessage,
    ProcessingHints,
    StateResult,
    TurnResult,
)
from confab.runtime.models import ModelProvider, ModelSettings, TokenBudget, utc_day
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind, decode_outcome, is_deferred
from confab.runtime.webhooks import WebhookTarget
from confab.tools.model_standin import WAIT_S, ModelStandIn, Script
from tests.shard_runner import routed
from tests.support import GatedPrices

TENANT = "acme"
SENDER = "edge-connection"
CARD = "4111111111111111"
EMAIL = "jo@example.com"

FLOW = """\
flow: helper
settings:
  start: ask
  mask: [email]
  generative_fallback: {knowledge: true}
knowledge:
  - {title: Hours, text: "We open at nine."}
slots:
  card:
    type: regex
    pattern: '(?P<value>\\d{13,19})'
    sensitive: true
    prompt: "Your card number?"
intents:
  explain: {keywords: [explain]}
  card: {keywords: [card]}
routes:
  - {intent: explain, to: explain}
  - {intent: card, to: card}
states:
  ask:
    on_enter: [{say: {text: "Ask me."}}]
  explain:
    on_enter:
      - generate:
          prompt: "Explain this: {{ message }}"
          on_failure: sorry
  sorry:
    on_enter: [{say: {text: "The model is away."}}]
  card:
    collect: [card]
    transitions: [{to: noted}]
  noted:
    on_enter:
      - set: {variables.copy: "slots.card"}
      - generate:
          prompt: "Card {{ slots.card }}, copy {{ variables.copy }}, said {{ message }}"
          into: variables.summary
          on_failure: sorry
      - say: {text: "Noted: {{ variables.summary }}"}
"""

_ids = itertools.count(1)
_batches = itertools.count(1000)


class Driver:
    """Runs commands on a shard as its owner does: rounds, and the late outcomes of what waited."""

    def __init__(self, shard: Shard, flow: str = "helper") -> None:
        self.shard = shard
        self.flow = flow  # every message asks for it (force_flow)
        self.outcomes: dict[int, Any] = {}  # batch id -> its one command's outcome (wire)

    def start(
        self,
        conversation: str,
        text: str,
        *,
        tenant: str = TENANT,
        wants_deltas: bool = False,
        budget_s: float | None = None,
        payload: str = "",
    ) -> tuple[int, str]:
        """Send one message; (its batch id, its message id). Its outcome may come later (``wait``).
        ``budget_s``: what its caller's deadline leaves, as the edge sends it."""
        message_id = f"m-{next(_ids)}"
        content = Content(text=text, payload=payload)
        message = InboundMessage("user-1", content, hints=ProcessingHints(force_flow=self.flow))
        command = Command(
            CommandKind.TURN,
            message_id,
            ConversationKey(tenant, conversation),
            message,
            budget_s=budget_s,
            wants_deltas=wants_deltas,
        )
        batch_id = next(_batches)
        ((_, answer),) = self.shard.run_round(
            [(SENDER, CommandBatch(batch_id, routed(self.shard, [command])))]
        )
        (wire,) = answer.outcomes
        if not is_deferred(wire):
            self.outcomes[batch_id] = wire
        return batch_id, message_id

    def _round(self, batch_id: int, command: Command) -> list[Any]:
        ((_, answer),) = self.shard.run_round(
            [(SENDER, CommandBatch(batch_id, routed(self.shard, [command])))]
        )
        return answer.outcomes

    def poll(self) -> None:
        for sender, (batch_id, _index, wire) in self.shard.finish_webhooks():
            assert sender == SENDER
            self.outcomes[batch_id] = wire

    def wait(self, batch_id: int) -> TurnResult:
        give_up = time.monotonic() + 30
        while batch_id not in self.outcomes:
            assert time.monotonic() < give_up, "the turn did not finish"
            time.sleep(0.005)
            self.poll()
        outcome = decode_outcome(self.outcomes.pop(batch_id))
        assert isinstance(outcome, TurnResult), outcome
        return outcome

    def say(self, conversation: str, text: str, **kw: Any) -> TurnResult:
        batch_id, _ = self.start(conversation, text, **kw)
        return self.wait(batch_id)

    def state(self, conversation: str, tenant: str = TENANT) -> str:
        command = Command(CommandKind.GET_STATE, f"get-{next(_ids)}", ConversationKey(tenant, conversation))
        ((_, answer),) = self.shard.run_round(
            [(SENDER, CommandBatch(next(_batches), routed(self.shard, [command])))]
        )
        outcome = decode_outcome(answer.outcomes[0])
        assert isinstance(outcome, StateResult), outcome
        return outcome.state.current_state


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flows"
    directory.mkdir()
    (directory / "helper.yaml").write_text(FLOW)
    return directory


ShardMaker = Callable[..., Shard]


def on_standin(
    make_shard: ShardMaker,
    flow_dir: Path,
    standin: ModelStandIn,
    *,
    timeout_s: float = 5.0,
    retries: int = 1,
    budget: TokenBudget | None = None,
) -> Driver:
    provider = ModelProvider("standin", standin.url, "standin-model", timeout_s=timeout_s, retries=retries)
    models = ModelSettings((provider,), budget or TokenBudget())
    return Driver(make_shard(flow_dirs=(str(flow_dir),), models=models))


# Deltas -----------------------------------------------------------------------------------


def test_a_said_answer_goes_to_on_delta_chunk_by_chunk_in_order(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(text="We open at nine and close at five.", chunk_delay_s=0.01)
    driver = on_standin(make_shard, flow_dir, standin)
    deltas: list[tuple[Origin, str, int, str]] = []
    driver.shard.on_delta = lambda origin, stream, seq, text: deltas.append((origin, stream, seq, text))
    assert driver.say("c1", "hello").response.text == "Ask me."
    batch_id, message_id = driver.start("c1", "explain the hours", wants_deltas=True)
    result = driver.wait(batch_id)
    assert result.response.text == "We open at nine and close at five."
    assert "generate:default" in result.actions_performed and result.state.current_state == "explain"
    assert [seq for _, _, seq, _ in deltas] == list(range(8))
    assert "".join(text for *_, text in deltas) == result.response.text
    assert {stream for _, stream, _, _ in deltas} == {f"{message_id}/0"}
    assert {(o.sender, o.batch_id, o.index) for o, *_ in deltas} == {(SENDER, batch_id, 0)}

    # A caller that did not ask for deltas (a unary call) gets the whole text only.
    deltas.clear()
    assert driver.say("c1", "explain it again").response.text == result.response.text
    assert deltas == []


def test_a_cancelled_generation_stops_its_request_and_takes_the_failure_route(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(60)], chunk_delay_s=0.05)
    driver = on_standin(make_shard, flow_dir, standin)
    three = threading.Event()
    seen: list[str] = []

    def on_delta(_origin: Origin, _stream: str, _seq: int, text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            three.set()

    driver.shard.on_delta = on_delta
    driver.say("c1", "hello")
    batch_id, _ = driver.start("c1", "explain everything", wants_deltas=True)
    assert three.wait(WAIT_S)
    assert not driver.shard.cancel_generation(SENDER, batch_id + 1, 0)  # no such command
    assert driver.shard.cancel_generation(SENDER, batch_id, 0)
    result = driver.wait(batch_id)
    assert result.state.current_state == "sorry" and result.response.text == "The model is away."
    assert "generate_failed:cancelled" in result.actions_performed
    (request,) = standin.received()
    assert request.ended.wait(WAIT_S)
    assert request.left and not request.completed and request.chunks_sent < 60
    # The conversation goes on: its next message runs, from the state the failure route left.
    standin.script = Script(text="Back again.")
    assert driver.state("c1") == "sorry"
    assert driver.say("c1", "explain once more").response.text == "Back again."


def test_a_cancelled_message_queued_behind_a_generation_runs_without_asking_the_model(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(60)], chunk_delay_s=0.05)
    driver = on_standin(make_shard, flow_dir, standin)
    writing = threading.Event()
    driver.shard.on_delta = lambda _origin, _stream, _seq, _text: writing.set()
    driver.say("c1", "hello")
    running, _ = driver.start("c1", "explain everything", wants_deltas=True)
    queued, _ = driver.start("c1", "explain it again", wants_deltas=True)  # in the mailbox
    assert queued not in driver.outcomes
    assert writing.wait(WAIT_S)  # the first generation is under way
    assert driver.shard.cancel_generation(SENDER, queued, 0)  # marked, in its place
    assert driver.shard.cancel_generation(SENDER, running, 0)
    first, second = driver.wait(running), driver.wait(queued)
    for result in (first, second):
        assert result.state.current_state == "sorry" and result.response.text == "The model is away."
        assert "generate_failed:cancelled" in result.actions_performed
    assert second.state.message_count == first.state.message_count + 1  # applied, once
    (request,) = standin.received()  # the queued message's turn asked the model nothing
    assert request.ended.wait(WAIT_S) and request.left and not request.completed
    # Its mark went with it: the conversation's next message asks the model again.
    standin.script = Script(text="Back again.")
    assert driver.say("c1", "explain once more").response.text == "Back again."
    assert len(standin.received()) == 2


# A turn that asks a webhook, then the model.
LOOKUP_FLOW = """\
flow: lookup
settings:
  start: ask
intents:
  explain: {keywords: [explain]}
routes:
  - {intent: explain, to: answer}
states:
  ask:
    on_enter: [{say: {text: "Ask me."}}]
  answer:
    on_enter:
      - webhook: {name: price, store_as: quote}
      - generate: {prompt: "Explain {{ message }}", on_failure: sorry}
  sorry:
    on_enter: [{say: {text: "The model is away."}}]
"""


def test_a_cancel_while_the_turn_waits_on_a_webhook_leaves_its_later_generation_unasked(
    make_shard: ShardMaker, tmp_path: Path, standin: ModelStandIn
) -> None:
    flows = tmp_path / "lookup"
    flows.mkdir()
    (flows / "lookup.yaml").write_text(LOOKUP_FLOW)
    prices = GatedPrices(hold_s=WAIT_S).start()
    try:
        provider = ModelProvider("standin", standin.url, "standin-model")
        shard = make_shard(
            flow_dirs=(str(flows),),
            models=ModelSettings((provider,)),
            webhooks=(WebhookTarget("price", prices.url, WAIT_S, 0),),
        )
        driver = Driver(shard, flow="lookup")
        assert driver.say("c1", "hello").response.text == "Ask me."
        prices.hold()
        batch_id, _ = driver.start("c1", "explain the price", wants_deltas=True)
        assert prices.asked.acquire(timeout=WAIT_S)  # the turn waits on the webhook
        assert driver.shard.cancel_generation(SENDER, batch_id, 0)
        prices.release()
        result = driver.wait(batch_id)
    finally:
        prices.stop()
    assert result.state.current_state == "sorry" and result.response.text == "The model is away."
    assert "generate_failed:cancelled" in result.actions_performed
    assert standin.received() == []  # nobody was left to read it: the model was not asked


def test_a_generation_ends_when_its_callers_deadline_passes(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(200)], chunk_delay_s=0.05)
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hello")
    batch_id, _ = driver.start("c1", "explain at length", budget_s=0.5)
    result = driver.wait(batch_id)
    assert result.state.current_state == "sorry" and result.response.text == "The model is away."
    assert "generate_failed:cancelled" in result.actions_performed
    (request,) = standin.received()
    assert request.ended.wait(WAIT_S)
    assert request.left and not request.completed and request.chunks_sent < 200
    assert driver.state("c1") == "sorry"  # stored, like any turn that took its failure route


def test_a_call_dropped_by_the_pool_shutting_down_leaves_the_others_to_finish(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    gate = threading.Event()
    standin.script = Script(text="We open at nine.", gate=gate)
    provider = ModelProvider("standin", standin.url, "standin-model")
    models = ModelSettings((provider,), max_concurrent=1)
    driver = Driver(make_shard(flow_dirs=(str(flow_dir),), models=models))
    driver.say("c1", "hello")
    driver.say("c2", "hello")
    running, _ = driver.start("c1", "explain the hours")
    give_up = time.monotonic() + WAIT_S
    while not standin.received():  # the pool's one thread makes this call...
        assert time.monotonic() < give_up, "the stand-in got no request"
        time.sleep(0.01)
    dropped, _ = driver.start("c2", "explain the prices")  # ...and this one waits for it
    driver.shard.models.close()  # shutting down: the call not started is dropped
    gate.set()
    # The running call ends (answered, or failed as its client closed) and its turn is finished.
    assert driver.wait(running).response.text in ("We open at nine.", "The model is away.")
    assert dropped not in driver.outcomes and len(standin.received()) == 1


# Failures -----------------------------------------------------------------------------------


FAILURES: dict[str, tuple[Script, dict[str, Any], str, int]] = {
    "slow": (Script(first_delay_s=3.0), {"timeout_s": 0.3, "retries": 0}, "timeout", 1),
    "429": (Script(fail_status=429), {"retries": 1}, "http_429", 2),
    "500 every time": (Script(fail_status=500), {"retries": 2}, "http_500", 3),
    "cut": (Script(text="one two three four", cut_after=2), {"retries": 2}, "cut", 1),
    "malformed": (Script(text="one two three", malformed_after=1), {"retries": 2}, "malformed", 1),
}


@pytest.mark.parametrize("case", list(FAILURES), ids=list(FAILURES))
def test_each_failure_takes_the_flows_failure_route_and_the_conversation_goes_on(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn, case: str
) -> None:
    script, provider, reason, attempts = FAILURES[case]
    standin.script = script
    driver = on_standin(make_shard, flow_dir, standin, **provider)
    driver.say("c1", "hello")
    result = driver.say("c1", "explain something")
    assert result.state.current_state == "sorry", result.actions_performed
    assert result.response.text == "The model is away."
    assert f"generate_failed:{reason}" in result.actions_performed
    assert len(standin.received()) == attempts
    assert driver.state("c1") == "sorry"  # as stored
    standin.script = Script(text="Fine now.")
    after = driver.say("c1", "explain again")
    assert (after.state.current_state, after.response.text) == ("explain", "Fine now.")
    assert after.state.message_count == 3


def test_a_500_then_an_answer_is_retried_with_the_same_idempotency_key(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(text="Second time.", fail_status=500, fail_times=1)
    driver = on_standin(make_shard, flow_dir, standin, retries=1)
    driver.say("c1", "hello")
    result = driver.say("c1", "explain")
    assert (result.state.current_state, result.response.text) == ("explain", "Second time.")
    first, second = standin.received()
    assert first.header("Idempotency-Key") == second.header("Idempotency-Key") != ""
    assert first.body == second.body


def test_without_a_provider_a_generate_step_fails_at_once_and_the_fallback_is_the_old_one(
    make_shard: ShardMaker, flow_dir: Path
) -> None:
    driver = Driver(make_shard(flow_dirs=(str(flow_dir),)))
    driver.say("c1", "hello")
    batch_id, _ = driver.start("c1", "explain")
    assert batch_id in driver.outcomes  # answered in its own round: nothing to wait for
    result = driver.wait(batch_id)
    assert result.state.current_state == "sorry"
    assert "generate_failed:no_provider" in result.actions_performed
    fallback = driver.say("c1", "what is this?")
    assert fallback.response.text == "Sorry, I didn't get that."
    assert fallback.actions_performed == ["generate_failed:no_provider", "fallback"]


def test_a_said_step_without_a_route_says_a_default_when_it_fails(
    make_shard: ShardMaker, tmp_path: Path
) -> None:
    flows = tmp_path / "plain"
    flows.mkdir()
    (flows / "helper.yaml").write_text(FLOW.replace("          on_failure: sorry\n", "", 1))
    driver = Driver(make_shard(flow_dirs=(str(flows),)))
    driver.say("c1", "hello")
    result = driver.say("c1", "explain")
    assert (result.state.current_state, result.response.text) == ("explain", GENERATE_FAILED)


# Masking ------------------------------------------------------------------------------------


def test_a_sensitive_slot_and_masked_text_never_reach_the_provider(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(text="A summary.")
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hello")
    assert driver.say("c1", "my card please").response.text == "Your card number?"
    noted = driver.say("c1", f"it is {CARD}, write to {EMAIL}")
    assert noted.response.text == "Noted: A summary." and noted.state.slots["card"] == CARD
    said = driver.say("c1", f"explain why {CARD} needs {EMAIL}")  # a generated answer, said
    assert said.response.text == "A summary."
    fallback = driver.say("c1", f"what about {CARD}?")  # nothing matches: the generative fallback
    assert "generative_fallback" in fallback.actions_performed
    requests = standin.received()
    assert len(requests) == 3
    sent = standin.everything_sent()
    assert CARD not in sent and EMAIL not in sent and "jo@" not in sent
    # A template sees the slot as ****; wherever else its value turns up (a variable, the message),
    # it is masked as the store masks it: a long value keeps its last four characters.
    summary = requests[0].body["messages"][-1]["content"]
    assert summary == "Card ****, copy ****1111, said it is ****1111, write to ****.com"
    # The conversation's earlier texts went along, masked as the store keeps them.
    history = [m["content"] for m in requests[2].body["messages"][1:-1]]
    assert "it is ****1111, write to ****.com" in history and "Noted: A summary." in history
    # The fallback is grounded on the flow's knowledge.
    assert "We open at nine." in requests[2].body["messages"][0]["content"]


# Budgets ----------------------------------------------------------------------------------------


def test_a_tenants_budget_is_spent_then_refused_politely_and_other_tenants_go_on(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(
        text="Answer.", usage={"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    )
    budget = TokenBudget(tokens_per_day=30, tenants=(("unlimited", 0),))
    driver = on_standin(make_shard, flow_dir, standin, budget=budget)
    assert driver.say("a1", "explain").response.text.endswith("Answer.")
    refused = driver.say("a2", "explain too")
    assert refused.state.current_state == "sorry"
    assert "generate_failed:budget" in refused.actions_performed
    assert BUDGET_SPENT in refused.response.text
    assert len(standin.received()) == 1  # the refused call never left
    other = driver.say("b1", "explain", tenant="other")
    assert other.response.text.endswith("Answer.")
    for _ in range(3):
        assert driver.say("u1", "explain", tenant="unlimited").response.text.endswith("Answer.")
    today = utc_day(time.time())
    store = driver.shard.store
    driver.poll()  # what the last call spent goes to the store with the shard's next pass
    assert store.model_tokens_used(TENANT, today) == 30
    assert store.model_tokens_used("other", today) == 30
    assert store.model_tokens_used("unlimited", today) == 90


def test_a_budget_counts_what_every_shard_of_the_store_spent(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(text="Answer.")
    budget = TokenBudget(tokens_per_day=30)
    first = on_standin(make_shard, flow_dir, standin, budget=budget)
    assert first.say("a1", "explain").response.text.endswith("Answer.")
    first.poll()
    first.shard.close()  # its virtual shards go to the next shard: the count stays in the store
    second = on_standin(make_shard, flow_dir, standin, budget=budget)
    refused = second.say("a2", "explain")
    assert "generate_failed:budget" in refused.actions_performed
    assert len(standin.received()) == 1


# One conversation's model call holds only that conversation ------------------------------------


def test_a_slow_generation_holds_its_own_conversation_only(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    gate = threading.Event()

    def choose(body: dict[str, Any]) -> Script:
        asked = str(body["messages"][-1]["content"])
        return Script(text="Slow answer.", gate=gate) if "slowly" in asked else Script(text="Quick answer.")

    standin.choose = choose
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("slow", "hello")
    driver.say("quick", "hello")
    slow_batch, _ = driver.start("slow", "explain slowly")
    queued_batch, _ = driver.start("slow", "explain again")  # waits behind it, in its mailbox
    assert driver.shard.status().waiting_on_webhooks == 1
    quick = driver.say("quick", "explain quickly")  # another conversation of the same shard
    assert quick.response.text == "Quick answer."
    (slow_request,) = [r for r in standin.received() if "slowly" in r.user_text]
    assert not slow_request.ended.is_set()  # the slow call was still going when the quick one answered
    assert slow_batch not in driver.outcomes and queued_batch not in driver.outcomes
    gate.set()
    assert driver.wait(slow_batch).response.text == "Slow answer."
    assert driver.wait(queued_batch).response.text == "Quick answer."


def test_abandoning_a_generation_ends_its_request(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(60)], chunk_delay_s=0.05)
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hello")
    batch_id, _ = driver.start("c1", "explain at length")
    give_up = time.monotonic() + WAIT_S
    while not standin.received() or standin.received()[0].chunks_sent < 2:
        assert time.monotonic() < give_up
        time.sleep(0.01)
    abandoned = driver.shard.abandon_webhook(ConversationKey(TENANT, "c1"), "operator-1", "too long")
    assert abandoned.done and abandoned.state == "sorry" and abandoned.webhook == "generate:default"
    assert "generate_failed:abandoned" in abandoned.actions
    for _, (late_batch, _, wire) in driver.shard.take_moved():
        driver.outcomes[late_batch] = wire
    result = driver.wait(batch_id)
    assert result.state.current_state == "sorry"
    (request,) = standin.received()
    assert request.ended.wait(WAIT_S) and request.left


def test_a_flow_naming_a_provider_the_config_lacks_is_not_loaded(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    named = FLOW.replace('prompt: "Explain this', 'provider: nowhere\n          prompt: "Explain this')
    (flow_dir / "helper.yaml").write_text(named)
    driver = on_standin(make_shard, flow_dir, standin)
    with pytest.raises(UnknownFlow):
        driver.shard.flows.by_id("helper", TENANT)
    (flow_dir / "helper.yaml").write_text(named.replace("nowhere", "standin"))
    assert driver.shard.reload_flows().loaded
    assert driver.shard.flows.by_id("helper", TENANT).flow_id == "helper"
