"""What the host process and each of its edge processes say to each other (``confab serve --edges N``).

One process of a host keeps the actor host and the cluster membership (it owns the
shards' directory); each edge process serves gRPC with an engine of its own. They talk
over a Unix socket pair made for that edge alone, in the frames of :mod:`.codec`
(a 4-byte length, one msgpack value): each message is a list whose first item says
what it is. Records are positional lists, fields appended, as everywhere on the
data plane.

Host to edge: ``INIT`` (first, once: the edge's index, the configuration and the log
level), ``DIRECTORY`` (the latest directory on connect, then every change), ``PROBLEM``
(why the shards cannot be reached as a whole now, "" once they can), ``RELOAD`` (load
the flow files again: SIGHUP reached the host).

Edge to host: ``READY`` (serving, with its address and pid) or ``FAILED`` (why it could
not start), then what an edge asks of the host: ``RESTART_SHARD``, ``LEAVE`` (hand this
host's virtual shards to the other hosts: SIGTERM in a cluster), ``EDGE_SERVING``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import fields
from typing import Any

from confab.runtime.inspection import HostView, Owner
from confab.runtime.protocol import codec
from confab.runtime.protocol.directory import ShardDirectory, ShardEndpoint

INIT, DIRECTORY, PROBLEM, RELOAD = "init", "directory", "problem", "reload"
READY, FAILED, RESTART_SHARD = "ready", "failed", "restart_shard"
LEAVE, EDGE_SERVING = "leave", "edge_serving"

# An edge's index and the host's pid travel in its environment (before any frame is read).
EDGE_INDEX_VARIABLE = "CONFAB_EDGE_INDEX"
HOST_PID_VARIABLE = "CONFAB_EDGE_HOST_PID"
CHANNEL_FD_VARIABLE = "CONFAB_EDGE_CHANNEL_FD"


def directory_to_wire(directory: ShardDirectory) -> list[Any]:
    return [
        directory.version,
        [_record(s) for s in directory.shards],
        [[o.shard, o.epoch] for o in directory.owners],
        list(directory.placement),
        [_record(h) for h in directory.hosts],
        directory.restarts,
        directory.supervisor_pid,
        directory.admin_pid,
        directory.in_touch,
    ]


def directory_from_wire(w: list[Any]) -> ShardDirectory:
    return ShardDirectory(
        version=w[0],
        shards=tuple(ShardEndpoint(*s) for s in w[1]),
        owners=tuple(Owner(shard, epoch) for shard, epoch in w[2]),
        placement=tuple(w[3]),
        hosts=tuple(HostView(*h) for h in w[4]),
        restarts=w[5],
        supervisor_pid=w[6],
        admin_pid=w[7],
        in_touch=w[8],
    )


def _record(value: ShardEndpoint | HostView) -> list[Any]:
    return [getattr(value, f.name) for f in fields(value)]


class Channel:
    """One end of a host ⇄ edge socket, blocking: ``send`` from any thread, ``receive`` from one."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._decoder = codec.FrameDecoder()
        self._ready: list[Any] = []
        self._sending = threading.Lock()

    def send(self, *message: Any) -> None:
        """OSError once the other end is gone."""
        data = codec.frame(list(message))
        with self._sending:
            self.sock.sendall(data)

    def receive(self) -> list[Any]:
        """The next message; EOFError once the other end is gone."""
        while not self._ready:
            try:
                data = self.sock.recv(1 << 16)
            except OSError as exc:
                raise EOFError(str(exc)) from exc
            if not data:
                raise EOFError("the other end closed the channel")
            self._ready.extend(self._decoder.feed(data))
        message: list[Any] = self._ready.pop(0)
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
