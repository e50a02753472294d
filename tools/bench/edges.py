"""CPU per message of each process of ``confab serve --edges N``, to project edges onto more cores.

    python -m confab.tools.bench.edges [--edges 1,2] [--shards 2] [--connections 8] [--duration 4]

For each N: starts ``confab serve --edges N``, drives ``unary-c64`` (64 calls in flight over
10,000 conversations) over ``--connections`` connections of their own (SO_REUSEPORT spreads
connections, not calls, so one connection would load one edge), and prints the rate, the
latencies and the CPU microseconds per message of the host process, of each edge (with
the messages it served) and of each shard. Two cores cannot show edges scaling; the CPU
an edge spends per message it serves says how many messages a core per edge would carry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import grpc
import psutil

from confab.protos import health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.bench.load import ScenarioResult, percentiles, request, run_workers

SERVING = re.compile(r"serving on (\S+)")


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


async def drive(target: str, connections: int, duration: float) -> tuple[ScenarioResult, dict[int, int]]:
    """unary-c64 over ``connections`` connections; the result and the messages each edge pid served."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    stubs = [pb_grpc.MCPEngineStub(channel) for channel in channels]
    pids = []
    for channel in channels:
        health = await health_pb2_grpc.HealthStub(channel).GetDetailedHealth(
            health_pb2.DetailedHealthRequest()
        )
        pids.append(int(health.details["edge_pid"]))
    for stub in stubs:
        await stub.ProcessMessage(request(run, "warm-up", "hello"))
    served = dict.fromkeys(pids, 0)
    result = ScenarioResult("unary-c64")
    counter = iter(range(1 << 62))

    async def call(worker: int, _i: int) -> int:
        n = next(counter)
        await stubs[worker % connections].ProcessMessage(request(run, f"c{n % 10_000}", f"m{n}"))
        served[pids[worker % connections]] += 1
        return 1

    percentiles(await run_workers(64, duration, call, result), result)
    for channel in channels:
        await channel.close()
    return result, served


def measure(edges: int, shards: int, connections: int, duration: float, workdir: Path) -> None:
    command = [
        sys.executable, "-m", "confab.tools.cli", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(workdir / f"edges-{edges}"), "--shards", str(shards), "--edges", str(edges),
        "--log-level", "WARNING",
    ]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        assert server.stdout is not None
        target = ""
        for line in server.stdout:
            if found := SERVING.search(line):
                target = found.group(1)
                break
        if not target:
            raise RuntimeError("confab serve did not start")
        threading.Thread(target=server.stdout.read, daemon=True).start()
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(health_pb2.DetailedHealthRequest())
        shard_pids = [int(s["pid"]) for s in health.details["shard_detail"]]
        edge_pids = [
            p.pid for p in psutil.Process(server.pid).children() if "confab.tools.edge" in p.cmdline()
        ] or [server.pid]
        watched = {server.pid, *edge_pids, *shard_pids}
        before = {pid: cpu_seconds(pid) for pid in watched}
        result, served = asyncio.run(drive(target, connections, duration))
        used = {pid: cpu_seconds(pid) - before[pid] for pid in watched}
        messages = max(1, result.messages)
        print(
            f"edges={edges} shards={shards} connections={connections}: {result.rate:,.0f} msg/s,"
            f" p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, errors {result.errors}"
        )
        if edges > 1:
            print(f"  host process      {used[server.pid] / messages * 1e6:7.0f} us/msg (all messages)")
        for pid in edge_pids:
            mine = served.get(pid, 0)
            per = used[pid] / mine * 1e6 if mine else 0.0
            share = used[pid] / messages * 1e6
            print(
                f"  edge pid {pid:<8} {per:7.0f} us per message it served ({mine} messages,"
                f" {share:.0f} us/msg of all)"
            )
        for index, pid in enumerate(shard_pids):
            print(f"  shard {index}           {used[pid] / messages * 1e6:7.0f} us/msg")
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--edges", default="1,2", help="comma-separated edge counts to measure")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="confab-bench-edges-") as workdir:
        for edges in (int(n) for n in args.edges.split(",") if n):
            measure(edges, args.shards, args.connections, args.duration, Path(workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
