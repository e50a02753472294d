"""One shell session: a typed line in, the Admin API asked, the answer printed, an exit status out.

:class:`Shell` joins the other parts: the command table reads the line
(``commands``), the verbs make the call (``verbs``), the views write the answer as
text or JSON (``text_view``, ``json_view``), and the names seen in answers are kept for
completion (``completion.Learned``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

import grpc

from confab.protos import admin_pb2 as admin
from confab.tools.shell import json_view, text_view
from confab.tools.shell.commands import (
    OK,
    REFUSED,
    UNREACHABLE,
    USAGE,
    Builtin,
    UsageError,
    command_table,
    help_text,
    parse_line,
    reason,
)
from confab.tools.shell.completion import Learned
from confab.tools.shell.verbs import AdminVerbs

# Codes that mean the call never reached a server that could answer it.
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


class Shell:
    def __init__(
        self,
        verbs: AdminVerbs,
        out: TextIO | None = None,
        json_output: bool = False,
        err: TextIO | None = None,
    ) -> None:
        self.verbs = verbs
        self.out = out or sys.stdout
        self.err = err or self.out  # -c sends errors to stderr, so stdout stays parseable
        self.json_output = json_output
        self.learned = Learned()
        self.commands = command_table()
        self._listing: admin.ListConversationsRequest | None = None  # for `ls --next`
        self._next_token = ""
        self._runs: dict[str, Callable[[argparse.Namespace], int]] = {
            "shards": self.shards,
            "hosts": self.hosts,
            "ls": self.ls,
            "inspect": self.inspect,
            "tail": self.tail,
            "reset": self.reset,
            "force": self.force,
            "resume": self.resume,
            "passivate": self.passivate,
            "abandon-webhook": self.abandon_webhook,
            "reload": self.reload,
            "restart-shard": self.restart_shard,
        }
        assert self._runs.keys() == self.commands.keys(), "every command in the table runs, and only those"

    # Plumbing ---------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}".rstrip() + "\n")
        self.err.flush()

    def execute(self, line: str) -> int:
        """Run one command line; print its output or one ``error:`` line; return its exit status.

        ``quit`` raises EOFError, as Ctrl-D at the prompt does.
        """
        try:
            parsed = parse_line(line, self.commands)
        except UsageError as exc:
            self.error(str(exc))
            return USAGE
        if parsed is Builtin.QUIT:
            raise EOFError
        if parsed is Builtin.HELP:
            self.say(help_text(self.commands))
            return OK
        if parsed is Builtin.NOTHING:
            return OK
        args = parsed.args
        args.json = args.json or self.json_output
        try:
            return self._runs[parsed.command.name](args)
        except UsageError as exc:
            self.error(str(exc))
            return USAGE
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            self.error(f"{code.name}: {exc.details() or ''}")
            return UNREACHABLE if code in UNREACHABLE_CODES else REFUSED

    # Commands ---------------------------------------------------------------

    def shards(self, args: argparse.Namespace) -> int:
        cluster = self.verbs.cluster()
        self.say(json_view.to_json(cluster) if args.json else text_view.cluster_text(cluster))
        return OK

    def hosts(self, args: argparse.Namespace) -> int:
        cluster = self.verbs.cluster()
        if args.json:
            self.say(json_view.to_json(cluster, only=("hosts", "vshards", "complete", "this_host")))
        else:
            self.say(text_view.hosts_text(cluster))
        return OK

    def ls(self, args: argparse.Namespace) -> int:
        if args.next:
            if self._listing is None or not self._next_token:
                raise UsageError("no further page: the last listing was complete (or there was none)")
            request = admin.ListConversationsRequest()
            request.CopyFrom(self._listing)
            request.page_token = self._next_token
        else:
            if args.page_size < 0 or args.idle < 0:
                raise UsageError("--page-size and --idle must not be negative")
            request = admin.ListConversationsRequest(
                tenant_id=args.tenant,
                state=args.state,
                flow_id=args.flow,
                idle_longer_than_s=args.idle,
                in_handoff=args.handoff,
                resident_only=args.resident,
                waiting_on_webhook=args.waiting,
                page_size=args.page_size,
            )
        listing = self.verbs.list_conversations(request)
        self._listing, self._next_token = request, listing.next_page_token
        for c in listing.conversations:
            self.learned.conversation(c.tenant_id, c.conversation_id)
            self.learned.state(c.current_state)
        self.say(json_view.to_json(listing) if args.json else text_view.listing_text(listing))
        return OK

    def inspect(self, args: argparse.Namespace) -> int:
        if args.turns < 0:
            raise UsageError("--turns must not be negative")
        detail = self.verbs.inspect(args.tenant, args.conversation, args.turns)
        self.learned.conversation(detail.tenant_id, detail.conversation_id)
        self.learned.state(str(text_view.state_of(detail).get("current_state") or ""))
        self.say(json_view.to_json(detail) if args.json else text_view.detail_text(detail))
        return OK

    def tail(self, args: argparse.Namespace) -> int:
        events = self.verbs.tail(args.tenant, args.conversation, args.type)
        if not args.json:
            self.say("-- following events; Ctrl-C to stop")
        try:
            for event in events:
                self.learned.conversation(event.tenant_id, event.conversation_id)
                self.say(json_view.to_json(event, indent=None) if args.json else text_view.event_line(event))
        except KeyboardInterrupt:
            # Ctrl-C ends the tail, not the shell; cancelling tells the server to stop sending.
            events.cancel()
            if not args.json:
                self.say("-- tail stopped")
            return OK
        self.say("-- the server ended the tail")
        return OK

    def _action(self, args: argparse.Namespace, result: admin.ActionResult) -> int:
        self.say(json_view.to_json(result) if args.json else text_view.action_text(result))
        return OK if result.ok else REFUSED

    def _on_conversation(self, args: argparse.Namespace) -> tuple[str, str]:
        self.learned.conversation(args.tenant, args.conversation)
        return args.tenant, args.conversation

    def reset(self, args: argparse.Namespace) -> int:
        tenant, conversation = self._on_conversation(args)
        return self._action(args, self.verbs.reset(tenant, conversation, reason(args, "confab shell reset")))

    def force(self, args: argparse.Namespace) -> int:
        tenant, conversation = self._on_conversation(args)
        why = reason(args, "confab shell force")
        return self._action(args, self.verbs.force_state(tenant, conversation, args.state, why))

    def resume(self, args: argparse.Namespace) -> int:
        tenant, conversation = self._on_conversation(args)
        return self._action(
            args, self.verbs.resume(tenant, conversation, reason(args, "confab shell resume"))
        )

    def passivate(self, args: argparse.Namespace) -> int:
        tenant, conversation = self._on_conversation(args)
        why = reason(args, "confab shell passivate")
        return self._action(args, self.verbs.passivate(tenant, conversation, why))

    def abandon_webhook(self, args: argparse.Namespace) -> int:
        tenant, conversation = self._on_conversation(args)
        why = reason(args, "confab shell abandon-webhook")
        return self._action(args, self.verbs.abandon_webhook(tenant, conversation, why))

    def reload(self, args: argparse.Namespace) -> int:
        return self._action(args, self.verbs.reload_flows())

    def restart_shard(self, args: argparse.Namespace) -> int:
        return self._action(args, self.verbs.restart_shard(args.shard, reason(args, "confab shell")))
