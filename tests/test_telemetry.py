"""OpenTelemetry: the Prometheus endpoint of a real server, and one trace across its processes."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from confab.actors.settings import ShardSettings
from confab.actors.shard import Shard
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime import telemetry
from confab.runtime.model import Content, ConversationKey, InboundMessage
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind
from confab.runtime.store import open_store
from tests.shard_runner import hold_every_vshard, routed
from tests.support import ServerProcess, free_port, message, state_request

PROCESS = "/mcp.engine.v2.MCPEngine/ProcessMessage"
GET_STATE = "/mcp.engine.v2.MCPEngine/GetConversationState"
HEALTH = "grpc.health.v1.Health"
# Every exporter off unless a test turns one on: the developer's own OTEL_* must not leak in.
QUIET = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_SDK_DISABLED": "false"}


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from the scrape endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    process = ServerProcess(tmp_path / "data", extra=["--metrics-listen", f"127.0.0.1:{port}"], env=QUIET)
    try:
        yield process.start(), port
    finally:
        process.stop()


@pytest.mark.integration
def test_prometheus_endpoint_serves_rpc_and_shard_metrics(metrics_server: tuple[ServerProcess, int]) -> None:
    server, port = metrics_server
    with server.channel() as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        for i in range(3):
            stub.ProcessMessage(message(f"prom-{i}", "hello"))
        with pytest.raises(grpc.RpcError):
            stub.GetConversationState(state_request("prom-missing"))

        # Shard gauges come from the health monitor's last report (every 2 s): wait for one
        # that has seen the three conversations.
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(port)
            resident = value(samples, "confab_shard_resident_conversations")
            if resident >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)

        assert value(samples, "confab_rpc_requests_total", method=PROCESS, code="OK") == 3
        assert value(samples, "confab_rpc_requests_total", method=GET_STATE, code="NOT_FOUND") == 1
        assert value(samples, "confab_rpc_duration_seconds_count", method=PROCESS, code="OK") == 3
        assert 0 < value(samples, "confab_rpc_duration_seconds_sum", method=PROCESS, code="OK") < 30
        assert value(samples, "confab_rpc_in_flight") == 0
        assert resident == 3
        for name in (
            "confab_shard_resident_conversations",
            "confab_shard_store_latency_milliseconds",
            "confab_link_queued",
            "confab_shard_rss_bytes",
        ):
            assert {labels["shard"] for labels, _ in samples[name]} == {"0", "1"}, name
        assert all(0 <= v < 5000 for _, v in samples["confab_shard_store_latency_milliseconds"])
        assert all(v == 0 for _, v in samples["confab_link_queued"])  # idle: nothing waits
        assert all(v > 1e6 for _, v in samples["confab_shard_rss_bytes"])
        assert value(samples, "confab_shard_commands_total") >= 4
        assert value(samples, "confab_shard_restarts_total") == 0

        # GetMetrics still answers from the edge's own series, and agrees with the scrape.
        report = stub.GetMetrics(pb.GetMetricsRequest(metric_names=["confab.rpc.requests"], granularity="1h"))
        served = sum(
            p.value
            for p in report.metrics[0].points
            if p.attributes["method"] == PROCESS and p.attributes["code"] == "OK"
        )
        assert served == 3


def spans_of(directory: Path, trace_id: str) -> list[dict[str, Any]]:
    found = []
    for path in directory.glob("spans-*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["trace_id"] == trace_id:
                found.append(record)
    return found


@pytest.mark.integration
def test_one_trace_spans_the_edge_and_the_shard(tmp_path: Path) -> None:
    trace_dir = tmp_path / "spans"
    env = {**QUIET, "CONFAB_TRACE_DIR": str(trace_dir), "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": HEALTH}
    server = ServerProcess(tmp_path / "data", env=env)
    try:
        server.start()
        trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        with server.channel() as channel:
            probe = std_health_pb2_grpc.HealthStub(channel).Check(std_health_pb2.HealthCheckRequest())
            assert probe.status == std_health_pb2.HealthCheckResponse.SERVING
            reply = pb_grpc.MCPEngineStub(channel).ProcessMessage(
                message("traced", "hello", tenant="acme"),
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
            )
        assert reply.status.success
        expected = {PROCESS, "shard.batch", "conversation.turn", "flow.handle", "store.write"}
        deadline = time.monotonic() + 10
        while True:  # the edge exports its span when the call has ended, just after the reply
            spans = spans_of(trace_dir, trace_id)
            if {s["name"] for s in spans} >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        server.stop()

    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == expected, spans
    edge = by_name[PROCESS]
    assert (edge["kind"], edge["parent_span_id"], edge["pid"]) == ("SERVER", parent_id, server.pid)
    shard_pids = {s["pid"] for s in spans if s is not edge}
    assert len(shard_pids) == 1 and server.pid not in shard_pids  # all in one (other) process
    turn, batch = by_name["conversation.turn"], by_name["shard.batch"]
    assert turn["parent_span_id"] == edge["span_id"]
    assert batch["parent_span_id"] == edge["span_id"]
    assert by_name["flow.handle"]["parent_span_id"] == turn["span_id"]
    assert by_name["store.write"]["parent_span_id"] == batch["span_id"]
    assert turn["attributes"]["confab.tenant_id"] == "acme"
    assert turn["attributes"]["confab.conversation_id"] == "traced"
    assert turn["attributes"]["confab.message_count"] == 1
    assert batch["attributes"]["confab.batch.commands"] == 1
    assert (edge["service"], turn["service"]) == ("confab", "confab-shard")
    everything = [json.loads(line) for p in trace_dir.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert not [s for s in everything if s["name"].startswith(f"/{HEALTH}/")]  # excluded service


# In-process: what the shard does with the trace context it is given ------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Tracing on in this process, without touching OpenTelemetry's global provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "tracing", True)
    monkeypatch.setattr(telemetry, "_tracer", provider.get_tracer("test"))
    return exporter


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


def turn_command(conversation_id: str, trace: str | None) -> Command:
    body = InboundMessage(user_id="u", content=Content(text="hi"))
    return Command(CommandKind.TURN, uuid.uuid4().hex, ConversationKey("t", conversation_id), body, trace)


def test_traceparent_rides_at_the_end_of_the_wire_form() -> None:
    traced = turn_command("c", traceparent("ab" * 16))
    wire = traced.to_wire()
    assert wire[-1] == traced.trace and len(wire) == 7
    assert Command.from_wire(wire) == traced
    assert len(turn_command("c", None).to_wire()) == 6  # untraced: nothing for it


def test_a_batch_of_several_traces_links_them(tmp_path: Path, recorded: InMemorySpanExporter) -> None:
    settings = ShardSettings(str(tmp_path / "s.sqlite3"), "NORMAL", 100, "echo")
    shard = Shard(3, 1, settings, open_store(settings.store_path, synchronous="NORMAL"))
    hold_every_vshard(shard)
    try:
        first, second = "1" * 32, "2" * 32
        commands = [turn_command("a", traceparent(first)), turn_command("b", traceparent(second))]
        commands.append(turn_command("c", None))  # an untraced command gets no span of its own
        shard.run_round([(None, CommandBatch(1, routed(shard, commands)))])
    finally:
        shard.close()
    spans = recorded.get_finished_spans()
    names = sorted((s.name, f"{s.context.trace_id:032x}") for s in spans)
    assert names == [
        ("conversation.turn", first),
        ("conversation.turn", second),
        ("flow.handle", first),
        ("flow.handle", second),
        ("shard.batch", first),
        ("store.write", first),
    ]
    batch = next(s for s in spans if s.name == "shard.batch")
    assert [f"{link.context.trace_id:032x}" for link in batch.links] == [second]
    assert batch.attributes is not None and batch.attributes["confab.batch.commands"] == 3


def test_tracing_off_costs_no_span_and_no_traceparent(tmp_path: Path) -> None:
    assert not telemetry.tracing  # nothing configured in the test process
    assert telemetry.current_traceparent() is None
    command = turn_command("c", None)
    assert telemetry.turn_span(command) is telemetry.turn_span(command)  # the shared no-op
