"""``confab console``: a web console over the Admin API and GetMetrics.

    confab console [--target HOST:PORT] [--tls-ca FILE] [--listen 127.0.0.1:8080] [--secure-cookie]

A person signs in with their own credential (an API key, or a bearer JWT) at the login
page; the console keeps it in a server-side session (the browser holds only an HttpOnly,
SameSite=Strict cookie naming the session) and sends it with every call, so the server
applies exactly that key's roles and tenant: the console has no credential of its own.

Pages: the cluster (hosts, shards, virtual shards, health, live call rates), the
conversations (filters, sorting with stuck ones first, pages), one conversation (state,
slots hidden until asked, mailbox, the last turns as a transcript, the actions, each
confirmed, and a person's answer to a handed-off one), a live tail of events
(server-sent events) and analytics per flow (figures over time, where sessions end, the
flow's graph with the traffic on its edges).

The parts: ``backend`` (the gRPC calls), ``sessions`` (who is signed in, CSRF tokens),
``views`` (what a page shows, from the answers), ``app`` (the pages and actions, aiohttp),
``command_line`` (the subcommand); ``templates/`` (Jinja2) and ``static/`` (CSS, a little
script, and uPlot, MIT, vendored with its license: nothing is fetched at run time).
"""

from confab.tools.console.command_line import add_parser, run

__all__ = ["add_parser", "run"]
