"""``confab chat`` in a pseudo-terminal against a real server: the pizza dialogue, commands, reconnect."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.tools.price_service import PriceService
from tests.support import (
    ServerProcess,
    exit_status,
    free_port,
    plain_greeting_id,
    price_webhook_config,
    spawn_confab,
    type_line,
)

pytestmark = pytest.mark.integration  # every test here starts a server or a process

PROMPT = "you> "


def spawn_chat(address: str, conversation: str, *extra: str) -> pexpect.spawn[str]:
    args = ["chat", "--target", address, "--tenant", "acme", "--conversation", conversation]
    child = spawn_confab(*args, "--flow", "pizza", *extra)
    child.expect(f"connected to {re.escape(address)}; conversation {conversation}")
    child.expect_exact(PROMPT)
    return child


def say(child: pexpect.spawn[str], line: str, *expected: str) -> str:
    """Type ``line``; expect each of ``expected`` in order, then the prompt; return what came."""
    return type_line(child, line, *expected, prompt=PROMPT)


def server_config(path: Path, prices: PriceService) -> Path:
    """The pizza flow's price webhook pointed at ``prices``; a short shutdown grace, because
    an open stream holds a SIGTERM'd server for the whole grace."""
    return price_webhook_config(
        path, prices.url, timeout_s=2.0, more_yaml="server: {shutdown_grace_s: 1.0}\n"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prices: PriceService) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("chat")
    config = server_config(directory / "confab.yaml", prices)
    process = ServerProcess(directory / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        yield process
    finally:
        process.stop()


def test_pizza_dialogue(server: ServerProcess) -> None:
    conversation = plain_greeting_id("chat-pizza")
    child = spawn_chat(server.address, conversation)
    try:
        say(
            child,
            "hi",
            "bot> Hi there! Would you like to order a pizza?",
            "[1] Order a pizza",
            "[2] Talk to a person",
            "-- state: (new) -> greet",
        )
        say(child, "1", "bot> Which size would you like", "-- state: greet -> take_order")
        say(
            child,
            "2 large please",
            "bot> 2 large pizzas for 24",  # the price service's total: 2 x 12
            "EUR. Shall I place the order?",
            "[1] Yes",
            "[2] No, change it",
            "-- state: take_order -> confirm",
        )
        say(child, "1", "bot> Thank you! Your order is on its way.", "-- state: confirm -> ordered")
        say(child, "/state", "-- state ordered | flow pizza@", "| 4 messages |")
        say(child, "/help", "/reset", "/quit")
        child.sendline("/quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


def test_handoff_reset_and_ctrl_c(server: ServerProcess) -> None:
    conversation = plain_greeting_id("chat-handoff")
    child = spawn_chat(server.address, conversation)
    try:
        say(child, "hello", "[2] Talk to a person")
        say(
            child,
            "2",
            "bot> A colleague will answer you here shortly.",
            "== handed over to a person",
            "-- state: greet -> human",
        )
        # A person answers, and an operator hands it back: both show at once, nothing typed.
        with server.channel() as channel:
            operators = admin_grpc.AdminStub(channel)
            operators.SendAgentMessage(
                admin.AgentMessage(
                    tenant_id="acme", conversation_id=conversation, text="Hi, Alice here.", agent="Alice"
                )
            )
            child.expect_exact("Alice (person): Hi, Alice here.")
            operators.ResumeConversation(
                admin.ConversationAction(tenant_id="acme", conversation_id=conversation, reason="done")
            )
            child.expect_exact("-- an operator did resume; the conversation is in state begin")
        # No choices on screen since the resume: text, read as a session's first message (greeted).
        say(child, "2", "[2] Talk to a person", "-- state: begin -> greet")
        say(child, "2", "== handed over to a person")
        say(child, "/reset", "-- reset (it was in state human)")
        # A number with no choices on screen is text: after the reset the flow greets anew.
        say(child, "7", "[1] Order a pizza", "-- state: (new) -> greet")
        say(child, "/nonsense", "unknown command /nonsense")
        child.sendintr()
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


def test_reconnects_and_resumes_the_conversation(tmp_path: Path, prices: PriceService) -> None:
    config = server_config(tmp_path / "confab.yaml", prices)
    port = free_port()

    def server() -> ServerProcess:
        return ServerProcess(
            tmp_path / "data", shards=1, listen=f"127.0.0.1:{port}", extra=["--config", str(config)]
        )

    first, second = server().start(), server()
    conversation = plain_greeting_id("chat-reconnect")
    child = spawn_chat(first.address, conversation, "--heartbeat", "1")
    try:
        say(child, "hi", "[1] Order a pizza")
        say(child, "1", "Which size", "-- state: greet -> take_order")
        say(child, "/state", "-- state take_order", "| 2 messages |")

        first.stop()
        child.expect_exact("!! connection lost")
        # Typed while the server is down: held, then sent once the stream is back.
        child.sendline("2 large please")
        child.expect_exact("-- not connected: the message will be sent once the stream is back")
        second.start()
        child.expect(
            f"-- reconnected after [0-9.]+ s; conversation {conversation} continues in state take_order"
        )
        child.expect_exact("(2 messages so far)")
        child.expect_exact("Shall I place the order?")
        child.expect_exact("-- state: take_order -> confirm")
        child.expect_exact(PROMPT)
        say(child, "/state", "-- state confirm", "| 3 messages |", "slots: quantity=2 size=large")
        say(child, "1", "on its way", "-- state: confirm -> ordered")
        child.sendeof()
        assert exit_status(child) == 0
    finally:
        child.close(force=True)
        first.stop()
        second.stop()
