"""``confab chat``'s terminal with a reply written as it comes: each piece appended to the bot's
line, a second generation of the reply on a line of its own, the reply's text not printed again
when it is what was written, and when it is not (a generation that failed and the flow answered
otherwise), what was written marked as replaced and the reply shown whole below it."""

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


def test_a_final_text_that_differs_from_what_was_written_replaces_it() -> None:
    listener, out = terminal()
    listener.delta(None, "m/0", 0, "Part one")  # the model's stream was cut here
    listener.replied(None, reply("Sorry, I cannot answer that now."))
    assert out.getvalue() == "bot> Part one\n     (replaced)\nbot> Sorry, I cannot answer that now.\n"


def test_two_generations_of_one_reply_are_two_lines_as_its_text_has_them() -> None:
    listener, out = terminal()
    for n, piece in enumerate(["AB", "C"]):
        listener.delta(None, "m/0", n, piece)
    for n, piece in enumerate(["AB", "C"]):
        listener.delta(None, "m/1", n, piece)
    assert out.getvalue() == "bot> ABC\n     ABC"
    listener.replied(None, reply("ABC\nABC", "More"))  # the turn's texts joined line by line
    assert out.getvalue() == "bot> ABC\n     ABC\n     [1] More\n"


def test_text_said_around_generations_shows_the_reply_whole_below_what_was_written() -> None:
    listener, out = terminal()
    listener.delta(None, "m/0", 0, "ABC")
    listener.replied(None, reply("Here is what I found:\nABC"))
    assert out.getvalue() == "bot> ABC\n     (replaced)\nbot> Here is what I found:\n     ABC\n"


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
