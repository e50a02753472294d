"""Thespian's chatter below WARNING is DEBUG in Confab's log; its warnings, and Confab's lines, are not."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import thespian

from confab.tools.thespian_log import ThespianChatter, demote_thespian_chatter

ADMIN_SOURCE = str(Path(thespian.__file__).parent / "system" / "admin" / "adminCore.py")


def record(
    level: int, pathname: str, message: str = "++++ Actor System gen (3, 10) started"
) -> logging.LogRecord:
    return logging.LogRecord("root", level, pathname, 57, message, None, None)


@pytest.fixture
def root_at_info() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield root
    finally:
        root.setLevel(level)


def test_thespian_info_is_demoted_to_debug_and_hidden_at_info(root_at_info: logging.Logger) -> None:
    chatter = record(logging.INFO, ADMIN_SOURCE)
    assert not ThespianChatter().filter(chatter)
    assert (chatter.levelno, chatter.levelname) == (logging.DEBUG, "DEBUG")
    root_at_info.setLevel(logging.DEBUG)
    assert ThespianChatter().filter(record(logging.INFO, ADMIN_SOURCE))  # shown, as DEBUG


def test_thespian_warnings_and_confab_lines_pass_unchanged(root_at_info: logging.Logger) -> None:
    warning = record(logging.WARNING, ADMIN_SOURCE, "Actor failed")
    ours = record(logging.INFO, "/somewhere/confab/grpc_edge/access_log.py", "rpc")
    for kept in (warning, ours):
        level = kept.levelno
        assert ThespianChatter().filter(kept) and kept.levelno == level


def test_the_filter_sits_on_the_handlers_once(root_at_info: logging.Logger) -> None:
    logger = logging.getLogger("confab.test.thespian_log")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        demote_thespian_chatter(logger)
        demote_thespian_chatter(logger)
        assert sum(isinstance(f, ThespianChatter) for f in handler.filters) == 1
        logger.handle(record(logging.INFO, ADMIN_SOURCE))
        logger.handle(record(logging.ERROR, ADMIN_SOURCE, "Thespian says no"))
        assert out.getvalue() == "Thespian says no\n"
    finally:
        logger.removeHandler(handler)
