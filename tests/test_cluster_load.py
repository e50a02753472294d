"""The cluster load generator: retries, give-ups, what it counts and how it reports, against scripted edges.

The edges here are in-process gRPC servers on loopback that share one ledger, as edges of
one cluster share a store: a request id is applied once, a repeat is answered as a replay.
Each edge answers as its mode says, so every path of a request is taken on purpose.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.cluster_load import (
    GENERATOR_COMMAND,
    REPOSITORY,
    ConversationLoad,
    LoadPlan,
    LoadResult,
    applied_counts,
    conversation_names,
    generate,
)
from tests.support import ServerProcess

STALL_S = 5.0  # longer than any attempt timeout below: a stalled reply always misses its deadline


@dataclass
class Ledger:
    applied: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per conversation
    applied_ids: set[str] = field(default_factory=set)
    edges_tried: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # per request id


class ScriptedEdge(pb_grpc.MCPEngineServicer):
    """``ok`` answers; ``down`` refuses with UNAVAILABLE; ``stall`` applies, then answers too late;
    ``invalid`` refuses with INVALID_ARGUMENT, a code not worth retrying."""

    def __init__(self, index: int, mode: str, ledger: Ledger) -> None:
        self.index, self.mode, self.ledger = index, mode, ledger

    async def ProcessMessage(
        self, request: pb.ProcessMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProcessMessageResponse:
        request_id = request.metadata.request_id
        self.ledger.edges_tried[request_id].append(self.index)
        if self.mode == "down":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "edge down")
        if self.mode == "invalid":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
        first = request_id not in self.ledger.applied_ids
        if first:
            self.ledger.applied_ids.add(request_id)
            self.ledger.applied[request.conversation_id] += 1
        if self.mode == "stall":
            await asyncio.sleep(STALL_S)  # applied, but the reply is lost to the client's deadline
        reply = pb.ProcessMessageResponse(conversation_id=request.conversation_id)
        reply.status.success = True
        reply.performance_metrics.cache_status = "miss" if first else "replayed"
        return reply


@asynccontextmanager
async def scripted_edges(modes: list[str], ledger: Ledger) -> AsyncIterator[tuple[str, ...]]:
    servers, edges = [], []
    for index, mode in enumerate(modes):
        server = grpc.aio.server()
        pb_grpc.add_MCPEngineServicer_to_server(ScriptedEdge(index, mode, ledger), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        edges.append(f"127.0.0.1:{port}")
    try:
        yield tuple(edges)
    finally:
        for server in servers:
            await server.stop(0)


def run_against(modes: list[str], ledger: Ledger, **plan: Any) -> LoadResult:
    async def scenario() -> LoadResult:
        async with scripted_edges(modes, ledger) as edges:
            settings = {"workers": 2, "duration_s": 0.5, "attempt_timeout_s": 0.3, **plan}
            return await generate(LoadPlan(edges=edges, conversations=conversation_names("c", 4), **settings))

    return asyncio.run(scenario())


def test_a_request_refused_as_unavailable_is_retried_on_the_next_edge_under_its_own_id() -> None:
    ledger = Ledger()
    result = run_against(["down", "ok"], ledger)
    retried = {rid: tried for rid, tried in ledger.edges_tried.items() if tried[0] == 0}
    assert retried, "no request went to the edge that is down"
    assert all(tried == [0, 1] for tried in retried.values()), retried
    assert result.failed == 0
    assert result.retries == len(retried)
    assert result.acknowledged == len(ledger.applied_ids) > 0
    assert {c: r.acknowledged for c, r in result.conversations.items()} == ledger.applied


def test_a_reply_lost_to_the_deadline_is_retried_and_acknowledged_as_a_replay_not_applied_twice() -> None:
    ledger = Ledger()
    result = run_against(["stall", "ok"], ledger)
    assert result.retries >= 1
    assert sum(r.replayed for r in result.conversations.values()) == result.retries
    assert result.failed == 0
    assert {c: r.acknowledged for c, r in result.conversations.items()} == ledger.applied


def test_a_request_no_edge_answers_is_given_up_and_counted_as_failed() -> None:
    ledger = Ledger()
    result = run_against(["down", "down"], ledger, give_up_s=0.3, backoff_s=0.02)
    assert result.acknowledged == 0
    assert result.failed == len(ledger.edges_tried) > 0  # each request: given up once
    assert all(len(tried) > 2 for tried in ledger.edges_tried.values())  # retried, over both edges
    failures = [reason for r in result.conversations.values() for _, reason in r.failures]
    assert all(reason.startswith("UNAVAILABLE") for reason in failures), failures


def test_a_code_not_worth_retrying_fails_the_request_at_once() -> None:
    ledger = Ledger()
    result = run_against(["invalid", "ok"], ledger, workers=1)
    assert result.retries == 0
    assert result.failed == len(ledger.edges_tried) > 0
    assert all(tried == [0] for tried in ledger.edges_tried.values())
    assert result.conversations["c0"].failures[0][1].startswith("INVALID_ARGUMENT")


def test_each_conversation_belongs_to_one_worker_and_its_requests_never_overlap() -> None:
    plan = LoadPlan(edges=("e:1",), conversations=conversation_names("c", 5), workers=2, duration_s=1)
    assert plan.assignments() == [("c0", "c2", "c4"), ("c1", "c3")]
    with pytest.raises(ValueError, match="at least as many"):
        LoadPlan(edges=("e:1",), conversations=("c0",), workers=2, duration_s=1)


def hand_made_result() -> LoadResult:
    plan = LoadPlan(edges=("e:1",), conversations=("quiet", "busy", "mute"), workers=1, duration_s=5)
    conversations = {
        "quiet": ConversationLoad(acknowledged=3, ack_times=[101.0, 101.5, 104.0]),
        "busy": ConversationLoad(acknowledged=4, ack_times=[100.5, 101.0, 101.5, 105.2]),
        "mute": ConversationLoad(failed=1, failures=[(102.0, "UNAVAILABLE: gone")]),
    }
    return LoadResult(plan, 100.0, 105.0, 105.3, cpu_s=0.007, attempts=8, conversations=conversations)


def test_silences_count_from_the_start_to_the_stop_of_the_load() -> None:
    result = hand_made_result()
    # quiet: 101.5 -> 104.0; busy: 101.5 -> 105.2 (an ack after the stop ends it); mute: no ack at all.
    assert result.silences() == pytest.approx({"quiet": 2.5, "busy": 3.7, "mute": 5.0})
    assert result.silence_p50() == pytest.approx(3.7)
    assert result.silence_max() == pytest.approx(5.0)
    assert (result.acknowledged, result.failed) == (7, 1)
    assert result.throughput() == pytest.approx(7 / 5)
    assert result.cpu_per_attempt_ms() == pytest.approx(7 / 8)


def test_a_result_survives_its_json() -> None:
    result = hand_made_result()
    assert LoadResult.from_json(json.loads(json.dumps(result.to_json()))) == result


@pytest.mark.integration
def test_the_command_line_loads_a_server_and_writes_counts_the_server_agrees_with(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    command = [*GENERATOR_COMMAND, "--edge", server.address, "--workers", "2", "--duration", "1"]
    done = subprocess.run(
        [*command, "--out", str(out)], cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = LoadResult.from_json(json.loads(out.read_text()))
    assert len(result.conversations) == 4  # twice the workers
    assert result.acknowledged > 0 and result.failed == 0
    acknowledged = {c: r.acknowledged for c, r in result.conversations.items()}
    assert applied_counts(server.address, acknowledged) == acknowledged
    assert f"acknowledged {result.acknowledged}" in done.stdout
