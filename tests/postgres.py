"""A real PostgreSQL for tests: one throwaway server per session, a database per test.

The server is ``tools.postgres_server``'s (initdb in a temporary directory, fsync off:
these are tests of logic). Where the server binaries are missing, the tests that need
one are skipped with the reason, unless ``CONFAB_REQUIRE_POSTGRES=1`` (CI sets it):
then they fail, so a machine without PostgreSQL never passes by skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from confab.tools.postgres_server import PostgresServer, PostgresUnavailable

REQUIRED = os.environ.get("CONFAB_REQUIRE_POSTGRES") == "1"


def unavailable(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"{reason} (and CONFAB_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(reason)


def start_server(listen: str = "127.0.0.1", *, fsync: bool = False, tls: bool = False) -> PostgresServer:
    """A started server of the caller's own (close() it), or the test skipped or failed; with
    ``tls``, one that takes TLS connections only (its CA is ``server.ca_path``)."""
    try:
        server = PostgresServer(listen, fsync=fsync, tls=tls)
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    return server.start()


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]
