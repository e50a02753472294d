"""A host leaving its cluster (SIGTERM): Engine.leave hands its virtual shards off, and says
when nobody will take them instead of waiting out the hand-off timeout.

The engine is given a scripted host and directories by hand, as its host would relay them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from confab.runtime import eventloop
from confab.runtime.config import load_config
from confab.runtime.engine import Engine
from confab.runtime.inspection import HostView
from confab.runtime.protocol.directory import Owner, ShardDirectory, ShardEndpoint

TIMEOUT_S = 30.0  # no case below may wait for it: each ends on what the directory says


class ScriptedHost:
    """A ShardHost that records a leave and, when told, relays the directory that follows it."""

    def __init__(self, after_leave: Callable[[], None] = lambda: None) -> None:
        self.left = False
        self.after_leave = after_leave

    def start(self, on_directory: Callable[[ShardDirectory], None]) -> ShardDirectory:
        raise AssertionError("not started in these tests")

    def restart_shard(self, index: int) -> None: ...

    def leave(self) -> None:
        self.left = True
        self.after_leave()

    def edge_serving(self, address: str) -> None: ...

    def problem(self) -> str:
        return ""

    def close(self) -> None: ...


def directory(*, others: str = "up", holder: str = "h1/0", in_touch: bool = True) -> ShardDirectory:
    shards = (
        ShardEndpoint(0, 0, "tcp:10.0.0.1:1", host="h1"),
        ShardEndpoint(0, 0, "tcp:10.0.0.2:1", host="h2"),
    )
    return ShardDirectory(
        version=1,
        shards=shards,
        owners=tuple(Owner(holder, 1) for _ in range(4)),
        hosts=(HostView("h1", "leaving", 0.1), HostView("h2", others, 0.1)),
        in_touch=in_touch,
    )


def engine_with(host: ScriptedHost, first: ShardDirectory) -> Engine:
    engine = Engine(load_config(**{"cluster.host_id": "h1"}), host)
    engine.directory = first
    return engine


def leave(engine: Engine) -> bool:
    async def timed() -> bool:
        return await asyncio.wait_for(engine.leave(TIMEOUT_S), TIMEOUT_S / 2)  # fails if it waits it out

    return eventloop.run(timed())


def test_the_hand_off_is_done_once_another_host_holds_every_virtual_shard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = ScriptedHost()
    engine = engine_with(host, directory())
    host.after_leave = lambda: setattr(engine, "directory", directory(holder="h2/0"))
    with caplog.at_level(logging.INFO):
        assert leave(engine) is True
    assert host.left
    assert "hand-off done" in caplog.text


def test_nobody_up_to_take_the_share_ends_the_hand_off_at_once(caplog: pytest.LogCaptureFixture) -> None:
    host = ScriptedHost()
    assert leave(engine_with(host, directory(others="lost"))) is False
    assert not host.left  # nothing was asked of the cluster
    assert "no other host is up" in caplog.text


def test_every_other_host_leaving_too_ends_the_hand_off(caplog: pytest.LogCaptureFixture) -> None:
    host = ScriptedHost()
    engine = engine_with(host, directory())
    host.after_leave = lambda: setattr(engine, "directory", directory(others="leaving"))
    assert leave(engine) is False
    assert host.left
    assert "no other host is up (leaving, lost or gone)" in caplog.text


def test_a_directory_that_lists_no_other_host_for_a_moment_does_not_end_the_hand_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A host's first reads of the member table may list only itself."""
    host = ScriptedHost()
    engine = engine_with(host, directory())

    def others_listed_late() -> None:  # only this host at first, the rest half a second later
        engine.directory = replace(directory(), hosts=(HostView("h1", "leaving", 0.1),))
        threading.Timer(0.5, setattr, (engine, "directory", directory(holder="h2/0"))).start()

    host.after_leave = others_listed_late
    with caplog.at_level(logging.INFO):
        assert leave(engine) is True
    assert "hand-off done" in caplog.text


def test_a_host_out_of_touch_with_the_member_table_does_not_wait_for_a_hand_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = ScriptedHost()
    assert leave(engine_with(host, directory(in_touch=False))) is False
    assert not host.left
    assert "cannot reach the member table" in caplog.text


def test_losing_touch_with_the_member_table_during_the_hand_off_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = ScriptedHost()
    engine = engine_with(host, directory())
    host.after_leave = lambda: setattr(engine, "directory", replace(directory(), in_touch=False))
    assert leave(engine) is False
    assert "lost touch with the member table" in caplog.text
