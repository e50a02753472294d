"""A small process that starts Thespian actor systems for the edge, so the edge never forks once it serves.

Thespian starts an actor system by forking from the process that asks. Forking a
process that runs threads (gRPC's, the event loop's helpers) copies locks other
threads hold at that instant; the child can then hang or vanish before it ever
runs, which was seen here when the edge started a new actor system after its
supervisor died. So the edge forks this launcher once, at start, while it still has
a single thread, and asks it to start every actor system instead; the edge then
only attaches to the running admin as a client, which forks nothing.

The launcher reads requests from a pipe and answers each; it exits when the pipe
closes, and it dies with the edge (``actors.system.lifecycle`` ties it, like every
process it starts).
"""

from __future__ import annotations

import contextlib
import os
import traceback
from multiprocessing.connection import Connection, Pipe
from typing import Any


class LauncherError(Exception):
    pass


class SystemLauncher:
    def __init__(self) -> None:
        ours, theirs = Pipe()
        pid = os.fork()
        if pid == 0:  # the launcher: never returns into the edge's code
            ours.close()
            code = 0
            try:
                _serve(theirs)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._connection: Connection | None = ours

    def start_system(self, capabilities: dict[str, Any], log_defs: dict[str, Any], timeout_s: float) -> None:
        """Start an actor system whose admin listens on ``capabilities["Admin Port"]`` (blocking)."""
        connection = self._connection
        if connection is None:
            raise LauncherError("the launcher is closed")
        connection.send(("start", capabilities, log_defs))
        if not connection.poll(timeout_s):
            raise LauncherError(f"no actor system started within {timeout_s:.0f}s")
        answer = connection.recv()
        if answer[0] != "started":
            raise LauncherError(f"the actor system did not start: {answer[1]}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.waitpid(self.pid, 0)


def _serve(connection: Connection) -> None:
    from thespian.actors import ActorSystem

    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        _reap()
        _, capabilities, log_defs = request
        try:
            # The admin it starts runs on by itself; this side of it is not needed afterwards.
            ActorSystem("multiprocTCPBase", capabilities=capabilities, transientUnique=True, logDefs=log_defs)
        except Exception as exc:
            connection.send(("failed", "".join(traceback.format_exception_only(exc)).strip()))
        else:
            connection.send(("started",))
        _reap()


def _reap() -> None:
    """Collect the short-lived processes Thespian forks to detach each admin (no zombies)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
