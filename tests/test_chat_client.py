"""The chat client from Python, without a terminal, against real servers: a dialogue, a restart, a refusal."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.tools.chat import ChatClient, ChatFailed, ChatListener, ChatOptions, Turn
from confab.tools.price_service import PriceService
from tests.support import ServerProcess, free_port, plain_greeting_id, price_webhook_config

pytestmark = pytest.mark.integration  # every test here starts a server

WAIT_S = 15.0


class Recorder(ChatListener):
    """Every piece of news from the link, in order, as (what, details)."""

    def __init__(self) -> None:
        self.news: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.reconnected = threading.Event()
        self.lost = threading.Event()

    def _note(self, what: str, details: Any) -> None:
        with self.lock:
            self.news.append((what, details))

    def kinds(self) -> list[str]:
        with self.lock:
            return [what for what, _ in self.news]

    def connected(self, state: pb.ConversationState | None, reconnected_after_s: float | None) -> None:
        self._note("connected", (state.current_state if state else None, reconnected_after_s))
        if reconnected_after_s is not None:
            self.reconnected.set()

    def disconnected(self, reason: str, unconfirmed: list[Turn]) -> None:
        self._note("disconnected", [t.text for t in unconfirmed])
        self.lost.set()

    def held(self, turn: Turn) -> None:
        self._note("held", turn.text)

    def replied(self, turn: Turn | None, reply: pb.ProcessMessageResponse) -> None:
        self._note("replied", reply.response.text)

    def state_changed(self, before: str, after: str) -> None:
        self._note("state_changed", (before, after))

    def failed(self, message: str) -> None:
        self._note("failed", message)


def pizza_server(directory: Path, prices: PriceService, listen: str = "127.0.0.1:0") -> ServerProcess:
    # A short shutdown grace: an open stream holds a SIGTERM'd server for the whole grace.
    config = price_webhook_config(
        directory / "confab.yaml", prices.url, more_yaml="server: {shutdown_grace_s: 1.0}\n"
    )
    return ServerProcess(directory / "data", shards=1, listen=listen, extra=["--config", str(config)])


def options(address: str, conversation: str, **more: Any) -> ChatOptions:
    return ChatOptions(target=address, tenant="acme", conversation_id=conversation, flow="pizza", **more)


def answered(client: ChatClient, turn: Turn) -> pb.ProcessMessageResponse:
    assert client.wait(turn, WAIT_S), f"no answer to {turn.text!r}"
    assert turn.reply is not None, (turn.error, turn.lost, client.fatal)
    return turn.reply


def test_a_dialogue_from_python(tmp_path: Path, prices: PriceService) -> None:
    server = pizza_server(tmp_path, prices).start()
    recorder = Recorder()
    conversation = plain_greeting_id("client-pizza")
    try:
        with ChatClient(options(server.address, conversation), recorder) as client:
            assert client.wait_connected(WAIT_S) and client.connected
            hi = client.send("hi")
            reply = answered(client, hi)
            assert reply.response.text.startswith("Hi there! Would you like to order a pizza?")
            assert hi.state_change == ("", "greet")
            order = reply.response.quick_replies[0]
            assert order.title == "Order a pizza"
            picked = client.send(order.title, order.payload, quick_reply=True)
            assert "Which size" in answered(client, picked).response.text
            assert picked.state_change == ("greet", "take_order")
            state = client.get_state()
            assert state is not None and (state.current_state, state.message_count) == ("take_order", 2)
            assert client.reset() == "take_order"
            assert client.get_state() is not None
        assert recorder.kinds() == [
            "connected",
            "replied",
            "state_changed",
            "replied",
            "state_changed",
        ]
        assert recorder.news[0] == ("connected", (None, None))  # a new conversation, a first connection
    finally:
        server.stop()


def test_the_client_reconnects_and_sends_what_was_held(tmp_path: Path, prices: PriceService) -> None:
    listen = f"127.0.0.1:{free_port()}"
    first, second = pizza_server(tmp_path, prices, listen).start(), pizza_server(tmp_path, prices, listen)
    recorder = Recorder()
    conversation = plain_greeting_id("client-reconnect")
    try:
        with ChatClient(options(first.address, conversation, heartbeat_s=1.0), recorder) as client:
            assert client.wait_connected(WAIT_S)
            greeting = answered(client, client.send("hi")).response.quick_replies[0]
            picked = client.send(greeting.title, greeting.payload, quick_reply=True)
            assert answered(client, picked).current_state == "take_order"

            first.stop()
            assert recorder.lost.wait(WAIT_S) and not client.connected
            held = client.send("2 large please")
            assert held.sent_at is None  # held, not sent
            second.start()
            assert recorder.reconnected.wait(WAIT_S)
            reply = answered(client, held)
            assert "Shall I place the order?" in reply.response.text
            assert held.state_change == ("take_order", "confirm")
            assert reply.conversation_state.message_count == 3  # the conversation went on where it was
        kinds = recorder.kinds()
        assert kinds.index("disconnected") < kinds.index("held") < kinds.index("connected", 1)
        reconnect = [details for what, details in recorder.news if what == "connected"][1]
        assert reconnect[0] == "take_order" and reconnect[1] > 0
        assert ("disconnected", []) in recorder.news  # nothing was in flight when the server went
    finally:
        first.stop()
        second.stop()


def test_a_refused_stream_fails_the_client(tmp_path: Path, prices: PriceService) -> None:
    server = pizza_server(tmp_path, prices).start()
    recorder = Recorder()
    try:
        refused = ChatOptions(target=server.address, tenant="acme", conversation_id="bad\nid")
        with ChatClient(refused, recorder) as client, pytest.raises(ChatFailed, match="INVALID_ARGUMENT"):
            client.wait_connected(WAIT_S)
        assert recorder.kinds() == ["failed"]
    finally:
        server.stop()


def test_the_client_library_loads_no_terminal_code() -> None:
    probe = "import sys, confab.tools.chat; print(sorted(m for m in sys.modules if m in WATCHED))"
    watched = "WATCHED = {'readline', 'prompt_toolkit', 'confab.tools.chat.terminal'}; "
    loaded = subprocess.run(
        [sys.executable, "-c", watched + probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert loaded.stdout.strip() == "[]"
