"""The ``confab chat`` subcommand: its options, and the client and terminal they make."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TextIO

from confab.protos import common_pb2
from confab.tools.chat.client import ChatOptions
from confab.tools.chat.terminal import Console, chat
from confab.tools.connection import ConnectionOptionError, add_connection_arguments, connection_from

CHANNELS = [
    n.removeprefix("CHANNEL_").lower() for n, _ in common_pb2.Channel.items() if n != "CHANNEL_UNKNOWN"
]
USAGE = 2


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``chat`` subcommand, added to ``confab``'s subcommands."""
    parser = commands.add_parser("chat", help="chat with a flow in the terminal (over StreamConversation)")
    add_connection_arguments(parser)
    parser.add_argument("--tenant", required=True, help="the tenant the conversation belongs to")
    parser.add_argument(
        "--conversation", metavar="ID", help="conversation id; resume it (default: a new random id)"
    )
    parser.add_argument("--flow", default="", metavar="NAME", help="start the conversation on this flow")
    parser.add_argument("--user", default="chat-user", help="user_id of the messages (default chat-user)")
    parser.add_argument("--channel", default="web", choices=CHANNELS, help="channel of the messages")
    parser.add_argument("--heartbeat", type=float, default=30.0, metavar="S", help="heartbeat interval")
    parser.add_argument(
        "--reconnect-for", type=float, default=60.0, metavar="S", help="give up reconnecting after S seconds"
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.heartbeat <= 0 or args.reconnect_for < 0:
        print("confab: --heartbeat must be positive and --reconnect-for not negative", file=sys.stderr)
        return USAGE
    try:
        connection = connection_from(args)
    except ConnectionOptionError as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return USAGE
    conversation_id = args.conversation or f"chat-{uuid.uuid4().hex[:12]}"
    options = ChatOptions(
        target=connection.target,
        tenant=args.tenant,
        conversation_id=conversation_id,
        flow=args.flow,
        user=args.user,
        channel=args.channel,
        metadata=connection.metadata,
        tls_ca=connection.tls_ca,
        heartbeat_s=args.heartbeat,
        reconnect_s=args.reconnect_for,
    )
    console = Console(out, interactive=sys.stdin.isatty() and out.isatty())
    if not args.conversation:
        console.say(f"-- new conversation {conversation_id} (to resume it: --conversation {conversation_id})")
    return chat(options, console)
