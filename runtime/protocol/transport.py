"""The data plane's transport: frames over a Unix socket on one host, or TCP between hosts.

An address is ``unix:/path/to/socket`` or ``tcp:HOST:PORT``. Both sides use
:class:`FrameConnection`, an asyncio protocol: whatever the peer sends is handed
over as whole frames, as soon as they are in; what is sent is written at once.
There are no threads and no per-frame tasks: a frame costs one parse and, on the
sending side, part of one write.

Backpressure is explicit: when the socket's send buffer is full the connection
says so (:attr:`FrameConnection.writable` turns False until the peer catches up),
and the sender stops taking new work rather than buffering without end; a shard
also stops *reading* a peer that does not read its answers.

Every connection starts with a handshake: each side's first frame is a HELLO
(``records.Hello``: protocol version, cluster name, role), and nothing else is read
from a peer whose HELLO does not match. TCP connections are mutual TLS first
(``security``); a Unix socket is reached by this host's own processes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from confab.runtime.protocol import codec
from confab.runtime.protocol.codec import FrameDecoder, FrameError, frame
from confab.runtime.protocol.records import (
    EDGE_ROLE,
    PROBE_ROLE,
    PROTOCOL_VERSION,
    SHARD_ROLE,
    Hello,
    ShapeError,
)
from confab.runtime.protocol.security import INSECURE_WARNING, DataPlaneSettings

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

DEFAULT_SETTINGS = DataPlaneSettings()
# TCP keepalive: a peer that vanished (host gone, link cut) is noticed in about two minutes
# even on a connection that has nothing to say.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 60, 10, 6
UNWRITABLE, BUSY = "unwritable", "busy"  # why a connection's reading is paused


class FrameConnection(asyncio.Protocol):
    """One data-plane connection, either side: the handshake, then whole frames both ways.

    ``role`` is this side's (``records.SHARD_ROLE`` for a shard's accepted connections,
    ``EDGE_ROLE`` for an edge's link); ``on_opened`` may refuse a connection as soon as it
    is accepted (before TLS costs anything); ``pause_while_unwritable`` stops reading a
    peer while it does not read what was sent to it, so that it cannot make this side
    buffer answers without end.
    """

    def __init__(
        self,
        on_frames: FrameHandler,
        on_closed: CloseHandler | None = None,
        on_writable: Callable[[], None] | None = None,
        *,
        settings: DataPlaneSettings = DEFAULT_SETTINGS,
        role: str = EDGE_ROLE,
        on_opened: Callable[[FrameConnection], bool] | None = None,
        pause_while_unwritable: bool = False,
    ) -> None:
        self._on_frames = on_frames
        self._on_closed = on_closed
        self._on_writable = on_writable
        self._on_opened = on_opened
        self._pause_while_unwritable = pause_while_unwritable
        self.settings = settings
        self.role = role
        self._decoder = FrameDecoder(settings.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        # Set by serve() on a TCP server's connections: TLS is started on the accepted socket.
        self.server_tls: ssl.SSLContext | None = None
        self.writable = True
        self.closed = False
        self.ready = False  # both HELLOs exchanged and matching
        self.peer = ""
        self.peer_role = ""
        self.close_reason = ""
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_received = time.monotonic()
        self._holds: set[str] = set()
        self._refused = False
        self._lost_reported = False
        self._waiter: asyncio.Future[None] | None = None
        self._tls: _ServerTls | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they are ones.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _peer_name(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames are small and latency matters more than packet count.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _keepalive(sock)
        if self._on_opened is not None and not self._on_opened(self):
            self._refused = True
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._handshake_timer = loop.call_later(self.settings.handshake_timeout_s, self._handshake_late)
        if self.server_tls is not None:  # TLS first: our HELLO goes once the handshake is done
            self._tls = _ServerTls(self.server_tls)
            return
        self._say_hello()

    def _say_hello(self) -> None:
        self.send(Hello(PROTOCOL_VERSION, self.settings.cluster, self.role).to_frame())

    def _handshake_late(self) -> None:
        if not self.ready and not self.closed:
            self._refuse(f"no HELLO within {self.settings.handshake_timeout_s:g}s")

    def _refuse(self, reason: str, last_words: bytes = b"") -> None:
        """Close the connection without reading anything more from it: one WARNING says why
        (``last_words``: a TLS alert, sent once that is logged)."""
        log.warning("data plane: closing the connection with %s: %s", self.peer or "?", reason)
        self.close_reason = reason
        self._refused = True
        self._write_raw(last_words)
        self.close()

    def data_received(self, data: bytes) -> None:
        if self._refused or self.closed:
            return
        self.bytes_in += len(data)
        self.last_received = time.monotonic()
        if self._tls is not None:
            try:
                data = self._tls.received(data)
            except ssl.SSLError as exc:  # not the cluster's certificate, or not TLS at all
                self._refuse(f"TLS failed: {_why(exc)}", self._tls.pending())  # logged before the alert goes
                return
            self._write_raw(self._tls.pending())  # handshake replies, session tickets
            if self._tls.handshake_done_now:
                self._say_hello()
            if not data:
                if self._tls.peer_closed:
                    self.close()
                return
        try:
            frames = self._decoder.feed(data)
        except (FrameError, ValueError) as exc:  # not our protocol, or a corrupt stream
            self._refuse(str(exc))
            return
        if frames and not self.ready:
            if not self._hello(frames[0]):
                return
            frames = frames[1:]
        if frames:
            self._on_frames(self, frames)

    def _hello(self, value: Any) -> bool:
        """Check the peer's HELLO; whether the connection goes on."""
        expected = (EDGE_ROLE, PROBE_ROLE) if self.role == SHARD_ROLE else (SHARD_ROLE,)
        try:
            hello = Hello.from_frame(value)
        except ShapeError as exc:
            self._refuse(str(exc))
            return False
        reason = hello.refusal(self.settings.cluster, expected)
        if reason:
            self._refuse(reason)
            return False
        self.ready = True
        self.peer_role = hello.role
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if hello.role == PROBE_ROLE:  # it only wanted to know this side answers: done, quietly
            log.debug("data plane: probed by %s", self.peer or "?")
            self._refused = True
            self.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable = False
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                ConnectionError(self.close_reason or f"{self.peer or 'the peer'} closed before its HELLO")
            )
        if self._lost_reported:
            return
        self._lost_reported = True
        if self._on_closed is not None:
            self._on_closed(self, exc)

    def pause_writing(self) -> None:
        self.writable = False
        if self._pause_while_unwritable:
            self.hold_reading(UNWRITABLE, True)

    def resume_writing(self) -> None:
        self.writable = True
        if self._pause_while_unwritable:
            self.hold_reading(UNWRITABLE, False)
        if self._on_writable is not None:
            self._on_writable()

    # Reading ------------------------------------------------------------------------

    def hold_reading(self, reason: str, hold: bool) -> None:
        """Pause reading for ``reason`` (or stop doing so); reading resumes once no reason is left."""
        was = bool(self._holds)
        if hold:
            self._holds.add(reason)
        else:
            self._holds.discard(reason)
        transport = self.transport
        if transport is None or self.closed or was == bool(self._holds):
            return
        if self._holds:
            transport.pause_reading()
        else:
            transport.resume_reading()

    @property
    def reading_paused(self) -> bool:
        return bool(self._holds)

    async def wait_ready(self) -> None:
        """Return once both HELLOs are exchanged; ConnectionError if the connection closed first."""
        if self.ready:
            return
        if self.closed:
            raise ConnectionError(self.close_reason or "the connection closed before its HELLO")
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    # Sending ------------------------------------------------------------------------

    def send(self, value: Any) -> None:
        self.send_encoded(frame(value))

    def send_many(self, values: list[Any]) -> None:
        self.send_encoded(b"".join(frame(v) for v in values))

    def send_encoded(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            return
        self.bytes_out += len(data)
        if self._tls is not None:
            self._tls.send(data, self._write_raw)
        else:
            self.transport.write(data)

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.closed and data:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            if self._tls is not None:
                self._tls.close(self._write_raw)
            self.transport.close()


class _ServerTls:
    """A shard's side of TLS, run over the accepted socket with ``ssl.SSLObject`` (memory BIOs).

    Not ``create_server(ssl=...)``: there a handshake that fails (no certificate, another
    CA's, plaintext) is dropped without a word, and a shard must say who was refused and
    why; uvloop's ``start_tls`` cannot take over an accepted connection without losing its
    first bytes. Here every failure is an ``ssl.SSLError`` the connection logs.
    """

    __slots__ = ("_incoming", "_outgoing", "_secured", "_tls", "handshake_done_now", "peer_closed")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._secured = False
        self.handshake_done_now = False  # the last bytes received completed the handshake
        self.peer_closed = False

    def received(self, data: bytes) -> bytes:
        """Take bytes from the peer; the plaintext they carried (ssl.SSLError: the peer is refused).
        What TLS has to say back meanwhile waits in :meth:`pending`."""
        self._incoming.write(data)
        self.handshake_done_now = False
        if not self._secured:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self._secured = self.handshake_done_now = True
        plain = bytearray()
        while True:
            try:
                chunk = self._tls.read(256 * 1024)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the peer is done
                self.peer_closed = True
                break
            if not chunk:
                break
            plain += chunk
        return bytes(plain)

    def pending(self) -> bytes:
        """The bytes TLS wants sent to the peer now (handshake replies, alerts, tickets)."""
        return self._outgoing.read()

    def send(self, data: bytes, write: Callable[[bytes], None]) -> None:
        if self._secured:
            self._tls.write(data)
            write(self._outgoing.read())

    def close(self, write: Callable[[bytes], None]) -> None:
        if self._secured:
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            write(self._outgoing.read())


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "") or "a local process"


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, name):  # Linux has all three; elsewhere the system's defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _why(exc: BaseException) -> str:
    """An exception as one line of a log: an SSL error's reason, not its whole repr."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{exc.reason}: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, TimeoutError):
        return "the TLS handshake timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def connect(
    address: str,
    connection: FrameConnection,
    timeout: float,
    settings: DataPlaneSettings = DEFAULT_SETTINGS,
) -> FrameConnection:
    """Open ``address`` (TLS for tcp:, checked against the cluster's CA and the address dialled)
    and exchange HELLOs; the given connection then receives its frames. OSError (ssl.SSLError,
    ConnectionError: refused at the HELLO) or TimeoutError when that does not work out."""
    kind, host_or_path, port = parse_address(address)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    if kind == "unix":
        opening = loop.create_unix_connection(lambda: connection, host_or_path)
    elif settings.secured(kind):
        opening = loop.create_connection(
            lambda: connection,
            host_or_path,
            port,
            ssl=settings.client_context(),
            server_hostname=host_or_path,
            ssl_handshake_timeout=timeout,
        )
    else:
        opening = loop.create_connection(lambda: connection, host_or_path, port)
    await asyncio.wait_for(opening, timeout)
    try:
        await asyncio.wait_for(connection.wait_ready(), max(give_up - loop.time(), 0.001))
    except BaseException:
        connection.close()
        raise
    return connection


async def serve(
    address: str,
    new_connection: Callable[[], FrameConnection],
    settings: DataPlaneSettings = DEFAULT_SETTINGS,
) -> tuple[asyncio.Server, str]:
    """Listen on ``address``; every accepted peer gets a connection from ``new_connection``.

    Returns the server and the address it really listens on (a TCP port 0 becomes the
    port the kernel chose). TCP binds exactly the host named, never every interface,
    and is mutual TLS unless ``settings.insecure_plaintext`` (then a WARNING says so).
    """
    kind, host_or_path, port = parse_address(address)
    loop = asyncio.get_running_loop()
    if kind == "unix":
        with contextlib.suppress(FileNotFoundError):  # a stale socket of a process that died
            os.unlink(host_or_path)
        server = await loop.create_unix_server(new_connection, host_or_path)
        return server, address
    context = settings.server_context() if settings.secured(kind) else None
    if context is None:
        log.warning("%s (listening on %s)", INSECURE_WARNING, address)

    def accept() -> FrameConnection:
        connection = new_connection()
        connection.server_tls = context
        return connection

    server = await loop.create_server(accept, host_or_path, port, reuse_address=True)
    bound = server.sockets[0].getsockname()
    return server, f"{TCP}{host_or_path}:{bound[1]}"


def probe(address: str, settings: DataPlaneSettings, timeout: float) -> str:
    """Whether a shard answers at ``address`` as a member of this cluster should: "" when it
    does, else why not, in one line. Blocking (plain sockets, no event loop), for checks of
    cluster membership from any thread: connect, TLS for tcp:, exchange HELLOs, close."""
    kind, host_or_path, port = parse_address(address)
    give_up = time.monotonic() + timeout

    def left() -> float:
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer within {timeout:g}s")
        return remaining

    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(left())
            try:
                sock.connect(host_or_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((host_or_path, port), left())
            if settings.secured(kind):
                try:
                    sock = settings.client_context().wrap_socket(sock, server_hostname=host_or_path)
                except BaseException:
                    sock.close()
                    raise
        with sock:
            sock.settimeout(left())
            sock.sendall(frame(Hello(PROTOCOL_VERSION, settings.cluster, PROBE_ROLE).to_frame()))
            header = _read_exactly(sock, codec.HEADER_BYTES, left)
            body = _read_exactly(sock, codec.frame_length(header, settings.max_frame_bytes), left)
            hello = Hello.from_frame(codec.unpack(body))
            return hello.refusal(settings.cluster, (SHARD_ROLE,))
    except ssl.SSLError as exc:
        return f"TLS with {address} failed: {_why(exc)}"
    except TimeoutError as exc:
        return f"{address} did not answer: {exc}"
    except (ShapeError, FrameError) as exc:
        return f"{address} does not speak Confab's data plane: {exc}"
    except EOFError:
        return f"{address} closed the connection without a HELLO"
    except OSError as exc:
        return f"cannot reach {address}: {exc.strerror or exc}"
    except ValueError as exc:  # msgpack's own errors: not a frame at all
        return f"{address} does not speak Confab's data plane: {exc}"


def _read_exactly(sock: socket.socket, count: int, left: Callable[[], float]) -> bytes:
    data = bytearray()
    while len(data) < count:
        sock.settimeout(left())
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)
