"""OpenTelemetry for every Confab process: SDK set-up from the standard OTEL_* variables,
trace context carried with each command, and the shard's spans.

Off unless configured, and then nearly free: with no exporter, no SDK provider is
installed, :data:`tracing` stays False, commands carry no traceparent, and the shard
never opens a span (each helper returns a shared no-op context manager).

Honoured environment variables:

- ``OTEL_SDK_DISABLED=true``: everything off, whatever else is set.
- ``OTEL_TRACES_EXPORTER``: comma-separated ``otlp``, ``console``, ``none`` (default: none;
  unlike the OTel default, traces are opt-in because spans cost every request CPU).
- ``OTEL_METRICS_EXPORTER``: comma-separated ``otlp``, ``prometheus``, ``console``, ``none``
  (default none). ``prometheus`` serves on ``OTEL_EXPORTER_PROMETHEUS_HOST``:``_PORT``
  (default localhost:9464); ``confab serve --metrics-listen`` serves one anywhere.
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``,
  ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``: as the SDK and
  its exporters read them; ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` (services the edge does
  not trace, e.g. ``grpc.health.v1.Health``).
- ``CONFAB_TRACE_DIR=DIR``: also write every finished span, synchronously, as one JSON line
  to ``DIR/spans-<pid>.jsonl`` (tests and local debugging; it turns tracing on).

Processes: Thespian forks the shard processes, and an SDK's exporter threads do not
survive a fork, so each process configures itself: the edge once its actor system is
up (nothing forks from it afterwards), each shard when it gets its ShardInit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from confab.runtime.protocol.records import ERROR, REPLAYED

if TYPE_CHECKING:
    from confab.runtime.model import ConversationState
    from confab.runtime.protocol.records import Command, CommandBatch

log = logging.getLogger(__name__)

# True once this process has an SDK TracerProvider: the hot path's only question.
tracing = False
_tracer: trace.Tracer = trace.NoOpTracer()
_tracer_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider once configured
_meter_provider: Any = None  # opentelemetry.sdk.metrics.MeterProvider once configured
_http_servers: list[Any] = []  # Prometheus scrape servers started here
_propagator = TraceContextTextMapPropagator()
# Shared and reusable: what every span helper returns while tracing is off.
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
# A batch span links the traces of the commands it carried, up to this many.
MAX_LINKS = 32

AttributeValue = str | int | float | bool


def _exporters(variable: str) -> list[str]:
    names = [n.strip().lower() for n in os.environ.get(variable, "").split(",")]
    return [n for n in names if n and n != "none"]


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _resource(service_name: str, attributes: Mapping[str, AttributeValue] | None) -> Any:
    from opentelemetry.sdk.resources import Resource

    # Resource.create lets explicit attributes win over OTEL_SERVICE_NAME: pass the name
    # only when the environment does not give one.
    merged: dict[str, AttributeValue] = dict(attributes or {})
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        merged["service.name"] = service_name
    return Resource.create(merged)


def configure_tracing(service_name: str, attributes: Mapping[str, AttributeValue] | None = None) -> bool:
    """Install an SDK TracerProvider if traces are to be exported; True if tracing is on.

    ``service_name`` is the default for ``service.name`` (``OTEL_SERVICE_NAME`` wins);
    ``attributes`` are added to the resource (e.g. which shard this process is).
    """
    global tracing, _tracer, _tracer_provider
    if tracing:
        return True
    names = _exporters("OTEL_TRACES_EXPORTER")
    trace_dir = os.environ.get("CONFAB_TRACE_DIR", "")
    if _disabled() or not (names or trace_dir):
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=_resource(service_name, attributes))
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored (otlp, console, none)", name)
    if trace_dir:
        # Synchronous on purpose: a test reads the file right after the call it traced.
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(trace_dir)))
    # The global provider too, for any library instrumentation; Confab's own spans use
    # _tracer, which does not depend on whether a global was already set in this process.
    trace.set_tracer_provider(provider)
    _tracer_provider = provider
    _tracer = provider.get_tracer("confab")
    tracing = True
    return True


def tracer_provider() -> Any:
    """The SDK TracerProvider of this process, or None when tracing is off."""
    return _tracer_provider


def configure_metrics(
    service_name: str, listen: Sequence[str] = (), attributes: Mapping[str, AttributeValue] | None = None
) -> Any:
    """Install an SDK MeterProvider with the configured readers; None when metrics are off.

    ``listen`` adds Prometheus scrape endpoints (``HOST:PORT``) whatever
    ``OTEL_METRICS_EXPORTER`` says. Raises OSError if an endpoint cannot listen.
    """
    global _meter_provider
    if _meter_provider is not None:
        return _meter_provider
    names = _exporters("OTEL_METRICS_EXPORTER")
    addresses = list(listen)
    if "prometheus" in names:
        host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
        addresses.append(f"{host}:{os.environ.get('OTEL_EXPORTER_PROMETHEUS_PORT', '9464')}")
    if _disabled() or not (names or addresses):
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )

    readers: list[MetricReader] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name != "prometheus":
            log.warning(
                "OTEL_METRICS_EXPORTER: unknown exporter %r ignored (otlp, prometheus, console, none)", name
            )
    if addresses:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        # One reader (it registers itself with prometheus_client's registry) behind every endpoint.
        readers.append(PrometheusMetricReader())
        for address in dict.fromkeys(addresses):
            host, _, port = address.rpartition(":")
            server, _thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
            _http_servers.append(server)
    provider = MeterProvider(metric_readers=readers, resource=_resource(service_name, attributes))
    metrics.set_meter_provider(provider)
    _meter_provider = provider
    return provider


def meter_provider() -> Any:
    """The SDK MeterProvider of this process, or None when metrics are off."""
    return _meter_provider


def shutdown() -> None:
    """Flush and stop whatever this process configured (spans still queued are exported)."""
    global tracing, _tracer, _tracer_provider, _meter_provider
    for server in _http_servers:
        server.shutdown()
        server.server_close()
    _http_servers.clear()
    if _tracer_provider is not None:
        tracing, _tracer = False, trace.NoOpTracer()
        _tracer_provider.shutdown()
        _tracer_provider = None
    if _meter_provider is not None:
        _meter_provider.shutdown()
        _meter_provider = None


# Carrying the trace across processes -----------------------------------------------


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, if it is worth continuing elsewhere."""
    if not tracing:
        return None
    span = trace.get_current_span()
    if not span.is_recording():  # unsampled or no span: the shard must not start a trace
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def remote_context(traceparent: str) -> Context:
    return _propagator.extract({"traceparent": traceparent})


def _span_context(traceparent: str) -> trace.SpanContext:
    return trace.get_current_span(remote_context(traceparent)).get_span_context()


# The shard's spans -------------------------------------------------------------------


def batch_span(shard: int, batches: Sequence[CommandBatch]) -> contextlib.AbstractContextManager[Any]:
    """Around one round of a shard (the batches that arrived together), if any command is traced.

    A round serves many traces: its parent is the first traced command's span and it
    links the others, so each request's trace can find the round (and its store write).
    """
    if not tracing:
        return _NO_SPAN
    carried = [t for t in dict.fromkeys(c.trace for b in batches for c in b.commands) if t is not None]
    if not carried:
        return _NO_SPAN
    links = [trace.Link(_span_context(t)) for t in carried[1 : MAX_LINKS + 1]]
    return _tracer.start_as_current_span(
        "shard.batch",
        context=remote_context(carried[0]),
        links=links,
        attributes={
            "confab.shard": shard,
            "confab.batch.id": batches[0].batch_id,
            "confab.batch.batches": len(batches),
            "confab.batch.commands": sum(len(b.commands) for b in batches),
        },
    )


def turn_span(command: Command) -> contextlib.AbstractContextManager[Any]:
    """One command on its conversation (in a shard), as a child of the edge span that sent it."""
    if command.trace is None or not tracing:
        return _NO_SPAN
    return _tracer.start_as_current_span(
        "conversation.turn",
        context=remote_context(command.trace),
        attributes={
            "confab.tenant_id": command.key.tenant_id,
            "confab.conversation_id": command.key.conversation_id,
            "confab.command": command.kind.name,
        },
    )


def note_outcome(span: Any, outcome: Any) -> None:
    """How a command ended, on its span (``outcome`` is a ``protocol.records`` outcome, or Suspended)."""
    if not isinstance(outcome, list):
        return  # suspended on a webhook: the resumed turn has a span of its own
    if outcome[0] == REPLAYED:
        span.set_attribute("confab.replayed", True)
    elif outcome[0] == ERROR:
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(outcome[1])))


def note_state(state: ConversationState) -> None:
    """Where a turn left its conversation, on the current (turn) span, when tracing is on."""
    if not tracing:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("confab.message_count", state.message_count)
        span.set_attribute("confab.state", state.current_state)


def flow_span(traceparent: str | None, flow_id: str, state: str) -> contextlib.AbstractContextManager[Any]:
    """Around the flow's handler, inside the turn's span."""
    if traceparent is None or not tracing:
        return _NO_SPAN
    return _tracer.start_as_current_span(
        "flow.handle", attributes={"confab.flow_id": flow_id, "confab.state_before": state}
    )


def store_span(conversations: int) -> contextlib.AbstractContextManager[Any]:
    """Around a batch's store transaction, inside the batch span when there is one."""
    if not tracing or not trace.get_current_span().is_recording():
        return _NO_SPAN
    return _tracer.start_as_current_span(
        "store.write", attributes={"db.system": "sqlite", "confab.store.conversations": conversations}
    )


# A file exporter, for tests and local debugging -----------------------------------------


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as one JSON line to ``DIR/spans-<pid>.jsonl``.

    One file per process: shard processes export concurrently, and separate files
    cannot interleave.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        lines = "".join(json.dumps(_span_record(s), separators=(",", ":")) + "\n" for s in spans)
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(os.path.join(self.directory, f"spans-{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
                f.write(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_record(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "kind": span.kind.name,
        "pid": os.getpid(),
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        "links": [f"{link.context.trace_id:032x}" for link in span.links],
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
