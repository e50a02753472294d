"""Structured logs and the catch-all error layer.

One JSON access line per RPC (method, tenant, conversation, code, duration,
request id, trace id, peer), no message text at INFO, and no exception text in
any status: a bug is INTERNAL with only the request id, the traceback is logged.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from confab.grpc_edge.access_log import (
    AccessLog,
    JsonFormatter,
    TextFormatter,
    _json_line,
    _Line,
    _text_line,
    configure_logging,
    flush_access_lines,
    resolve_format,
)
from confab.grpc_edge.call import CallInfo, note_target, request_id
from confab.grpc_edge.guards import CallGuard, Handler, guarded
from confab.grpc_edge.metrics import RpcMetrics
from confab.grpc_edge.observe import ObserverGuard
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.config import ConfigError, LoggingConfig, load_config
from confab.runtime.errors import ConversationNotFound, DeadlineExceeded
from confab.tools.price_service import PriceService
from tests.support import ServerProcess, message, pizza, price_webhook_config, state_request

ACCESS_LOGGER = "confab.grpc_edge.access_log"
ACCESS_FIELDS = {
    "method",
    "code",
    "duration_ms",
    "tenant",
    "conversation",
    "request_id",
    "trace_id",
    "peer",
}


# Formatters and configuration --------------------------------------------------------


def _record(
    msg: str, fields: dict[str, Any] | None = None, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("confab.test", logging.INFO, __file__, 1, msg, (), exc_info)
    if fields is not None:
        record.fields = fields
    return record


def test_json_formatter_writes_one_object_per_line_with_fields_and_traceback() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError as exc:
        error = exc
    line = JsonFormatter().format(_record("hello %s", {"method": "/x/Y", "msg": "ignored"}, error))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "confab.test"
    assert entry["msg"] == "hello %s"  # fields never replace the record's own keys
    assert entry["method"] == "/x/Y" and entry["ts"].endswith("+00:00")
    assert "ValueError: boom" in entry["exc"]


def test_text_formatter_appends_fields() -> None:
    line = TextFormatter().format(_record("rpc", {"code": "OK", "tenant": "acme"}))
    assert line.endswith("INFO confab.test: rpc code=OK tenant=acme")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_picks_the_format_and_the_level() -> None:
    assert resolve_format(LoggingConfig(format="auto"), io.StringIO()) == "json"
    assert resolve_format(LoggingConfig(format="auto"), _Terminal()) == "text"
    assert resolve_format(LoggingConfig(format="text"), io.StringIO()) == "text"

    out = io.StringIO()
    configure_logging(LoggingConfig(level="WARNING", format="auto"), None, out)
    configure_logging(LoggingConfig(level="WARNING", format="auto"), "info", out)  # replaces, not adds
    assert len(logging.getLogger().handlers) == 1 and logging.getLogger().level == logging.INFO
    logging.getLogger("confab.test").info("hi", extra={"fields": {"k": 1}})
    assert json.loads(out.getvalue()) | {"ts": ""} == {
        "ts": "",
        "level": "INFO",
        "logger": "confab.test",
        "msg": "hi",
        "k": 1,
    }

    terminal = _Terminal()
    configure_logging(LoggingConfig(level="INFO", format="auto"), None, terminal)
    logging.getLogger("confab.test").debug("not shown")
    logging.getLogger("confab.test").warning("shown")
    assert terminal.getvalue().strip().endswith("WARNING confab.test: shown")


def test_logging_config_is_validated() -> None:
    config = load_config()
    assert (config.logging.level, config.logging.format, config.logging.log_message_text) == (
        "INFO",
        "auto",
        False,
    )
    for key, value in [("logging.level", "LOUD"), ("logging.format", "xml")]:
        overrides: dict[str, Any] = {key: value}
        with pytest.raises(ConfigError, match=key):
            load_config(None, **overrides)


# Access lines: rendered without a record, written once per loop iteration ------------------


def _access_record(line: _Line) -> logging.LogRecord:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "rpc", (), None)
    record.created = line.created
    record.msecs = int((line.created - int(line.created)) * 1000) + 0.0
    record.fields = line.fields()
    return record


ENGINE_METHOD = "/mcp.engine.v2.MCPEngine/ProcessMessage"
LINES = [
    _Line(1_765_000_000.0, ENGINE_METHOD, "OK", 0.0123456, "acme", "c-1", "r" * 32, "", "ipv4:1.2.3.4:5", ""),
    # Quotes, backslashes, control characters and non-ASCII text from the client; the end of a
    # second, rounded to the microsecond as datetime does.
    _Line(
        1_765_000_001.9999996,
        ENGINE_METHOD,
        "INVALID_ARGUMENT",
        2.5,
        'ten"ant\\',
        "c\u00e9-\u4e2d\n\x00",
        "f" * 32,
        "a" * 32,
        "ipv6:[::1]:5",
        'a "text"\nwith \u00fc',
    ),
    _Line(1_765_000_002.0004, "/grpc.health.v1.Health/Check", "CANCELLED", 0.0, "", "", "0" * 32, "", "", ""),
]


def test_an_access_line_renders_as_its_record_would_character_for_character() -> None:
    text = TextFormatter()
    for line in LINES:
        assert _json_line(line) == JsonFormatter().format(_access_record(line)) + "\n"
        assert _text_line(text, line) == text.format(_access_record(line)) + "\n"
    assert json.loads(_json_line(LINES[1]))["text"] == LINES[1].text


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.mark.usefixtures("restore_root_logger")
def test_access_lines_are_written_in_order_in_one_write_per_loop_iteration() -> None:
    out = _CountingStream()
    configure_logging(LoggingConfig(level="INFO", format="json"), None, out)
    access = AccessLog()
    calls = [CallInfo(ENGINE_METHOD, peer="ipv4:127.0.0.1:1") for _ in range(500)]

    async def burst() -> None:
        for call in calls[:3]:
            access.write(call, "OK", 0.001, "")
        assert out.writes == 0  # queued, not written: the call goes on
        # A record logged meanwhile comes after the lines of the calls that ended before it.
        logging.getLogger("confab.test").warning("in between")
        for call in calls[3:]:
            access.write(call, "OK", 0.001, "")
        writes = out.writes
        await asyncio.sleep(0)  # the end of this loop iteration
        assert out.writes == writes + 1

    asyncio.run(burst())
    lines = out.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["msg"] for e in entries[:4]] == ["rpc", "rpc", "rpc", "in between"]
    access_ids = [e["request_id"] for e in entries if e["msg"] == "rpc"]
    assert access_ids == [call.request_id for call in calls]
    assert all(set(e) >= ACCESS_FIELDS for e in entries if e["msg"] == "rpc")

    access.write(calls[0], "OK", 0.001, "")  # no loop running: written at once
    assert out.getvalue().count("\n") == 502


@pytest.mark.integration  # a Python process of its own
def test_access_lines_queued_when_the_loop_stops_are_written_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "queued.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from confab.grpc_edge.access_log import AccessLog, configure_logging
            from confab.grpc_edge.call import CallInfo
            from confab.runtime.config import LoggingConfig

            configure_logging(LoggingConfig(level="INFO", format="json"))
            loop = asyncio.new_event_loop()

            async def calls() -> None:
                for _ in range(100):
                    AccessLog().write(CallInfo("/x.Y/Z"), "OK", 0.001, "")
                loop.stop()  # the loop ends before the flush it was given runs

            loop.create_task(calls())
            loop.run_forever()
            loop.close()
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 100 and all(json.loads(line)["method"] == "/x.Y/Z" for line in lines)


@pytest.mark.usefixtures("restore_root_logger")
def test_access_lines_go_through_logging_where_other_handlers_would_see_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = io.StringIO()
    configure_logging(LoggingConfig(level="INFO", format="json"), None, out)
    logging.getLogger().addHandler(caplog.handler)  # as an application embedding the edge might

    async def one() -> None:
        AccessLog().write(CallInfo(ENGINE_METHOD), "OK", 0.002, "")

    asyncio.run(one())
    flush_access_lines()
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert record.fields["code"] == "OK"  # type: ignore[attr-defined]
    assert json.loads(out.getvalue())["code"] == "OK"  # and the stream's handler wrote it too


# The error layer with fake handlers and contexts ------------------------------------------


@dataclass(frozen=True)
class Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[Any, ...] = ()


def _observer(*, log_message_text: bool = False) -> ObserverGuard:
    return ObserverGuard(RpcMetrics(), AccessLog(log_message_text=log_message_text))


class FakeContext:
    """Just what the guards use of a grpc.aio.ServicerContext."""

    def __init__(self, *, time_remaining: float | None = None) -> None:
        self.status: grpc.Status | None = None
        self.peer_asked_after_the_method = False
        self.method_returned = False
        self.remaining = time_remaining

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise grpc.aio.AbortError()

    # What a generated servicer base's unimplemented method calls before it raises.
    def set_code(self, code: grpc.StatusCode) -> None:
        self.code_set = code

    def set_details(self, details: str) -> None:
        self.details_set = details

    def code(self) -> grpc.StatusCode | None:
        if self.status is not None:
            return self.status.code
        return getattr(self, "code_set", None)

    def time_remaining(self) -> float | None:
        return self.remaining

    def peer(self) -> str:
        # gRPC cannot always tell the peer of a call that has ended (grpcio 1.85 crashed on it).
        self.peer_asked_after_the_method |= self.method_returned
        return "ipv4:127.0.0.1:4242"


@dataclass
class Seen:
    request_ids: list[str] = field(default_factory=list)


def _chain(handler: Handler, *guards: CallGuard) -> Any:
    """The handler as the server registers it, guarded (outermost first); Any: fake contexts."""
    return guarded("/test.Svc/Method", handler, guards)


def test_an_exception_escaping_a_method_becomes_internal_with_only_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Seen()

    async def broken(request: Any, context: Any) -> Any:
        seen.request_ids.append(request_id())
        raise RuntimeError("secret internals /etc/passwd")

    async def run() -> FakeContext:
        handler = _chain(grpc.unary_unary_rpc_method_handler(broken), _observer())
        context = FakeContext()
        with pytest.raises(grpc.aio.AbortError):
            await handler.unary_unary(b"", context)
        return context

    with caplog.at_level(logging.ERROR):
        context = asyncio.run(run())
    assert context.status is not None
    assert context.status.code == grpc.StatusCode.INTERNAL
    assert context.status.details == f"internal error; request_id={seen.request_ids[0]}"
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert seen.request_ids[0] in record.getMessage()
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])


def test_the_error_layer_covers_streams_and_keeps_deliberate_statuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def breaks_midway(request: Any, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        raise KeyError("secret key")

    async def not_found(request: Any, context: Any) -> Any:
        raise ConversationNotFound("no conversation c-1")

    async def aborts(request: Any, context: Any) -> Any:
        await context.abort_with_status(Status(grpc.StatusCode.PERMISSION_DENIED, "mine"))

    async def cancelled(request: Any, context: Any) -> Any:
        raise asyncio.CancelledError

    async def run() -> None:
        stream = _chain(grpc.unary_stream_rpc_method_handler(breaks_midway))
        context = FakeContext()
        received = []
        with pytest.raises(grpc.aio.AbortError):
            async for item in stream.unary_stream(b"", context):
                received.append(item)
        assert received == [b"first"]
        assert context.status is not None and context.status.code == grpc.StatusCode.INTERNAL
        assert "secret" not in context.status.details

        for behaviour, code, details in [
            (not_found, grpc.StatusCode.NOT_FOUND, "no conversation c-1"),
            (aborts, grpc.StatusCode.PERMISSION_DENIED, "mine"),
        ]:
            unary = _chain(grpc.unary_unary_rpc_method_handler(behaviour))
            context = FakeContext()
            with pytest.raises(grpc.aio.AbortError):
                await unary.unary_unary(b"", context)
            assert context.status is not None
            assert (context.status.code, context.status.details) == (code, details)

        unary = _chain(grpc.unary_unary_rpc_method_handler(cancelled))
        context = FakeContext()
        with pytest.raises(asyncio.CancelledError):  # cancellation is not an error to report
            await unary.unary_unary(b"", context)
        assert context.status is None

    with caplog.at_level(logging.ERROR):
        asyncio.run(run())
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # only the KeyError


def test_a_method_left_to_the_generated_base_is_unimplemented_but_our_own_is_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    left_out = std_health_pb2_grpc.HealthServicer().List  # grpcio-health-checking does not implement it

    async def ours(request: Any, context: Any) -> Any:
        raise NotImplementedError("a branch nobody wrote")

    async def answer(behaviour: Callable[[Any, Any], Any]) -> grpc.Status:
        handler = _chain(grpc.unary_unary_rpc_method_handler(behaviour), _observer())
        context = FakeContext()
        with pytest.raises(grpc.aio.AbortError):
            await handler.unary_unary(b"", context)
        assert context.status is not None
        return context.status

    with caplog.at_level(logging.ERROR):
        generated, own = asyncio.run(answer(left_out)), asyncio.run(answer(ours))
    assert generated.code == grpc.StatusCode.UNIMPLEMENTED
    assert "request_id" not in generated.details
    assert own.code == grpc.StatusCode.INTERNAL
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]  # only ours is logged as a bug
    assert record.exc_info is not None and "a branch nobody wrote" in str(record.exc_info[1])


def test_access_line_has_the_trace_id_of_the_current_span_and_text_only_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    contexts: list[FakeContext] = []

    async def served(request: pb.ProcessMessageRequest, context: FakeContext) -> bytes:
        note_target(request.tenant_context.tenant_id, request.conversation_id)
        context.method_returned = True
        return b""

    async def call(log_message_text: bool) -> None:
        handler = _chain(
            grpc.unary_unary_rpc_method_handler(served),
            _observer(log_message_text=log_message_text),
        )
        context = FakeContext()
        contexts.append(context)
        await handler.unary_unary(message("c-9", "private words", tenant="t-9"), context)

    tracer = TracerProvider().get_tracer("test")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        asyncio.run(call(False))  # no span: empty trace id
        with tracer.start_as_current_span("rpc") as span:
            asyncio.run(call(True))  # asyncio.run copies the context, span included
    first, second = [r.fields for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert set(first) == ACCESS_FIELDS
    assert (first["tenant"], first["conversation"], first["code"]) == ("t-9", "c-9", "OK")
    assert first["trace_id"] == ""
    assert first["peer"] == "ipv4:127.0.0.1:4242" and len(first["request_id"]) == 32
    assert second["trace_id"] == trace.format_trace_id(span.get_span_context().trace_id)
    assert second["text"] == "private words"
    # The peer was read when the call started, never once the method had returned.
    assert contexts and not any(c.peer_asked_after_the_method for c in contexts)


class FailingContext(FakeContext):
    """A call gRPC ended meanwhile (the client cancelled): sending a status fails in the core."""

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise RuntimeError('Failed "execute_batch"')  # what grpc.aio raises: ExecuteBatchError


def test_a_call_that_ended_before_its_status_could_be_sent_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails(request: Any, context: Any) -> Any:
        raise DeadlineExceeded("the deadline passed before the shard took it")

    async def bug(request: Any, context: Any) -> Any:
        raise KeyError("a bug is still a bug")

    async def run(behaviour: Callable[[Any, Any], Any], context: FakeContext) -> None:
        handler = _chain(grpc.unary_unary_rpc_method_handler(behaviour), _observer())
        with pytest.raises(asyncio.CancelledError):  # grpc.aio ends a cancelled method quietly
            await handler.unary_unary(b"", context)
        assert context.status is None  # no status sent: the call has one already

    with caplog.at_level(logging.INFO):
        asyncio.run(run(fails, FailingContext()))  # ended by the client: time left
        asyncio.run(run(fails, FakeContext(time_remaining=0.0)))  # past the deadline: not even tried
        asyncio.run(run(bug, FakeContext(time_remaining=0.0)))
    codes = [r.fields["code"] for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert codes == ["CANCELLED", "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"]
    (error,) = [r for r in caplog.records if r.levelno >= logging.WARNING]  # the bug, logged as one
    assert error.exc_info is not None and "a bug is still a bug" in str(error.exc_info[1])


def test_a_method_answering_after_its_deadline_sends_no_status_on_a_real_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop is busy past the deadline: gRPC's core has ended the call, the method does not know."""

    sent: list[grpc.StatusCode] = []

    class Spied:
        """The real context, telling which statuses the guards tried to send."""

        def __init__(self, context: Any) -> None:
            self.context = context

        def __getattr__(self, name: str) -> Any:
            return getattr(self.context, name)

        async def abort_with_status(self, status: grpc.Status) -> None:
            sent.append(status.code)  # once the deadline passed, this fails: ExecuteBatchError
            await self.context.abort_with_status(status)

    async def late(request: bytes, context: Any) -> bytes:
        time.sleep(0.3)  # blocks the loop: the deadline (0.1 s) passes meanwhile
        raise DeadlineExceeded("the deadline passed before the shard took it")

    guarded_late = _chain(grpc.unary_unary_rpc_method_handler(late), _observer())

    async def spied(request: bytes, context: Any) -> bytes:
        return await guarded_late.unary_unary(request, Spied(context))  # type: ignore[no-any-return]

    async def run() -> grpc.StatusCode:
        server = grpc.aio.server()
        handler: Handler = grpc.unary_unary_rpc_method_handler(spied)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Svc", {"Method": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                method: Any = channel.unary_unary("/test.Svc/Method")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await method(b"", timeout=0.1)
                await asyncio.sleep(0.2)  # what grpc.aio makes of the method's end is logged by now
                return caught.value.code()
        finally:
            await server.stop(None)

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(run()) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert sent == []  # gRPC had ended the call: no status was left to send
    assert [r.fields["code"] for r in caplog.records if r.name == ACCESS_LOGGER] == [  # type: ignore[attr-defined]
        "DEADLINE_EXCEEDED"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


# A real server -------------------------------------------------------------------------


@dataclass
class LoggedRun:
    output: list[str]
    secret: str
    calls: list[tuple[str, str, str]]  # (method, expected code, request id or "")

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output if line.startswith("{")]

    def access_lines(self) -> list[dict[str, Any]]:
        return [e for e in self.json_lines() if e["logger"] == ACCESS_LOGGER]


ENGINE = "/mcp.engine.v2.MCPEngine/"


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    """A JSON-logging server (``--log-level`` over the file's WARNING), a known set of calls, its output."""
    root = tmp_path_factory.mktemp("access-log")
    config = root / "confab.yaml"
    config.write_text("logging:\n  level: WARNING\n  format: json\n", encoding="utf-8")
    server = ServerProcess(root / "data", extra=["--log-level", "INFO", "--config", str(config)]).start()
    secret = f"secret-{uuid.uuid4().hex}"
    calls: list[tuple[str, str, str]] = []
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    try:
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            reply = stub.ProcessMessage(message(conversation, secret))
            calls.append((ENGINE + "ProcessMessage", "OK", reply.metadata.request_id))
            state = stub.GetConversationState(state_request(conversation))
            calls.append((ENGINE + "GetConversationState", "OK", state.metadata.request_id))
            with pytest.raises(grpc.RpcError):
                stub.GetConversationState(state_request("no-such-conversation"))
            calls.append((ENGINE + "GetConversationState", "NOT_FOUND", ""))
            no_user = message(conversation, secret)
            no_user.ClearField("user_id")
            with pytest.raises(grpc.RpcError):
                stub.ProcessMessage(no_user)
            calls.append((ENGINE + "ProcessMessage", "INVALID_ARGUMENT", ""))
            batch = stub.BatchProcessMessages(
                pb.BatchProcessMessagesRequest(
                    tenant_context={"tenant_id": "acme"}, messages=[message(conversation, secret)] * 2
                )
            )
            calls.append((ENGINE + "BatchProcessMessages", "OK", batch.metadata.request_id))
            stream = [
                pb.ConversationStreamRequest(
                    init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
                ),
                pb.ConversationStreamRequest(message=message(conversation, secret)),
                pb.ConversationStreamRequest(close=pb.StreamClose()),
            ]
            assert len(list(stub.StreamConversation(iter(stream)))) >= 2
            calls.append((ENGINE + "StreamConversation", "OK", ""))

            # NaN has no JSON form: a clear INVALID_ARGUMENT naming the field, never INTERNAL.
            poisoned = message(conversation, secret)
            poisoned.content.metadata.update({"score": float("nan")})
            with pytest.raises(grpc.RpcError) as caught:
                stub.ProcessMessage(poisoned)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "content.metadata" in (caught.value.details() or "")
            calls.append((ENGINE + "ProcessMessage", "INVALID_ARGUMENT", ""))
            batch = stub.BatchProcessMessages(
                pb.BatchProcessMessagesRequest(tenant_context={"tenant_id": "acme"}, messages=[poisoned])
            )
            assert batch.failed_count == 1
            assert batch.responses[0].status.details["field"] == "messages[0].content.metadata"
            calls.append((ENGINE + "BatchProcessMessages", "OK", batch.metadata.request_id))

            health = std_health_pb2_grpc.HealthStub(channel)
            health.Check(std_health_pb2.HealthCheckRequest(service=""))
            calls.append(("/grpc.health.v1.Health/Check", "OK", ""))
    finally:
        server.stop()
    return LoggedRun(server.output, secret, calls)


@pytest.mark.integration
def test_one_json_access_line_per_rpc_with_every_field(logged_run: LoggedRun) -> None:
    lines = logged_run.access_lines()
    assert [(e["method"], e["code"]) for e in lines] == [(m, c) for m, c, _ in logged_run.calls]
    for entry, (_, _, known_id) in zip(lines, logged_run.calls, strict=True):
        assert set(entry) >= ACCESS_FIELDS
        assert entry["level"] == "INFO" and entry["msg"] == "rpc"
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
        assert len(entry["request_id"]) == 32
        if known_id:
            assert entry["request_id"] == known_id
        assert entry["trace_id"] == ""  # tracing is off
        assert entry["peer"].startswith("ipv4:127.0.0.1:")
    by_method = {(e["method"], e["code"]): e for e in lines}
    served = by_method[(ENGINE + "ProcessMessage", "OK")]
    assert (served["tenant"], served["conversation"]) != ("", "")
    assert by_method[("/grpc.health.v1.Health/Check", "OK")]["tenant"] == ""
    # Every line the server wrote to stderr is JSON (the "serving on" line goes to stdout).
    others = [line for line in logged_run.output if not line.startswith("{")]
    assert len(others) == 1 and "serving on" in others[0]


@pytest.mark.integration
def test_message_text_never_appears_in_the_logs(logged_run: LoggedRun) -> None:
    assert logged_run.secret not in "".join(logged_run.output)
    assert all("text" not in entry for entry in logged_run.access_lines())


@pytest.mark.integration
def test_a_stream_s_access_line_names_its_tenant_and_conversation(logged_run: LoggedRun) -> None:
    streams = [e for e in logged_run.access_lines() if e["method"] == ENGINE + "StreamConversation"]
    (stream,) = streams
    processed = next(e for e in logged_run.access_lines() if e["method"] == ENGINE + "ProcessMessage")
    assert stream["tenant"] == "acme" and stream["conversation"] == processed["conversation"] != ""


@pytest.mark.integration
def test_thespian_s_start_up_line_stays_out_of_the_log(logged_run: LoggedRun) -> None:
    # The server logs at INFO: Thespian's "++++ Actor System gen ... started" would show at INFO.
    lines = logged_run.json_lines()
    assert lines and not [e for e in lines if "Actor System" in e["msg"] or e["logger"] == "root"]


def _json_server(directory: Path) -> ServerProcess:
    config = directory / "confab.yaml"
    config.write_text("logging:\n  format: json\n", encoding="utf-8")
    return ServerProcess(directory / "data", extra=["--config", str(config)], log_level="INFO")


def _lines_of(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server wrote, but its "serving on" line, as JSON: a line that is not fails."""
    return [json.loads(line) for line in server.output if "serving on" not in line]


@pytest.mark.integration
def test_a_burst_of_calls_and_one_cut_short_by_sigterm_have_one_line_per_call(tmp_path: Path) -> None:
    server = _json_server(tmp_path).start()
    burst, cut = 500, 300

    async def calls(count: int, prefix: str, sigterm_after: int | None = None) -> list[Any]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            pending = [
                asyncio.ensure_future(stub.ProcessMessage(message(f"{prefix}-{i}", "hi")))
                for i in range(count)
            ]
            if sigterm_after is not None:
                while sum(f.done() for f in pending) < sigterm_after:
                    await asyncio.sleep(0.001)
                server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            return list(await asyncio.gather(*pending, return_exceptions=True))

    try:
        answers = asyncio.run(calls(burst, "burst"))
        assert all(isinstance(a, pb.ProcessMessageResponse) for a in answers)
        deadline = time.monotonic() + 10
        while (
            len([e for e in _lines_of(server) if e["msg"] == "rpc"]) < burst and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        lines = [e for e in _lines_of(server) if e["msg"] == "rpc"]
        assert sorted(e["request_id"] for e in lines) == sorted(a.metadata.request_id for a in answers)
        assert all(set(e) >= ACCESS_FIELDS and e["code"] == "OK" for e in lines)

        # SIGTERM while calls are in flight: the lines of every call served reach the log.
        answers = asyncio.run(calls(cut, "cut", sigterm_after=cut // 3))
        assert server.process.wait(30) == 0  # type: ignore[union-attr]
    finally:
        server.stop()
    served = {a.metadata.request_id for a in answers if isinstance(a, pb.ProcessMessageResponse)}
    assert len(served) >= cut // 3
    output = "".join(server.output)
    assert output.endswith("\n")  # the last line is whole
    lines = [e for e in _lines_of(server) if e["msg"] == "rpc"]
    ids = [e["request_id"] for e in lines]
    assert len(ids) == len(set(ids)) and served <= set(ids)
    assert len(lines) <= burst + cut


@pytest.mark.integration
def test_a_call_past_its_deadline_is_deadline_exceeded_without_a_traceback(tmp_path: Path) -> None:
    prices = PriceService(delay_s=1.5).start()  # the pizza flow's price webhook: slow
    config = price_webhook_config(
        tmp_path / "confab.yaml", prices.url, more_yaml="logging:\n  format: json\n"
    )
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)], log_level="INFO")
    server.start()
    try:
        stub = server.stub()
        stub.ProcessMessage(pizza("late", "hi"))
        for text, timeout in [("2 large pizzas", 0.5), ("yes", 0.3)]:  # the 2nd waits behind the 1st
            with pytest.raises(grpc.RpcError) as caught:
                stub.ProcessMessage(pizza("late", text), timeout=timeout)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.5)  # the webhook answers, the turn ends: nobody is waiting for it any more
        assert server.terminate() == 0
    finally:
        server.stop()
        prices.stop()
    output = "".join(server.output)
    assert "Traceback" not in output and "ExecuteBatchError" not in output
    lines = _lines_of(server)
    assert not [
        e for e in lines if e["level"] in ("WARNING", "ERROR") and "authentication is off" not in e["msg"]
    ]
    codes = [e["code"] for e in lines if e["msg"] == "rpc"]
    assert codes == ["OK", "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"]
