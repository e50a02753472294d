"""The actor system that hosts the shards, started by the edge's process and kept alive by it.

:class:`ActorHost` is what the engine is given to find its shards (it fulfils
``runtime.engine.ShardHost``). One thread of its own does all of its Thespian work
(Thespian contexts must not be shared between threads): it starts a Thespian
system, the supervisor and the shards, then listens for the directories the
supervisor sends whenever a shard is replaced or its holdings change. Each is merged
with the cluster's view (``actors.cluster``: the member table, the placement, the
leases), which a thread of its own keeps, and the result goes to the engine; what
the placement says this host's shards should hold goes to the supervisor.

The actor system is this host's alone: every Thespian socket binds loopback
(``actors.system.network``), and nothing Thespian-framed ever crosses hosts. Hosts meet in
the store's member table and talk over the data plane only.

Every actor system is started by a launcher process (``actors.system.launcher``) that
the host forks when it is made, while the process has a single thread: the edge
itself never forks once it serves. The host's thread then attaches to each new
system as a client.

Thespian gives no supervisor to a top-level actor: nothing would restart the
supervisor. The host therefore watches it itself, through a pidfd (its death is
seen at once) and a ping (a supervisor that stops answering for ``hung_after_s``
is treated as dead). Either way the whole actor system is started again: the old
admin is killed by pidfd (its logger follows it; the old shards died with the
supervisor, see ``actors.system.lifecycle``), a new system with a new admin port, a new
supervisor and new shards come up, and the engine reconnects and re-sends what was
left unanswered. Conversations come back from the store; nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import replace
from typing import Any

from thespian.actors import ActorExitRequest, ActorSystem

from confab.actors.cluster import Assignment, ClusterMembership, ClusterSettings, MemberTable, SoloTable
from confab.actors.settings import HostIdentity, ShardSettings
from confab.actors.system import lifecycle, network
from confab.actors.system.launcher import SystemLauncher
from confab.actors.system.messages import (
    AssignShards,
    GetDirectory,
    RestartShard,
    StartShards,
)
from confab.actors.system.supervisor import SupervisorActor
from confab.runtime.protocol.directory import ShardDirectory

log = logging.getLogger(__name__)

LISTEN_S = 0.1  # how long the host thread waits for a message before looking at its other duties
PING_EVERY_S = 2.0
SLOW_SHUTDOWN_S = 3.0  # a shutdown longer than this is logged, with how long it took
LOOPBACK = "127.0.0.1"  # every Thespian socket of every host: Thespian never crosses hosts


class HostError(Exception):
    """The shards could not be started."""


class ActorHost:
    """Make it while the process still has one thread (before the gRPC server starts)."""

    def __init__(
        self,
        settings: ShardSettings,
        shard_count: int,
        *,
        identity: HostIdentity,
        cluster: ClusterSettings | None = None,
        members: MemberTable | None = None,
        reach: Callable[[str], str] | None = None,
        start_timeout_s: float = 30.0,
        hung_after_s: float = 10.0,
    ) -> None:
        """``members``: the store's member table (None: this host is alone); ``reach``: a probe of
        another host's data plane ("" when it answers)."""
        self.settings = settings
        self.shard_count = shard_count
        self.identity = identity
        self.cluster = cluster or ClusterSettings(vshards=settings.vshards)
        self.membership = ClusterMembership(
            identity,
            self.cluster,
            shard_count,
            members or SoloTable(),
            publish=self._publish,
            assign=self._assign,
            reach=reach,
        )
        self.start_timeout_s = start_timeout_s
        self.hung_after_s = hung_after_s
        self.recoveries = 0
        self._on_directory: Callable[[ShardDirectory], None] = lambda directory: None
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._started: Future[ShardDirectory] = Future()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._keep_hosting, name="confab-actor-host", daemon=True)
        self._system: Any = None
        self._latest: ShardDirectory | None = None
        self._problem = ""
        self._publishing = threading.Lock()
        self._assignment: AssignShards | None = None
        lifecycle.tie_actor_processes_to_this_one()
        network.bind_thespian_to(LOOPBACK)
        self._launcher = SystemLauncher()

    # Called by the engine --------------------------------------------------------------

    def start(self, on_directory: Callable[[ShardDirectory], None]) -> ShardDirectory:
        """Start the shards (blocking); ``on_directory`` then hears of every change, on the host's thread."""
        self._on_directory = on_directory
        self._thread.start()
        self.membership.start()
        directory = self._started.result(self.start_timeout_s + 5.0)
        failed = [s for s in directory.shards if s.error and s.host == self.identity.host]
        if failed:
            self.close()
            reasons = "; ".join(f"shard {s.index}: {s.error}" for s in failed)
            raise HostError(f"shards could not start: {reasons}")
        return directory

    def restart_shard(self, index: int) -> None:
        """Ask the supervisor to replace shard ``index`` (the new directory follows)."""
        self._requests.put(RestartShard(index))

    def leave(self) -> None:
        """Hand this host's virtual shards to the other hosts (the directories that follow show it)."""
        self.membership.leave()

    def edge_serving(self, address: str) -> None:
        self.identity = replace(self.identity, edge=address)
        self.membership.edge_serving(address)

    def problem(self) -> str:
        return self._problem

    def close(self) -> None:
        self._closing.set()
        self.membership.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(30.0)
        self._launcher.close()

    # The host's thread -------------------------------------------------------------------

    def _keep_hosting(self) -> None:
        while not self._closing.is_set():
            try:
                self._host_one_system()
            except Exception as exc:
                if not self._started.done():
                    with contextlib.suppress(InvalidStateError):
                        self._started.set_exception(HostError(f"the actor system did not start: {exc}"))
                    return
                log.exception("the actor system failed; starting it again")
                time.sleep(1.0)

    def _host_one_system(self) -> None:
        capabilities = {"Admin Port": _free_port(LOOPBACK)}
        self._launcher.start_system(capabilities, _thespian_logging(), self.start_timeout_s)
        # The admin runs: this attaches to it (and forks nothing).
        system = ActorSystem(
            "multiprocTCPBase", capabilities=capabilities, transientUnique=True, logDefs=_thespian_logging()
        )
        self._system = system
        watched: _Watched | None = None
        supervisor: Any = None
        try:
            supervisor = system.createActor(SupervisorActor)
            system.tell(supervisor, StartShards(self.shard_count, self.settings))
            if self._assignment is not None:  # a new supervisor (the old one died): what its shards hold
                system.tell(supervisor, self._assignment)
            started = time.monotonic()
            last_heard = last_ping = time.monotonic()
            while not self._closing.is_set():
                message = system.listen(LISTEN_S)
                now = time.monotonic()
                if isinstance(message, ShardDirectory):
                    last_heard = now
                    if watched is None:
                        watched = _Watched(message)
                        self._problem = ""
                    self._accept(message)
                if self.membership.fatal and not self._started.done():
                    with contextlib.suppress(InvalidStateError):
                        self._started.set_exception(HostError(self.membership.fatal))
                    return
                if not self._started.done() and now - started > self.start_timeout_s:
                    raise HostError(f"the shards did not start within {self.start_timeout_s:.0f}s")
                if watched is not None and watched.supervisor_exited():
                    self._problem = (
                        f"the supervisor (pid {watched.pid}) died; the actor system is starting again"
                    )
                    log.error("%s", self._problem)
                    break
                if watched is not None and now - last_heard > self.hung_after_s:
                    self._problem = (
                        f"the supervisor (pid {watched.pid}) did not answer for {now - last_heard:.0f}s;"
                        " the actor system is starting again"
                    )
                    log.error("%s", self._problem)
                    break
                while not self._requests.empty():
                    system.tell(supervisor, self._requests.get())
                if now - last_ping >= PING_EVERY_S:
                    system.tell(supervisor, GetDirectory())
                    last_ping = now
        finally:
            if self._closing.is_set():
                _shut_down(system, supervisor)
            else:
                self.recoveries += 1
                if watched is not None:
                    watched.kill_all()  # what is left of the old system: never two sets of shards
            if watched is not None:
                watched.close()
            self._system = None

    def _accept(self, local: ShardDirectory) -> None:
        """The supervisor's directory of this host's shards: merged with the cluster's, published."""
        self._publish(self.membership.local(local))

    def _publish(self, directory: ShardDirectory) -> None:
        """A directory for the engine (from the host's thread or the membership's)."""
        with self._publishing:
            latest = self._latest
            if latest is not None and directory.version < latest.version:
                return
            self._latest = directory
            if not self._started.done():
                mine = [s for s in directory.shards if s.host == self.identity.host]
                settled = bool(mine) and all(s.serving or s.error for s in mine)
                # Serving starts once this host's shards are up and every conversation has a holder.
                if settled and (directory.complete or any(s.error for s in mine)):
                    with contextlib.suppress(InvalidStateError):  # it failed meanwhile, on the host's thread
                        self._started.set_result(directory)
                return
        self._on_directory(directory)

    def _assign(self, assignment: Assignment) -> None:
        """What this host's shards should hold now (from the membership's thread)."""
        message = AssignShards(assignment.wanted, assignment.claim)
        self._assignment = message
        self._requests.put(message)


class _Watched:
    """The supervisor and admin of one actor system, held by pidfd (a pid may be reused)."""

    def __init__(self, directory: ShardDirectory) -> None:
        self.pid = directory.supervisor_pid
        self._supervisor = _pidfd(directory.supervisor_pid)
        self._admin = _pidfd(directory.admin_pid)

    def supervisor_exited(self) -> bool:
        if self._supervisor is None:
            return True
        readable, _, _ = select.select([self._supervisor], [], [], 0)
        return bool(readable)

    def kill_all(self) -> None:
        for fd in (self._supervisor, self._admin):
            if fd is not None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)

    def close(self) -> None:
        for fd in (self._supervisor, self._admin):
            if fd is not None:
                os.close(fd)
        self._supervisor = self._admin = None


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None


def _shut_down(system: Any, supervisor: Any) -> None:
    started = time.monotonic()
    try:
        if supervisor is not None:  # first, so that it does not replace the shards the shutdown stops
            system.tell(supervisor, ActorExitRequest())
        system.shutdown()
    except Exception:  # a system whose admin is gone already: nothing left to stop
        log.debug("actor system shutdown failed", exc_info=True)
    took = time.monotonic() - started
    if took > SLOW_SHUTDOWN_S:  # Thespian gives up on a blocked actor after 10 s
        log.warning("the actor system took %.1fs to stop", took)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _thespian_logging() -> dict[str, Any]:
    # Thespian always runs a logger process; route its records to stderr at WARNING.
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": "WARNING"}},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
