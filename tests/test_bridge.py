"""The shard link's handling of what arrives on its Thespian context, with a scripted fake context.

``ask`` returns whatever reaches the context next, so a link must never mistake (or drop)
one answer for another: a batch's answer that arrives while it asks the supervisor, or a
late answer to a control message that timed out while a batch was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from confab.actors.messages import GetDirectory, ShardDirectory, ShardStatistics, StatusRequest
from confab.runtime.bridge import ShardDirectoryView, ShardLink
from confab.runtime.wire import CommandBatch, OutcomeBatch


class ScriptedContext:
    """Answers ask/listen from a script, and records what was sent."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.sent: list[Any] = []

    def ask(self, address: Any, message: Any, timeout: float) -> Any:
        self.sent.append(message)
        return self.listen(timeout)

    def listen(self, timeout: float) -> Any:
        return self.replies.pop(0) if self.replies else None


class IdleSystem:
    @contextlib.contextmanager
    def private(self) -> Iterator[ScriptedContext]:
        yield ScriptedContext([])


def directory(generation: int = 0) -> ShardDirectory:
    return ShardDirectory(addresses=("shard-0",), generations=(generation,), restarts=generation, pid=1)


@pytest.fixture
def link() -> Iterator[ShardLink]:
    loop = asyncio.new_event_loop()
    link = ShardLink(
        0,
        IdleSystem(),
        ShardDirectoryView("supervisor", directory()),
        loop,
        max_batch=10,
        max_queued=100,
        timeout_s=5.0,
    )
    yield link
    link.close(timeout=2.0)
    loop.close()


def statistics() -> ShardStatistics:
    return ShardStatistics(0, 0, 1, 0.0, 0, 1, 0, 0, 0, 0, True, 0.0, "", 0, 0.0)


def test_a_batch_answer_arriving_while_asking_the_supervisor_is_kept(link: ShardLink) -> None:
    answer = OutcomeBatch(7, [[3, []]]).encode()
    context = ScriptedContext([answer, directory()])
    latest, answered = link._ask_directory(context, 7)
    assert answered is not None and answered.batch_id == 7
    assert latest is None and isinstance(context.sent[0], GetDirectory)


def test_a_late_control_answer_does_not_fail_the_batch_in_flight(link: ShardLink) -> None:
    batch = CommandBatch(3, [])
    answer = OutcomeBatch(3, []).encode()
    context = ScriptedContext([statistics(), answer])  # a status answer that timed out earlier
    assert link._exchange(context, batch).batch_id == 3


def test_a_control_request_skips_stale_answers(link: ShardLink) -> None:
    loop = asyncio.new_event_loop()
    link._loop = loop
    future: asyncio.Future[Any] = loop.create_future()
    context = ScriptedContext([directory(), OutcomeBatch(1, []).encode(), statistics()])
    link._answer_control(context, StatusRequest(), ShardStatistics, 1.0, future)
    loop.run_until_complete(asyncio.sleep(0))
    assert isinstance(future.result(), ShardStatistics)
    loop.close()
