"""Webhooks called by flows: the request body, its idempotency key (body and header, the same on
every retry), slot checks by webhook, and turns replayed with the answer taking the same steps."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from confab.runtime.flows import FlowReply, NeedsWebhook
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.flows.language.loader import load_flow_file
from confab.runtime.model import Content, ConversationKey, ConversationState, InboundMessage, JsonDict
from confab.runtime.webhooks import IDEMPOTENCY_HEADER, WebhookClient, WebhookTarget

KEY = ConversationKey("bank", "c-1")

CARDS = """\
flow: cards
settings: {start: ask}
slots:
  last4:
    type: regex
    pattern: '\\b(?P<value>\\d{4})\\b'
    prompt: "Which card? The last four digits, please."
    validate:
      - webhook: card_lookup
        on_failure: unavailable
  reason: {type: text, prompt: "Why should it be blocked?"}
states:
  ask:
    collect: [last4, reason]
    transitions:
      - to: done
        actions: [{webhook: {name: block_card, store_as: blocked, on_failure: unavailable}}]
  done:
    terminal: true
    on_enter: [{say: {text: "Card {{ slots.last4 }} is blocked ({{ variables.blocked.reference }})."}}]
  unavailable:
    terminal: true
    on_enter: [{say: {text: "Sorry, I can't reach the card service."}}]
"""


def message(text: str) -> InboundMessage:
    return InboundMessage("u", Content(text=text))


def play(flow: DeclarativeFlow, state: ConversationState, text: str, answers: dict[str, JsonDict]) -> Any:
    """Run a turn as the shard does: each NeedsWebhook is answered from ``answers`` (by webhook
    name) and the turn is run again from the same state; returns the reply and the calls made."""
    results: dict[str, JsonDict] = {}
    calls = []
    while True:
        attempt = ConversationState.from_wire(json.loads(json.dumps(state.to_wire())))
        try:
            reply: FlowReply = flow.handle(attempt, message(text), 100.0, results)
        except NeedsWebhook as need:
            calls.append(need.call)
            results[need.call.key] = answers[need.call.name]
            continue
        for name in (f.name for f in dataclasses.fields(ConversationState)):
            setattr(state, name, getattr(attempt, name))  # the turn went through: keep its state
        return reply, calls


@pytest.fixture()
def cards(tmp_path: Path) -> DeclarativeFlow:
    path = tmp_path / "cards.yaml"
    path.write_text(CARDS)
    return DeclarativeFlow(load_flow_file(path))


def test_the_body_carries_an_idempotency_key_per_call_and_turn(cards: DeclarativeFlow) -> None:
    state = cards.start(0.0, KEY)
    play(cards, state, "hi", {})
    valid = {"ok": True, "body": {"valid": True}}
    _reply, calls = play(cards, state, "1234", {"card_lookup": valid})
    (lookup,) = calls
    body = lookup.body
    assert (body["webhook"], body["slot"], body["value"]) == ("card_lookup", "last4", "1234")
    assert body["state"] == "ask"
    assert body["message"] == {"text": "1234", "payload": "", "channel": "web", "language": ""}
    assert len(body["idempotency_key"]) == 32
    state.message_count += 1  # the actor counts the turn
    reply, calls = play(cards, state, "stolen", {"block_card": {"ok": True, "body": {"reference": "B-7"}}})
    assert [c.name for c in calls] == ["block_card"] and "B-7" in reply.response.text
    assert calls[0].body["idempotency_key"] != body["idempotency_key"]


def test_the_key_is_the_same_when_a_turn_is_run_again_and_differs_between_conversations(
    cards: DeclarativeFlow,
) -> None:
    def first_call(key: ConversationKey) -> str:
        state = cards.start(5.0, key)
        cards.handle(state, message("hi"), 5.0)
        with pytest.raises(NeedsWebhook) as needed:
            cards.handle(state, message("1234"), 6.0)
        return str(needed.value.call.body["idempotency_key"])

    assert first_call(KEY) == first_call(KEY)  # a replay after a crash asks with the same key
    assert first_call(KEY) != first_call(ConversationKey("bank", "c-2"))


def test_a_check_by_webhook_rejects_with_its_message_then_re_asks(cards: DeclarativeFlow) -> None:
    state = cards.start(0.0, KEY)
    play(cards, state, "hi", {})
    rejected = {"ok": True, "body": {"valid": False, "message": "That card isn't on your account."}}
    reply, _ = play(cards, state, "9999", {"card_lookup": rejected})
    said = "That card isn't on your account.\nWhich card? The last four digits, please."
    assert reply.response.text == said
    assert "rejected:last4" in reply.actions_performed and "last4" not in state.slots
    accepted = {"ok": True, "body": {"valid": True, "value": "4321"}}  # the service may normalise
    reply, _ = play(cards, state, "it's 1234", {"card_lookup": accepted})
    assert state.slots["last4"] == "4321" and "Why should it be blocked" in reply.response.text


def test_a_failing_check_takes_its_failure_route(cards: DeclarativeFlow) -> None:
    state = cards.start(0.0, KEY)
    play(cards, state, "hi", {})
    reply, _ = play(cards, state, "1234", {"card_lookup": {"ok": False, "error": "HTTP 503"}})
    assert state.current_state == "unavailable" and "can't reach" in reply.response.text


def test_replaying_a_turn_with_its_answers_takes_the_same_steps(cards: DeclarativeFlow) -> None:
    answers = {"card_lookup": {"ok": True, "body": {"valid": True}}, "block_card": {"ok": True, "body": {}}}
    runs = []
    for _ in range(2):
        state = cards.start(0.0, KEY)
        play(cards, state, "hi", {})
        reply, calls = play(cards, state, "1234 because it was stolen", answers)
        runs.append((reply.actions_performed, [c.body for c in calls], state.to_wire()))
    assert runs[0] == runs[1]


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str | None, JsonDict]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.headers.get(IDEMPOTENCY_HEADER), body))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        answer = b'{"blocked": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/block"
    server.shutdown()
    server.server_close()


def test_retries_send_the_same_idempotency_key_header(recorder: str) -> None:
    client = WebhookClient([WebhookTarget("block_card", recorder, timeout_s=2.0, retries=2)])
    try:
        _Recorder.fail_first = 2
        result = client.call("block_card", {"idempotency_key": "k-1", "slots": {}}).result(timeout=10)
    finally:
        client.close()
    assert result.pop("elapsed_ms") > 0  # every attempt, for analytics
    assert result == {"ok": True, "status": 200, "body": {"blocked": True}}
    assert [key for key, _ in _Recorder.seen] == ["k-1", "k-1", "k-1"]
    assert all(body["idempotency_key"] == "k-1" for _, body in _Recorder.seen)
