"""A bot's response and a conversation's state as lines for a terminal, its choices numbered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from confab.protos import common_pb2
from confab.protos import mcp_engine_pb2 as pb

BOT = "bot> "
INDENT = " " * len(BOT)
# Under a reply's text as it was written, when the reply says otherwise (shown below it).
REPLACED = "(replaced)"
CARD_BUTTON_INDENT = INDENT + "    "
FLOW_VERSION_SHOWN = 12  # characters of a flow version (a hash) in the state line
PREVIOUS_STATES_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Choice:
    """A quick reply or a button the user can pick by its number."""

    title: str
    payload: str
    url: str = ""
    quick_reply: bool = False


def render(content: pb.MessageContent) -> tuple[list[str], list[Choice]]:
    """The bot's response as lines for the terminal, and the choices it numbered."""
    lines: list[str] = []
    if content.text:
        lines += text_lines(content.text)
    if content.HasField("media"):
        lines.append(f"{INDENT}{_media(content)}")
    if content.HasField("location"):
        loc = content.location
        name = ", ".join(p for p in (loc.place_name, loc.address) if p)
        lines.append(
            f"{INDENT}[location] {name + ' ' if name else ''}({loc.latitude:.5f}, {loc.longitude:.5f})"
        )
    if content.HasField("form"):
        lines.append(f"{INDENT}[form {content.form.form_id}]")
    choices: list[Choice] = []
    for reply in content.quick_replies:
        choices.append(Choice(reply.title, reply.payload, quick_reply=True))
        lines.append(f"{INDENT}[{len(choices)}] {reply.title}")
    for button in content.buttons:
        lines.append(_button_line(button, choices, INDENT))
    for card in content.carousel:
        head = card.title + (f" - {card.subtitle}" if card.subtitle else "")
        lines.append(f"{INDENT}* {head}" + (f" (image: {card.image_url})" if card.image_url else ""))
        for button in card.buttons:
            lines.append(_button_line(button, choices, CARD_BUTTON_INDENT))
    if not lines:
        lines.append(f"{BOT}(no reply)")
    return lines, choices


def text_lines(text: str) -> list[str]:
    """The bot's text as the lines :func:`render` starts with."""
    first, *rest = text.splitlines() or [""]
    return [f"{BOT}{first}", *(f"{INDENT}{line}" for line in rest)]


def streamed_piece(text: str, first: bool) -> str:
    """A piece of the bot's text as it is written, shown as :func:`text_lines` would show it
    (the first piece after the bot's prefix, a new line indented)."""
    shown = text.replace("\r\n", "\n").replace("\n", "\n" + INDENT)
    return f"{BOT}{shown}" if first else shown


def _media(content: pb.MessageContent) -> str:
    media = content.media
    kind = common_pb2.MessageType.Name(content.type).removeprefix("MESSAGE_TYPE_").lower()
    label = kind if kind not in ("unknown", "text") else (media.mime_type.split("/")[0] or "media")
    words = media.caption or media.alt_text
    url = media.secure_url or media.url
    mime = f"({media.mime_type})" if media.mime_type else ""
    return f"[{label}] " + " ".join(p for p in (words, url, mime) if p)


def _button_line(button: pb.Button, choices: list[Choice], indent: str) -> str:
    choices.append(Choice(button.title, button.payload, url=button.url))
    link = f" -> {button.url}" if button.url and not button.payload else ""
    return f"{indent}[{len(choices)}] {button.title}{link}"


def describe_state(state: pb.ConversationState) -> list[str]:
    """A conversation state in two or three short lines."""
    head = f"-- state {state.current_state or '(none)'} | flow {state.flow_id}"
    if state.flow_version:
        head += f"@{state.flow_version[:FLOW_VERSION_SHOWN]}"
    head += f" | {state.message_count} messages | {state.error_count} errors"
    if state.current_intent:
        head += f" | intent {state.current_intent} ({state.intent_confidence:.2f})"
    lines = [head]
    details = []
    for name, struct in (("slots", state.slots), ("variables", state.variables)):
        values = as_dict(struct)
        if values:
            details.append(f"{name}: " + " ".join(f"{k}={v}" for k, v in sorted(values.items())))
    if state.previous_states:
        details.append("previous: " + " > ".join(state.previous_states[-PREVIOUS_STATES_SHOWN:]))
    if details:
        lines.append("   " + " | ".join(details))
    return lines


def as_dict(struct: Struct) -> dict[str, Any]:
    values: dict[str, Any] = json_format.MessageToDict(struct) if struct.fields else {}
    # Struct numbers are doubles: 2.0 reads better as 2.
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}
