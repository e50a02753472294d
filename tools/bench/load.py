"""The load generator: drives one scenario against one server, from its own process.

    python -m confab.tools.bench.load --target HOST:PORT --scenario NAME [--duration S] [--scale F]

Prints one JSON object (a :class:`ScenarioResult`) on stdout. Every scenario uses
conversation ids unique to this run, so runs never see each other's state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc

SCENARIOS = ("unary-c1", "unary-c64", "hot", "batch", "stream", "cold")
COLD_TIME_LIMIT_S = 40.0


@dataclass
class ScenarioResult:
    scenario: str
    messages: int = 0
    seconds: float = 0.0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    # Scenario-specific facts, e.g. whether hot's message counts were gap-free.
    checks: dict[str, Any] = field(default_factory=dict)
    # (seconds since start, messages done) along the way, for the cold scenario's RSS curve.
    progress: list[tuple[float, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def request(tenant: str, conversation: str, text: str) -> pb.ProcessMessageRequest:
    return pb.ProcessMessageRequest(
        tenant_context={"tenant_id": tenant},
        conversation_id=conversation,
        user_id="bench",
        content={"text": text},
    )


def percentiles(latencies: list[float], result: ScenarioResult) -> None:
    if not latencies:
        return
    latencies.sort()
    result.p50_ms = statistics.median(latencies) * 1000
    result.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000


async def run_workers(
    count: int, duration: float, call: Callable[[int, int], Awaitable[int]], result: ScenarioResult
) -> list[float]:
    """``count`` workers call ``call(worker, i)`` back to back until ``duration`` passes.

    ``call`` returns how many messages it carried; latencies are per call.
    """
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                carried = await call(w, i)
            except grpc.aio.AioRpcError:
                result.errors += 1
            else:
                result.messages += carried  # not `+= await ...`: that would read before awaiting
            latencies.append(time.perf_counter() - started)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(count)))
    result.seconds = time.perf_counter() - started
    return latencies


async def unary(
    stub: pb_grpc.MCPEngineStub, run: str, concurrency: int, conversations: int, duration: float
) -> ScenarioResult:
    result = ScenarioResult(f"unary-c{concurrency}")
    counter = iter(range(1 << 62))

    async def call(_w: int, _i: int) -> int:
        n = next(counter)
        await stub.ProcessMessage(request(run, f"c{n % conversations}", f"m{n}"))
        return 1

    percentiles(await run_workers(concurrency, duration, call, result), result)
    return result


async def hot(stub: pb_grpc.MCPEngineStub, run: str, duration: float) -> ScenarioResult:
    result = ScenarioResult("hot")
    counts: list[int] = []

    async def call(_w: int, i: int) -> int:
        reply = await stub.ProcessMessage(request(run, "hot", f"m{i}"))
        counts.append(reply.conversation_state.message_count)
        return 1

    percentiles(await run_workers(64, duration, call, result), result)
    counts.sort()
    # A canned baseline answers with a constant count: the check only means something for real servers.
    result.checks["distinct_counts"] = len(set(counts)) == len(counts)
    result.checks["gap_free"] = counts == list(range(counts[0], counts[0] + len(counts))) if counts else False
    return result


async def batch(stub: pb_grpc.MCPEngineStub, run: str, duration: float) -> ScenarioResult:
    result = ScenarioResult("batch")

    async def call(w: int, i: int) -> int:
        items = [request("", f"b{w}-{i}-{n % 50}", f"m{n}") for n in range(500)]
        reply: pb.BatchProcessMessagesResponse = await stub.BatchProcessMessages(
            pb.BatchProcessMessagesRequest(
                tenant_context={"tenant_id": run},
                messages=items,
                parallel_processing=True,
                max_concurrency=50,
            )
        )
        result.errors += reply.failed_count
        return reply.successful_count

    percentiles(await run_workers(4, duration, call, result), result)
    return result


async def stream(stub: pb_grpc.MCPEngineStub, run: str, streams: int, messages: int) -> ScenarioResult:
    result = ScenarioResult("stream")
    latencies: list[float] = []

    async def one(s: int) -> None:
        call = stub.StreamConversation()
        init = pb.StreamInit(
            tenant_context={"tenant_id": run}, conversation_id=f"s{s}", event_types=["heartbeat"]
        )
        await call.write(pb.ConversationStreamRequest(init=init))
        await call.read()
        for i in range(messages):
            started = time.perf_counter()
            await call.write(pb.ConversationStreamRequest(message=request(run, f"s{s}", f"m{i}")))
            reply = await call.read()
            latencies.append(time.perf_counter() - started)
            if reply.HasField("message_response"):
                result.messages += 1
            else:
                result.errors += 1
        await call.write(pb.ConversationStreamRequest(close=pb.StreamClose(reason="done")))
        await call.done_writing()
        async for _ in _drain(call):
            pass

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(streams)))
    result.seconds = time.perf_counter() - started
    percentiles(latencies, result)
    return result


async def _drain(call: Any) -> AsyncIterator[Any]:
    while (item := await call.read()) is not grpc.aio.EOF:
        yield item


async def cold(
    stub: pb_grpc.MCPEngineStub, run: str, conversations: int, time_limit: float
) -> ScenarioResult:
    """Touch ``conversations`` distinct conversations once each, 500 per batch call.

    Stops early after ``time_limit`` seconds (a slow server then reports its rate on fewer).
    """
    result = ScenarioResult("cold")
    next_start = iter(range(0, conversations, 500))
    latencies: list[float] = []
    started = time.perf_counter()

    async def worker() -> None:
        for first in next_start:
            if time.perf_counter() - started > time_limit:
                return
            items = [request("", f"k{n}", "hello") for n in range(first, min(first + 500, conversations))]
            t = time.perf_counter()
            reply: pb.BatchProcessMessagesResponse = await stub.BatchProcessMessages(
                pb.BatchProcessMessagesRequest(
                    tenant_context={"tenant_id": run},
                    messages=items,
                    parallel_processing=True,
                    max_concurrency=500,
                )
            )
            latencies.append(time.perf_counter() - t)
            result.messages += reply.successful_count
            result.errors += reply.failed_count
            result.progress.append((time.perf_counter() - started, result.messages))

    await asyncio.gather(*(worker() for _ in range(4)))
    result.seconds = time.perf_counter() - started
    percentiles(latencies, result)
    return result


async def run_scenario(target: str, scenario: str, duration: float, scale: float) -> ScenarioResult:
    run = f"bench-{uuid.uuid4().hex[:8]}"
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        await stub.ProcessMessage(request(run, "warm-up", "hello"))  # connect before timing
        if scenario == "unary-c1":
            return await unary(stub, run, 1, 10_000, duration)
        if scenario == "unary-c64":
            return await unary(stub, run, 64, 10_000, duration)
        if scenario == "hot":
            return await hot(stub, run, duration)
        if scenario == "batch":
            return await batch(stub, run, duration)
        if scenario == "stream":
            return await stream(stub, run, 64, max(1, int(200 * scale)))
        if scenario == "cold":
            return await cold(stub, run, max(500, int(200_000 * scale)), COLD_TIME_LIMIT_S)
    raise ValueError(f"unknown scenario {scenario!r}; known: {SCENARIOS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds, for timed scenarios")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplier for sized scenarios")
    args = parser.parse_args()
    result = asyncio.run(run_scenario(args.target, args.scenario, args.duration, args.scale))
    print(json.dumps({**asdict(result), "rate": result.rate}))


if __name__ == "__main__":
    main()
