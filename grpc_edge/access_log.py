"""Logging for ``confab serve``: the root logger's format, and one access line per RPC.

:func:`configure_logging` sets up the root logger from the ``logging:`` config
section: JSON lines (one object per record, for log shippers) or plain text (for
people at a terminal). :class:`AccessLog` writes one INFO line per call, after it
ended: method, tenant, conversation, status code, duration, request id, trace id
and peer.

Access lines are not ``logging`` records on their way: a LogRecord built and
formatted per call cost the edge ~25 us of CPU per call. A call appends a tuple to
a queue; once per event-loop iteration (``loop.call_soon``, scheduled by the first
line queued) the queue is rendered in the handler's format, the same fields in the
same order a record would have, and written to the handler's stream in whole lines,
under the handler's lock: in order, never interleaved with the records logged
meanwhile (the handler writes the queued lines before any record). What is queued
is also written when the server stops and at interpreter exit. Where the root logger
is not just the handler :func:`configure_logging` installed (pytest's capture, an
embedding application's handlers, filters that may judge a line), the lines go
through ``logging`` as records that carry the time the call ended.

Message text is private to the tenant's users: it is never logged unless
``logging.log_message_text`` says so.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import os
import select
import stat
import sys
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring  # json's own string quoting (in C), as json.dumps quotes
from typing import Any, NamedTuple, TextIO

from opentelemetry import trace

from confab.grpc_edge.call import CallInfo, current_call
from confab.runtime.config import LoggingConfig

log = logging.getLogger(__name__)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Keys of a JSON line that come from the record itself; ``fields`` may not replace them.
BASE_KEYS = frozenset({"ts", "level", "logger", "msg"})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Structured fields of a record (``extra={"fields": {...}}``), plus the current request id."""
    fields = getattr(record, "fields", None)
    out = dict(fields) if isinstance(fields, dict) else {}
    if "request_id" not in out:
        # Records logged while serving a call name it, so an ERROR can be matched to its access line.
        call = current_call()
        if call is not None:
            out["request_id"] = call.request_id
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line; tracebacks go in ``exc`` (json escapes their newlines)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            if key not in BASE_KEYS:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


def resolve_format(config: LoggingConfig, stream: TextIO) -> str:
    """``json`` or ``text``; ``auto`` is text for a person at a terminal, JSON for anything else."""
    if config.format != "auto":
        return config.format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler: writes the access lines queued so far before each record."""

    def emit(self, record: logging.LogRecord) -> None:
        if _queue:
            flush_access_lines()  # the lines of calls that ended before this record was logged
        super().emit(record)


def configure_logging(config: LoggingConfig, level: str | None = None, stream: TextIO | None = None) -> None:
    """Make the root logger write ``config``'s format to ``stream`` (stderr); ``level`` overrides."""
    flush_access_lines()  # to where they were going
    stream = stream if stream is not None else sys.stderr
    handler = LogHandler(stream)
    handler.setFormatter(JsonFormatter() if resolve_format(config, stream) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or config.level).upper())


def trace_id() -> str:
    """The current OpenTelemetry trace id (32 hex digits), or "" outside any recorded span."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


class AccessLog:
    """One INFO line per call, written when it ends, whichever way it ends.

    The tenant and conversation come from what the service noted on the CallInfo;
    the line is queued by :class:`~.observe.ObserverGuard` and written by
    :func:`flush_access_lines`, once per event-loop iteration.
    """

    def __init__(self, *, log_message_text: bool = False) -> None:
        self.log_message_text = log_message_text

    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)

    def write(self, call: CallInfo, code: str, seconds: float, trace: str) -> None:
        global _flush_scheduled
        _queue.append(
            _Line(
                time.time(),
                call.method,
                code,
                seconds,
                call.tenant_id,
                call.conversation_id,
                call.request_id,
                trace,
                call.peer,
                # ProcessMessage's; batches and streams have none
                call.text if self.log_message_text else "",
            )
        )
        if not _flush_scheduled:
            _flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(flush_access_lines)
            except RuntimeError:  # no loop running (or it is closing): now, then
                flush_access_lines()


class _Line(NamedTuple):
    """An access line as queued: what it says, not yet rendered."""

    created: float  # time.time() when the call ended
    method: str
    code: str
    seconds: float
    tenant: str
    conversation: str
    request_id: str
    trace_id: str
    peer: str
    text: str  # "" unless logging.log_message_text

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "method": self.method,
            "code": self.code,
            "duration_ms": round(self.seconds * 1000, 3),
            "tenant": self.tenant,
            "conversation": self.conversation,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "peer": self.peer,
        }
        if self.text:
            fields["text"] = self.text
        return fields


# Lines queued and not yet written; a deque: appending and taking are safe from any thread.
_queue: collections.deque[_Line] = collections.deque()
_flush_scheduled = False
# Filters on the root handler may say they let every access line through unchanged
# (``passes_access_lines = True``, e.g. tools.thespian_log's); any other filter sees records.
PASSES_ACCESS_LINES = "passes_access_lines"


def flush_access_lines() -> None:
    """Write every access line queued, in order (each event-loop iteration, at stop and at exit)."""
    global _flush_scheduled
    _flush_scheduled = False  # first: a line queued from here on schedules another flush
    if not _queue:
        return
    handler = _direct_handler()
    if handler is None:
        _through_logging()
        return
    handler.acquire()  # the lock every record's emit holds: no record lands inside the lines
    try:
        lines = _take()
        if lines:
            _write(handler, lines)
    finally:
        handler.release()


def _take() -> list[_Line]:
    lines = []
    while _queue:
        lines.append(_queue.popleft())
    return lines


def _direct_handler() -> LogHandler | None:
    """The handler access lines may be written to directly: the root logger's only one, installed by
    :func:`configure_logging`, with a formatter of ours, and nothing between it and the access logger
    (no handler, no filter) that would have seen a record."""
    root = logging.getLogger()
    if len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if (
        type(handler) is not LogHandler
        or type(handler.formatter) not in (JsonFormatter, TextFormatter)
        or handler.level > logging.INFO
        or not all(getattr(f, PASSES_ACCESS_LINES, False) for f in handler.filters)
        or log.filters
    ):
        return None
    node: logging.Logger | None = log
    while node is not None and node is not root:
        if node.handlers or not node.propagate:
            return None
        node = node.parent
    return handler


def _through_logging() -> None:
    """The queued lines as records, through whatever handlers the logging configuration has."""
    for line in _take():  # all taken first: a handler that flushes again finds nothing
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 0, "rpc", (), None, extra={"fields": line.fields()}
        )
        record.created = line.created
        record.msecs = int((line.created - int(line.created)) * 1000) + 0.0
        log.handle(record)


def _write(handler: LogHandler, lines: list[_Line]) -> None:
    """Render ``lines`` in ``handler``'s format and write them to its stream, in whole lines."""
    formatter = handler.formatter
    if isinstance(formatter, TextFormatter):
        rendered = [_text_line(formatter, line) for line in lines]
    else:
        rendered = [_json_line(line) for line in lines]
    stream = handler.stream
    try:
        limit = _write_limit(stream)
        if limit is None:
            stream.write("".join(rendered))
        else:
            chunk: list[str] = []
            size = 0
            for text in rendered:
                n = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
                if chunk and size + n > limit:
                    stream.write("".join(chunk))
                    handler.flush()
                    chunk, size = [], 0
                chunk.append(text)
                size += n
            stream.write("".join(chunk))
        handler.flush()
    except (OSError, ValueError):  # a stream that is gone or closed: the lines cannot go anywhere
        pass


# The stream last asked about, and how many bytes one write to it may carry.
_limit_of: tuple[Any, int | None] = (None, None)


def _write_limit(stream: Any) -> int | None:
    """At most PIPE_BUF bytes per write to a pipe or a socket (stderr under a service manager often
    is one, shared with the shard processes), so that no other process's write lands inside a line;
    a file takes any size in one write."""
    global _limit_of
    if _limit_of[0] is not stream:
        limit: int | None = None
        try:
            mode = os.fstat(stream.fileno()).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                limit = select.PIPE_BUF
        except (AttributeError, OSError, ValueError):  # not a file (a StringIO): any size
            pass
        _limit_of = (stream, limit)
    return _limit_of[1]


_LEVEL = logging.getLevelName(logging.INFO)
_JSON_HEAD = (
    ", ".join(
        (
            f'"level": {json.dumps(_LEVEL)}',
            f'"logger": {json.dumps(log.name)}',
            '"msg": "rpc"',
        )
    )
    + ", "
)
_TEXT_HEAD = f" {_LEVEL} {log.name}: rpc "
# The second of the last line rendered, and its date and time: the same for most lines.
_json_second: tuple[int, str] = (-1, "")
_text_second: tuple[TextFormatter | None, int, str] = (None, -1, "")  # and whose time it is


def _json_line(line: _Line) -> str:
    """What :class:`JsonFormatter` makes of the line's record, character for character."""
    global _json_second
    # datetime.fromtimestamp rounds to the microsecond; isoformat(timespec="milliseconds") truncates.
    second, micros = divmod(round(line.created * 1_000_000), 1_000_000)
    if _json_second[0] != second:
        _json_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    q = encode_basestring
    text = f', "text": {q(line.text)}' if line.text else ""
    return (
        f'{{"ts": "{_json_second[1]}.{micros // 1000:03d}+00:00", {_JSON_HEAD}"method": {q(line.method)}, '
        f'"code": {q(line.code)}, "duration_ms": {round(line.seconds * 1000, 3)!r}, '
        f'"tenant": {q(line.tenant)}, "conversation": {q(line.conversation)}, '
        f'"request_id": {q(line.request_id)}, "trace_id": {q(line.trace_id)}, '
        f'"peer": {q(line.peer)}{text}}}\n'
    )


def _text_line(formatter: TextFormatter, line: _Line) -> str:
    """What :class:`TextFormatter` makes of the line's record."""
    global _text_second
    second = int(line.created)
    if _text_second[1] != second or _text_second[0] is not formatter:
        date = time.strftime(formatter.default_time_format, formatter.converter(second))
        _text_second = (formatter, second, date)
    asctime = (formatter.default_msec_format or "%s,%03d") % (
        _text_second[2],
        int((line.created - second) * 1000),
    )
    text = f" text={line.text}" if line.text else ""
    return (
        f"{asctime}{_TEXT_HEAD}method={line.method} code={line.code} "
        f"duration_ms={round(line.seconds * 1000, 3)} tenant={line.tenant} "
        f"conversation={line.conversation} request_id={line.request_id} trace_id={line.trace_id} "
        f"peer={line.peer}{text}\n"
    )


# Registered after logging's own exit hook, so it runs first: the lines go before the handlers close.
atexit.register(flush_access_lines)
# A process forked from the edge (the actor system's) writes no line of the edge's a second time.
os.register_at_fork(after_in_child=_queue.clear)
