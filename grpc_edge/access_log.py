"""Logging for ``confab serve``: the root logger's format, and one access line per RPC.

:func:`configure_logging` sets up the root logger from the ``logging:`` config
section: JSON lines (one object per record, for log shippers) or plain text (for
people at a terminal). :class:`AccessLog` writes one INFO record per call, after
it ended: method, tenant, conversation, status code, duration, request id, trace
id and peer.

Message text is private to the tenant's users: it is never logged unless
``logging.log_message_text`` says so.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

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


def configure_logging(config: LoggingConfig, level: str | None = None, stream: TextIO | None = None) -> None:
    """Make the root logger write ``config``'s format to ``stream`` (stderr); ``level`` overrides."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
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
    the line is written by :class:`~.observe.ObserverGuard`.
    """

    def __init__(self, *, log_message_text: bool = False) -> None:
        self.log_message_text = log_message_text

    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)

    def write(self, call: CallInfo, code: str, seconds: float, trace: str) -> None:
        fields: dict[str, Any] = {
            "method": call.method,
            "code": code,
            "duration_ms": round(seconds * 1000, 3),
            "tenant": call.tenant_id,
            "conversation": call.conversation_id,
            "request_id": call.request_id,
            "trace_id": trace,
            "peer": call.peer,
        }
        if self.log_message_text and call.text:  # ProcessMessage's; batches and streams have none
            fields["text"] = call.text
        log.info("rpc", extra={"fields": fields})
