"""The shards' host as an edge process sees it: another process of the same ``confab serve``.

With several edge processes (``server.edges``), one process keeps the actor host and
the cluster membership and each edge reaches it over a socket of its own
(``runtime.protocol.host_channel``). :class:`RemoteShardHost` fulfils
:class:`~.engine.ShardHost` over that socket: directories and the host's problem come
in on a thread of its own (as they come from the actor host's thread in a single
process); what the engine asks (restart a shard, leave the cluster, where this edge
serves) goes out as one frame each. Stopping the shards is the host's business:
``close`` only lets go of the socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from confab.runtime.protocol import host_channel
from confab.runtime.protocol.directory import ShardDirectory
from confab.runtime.protocol.host_channel import Channel

log = logging.getLogger(__name__)

HOST_GONE = "the host process (actor system, membership) is gone"


class RemoteShardHost:
    def __init__(self, channel: Channel, *, start_timeout_s: float = 60.0) -> None:
        self.channel = channel
        self.start_timeout_s = start_timeout_s
        # Called on the channel's thread: SIGHUP reached the host; when the host is gone.
        self.on_reload: Callable[[], object] = lambda: None
        self.on_host_gone: Callable[[], object] = lambda: None
        self._on_directory: Callable[[ShardDirectory], None] = lambda directory: None
        self._first: Future[ShardDirectory] = Future()
        self._problem = ""
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="confab-host-channel", daemon=True)

    def start(self, on_directory: Callable[[ShardDirectory], None]) -> ShardDirectory:
        self._on_directory = on_directory
        self._thread.start()
        return self._first.result(self.start_timeout_s)

    def restart_shard(self, index: int) -> None:
        self._send(host_channel.RESTART_SHARD, index)

    def leave(self) -> None:
        self._send(host_channel.LEAVE)

    def edge_serving(self, address: str) -> None:
        self._send(host_channel.EDGE_SERVING, address)

    def problem(self) -> str:
        return self._problem

    def close(self) -> None:
        self._closing.set()

    def _send(self, *message: object) -> None:
        try:
            self.channel.send(*message)
        except OSError:
            self._problem = HOST_GONE

    def _listen(self) -> None:
        while True:
            try:
                message = self.channel.receive()
            except EOFError:
                if not self._closing.is_set():
                    self._problem = HOST_GONE
                    log.error("%s", HOST_GONE)
                    if not self._first.done():
                        self._first.set_exception(ConnectionError(HOST_GONE))
                    self.on_host_gone()
                return
            kind = message[0]
            if kind == host_channel.DIRECTORY:
                directory = host_channel.directory_from_wire(message[1])
                if not self._first.done():
                    self._first.set_result(directory)
                else:
                    self._on_directory(directory)
            elif kind == host_channel.PROBLEM:
                self._problem = message[1]
            elif kind == host_channel.RELOAD:
                self.on_reload()
            else:
                log.warning("unknown message from the host process: %r", kind)
