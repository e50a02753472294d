"""Keeps Thespian's start-up chatter out of ``confab serve``'s log, and its warnings in it.

Thespian's Admin announces itself with ``logging.info("++++ Actor System gen (3, 10)
started, admin @ ...")`` on the root logger (``thespian/system/admin/adminCore.py``). The
Admin is forked from the edge, so it still has the edge's log handler and the line lands
in Confab's log as a record of the logger ``root``, among Confab's own lines, saying
nothing an operator needs. :class:`ThespianChatter`, on the root logger's handlers, turns
a record logged from Thespian's own code below WARNING into a DEBUG record: it shows with
``--log-level DEBUG`` and not otherwise. Thespian's warnings and errors pass unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import thespian

# Where Thespian's code is, as imported and with links resolved: a record names the file it was
# logged from as the module was imported. Compared as text, since the filter sees every record.
_here = Path(thespian.__file__).parent
THESPIAN_SOURCES = tuple(sorted({f"{_here}{os.sep}", f"{_here.resolve()}{os.sep}"}))


def from_thespian(record: logging.LogRecord) -> bool:
    """Whether the code that logged ``record`` is Thespian's own."""
    return record.pathname.startswith(THESPIAN_SOURCES)


class ThespianChatter(logging.Filter):
    """Thespian's records below WARNING become DEBUG records, shown only where DEBUG is."""

    # Confab's access lines are logged from its own code: this filter lets each through unchanged,
    # so they may still be written straight to the handler's stream (grpc_edge.access_log).
    passes_access_lines = True

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not from_thespian(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def demote_thespian_chatter(logger: logging.Logger | None = None) -> None:
    """Put :class:`ThespianChatter` on every handler of ``logger`` (the root logger by default).

    On the handlers, not the logger: a logger's filters see only records logged to that
    logger itself, a handler's see the records of every logger below it too.
    """
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ThespianChatter) for f in handler.filters):
            handler.addFilter(ThespianChatter())
