"""``confab chat``: chat with a flow over StreamConversation, from a terminal or from Python.

    confab chat [--target HOST:PORT] --tenant T [--conversation ID] [--flow NAME] [--user U]
                [--channel web|sms|...] [--api-key KEY | --token JWT] [--tls-ca FILE]
                [--heartbeat S] [--reconnect-for S]

``client`` is the part other code can use: :class:`ChatClient` keeps one conversation's
stream open across server restarts (reconnect with backoff, messages held while
disconnected, unanswered ones reported, never resent blindly) and tells a
:class:`ChatListener` what happens; it needs no terminal. ``terminal`` is ``confab chat``
on top of it (numbered choices, ``/state``, ``/reset``), ``render`` writes responses and
states as lines, ``typeahead`` tells which lines were typed before the reply on the screen
came (they say so to the server), ``command_line`` holds the subcommand's options.

Ctrl-D, Ctrl-C and ``/quit`` exit 0; a credential or argument the server refuses, or a
server that stays unreachable, exits 1.
"""

# The library only: importing it loads no terminal code (``confab`` itself uses command_line).
from confab.tools.chat.client import ChatClient, ChatFailed, ChatListener, ChatOptions, Turn

__all__ = ["ChatClient", "ChatFailed", "ChatListener", "ChatOptions", "Turn"]
