"""The data plane against peers that are not (quite) a cluster's edge, on real sockets.

A real shard serves on a Unix socket and on TCP at 127.0.0.1 with certificates made
by ``confab cluster certs``'s own code. An edge of the cluster gets answers; a peer
without the cluster's certificate, of another cluster or protocol version, or one
that sends what is not a frame of ours gets nothing and costs the shard one log line
and that one connection; limits hold whatever a peer does; a query's tenant scope is
enforced by the shard itself; ``transport.probe`` tells a member from anything else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import select
import socket
import ssl
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from confab.actors.data_server import ShardServer, fit_frames
from confab.actors.shard import Origin, Shard
from confab.runtime import eventloop
from confab.runtime.errors import InternalError
from confab.runtime.inspection import ConversationFilter
from confab.runtime.model import Content, ConversationKey, InboundMessage, ProcessingHints
from confab.runtime.models import ModelProvider, ModelSettings
from confab.runtime.protocol import codec, queries, transport
from confab.runtime.protocol.records import (
    ANSWER,
    BATCH,
    CANCEL,
    DEFERRED,
    DEFERRED_OUTCOME,
    DELTA,
    DONE,
    EDGE_ROLE,
    HELLO,
    LATE,
    OUTCOMES,
    PROTOCOL_VERSION,
    QUERY,
    Answer,
    Command,
    CommandBatch,
    CommandKind,
    Hello,
    LateOutcomes,
    OutcomeBatch,
    Query,
    TextDelta,
    cancel_frame,
    delta_entry_wire,
    deltas_frame,
    deltas_from_frame,
    error_outcome,
)
from confab.runtime.protocol.security import DataPlaneSettings
from confab.tools.cluster_certs import make_certs
from confab.tools.model_standin import ModelStandIn, Script
from tests.shard_runner import routed
from tests.support import free_port, run_confab

LOGGERS = ("confab.runtime.protocol.transport", "confab.actors.data_server")
SAFETY_TIMEOUT_S = 30.0  # a socket that would block forever fails the test instead of hanging it


@dataclass(frozen=True)
class Certs:
    ca: Path
    shard: tuple[Path, Path]  # the serving host's certificate and key
    edge: tuple[Path, Path]  # another host of the same cluster
    stranger: tuple[Path, Path, Path]  # CA, certificate and key of another cluster's CA


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ours = make_certs(tmp_path / "ours", "confab", [("h1", "127.0.0.1"), ("h2", "127.0.0.2")])
    theirs = make_certs(tmp_path / "theirs", "confab", [("x1", "127.0.0.1")])
    return Certs(
        ca=tmp_path / "ours" / "ca.pem",
        shard=(ours[0].cert_file, ours[0].key_file),
        edge=(ours[1].cert_file, ours[1].key_file),
        stranger=(tmp_path / "theirs" / "ca.pem", theirs[0].cert_file, theirs[0].key_file),
    )


def edge_settings(certs: Certs, **changes: Any) -> DataPlaneSettings:
    return replace(
        DataPlaneSettings(ca_file=str(certs.ca), cert_file=str(certs.edge[0]), key_file=str(certs.edge[1])),
        **changes,
    )


@dataclass
class Served:
    server: ShardServer
    shard: Shard
    unix: str
    tcp: str

    def connections(self) -> list[transport.FrameConnection]:
        return list(self.server._connections)


@pytest.fixture
def serve(make_shard: Callable[..., Shard], certs: Certs) -> Iterator[Callable[..., Served]]:
    """``serve(**limits)``: a real shard's data-plane server on a Unix socket and on TCP (mTLS);
    ``serve(shard=...)`` serves that shard rather than a new one of ``make_shard``'s."""
    started: list[ShardServer] = []
    with tempfile.TemporaryDirectory(prefix="cf-") as sockets:  # short: Unix socket paths are limited

        def start(shard: Shard | None = None, **limits: Any) -> Served:
            settings = DataPlaneSettings(
                ca_file=str(certs.ca), cert_file=str(certs.shard[0]), key_file=str(certs.shard[1]), **limits
            )
            shard = shard if shard is not None else make_shard()
            server = ShardServer(shard, [f"unix:{sockets}/s{len(started)}.sock", "tcp:127.0.0.1:0"], settings)
            unix, tcp = server.start()
            started.append(server)
            return Served(server, shard, unix, tcp)

        yield start
        for server in started:
            server.stop()


# Clients ---------------------------------------------------------------------------------


def edge_exchange(address: str, settings: DataPlaneSettings, frames: list[Any], answers: int) -> list[Any]:
    """As an edge does (``transport.connect``, TLS and HELLO): send ``frames``, return the first
    ``answers`` frames the shard sends back."""

    async def exchange() -> list[Any]:
        received: list[Any] = []
        arrived = asyncio.Event()

        def on_frames(_: transport.FrameConnection, values: list[Any]) -> None:
            received.extend(values)
            if len(received) >= answers:
                arrived.set()

        connection = transport.FrameConnection(on_frames, settings=settings)
        await transport.connect(address, connection, SAFETY_TIMEOUT_S, settings)
        connection.send_many(frames)
        await asyncio.wait_for(arrived.wait(), SAFETY_TIMEOUT_S)
        connection.close()
        return received

    return eventloop.run(exchange())


def raw_socket(address: str, context: ssl.SSLContext | None = None, rcvbuf: int = 0) -> socket.socket:
    kind, where, port = transport.parse_address(address)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(SAFETY_TIMEOUT_S)
        sock.connect(where)
        return sock
    sock = socket.create_connection((where, port), SAFETY_TIMEOUT_S)
    return context.wrap_socket(sock, server_hostname=where) if context is not None else sock


def read_until_closed(sock: socket.socket) -> list[Any]:
    """Every frame the peer sends until it closes the connection (or TLS fails)."""
    decoder = codec.FrameDecoder()
    frames: list[Any] = []
    with sock:
        while True:
            try:
                data = sock.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                return frames
            if not data:
                return frames
            frames += decoder.feed(data)


def read_frames(sock: socket.socket, count: int) -> list[Any]:
    decoder = codec.FrameDecoder()
    frames: list[Any] = []
    while len(frames) < count:
        data = sock.recv(65536)
        assert data, f"closed after {frames}"
        frames += decoder.feed(data)
    return frames


def hello(cluster: str = "confab", version: int = PROTOCOL_VERSION) -> bytes:
    return codec.frame(Hello(version, cluster, EDGE_ROLE).to_frame())


def status_query(query_id: int = 1, scope: str | None = None) -> list[Any]:
    return Query(query_id, queries.STATUS, [], scope).to_frame()


def turn(shard: Shard, tenant: str, conversation: str, batch_id: int = 1) -> list[Any]:
    command = Command(
        CommandKind.TURN,
        f"m-{conversation}",
        ConversationKey(tenant, conversation),
        InboundMessage("u", Content(text="hi")),
    )
    return CommandBatch(batch_id, routed(shard, [command])).to_frame()


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in LOGGERS and r.levelno >= logging.WARNING]


def kinds(frames: list[Any]) -> list[int]:
    return [f[0] for f in frames]


# Who may talk ----------------------------------------------------------------------------


def test_an_edge_with_the_clusters_certificate_gets_answers(
    serve: Callable[..., Served], certs: Certs
) -> None:
    served = serve()
    for address in (served.tcp, served.unix):
        frames = edge_exchange(
            address, edge_settings(certs), [turn(served.shard, "acme", "c1"), status_query()], 2
        )
        assert kinds(frames) == [OUTCOMES, ANSWER]
        assert Answer.from_frame(frames[1]).ok


def _refused(served: Served, sock: socket.socket, data: bytes, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Send ``data`` and read until the shard closes: no answer came; what the shard logged."""
    sock.sendall(data)
    frames = read_until_closed(sock)
    assert ANSWER not in kinds(frames) and OUTCOMES not in kinds(frames), frames
    return warnings_logged(caplog)


@pytest.mark.parametrize("client", ["no certificate", "another CA's certificate", "plaintext"])
def test_a_peer_without_the_clusters_certificate_gets_nothing_and_is_logged_once(
    serve: Callable[..., Served], certs: Certs, caplog: pytest.LogCaptureFixture, client: str
) -> None:
    served = serve()
    context: ssl.SSLContext | None = None
    if client != "plaintext":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(certs.ca))  # it trusts the shard: only the shard refuses
        if client == "another CA's certificate":
            context.load_cert_chain(str(certs.stranger[1]), str(certs.stranger[2]))
    sock = raw_socket(served.tcp, context)
    (line,) = _refused(served, sock, hello() + codec.frame(status_query()), caplog)
    assert "127.0.0.1:" in line and "TLS failed" in line


def test_a_peer_of_another_cluster_is_refused_at_its_hello(
    serve: Callable[..., Served], certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    sock = raw_socket(served.tcp, edge_settings(certs).client_context())
    (line,) = _refused(served, sock, hello(cluster="staging") + codec.frame(status_query()), caplog)
    assert "127.0.0.1:" in line and "cluster 'staging', not 'confab'" in line


def test_a_peer_of_another_protocol_version_is_refused(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    (line,) = _refused(
        served, raw_socket(served.unix), hello(version=99) + codec.frame(status_query()), caplog
    )
    assert f"protocol version 99, this process {PROTOCOL_VERSION}" in line


def test_a_first_frame_that_is_not_a_hello_is_refused(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    (line,) = _refused(served, raw_socket(served.unix), codec.frame(status_query()), caplog)
    assert "not a HELLO" in line


# Bad input costs its connection only -----------------------------------------------------


def test_a_frame_of_the_wrong_shape_closes_only_its_connection_not_the_others_round(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    bad, good = raw_socket(served.unix), raw_socket(served.unix)
    for sock in (bad, good):
        sock.sendall(hello())
        assert kinds(read_frames(sock, 1)) == [HELLO]
    # Hold the shard's loop while both send, so that both frames are read for the same round.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(SAFETY_TIMEOUT_S)

    served.server._loop.call_soon_threadsafe(hold)
    assert holding.wait(SAFETY_TIMEOUT_S)
    wrong = [BATCH, 5, [[int(CommandKind.TURN), "m-1", "acme", 42, None, 0]], False]  # an int conversation id
    bad.sendall(codec.frame(wrong))
    good.sendall(codec.frame(turn(served.shard, "acme", "c1", batch_id=6)))
    release.set()
    (answer,) = read_frames(good, 1)
    assert answer[0] == OUTCOMES and answer[1] == 6 and answer[2][0][0] != 0  # not an ERROR outcome
    assert read_until_closed(bad) == []
    (line,) = warnings_logged(caplog)
    assert "a bad frame" in line and "conversation id must be str" in line
    good.close()


def test_a_length_prefix_over_the_limit_closes_the_connection_before_its_body_is_read(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    limit = 1 << 20
    served = serve(max_frame_bytes=limit)
    sock = raw_socket(served.unix)
    sock.sendall(hello())
    assert kinds(read_frames(sock, 1)) == [HELLO]
    sock.sendall(struct.pack(">I", limit + 1) + b"x" * 16)  # the body would follow: it is never awaited
    assert read_until_closed(sock) == []
    (line,) = warnings_logged(caplog)
    assert f"a frame of {limit + 1} bytes is larger than {limit}" in line


def test_connections_beyond_max_connections_are_refused(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve(max_connections=2)
    kept = [raw_socket(served.unix) for _ in range(2)]
    for sock in kept:
        sock.sendall(hello())
        assert kinds(read_frames(sock, 1)) == [HELLO]
    assert read_until_closed(raw_socket(served.unix)) == []  # not even a HELLO
    (line,) = warnings_logged(caplog)
    assert "data_plane.max_connections" in line
    kept[0].close()  # a place frees up
    for _ in range(100):
        if len(served.connections()) < 2:
            break
        select.select([], [], [], 0.05)
    again = raw_socket(served.unix)
    again.sendall(hello())
    assert kinds(read_frames(again, 1)) == [HELLO]
    for sock in (kept[1], again):
        sock.close()


def test_a_peer_that_does_not_read_its_answers_is_not_read_either(serve: Callable[..., Served]) -> None:
    served = serve()
    sock = raw_socket(served.unix, rcvbuf=4096)
    sock.sendall(hello())
    assert kinds(read_frames(sock, 1)) == [HELLO]
    # Queries the shard answers at once (an unknown name), sent without reading a single answer.
    chunk = b"".join(codec.frame(Query(i, "no-such-query", [], None).to_frame()) for i in range(500))
    sock.setblocking(False)
    sent, cap = 0, 64 * 1024 * 1024
    while sent < cap:
        _, writable, _ = select.select([], [sock], [], 2.0)
        if not writable:
            break  # the shard stopped reading: the socket's buffers are full
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            continue
    assert sent < cap, "the shard kept reading a peer that reads nothing"
    paused = [c for c in served.connections() if c.reading_paused]
    assert len(paused) == 1 and not paused[0].writable
    # What it holds for that peer is bounded: the answers to what it read before it paused.
    assert paused[0].transport is not None and paused[0].transport.get_write_buffer_size() < 8 * 1024 * 1024
    other = raw_socket(served.unix)
    other.sendall(hello() + codec.frame(status_query(7)))
    hello_back, answer = read_frames(other, 2)
    assert hello_back[0] == HELLO and answer[:3] == [ANSWER, 7, True]
    other.close()
    sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    serve: Callable[..., Served],
) -> None:
    served = serve(idle_timeout_s=0.2)
    sock = raw_socket(served.unix)
    sock.sendall(hello())
    assert kinds(read_until_closed(sock)) == [HELLO]  # its HELLO, then nothing until it is closed


def test_outcomes_too_big_for_one_frame_go_as_late_frames_that_fit() -> None:
    limit = 64 * 1024
    outcomes = [[1, b"x" * 20_000] for _ in range(8)] + [[1, b"y" * (limit + 1)]]
    frames = [
        codec.unpack(f[codec.HEADER_BYTES :]) for f in fit_frames(OutcomeBatch(3, outcomes).to_frame(), limit)
    ]
    assert all(len(codec.frame(f)) <= limit for f in frames)
    head, *late = frames
    assert head[0] == OUTCOMES and [o[0] for o in head[2]] == [DEFERRED] * 9
    entries = [e for f in late for e in LateOutcomes.from_frame(f).entries]
    assert all(f[0] == LATE for f in late) and len(late) > 1
    assert [(b, i) for b, i, _ in entries] == [(3, i) for i in range(9)]
    assert [o for _, _, o in entries[:8]] == outcomes[:8]
    too_big = InternalError(f"the reply is larger than {limit} bytes (data_plane.max_frame_bytes)")
    assert entries[8][2] == error_outcome(too_big)


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        ([CANCEL, [[1]]], "a cancelled command must be [batch_id, position]"),
        ([CANCEL, [["1", 0]]], "batch id must be int"),
        ([CANCEL, "everything"], "a cancel frame must be [CANCEL, commands]"),
        ([DELTA, [[1, 0, "g", 0, "text"]]], "a frame of kind 8 has no place here"),  # shard to edge only
    ],
)
def test_a_malformed_cancel_or_a_delta_frame_closes_only_its_connection(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture, frame: list[Any], complaint: str
) -> None:
    served = serve()
    bad, good = raw_socket(served.unix), raw_socket(served.unix)
    for sock in (bad, good):
        sock.sendall(hello())
        assert kinds(read_frames(sock, 1)) == [HELLO]
    assert read_until_closed_after(bad, codec.frame(frame)) == []
    good.sendall(codec.frame(turn(served.shard, "acme", "c1", batch_id=6)))
    (answer,) = read_frames(good, 1)
    assert answer[0] == OUTCOMES and answer[1] == 6 and answer[2][0][0] != 0  # not an ERROR outcome
    (line,) = warnings_logged(caplog)
    assert "a bad frame" in line and complaint in line
    good.close()


def test_a_cancel_naming_a_command_that_waits_on_nothing_changes_nothing(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    sock = raw_socket(served.unix)
    sock.sendall(hello() + codec.frame(turn(served.shard, "acme", "c1", batch_id=1)))
    assert kinds(read_frames(sock, 2)) == [HELLO, OUTCOMES]
    # Answered already, and a command never sent: the shard has no generation for either.
    sock.sendall(codec.frame(cancel_frame([(1, 0), (99, 3)])) + codec.frame(status_query(7)))
    (answer,) = read_frames(sock, 1)
    assert Answer.from_frame(answer).ok and warnings_logged(caplog) == []
    sock.close()


def test_pieces_written_together_share_one_delta_frame_per_connection_in_order(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    first, second = raw_socket(served.unix), raw_socket(served.unix)
    for sock in (first, second):
        sock.sendall(hello())
        assert kinds(read_frames(sock, 1)) == [HELLO]
    one, two = served.connections()  # which socket is which does not matter: both are checked
    on_delta = served.shard.on_delta
    assert on_delta is not None
    # Hold the shard's loop while two model threads write, so that their pieces arrive together.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(SAFETY_TIMEOUT_S)

    served.server._loop.call_soon_threadsafe(hold)
    assert holding.wait(SAFETY_TIMEOUT_S)

    def write(connection: transport.FrameConnection, batch_id: int, stream: str, count: int) -> None:
        for n in range(count):
            on_delta(Origin(connection, batch_id, 0), stream, n, f"{stream}:{n} ")

    writers = [
        threading.Thread(target=write, args=(one, 1, "a", 50)),
        threading.Thread(target=write, args=(one, 2, "b", 50)),
        threading.Thread(target=write, args=(two, 5, "c", 30)),
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(SAFETY_TIMEOUT_S)
    release.set()
    received = {}
    for sock in (first, second):
        (frame,) = read_frames(sock, 1)  # one frame for every piece of that connection
        assert frame[0] == DELTA
        received[sock] = deltas_from_frame(frame)
    streams = {
        stream: [(d.sequence, d.text) for _, _, d in entries if d.stream_id == stream]
        for entries in received.values()
        for stream in {d.stream_id for _, _, d in entries}
    }
    assert streams["a"] == [(n, f"a:{n} ") for n in range(50)]
    assert streams["b"] == [(n, f"b:{n} ") for n in range(50)]
    assert streams["c"] == [(n, f"c:{n} ") for n in range(30)]
    assert {len(entries) for entries in received.values()} == {100, 30}
    first.close()
    second.close()


WRITER = """\
flow: writer
settings:
  start: writing
states:
  writing:
    on_enter:
      - generate: {prompt: "Answer: {{ message }}"}
    transitions:
      - to: writing
"""


def test_a_generations_deltas_go_out_before_its_outcome_when_another_call_ends_first(
    serve: Callable[..., Served], make_shard: Callable[..., Shard], standin: ModelStandIn, tmp_path: Path
) -> None:
    """The pass over finished calls that another call's end scheduled finds this generation done
    too, before the loop got to sending its last pieces: they go out first all the same."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "writer.yaml").write_text(WRITER, encoding="utf-8")
    gate = threading.Event()
    standin.script = Script(chunks=["one ", "two ", "three"], gate=gate)
    provider = ModelProvider("standin", standin.url, "standin-model", retries=0)
    served = serve(shard=make_shard(flow_dirs=(str(flows),), models=ModelSettings((provider,))))
    sock = raw_socket(served.unix)
    message = InboundMessage("u", Content(text="write"), hints=ProcessingHints(force_flow="writer"))
    command = Command(CommandKind.TURN, "m-1", ConversationKey("acme", "c1"), message, wants_deltas=True)
    sock.sendall(hello() + codec.frame(CommandBatch(4, routed(served.shard, [command])).to_frame()))
    hello_frame, outcomes = read_frames(sock, 2)
    assert kinds([hello_frame, outcomes]) == [HELLO, OUTCOMES]
    assert OutcomeBatch.from_frame(outcomes).outcomes == [DEFERRED_OUTCOME]  # it waits on the model
    (conversation,) = served.shard.waiting
    future = conversation.waiting.future
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(SAFETY_TIMEOUT_S)

    served.server._loop.call_soon_threadsafe(hold)
    assert holding.wait(SAFETY_TIMEOUT_S)
    on_webhook_done = served.shard.on_webhook_done
    assert on_webhook_done is not None
    on_webhook_done()  # another call ended: its pass runs before anything the generation schedules
    gate.set()
    assert wait_futures([future], SAFETY_TIMEOUT_S).done  # every piece was handed over before it ended
    release.set()
    frames = read_frames(sock, 2)
    assert kinds(frames) == [DELTA, LATE]
    assert [d.text for _, _, d in deltas_from_frame(frames[0])] == ["one ", "two ", "three"]
    ((batch_id, position, outcome),) = LateOutcomes.from_frame(frames[1]).entries
    assert (batch_id, position, outcome[0]) == (4, 0, DONE)
    sock.close()


def test_deltas_too_big_for_one_frame_go_in_frames_that_fit_and_a_piece_too_big_is_left_out() -> None:
    limit = 64 * 1024
    pieces = [delta_entry_wire(3, 0, TextDelta("g", n, "x" * 20_000)) for n in range(8)]
    huge = delta_entry_wire(3, 0, TextDelta("g", 8, "y" * limit))
    last = delta_entry_wire(3, 0, TextDelta("g", 9, "end"))
    frames = [
        codec.unpack(f[codec.HEADER_BYTES :]) for f in fit_frames(deltas_frame([*pieces, huge, last]), limit)
    ]
    assert len(frames) > 1 and all(len(codec.frame(f)) <= limit for f in frames)
    sent = [d for f in frames for _, _, d in deltas_from_frame(f)]
    assert [d.sequence for d in sent] == [0, 1, 2, 3, 4, 5, 6, 7, 9]  # in order; the huge one is not sent


# Tenant scope ----------------------------------------------------------------------------


def test_a_query_scoped_to_a_tenant_sees_nothing_of_another_tenant(
    serve: Callable[..., Served], certs: Certs
) -> None:
    served = serve()
    settings = edge_settings(certs)
    frames = edge_exchange(served.tcp, settings, [turn(served.shard, "acme", "secret")], 1)
    assert kinds(frames) == [OUTCOMES]
    everyone = queries.filter_to_wire(ConversationFilter())
    asked = [
        Query(1, queries.INSPECT, ["acme", "secret", 5], "globex"),
        Query(2, queries.LIST, [everyone, None, 50], "globex"),
        Query(3, queries.LIST, [queries.filter_to_wire(ConversationFilter("acme")), None, 50], "globex"),
        Query(4, queries.RESIDENT, [[["acme", "secret"]]], "globex"),
        Query(5, queries.PASSIVATE, ["acme", "secret"], "globex"),
        Query(6, queries.RELOAD, [], "globex"),
        Query(7, queries.INSPECT, ["acme", "secret", 5], "acme"),
        Query(8, queries.LIST, [everyone, None, 50], "acme"),
        Query(9, queries.LIST, [everyone, None, 50], None),
    ]
    answers = {
        a.query_id: a
        for a in map(
            Answer.from_frame, edge_exchange(served.tcp, settings, [q.to_frame() for q in asked], len(asked))
        )
    }
    for denied in (1, 3, 5, 6):
        assert not answers[denied].ok and answers[denied].result[0] == "PERMISSION_DENIED", answers[denied]
    assert answers[2].ok and answers[2].result[0] == []
    assert answers[4].ok and answers[4].result == []
    assert answers[7].ok and answers[7].result is not None
    for listed in (8, 9):
        assert [row[:2] for row in answers[listed].result[0]] == [["acme", "secret"]]


def test_a_query_without_its_scope_is_refused_not_read_as_an_operators(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    old_shape = [QUERY, 1, queries.INSPECT, ["acme", "secret", 5]]  # no scope item
    sock = raw_socket(served.unix)
    frames = read_until_closed_after(sock, hello() + codec.frame(old_shape))
    assert kinds(frames) == [HELLO]
    (line,) = warnings_logged(caplog)
    assert "a query must be" in line


def read_until_closed_after(sock: socket.socket, data: bytes) -> list[Any]:
    sock.sendall(data)
    return read_until_closed(sock)


# The probe -------------------------------------------------------------------------------


def test_probe_answers_empty_for_a_member_and_the_shard_stays_quiet(
    serve: Callable[..., Served], certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve()
    caplog.set_level(logging.INFO, logger="confab")
    assert transport.probe(served.tcp, edge_settings(certs), 10.0) == ""
    assert transport.probe(served.unix, edge_settings(certs), 10.0) == ""
    # The shard has closed both probes (quietly) by the time a later connection is answered.
    edge_exchange(served.unix, edge_settings(certs), [status_query()], 1)
    assert [r.getMessage() for r in caplog.records if r.name in LOGGERS and r.levelno >= logging.INFO] == []


def test_probe_says_why_a_peer_is_not_a_member(serve: Callable[..., Served], certs: Certs) -> None:
    served = serve()
    ca, cert, key = certs.stranger
    stranger = DataPlaneSettings(ca_file=str(ca), cert_file=str(cert), key_file=str(key))
    assert "TLS with" in transport.probe(served.tcp, stranger, 10.0)
    # Trusting the shard, but presenting another CA's certificate: the shard refuses it.
    mixed = edge_settings(certs, cert_file=str(cert), key_file=str(key))
    assert "TLS with" in transport.probe(served.tcp, mixed, 10.0)
    assert "cluster 'confab', not 'staging'" in transport.probe(
        served.tcp, edge_settings(certs, cluster="staging"), 10.0
    )
    assert "cannot reach" in transport.probe(f"tcp:127.0.0.1:{free_port()}", edge_settings(certs), 10.0)


# confab cluster certs --------------------------------------------------------------------


@pytest.mark.integration
def test_cluster_certs_makes_a_ca_and_host_certificates_it_signed(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = run_confab(
        "cluster", "certs", "--out", str(out), "--cluster", "prod", "h1=10.0.0.11", "h2=db.example"
    )
    assert made.returncode == 0, made.stderr
    again = run_confab("cluster", "certs", "--out", str(out), "h3=10.0.0.13")  # a host added later
    assert again.returncode == 0, again.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    expected = {"h1": x509.IPAddress(ipaddress.ip_address("10.0.0.11")), "h2": x509.DNSName("db.example")}
    expected["h3"] = x509.IPAddress(ipaddress.ip_address("10.0.0.13"))
    for host, alt in expected.items():
        cert = x509.load_pem_x509_certificate((out / f"{host}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == host
        assert cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value == x509.SubjectAlternativeName([alt])
        assert stat.S_IMODE((out / f"{host}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
