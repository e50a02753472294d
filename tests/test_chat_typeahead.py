"""Lines typed ahead in ``confab chat``: finished while a reply was still to come, they say the turn
of the reply that was on the screen then, and a number in them goes as text, for the server to
read against the choices shown then. The bookkeeping on a real pseudo-terminal, then the chat in
one against a real server whose price webhook is held while the user types."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from confab.tools.chat.typeahead import TypeAhead
from tests.support import (
    GatedPrices,
    ServerProcess,
    exit_status,
    pizza_server,
    plain_greeting_id,
    spawn_confab,
    type_line,
)

WAIT_S = 20.0
PROMPT = "you> "


class Terminal:
    """A pseudo-terminal in its usual (canonical) mode: what is written to its master side waits,
    line by line, to be read from its slave side, as what a user types waits for a program."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self._unfinished = 0  # bytes typed since the last Enter

    def type(self, text: str) -> None:
        """Type ``text``; return once its finished lines wait to be read (the kernel hands what
        reaches a pseudo-terminal to its reading side a moment later, not within the write)."""
        typed = text.encode()
        before = self._waiting()
        os.write(self.master, typed)
        finished = typed.rfind(b"\n") + 1
        expected = before + (self._unfinished + finished if finished else 0)
        self._unfinished = len(typed) - finished if finished else self._unfinished + len(typed)
        deadline = time.monotonic() + WAIT_S
        while self._waiting() < expected:
            assert time.monotonic() < deadline, "the typed lines never reached the terminal's reader"
            time.sleep(0.01)

    def _waiting(self) -> int:
        count: int = struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0]
        return count

    def read_line(self) -> str:
        line = os.read(self.slave, 1024).decode()  # canonical mode: one finished line at most
        assert line.endswith("\n")
        return line[:-1]

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture()
def terminal() -> Iterator[Terminal]:
    tty = Terminal()
    try:
        yield tty
    finally:
        tty.close()


def typeahead_on(terminal: Terminal) -> TypeAhead:
    with open(terminal.slave, encoding="utf-8", closefd=False) as stream:
        typeahead = TypeAhead.of(stream)
    assert typeahead is not None
    return typeahead


def test_lines_finished_before_a_reply_say_the_turn_shown_before_it(terminal: Terminal) -> None:
    typeahead = typeahead_on(terminal)
    typeahead.reply_coming(1)  # nothing waits: nothing was typed ahead
    terminal.type("yes\n1\n")  # while the reply to the next message is still to come
    typeahead.reply_coming(2)
    assert typeahead.line_read(terminal.read_line()) == 1
    assert typeahead.line_read(terminal.read_line()) == 1
    terminal.type("yes\n")  # with the reply of turn 2 on the screen
    assert typeahead.line_read(terminal.read_line()) is None


def test_lines_typed_ahead_keep_their_turn_through_the_replies_that_follow(terminal: Terminal) -> None:
    typeahead = typeahead_on(terminal)
    typeahead.reply_coming(3)
    terminal.type("a\n")
    typeahead.reply_coming(4)  # "a" waited when 4 came
    terminal.type("bé\n")
    typeahead.reply_coming(5)  # "a" still waits (turn 3 seen); "bé" waited when 5 came (turn 4)
    assert typeahead.line_read(terminal.read_line()) == 3
    assert typeahead.line_read(terminal.read_line()) == 4  # its bytes, not its characters, counted
    assert typeahead.line_read("") is None


def test_an_unfinished_line_is_not_typed_ahead(terminal: Terminal) -> None:
    typeahead = typeahead_on(terminal)
    typeahead.reply_coming(1)
    terminal.type("ye")  # Enter not pressed yet when the reply came
    typeahead.reply_coming(2)
    terminal.type("s\n")
    assert typeahead.line_read(terminal.read_line()) is None


def test_before_any_reply_shown_a_line_typed_ahead_saw_at_most_the_one_before(terminal: Terminal) -> None:
    typeahead = typeahead_on(terminal)
    terminal.type("hello\n")
    typeahead.reply_coming(7)  # a conversation that began elsewhere: nothing shown here yet
    assert typeahead.line_read(terminal.read_line()) == 6


def test_after_a_reset_turns_count_again(terminal: Terminal) -> None:
    typeahead = typeahead_on(terminal)
    typeahead.reply_coming(5)
    typeahead.forget()
    terminal.type("hi\n")
    typeahead.reply_coming(1)  # the reset conversation's first reply
    assert typeahead.line_read(terminal.read_line()) == 0


def test_only_a_terminal_has_lines_typed_ahead(tmp_path: Path) -> None:
    piped = tmp_path / "lines.txt"
    piped.write_text("hi\nyes\n")
    with piped.open(encoding="utf-8") as stream:
        assert TypeAhead.of(stream) is None


# --- confab chat in a pseudo-terminal --------------------------------------------------------------


@pytest.fixture(scope="module")
def prices() -> GatedPrices:
    return GatedPrices(WAIT_S)  # started and stopped with the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prices: GatedPrices) -> Iterator[ServerProcess]:
    # A short shutdown grace: an open stream holds a SIGTERM'd server for the whole grace.
    grace = "server: {shutdown_grace_s: 1.0}\n"
    directory = tmp_path_factory.mktemp("chat-typeahead")
    with pizza_server(directory, timeout_s=WAIT_S, prices=prices, more_yaml=grace) as (process, _):
        yield process


def spawn_chat(address: str, conversation: str) -> pexpect.spawn[str]:
    args = ["chat", "--target", address, "--tenant", "acme", "--conversation", conversation]
    child = spawn_confab(*args, "--flow", "pizza")
    child.expect(f"connected to {re.escape(address)}; conversation {conversation}")
    child.expect_exact(PROMPT)
    return child


def order_while_typing(child: pexpect.spawn[str], prices: GatedPrices, typed_ahead: str) -> None:
    """Order two large pizzas and type ``typed_ahead`` while the price is asked for: it is
    finished (Enter pressed) before the question "Shall I place the order?" shows."""
    type_line(child, "hi", "Would you like to order a pizza?", "[1] Order a pizza", prompt=PROMPT)
    prices.hold()
    try:
        child.sendline("2 large pizzas")
        assert prices.asked.acquire(timeout=WAIT_S)  # the turn waits on the price webhook now
        child.sendline(typed_ahead)
    finally:
        prices.release()
    child.expect_exact("2 large pizzas for 24.00 EUR. Shall I place the order?")
    child.expect_exact("[1] Yes")


@pytest.mark.integration
def test_a_yes_typed_while_the_price_was_asked_does_not_order(
    server: ServerProcess, prices: GatedPrices
) -> None:
    child = spawn_chat(server.address, plain_greeting_id("chat-ahead-yes"))
    try:
        order_while_typing(child, prices, "yes")
        # The "yes" goes out once the question is shown, saying its user had seen the greeting only.
        child.expect_exact("bot> Just to be sure:")
        child.expect_exact("2 large pizzas for 24.00 EUR. Shall I place the order?")
        child.expect_exact(PROMPT)
        assert "on its way" not in str(child.before)
        # Typed with the question on the screen, the same word orders.
        type_line(
            child,
            "yes",
            "bot> Thank you! Your order is on its way.",
            "-- state: confirm -> ordered",
            prompt=PROMPT,
        )
        child.sendline("/quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


@pytest.mark.integration
def test_a_number_typed_ahead_is_not_the_new_questions_choice(
    server: ServerProcess, prices: GatedPrices
) -> None:
    child = spawn_chat(server.address, plain_greeting_id("chat-ahead-number"))
    try:
        # "1" typed with the greeting on the screen: its [1] was "Order a pizza", not the new "Yes".
        order_while_typing(child, prices, "1")
        child.expect_exact("bot> Just to be sure:")
        child.expect_exact(PROMPT)
        assert "on its way" not in str(child.before)
        type_line(child, "1", "bot> Thank you! Your order is on its way.", prompt=PROMPT)  # [1] Yes now
        child.sendline("/quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)
