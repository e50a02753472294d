"""``confab chat``'s terminal with a reply written as it comes: each piece appended to the bot's
line, the reply's text not printed again when it is what was written, and on a line of its own
when it is not (a generation that failed and the flow answered otherwise)."""

from __future__ import annotations

import io

from confab.protos import mcp_engine_pb2 as pb
from confab.tools.chat.client import ChatOptions
from confab.tools.chat.terminal import Console, TerminalListener


def terminal() -> tuple[TerminalListener, io.StringIO]:
    out = io.StringIO()
    options = ChatOptions(target="127.0.0.1:1", tenant="acme", conversation_id="c-1")
    return TerminalListener(options, Console(out, interactive=False)), out


def reply(text: str, *choices: str) -> pb.ProcessMessageResponse:
    response = pb.ProcessMessageResponse()
    response.response.text = text
    for title in choices:
        response.response.quick_replies.add(title=title, payload=title.lower())
    return response


def test_pieces_are_appended_to_one_line_and_the_same_text_is_not_printed_again() -> None:
    listener, out = terminal()
    for n, piece in enumerate(["The shop ", "opens ", "at 9."]):
        listener.delta(None, "m/0", n, piece)
    assert out.getvalue() == "bot> The shop opens at 9."  # as it came: no line ended yet
    listener.replied(None, reply("The shop opens at 9.", "Thanks", "Hours"))
    assert out.getvalue() == "bot> The shop opens at 9.\n     [1] Thanks\n     [2] Hours\n"
    assert listener.choice_for("2") is not None


def test_a_final_text_that_differs_from_what_was_written_comes_whole_on_a_line_of_its_own() -> None:
    listener, out = terminal()
    listener.delta(None, "m/0", 0, "Let me che")
    listener.replied(None, reply("Sorry, I cannot answer that now."))
    assert out.getvalue() == "bot> Let me che\nbot> Sorry, I cannot answer that now.\n"


def test_a_piece_with_new_lines_is_indented_as_a_reply_is() -> None:
    listener, out = terminal()
    listener.delta(None, "m/0", 0, "Two things:\n- one")
    listener.delta(None, "m/0", 1, "\n- two")
    listener.replied(None, reply("Two things:\n- one\n- two"))
    assert out.getvalue() == "bot> Two things:\n     - one\n     - two\n"


def test_news_between_pieces_starts_a_line_of_its_own_and_the_next_reply_starts_afresh() -> None:
    listener, out = terminal()
    listener.delta(None, "m/0", 0, "Hel")
    listener.state_changed("a", "b")  # any news ends the open line first
    listener.stream_error(None, pb.StreamError(error_code="UNAVAILABLE", message="gone", recoverable=True))
    listener.replied(None, reply("Next one"))  # nothing was written of this one: printed as usual
    assert out.getvalue() == ("bot> Hel\n-- state: a -> b\n!! error UNAVAILABLE: gone\nbot> Next one\n")
