"""What the access line costs the edge per call: a micro-benchmark of the observer's path.

    python -m confab.tools.bench.access_line [--calls N] [--out FILE]

Runs :class:`~confab.grpc_edge.observe.ObserverGuard`'s ``enter`` and ``exit`` for N
calls inside an event loop, 64 calls per loop iteration (``unary-c64``'s calls in
flight), with logging configured as ``confab serve`` configures it (JSON lines to a
line-buffered file, as stderr is when it is not a terminal): once at WARNING (no
access lines), once at INFO. The difference is the access line's CPU per call,
its rendering and writing included. Three rounds; the best of each is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any, TextIO

from confab.grpc_edge.access_log import AccessLog, configure_logging
from confab.grpc_edge.call import CallInfo
from confab.grpc_edge.metrics import RpcMetrics
from confab.grpc_edge.observe import ObserverGuard
from confab.runtime.config import LoggingConfig

PER_ITERATION = 64
METHOD = "/mcp.engine.v2.MCPEngine/ProcessMessage"


class _Context:
    """What the observer asks of a call's context: a call that ended OK, with no deadline."""

    def code(self) -> None:
        return None

    def time_remaining(self) -> None:
        return None


async def _cpu_per_call(guard: ObserverGuard, calls: int) -> float:
    """CPU microseconds per call of the guard's enter and exit (and of the flushes they cause)."""
    context: Any = _Context()
    batch = [CallInfo(METHOD, peer="ipv4:127.0.0.1:50432") for _ in range(calls)]
    started = time.process_time()
    for first in range(0, calls, PER_ITERATION):
        for call in batch[first : first + PER_ITERATION]:
            guard.enter(call, None, context)
            call.tenant_id, call.conversation_id = "acme", "conversation-1"
            guard.exit(call, None, context)
        await asyncio.sleep(0)  # the end of a loop iteration: queued lines are written
    await asyncio.sleep(0)
    return (time.process_time() - started) / calls * 1e6


async def _measure(calls: int, out: TextIO, rounds: int = 3) -> dict[str, float]:
    best: dict[str, float] = {}
    variants = (("off", "WARNING", False), ("on", "INFO", False), ("traced", "INFO", True))
    for _ in range(rounds):
        for name, level, traced in variants:
            configure_logging(LoggingConfig(level=level, format="json"), None, out)
            us = await _cpu_per_call(ObserverGuard(RpcMetrics(), AccessLog(), traced=traced), calls)
            best[name] = min(best.get(name, us), us)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU per call of the access line")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--out", help="where the lines go (default: a temporary file, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="confab-access-line-") as workdir:
        path = args.out or os.path.join(workdir, "access.log")
        with open(path, "w", buffering=1, encoding="utf-8") as out:  # line-buffered, as stderr
            best = asyncio.run(_measure(args.calls, out))
    print(f"observer, access lines off:         {best['off']:6.2f} us/call")
    print(f"observer, access lines on:          {best['on']:6.2f} us/call")
    print(f"observer, on, tracing on (no span): {best['traced']:6.2f} us/call")
    print(f"the access line:                    {best['on'] - best['off']:6.2f} us/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
