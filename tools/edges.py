"""The host process of ``confab serve --edges N``: the actor host, the membership, and N edge processes.

This process keeps what a host has once (the actor system and its shards, the cluster
membership and so the shards' directory, the listening port) and starts N edge
processes (``tools.edge``), each with its own event loop, engine, links to every
shard and gRPC server, all listening on one port with SO_REUSEPORT: the kernel
spreads new connections over them. What it does for them, over a socket pair per edge
(``runtime.protocol.host_channel``):

* hands each edge every directory (the latest at once, then every change) and the
  actor host's problem, so each edge's router and health see what the host sees;
* carries out what an edge asks: restart a shard, leave the cluster (SIGTERM in a
  cluster), where the edges serve (the member table shows it);
* SIGHUP: has one edge reload the flows (it asks every shard of this host);
* an edge that dies (``kill -9``) is started again while the others keep serving;
  a client of the dead one reconnects and lands on another;
* SIGTERM: every edge drains as a single process drains (health NOT_SERVING, streams
  ended, in-flight calls finished, in a cluster the hand-off); once all have exited,
  the shards stop.

**The port.** gRPC binds a port shared with SO_REUSEPORT only if every socket on it
allows it, and only for the same user. This process binds it first with SO_REUSEPORT
alone (no SO_REUSEADDR, never listening: it takes no connection) and keeps it for the
whole run, so with ``:0`` every edge gets the same port, an edge being replaced
never leaves the port free for someone else, and any socket without SO_REUSEPORT (a
second ``confab serve``: its check at start, or gRPC without the option) is refused.

**Processes.** Edges are started afresh (``python -m confab.tools.edge``), never forked:
this process runs threads (the actor host's, the membership's), and a fork copies
locks they hold. They are started from the main thread, and each arms its own
parent-death signal (``actors.system.lifecycle``): nothing outlives ``confab serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from confab.actors.system.host import ActorHost
from confab.runtime.config import ConfabConfig, config_to_mapping
from confab.runtime.protocol import codec, host_channel
from confab.runtime.protocol.directory import ShardDirectory

log = logging.getLogger("confab.edges")

READY_TIMEOUT_S = 60.0
PROBLEM_EVERY_S = 0.25
QUICK_DEATH_S = 10.0  # an edge that dies sooner than this after starting is started again after a pause
MAX_PAUSE_S = 5.0


class EdgeError(Exception):
    """The edges could not start (the message is the first edge's reason)."""


def reserve_port(address: str) -> tuple[socket.socket, str]:
    """A socket bound to ``address`` with SO_REUSEPORT alone, never listening; and the address
    with the port it got (``:0`` picks one). OSError if it cannot be bound."""
    host, _, port = address.rpartition(":")
    found = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
    family, kind, protocol, _, where = found[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(where)
        except OSError:
            # A connection of an earlier server on this port in TIME_WAIT, made without SO_REUSEPORT:
            # SO_REUSEADDR passes it (the check at start already found nobody listening).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
    bound = sock.getsockname()[1]
    return sock, f"{host}:{bound}"


@dataclass(eq=False)
class _Edge:
    index: int
    process: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    started_at: float = field(default_factory=time.monotonic)
    ready: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    pid: int = 0

    def send(self, *message: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(codec.frame(list(message)))


class Edges:
    def __init__(
        self, config: ConfabConfig, host: ActorHost, count: int, address: str, log_level: str | None
    ) -> None:
        self.config = config
        self.host = host
        self.count = count
        self.address = address  # HOST:PORT, the port resolved (every edge listens on it)
        self.log_level = log_level
        self.restarts = 0
        self._edges: dict[int, _Edge] = {}
        self._keepers: list[asyncio.Task[None]] = []
        self._latest: ShardDirectory | None = None
        self._problem = ""
        self._stopping = False
        # Made on the loop: directories from the host's threads are handed to it from the first.
        self._loop = asyncio.get_running_loop()
        self._watcher: asyncio.Task[None] | None = None
        self._first_ready: list[asyncio.Future[str]] = []

    # Directories, from the actor host's and the membership's threads ----------------------

    def directory_from_any_thread(self, directory: ShardDirectory) -> None:
        self._loop.call_soon_threadsafe(self.accept, directory)

    def accept(self, directory: ShardDirectory) -> None:
        if self._latest is not None and directory.version < self._latest.version:
            return
        self._latest = directory
        wire = host_channel.directory_to_wire(directory)
        for edge in self._edges.values():
            edge.send(host_channel.DIRECTORY, wire)

    # Lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every edge and wait until each serves; EdgeError (the others stopped) if one cannot."""
        self._watcher = asyncio.create_task(self._watch_problem(), name="confab-edges-problem")
        for index in range(self.count):
            first: asyncio.Future[str] = self._loop.create_future()
            self._first_ready.append(first)
            self._keepers.append(asyncio.create_task(self._keep(index, first), name=f"confab-edge-{index}"))
        done, pending = await asyncio.wait(
            self._first_ready, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_EXCEPTION
        )
        failed = [f.exception() for f in done if f.exception() is not None]
        if failed or pending:
            reason = str(failed[0]) if failed else f"an edge did not start within {READY_TIMEOUT_S:.0f}s"
            await self.stop(0.0)
            raise EdgeError(reason)

    def pids(self) -> list[int]:
        return [edge.pid for _, edge in sorted(self._edges.items())]

    def reload_flows(self) -> None:
        """Have one serving edge reload the flows on every shard of this host (SIGHUP)."""
        for edge in self._edges.values():
            if edge.ready.done() and not edge.ready.exception():
                edge.send(host_channel.RELOAD)
                return
        log.error("flow reload: no edge is serving to do it")

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every edge (each drains) and wait for them all; SIGKILL after ``timeout_s``."""
        self._stopping = True
        for edge in self._edges.values():
            with contextlib.suppress(ProcessLookupError):
                edge.process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + timeout_s
        while any(edge.process.poll() is None for edge in self._edges.values()):
            if time.monotonic() > give_up:
                for edge in self._edges.values():
                    if edge.process.poll() is None:
                        log.warning("edge %d (pid %d) did not stop in time: killed", edge.index, edge.pid)
                        with contextlib.suppress(ProcessLookupError):
                            edge.process.kill()
                break
            await asyncio.sleep(0.05)
        for edge in self._edges.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                edge.process.wait(5.0)
        for task in [*self._keepers, *([self._watcher] if self._watcher else [])]:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)

    # Each edge's life -------------------------------------------------------------------

    async def _keep(self, index: int, first: asyncio.Future[str]) -> None:
        """Run edge ``index``, and another whenever it dies, until the host stops."""
        quick_deaths = 0
        while not self._stopping:
            edge = await self._spawn(index)
            if not first.done():
                edge.ready.add_done_callback(lambda f: _pass_on(f, first))
            await self._serve(edge)
            code = await asyncio.to_thread(edge.process.wait)
            if self._stopping or not first.done() or first.exception() is not None:
                return
            self.restarts += 1
            reason = edge.ready.exception() if edge.ready.done() else None
            log.error(
                "edge %d (pid %d) %s; starting another",
                index,
                edge.pid,
                f"could not start: {reason}" if reason else f"exited ({_exit_reason(code)})",
            )
            quick_deaths = quick_deaths + 1 if time.monotonic() - edge.started_at < QUICK_DEATH_S else 0
            if quick_deaths > 1:
                await asyncio.sleep(min(MAX_PAUSE_S, 0.25 * 2**quick_deaths))

    async def _spawn(self, index: int) -> _Edge:
        ours, theirs = socket.socketpair()
        env = {
            **os.environ,
            host_channel.HOST_PID_VARIABLE: str(os.getpid()),
            host_channel.EDGE_INDEX_VARIABLE: str(index),
            host_channel.CHANNEL_FD_VARIABLE: str(theirs.fileno()),
        }
        # From the main thread (the event loop's): the edge's parent-death signal follows it.
        process = subprocess.Popen(
            [sys.executable, "-m", "confab.tools.edge"],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        edge = _Edge(index, process, writer, reader, pid=process.pid)
        self._edges[index] = edge
        config = config_to_mapping(self.config)
        config["server"]["listen"] = self.address
        edge.send(host_channel.INIT, index, config, self.log_level)
        if self._latest is not None:
            edge.send(host_channel.DIRECTORY, host_channel.directory_to_wire(self._latest))
        if self._problem:
            edge.send(host_channel.PROBLEM, self._problem)
        return edge

    async def _serve(self, edge: _Edge) -> None:
        """What the edge says, until its end of the socket closes (it exited or died)."""
        decoder = codec.FrameDecoder()
        try:
            while data := await edge.reader.read(1 << 16):
                for message in decoder.feed(data):
                    await self._handle(edge, message)
        except ConnectionResetError:
            pass  # it died (its exit is logged next)
        except (OSError, codec.FrameError) as exc:
            log.warning("edge %d: channel failed: %s", edge.index, exc)
        finally:
            edge.writer.close()
            if not edge.ready.done():
                edge.ready.set_exception(EdgeError(f"edge {edge.index} exited before it served"))

    async def _handle(self, edge: _Edge, message: list[Any]) -> None:
        kind = message[0]
        if kind == host_channel.READY:
            if not edge.ready.done():
                edge.ready.set_result(message[1])
        elif kind == host_channel.FAILED:
            if not edge.ready.done():
                edge.ready.set_exception(EdgeError(message[1]))
        elif kind == host_channel.RESTART_SHARD:
            self.host.restart_shard(int(message[1]))
        elif kind == host_channel.LEAVE:
            await asyncio.to_thread(self.host.leave)
        elif kind == host_channel.EDGE_SERVING:
            self.host.edge_serving(str(message[1]))
        else:
            log.warning("edge %d: unknown message %r", edge.index, kind)

    async def _watch_problem(self) -> None:
        while True:
            problem = self.host.problem()
            if problem != self._problem:
                self._problem = problem
                for edge in self._edges.values():
                    edge.send(host_channel.PROBLEM, problem)
            await asyncio.sleep(PROBLEM_EVERY_S)


def _pass_on(source: asyncio.Future[str], target: asyncio.Future[str]) -> None:
    if target.done():
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def _exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"code {code}"
