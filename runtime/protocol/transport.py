"""The data plane's transport: frames over a Unix socket on one host, or TCP between hosts.

An address is ``unix:/path/to/socket`` or ``tcp:HOST:PORT``. Both sides use
:class:`FrameConnection`, an asyncio protocol: whatever the peer sends is handed
over as whole frames, as soon as they are in; what is sent is written at once.
There are no threads and no per-frame tasks: a frame costs one parse and, on the
sending side, part of one write.

Backpressure is explicit: when the socket's send buffer is full the connection
says so (:attr:`FrameConnection.writable` turns False until the peer catches up),
and the sender stops taking new work rather than buffering without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, cast

from .codec import FrameDecoder, FrameError, frame

log = logging.getLogger(__name__)

UNIX, TCP = "unix:", "tcp:"


def parse_address(address: str) -> tuple[str, str, int]:
    """("unix", path, 0) or ("tcp", host, port); ValueError for anything else."""
    if address.startswith(UNIX):
        return "unix", address[len(UNIX) :], 0
    if address.startswith(TCP):
        host, _, port = address[len(TCP) :].rpartition(":")
        if host and port.isdigit():
            return "tcp", host.strip("[]"), int(port)
    raise ValueError(f"not a data-plane address: {address!r} (unix:PATH or tcp:HOST:PORT)")


FrameHandler = Callable[["FrameConnection", list[Any]], None]
CloseHandler = Callable[["FrameConnection", Exception | None], None]


class FrameConnection(asyncio.Protocol):
    def __init__(
        self,
        on_frames: FrameHandler,
        on_closed: CloseHandler | None = None,
        on_writable: Callable[[], None] | None = None,
    ) -> None:
        self._on_frames = on_frames
        self._on_closed = on_closed
        self._on_writable = on_writable
        self._decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.writable = True
        self.closed = False
        self.peer = ""
        self.bytes_in = 0
        self.bytes_out = 0

    # asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they are ones.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames are small and latency matters more than packet count.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = str(transport.get_extra_info("peername") or "")

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            frames = self._decoder.feed(data)
        except (FrameError, ValueError) as exc:  # not our protocol, or a corrupt stream
            log.warning("data plane: dropping the connection from %s: %s", self.peer or "?", exc)
            self.close()
            return
        if frames:
            self._on_frames(self, frames)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable = False
        if self._on_closed is not None:
            self._on_closed(self, exc)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self._on_writable is not None:
            self._on_writable()

    # Sending ------------------------------------------------------------------------

    def send(self, value: Any) -> None:
        self.send_encoded(frame(value))

    def send_many(self, values: list[Any]) -> None:
        self.send_encoded(b"".join(frame(v) for v in values))

    def send_encoded(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            return
        self.bytes_out += len(data)
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


async def connect(address: str, connection: FrameConnection, timeout: float) -> FrameConnection:
    """Open ``address``; the given connection object then receives its frames."""
    kind, host_or_path, port = parse_address(address)
    loop = asyncio.get_running_loop()
    if kind == "unix":
        opening = loop.create_unix_connection(lambda: connection, host_or_path)
    else:
        opening = loop.create_connection(lambda: connection, host_or_path, port)
    await asyncio.wait_for(opening, timeout)
    return connection


async def serve(address: str, new_connection: Callable[[], FrameConnection]) -> tuple[asyncio.Server, str]:
    """Listen on ``address``; every accepted peer gets a connection from ``new_connection``.

    Returns the server and the address it really listens on (a TCP port 0 becomes the
    port the kernel chose). TCP binds exactly the host named, never every interface.
    """
    kind, host_or_path, port = parse_address(address)
    loop = asyncio.get_running_loop()
    if kind == "unix":
        with contextlib.suppress(FileNotFoundError):  # a stale socket of a process that died
            os.unlink(host_or_path)
        server = await loop.create_unix_server(new_connection, host_or_path)
        return server, address
    server = await loop.create_server(new_connection, host_or_path, port, reuse_address=True)
    bound = server.sockets[0].getsockname()
    return server, f"{TCP}{host_or_path}:{bound[1]}"
