"""What the edge served: RPC counts and latencies by method and outcome, over time.

:class:`RpcMetrics` keeps one-second buckets for the retention window; each
bucket counts calls per (method, status code) with a fixed log-scale latency
histogram, so GetMetrics can answer for any time range and granularity with
real percentiles. Recording is a few dict operations, cheap enough for every call.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

# Upper bounds (ms) of the latency histogram buckets: 0.05 ms .. ~105 s, x1.5 per step.
BOUNDS_MS: tuple[float, ...] = tuple(0.05 * 1.5**i for i in range(37))


@dataclass(slots=True)
class _Cell:
    count: int = 0
    total_ms: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))

    def add(self, duration_ms: float) -> None:
        self.count += 1
        self.total_ms += duration_ms
        self.histogram[bisect.bisect_left(BOUNDS_MS, duration_ms)] += 1

    def merge(self, other: _Cell) -> None:
        self.count += other.count
        self.total_ms += other.total_ms
        for i, n in enumerate(other.histogram):
            self.histogram[i] += n

    def percentile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (ms)."""
        if not self.count:
            return 0.0
        rank = math.ceil(q * self.count)
        seen = 0
        for i, n in enumerate(self.histogram):
            seen += n
            if seen >= rank:
                return BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
        return BOUNDS_MS[-1]


@dataclass(frozen=True, slots=True)
class RpcPoint:
    """One method and outcome over one interval."""

    start: float  # Unix seconds
    method: str
    code: str
    count: int
    avg_ms: float
    p50_ms: float
    p99_ms: float


class RpcMetrics:
    def __init__(self, retention_s: int = 3600, clock: Callable[[], float] = time.time) -> None:
        self.retention_s = retention_s
        self.clock = clock
        self.started_at = clock()
        self.in_flight = 0
        self._buckets: OrderedDict[int, dict[tuple[str, str], _Cell]] = OrderedDict()
        # Also told of every call (OpenTelemetry instruments, grpc_edge.telemetry); None when off.
        self.on_record: Callable[[str, str, float], None] | None = None

    def record(self, method: str, code: str, duration_s: float, now: float | None = None) -> None:
        second = int(now if now is not None else self.clock())
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = {}
            self._expire(second)
        cell = bucket.get((method, code))
        if cell is None:
            cell = bucket[(method, code)] = _Cell()
        cell.add(duration_s * 1000.0)
        if self.on_record is not None:
            self.on_record(method, code, duration_s)

    def _expire(self, now_s: int) -> None:
        oldest = now_s - self.retention_s
        while self._buckets:
            first = next(iter(self._buckets))
            if first >= oldest:
                break
            del self._buckets[first]

    def points(self, start: float, end: float, granularity_s: int) -> list[RpcPoint]:
        """Aggregate [start, end) into intervals of ``granularity_s`` seconds."""
        self._expire(int(self.clock()))
        merged: dict[tuple[int, str, str], _Cell] = {}
        for second, bucket in self._buckets.items():
            if not start <= second < end:
                continue
            interval = second - second % granularity_s
            for (method, code), cell in bucket.items():
                target = merged.get((interval, method, code))
                if target is None:
                    target = merged[(interval, method, code)] = _Cell()
                target.merge(cell)
        return [
            RpcPoint(
                start=float(interval),
                method=method,
                code=code,
                count=cell.count,
                avg_ms=cell.total_ms / cell.count,
                p50_ms=cell.percentile(0.50),
                p99_ms=cell.percentile(0.99),
            )
            for (interval, method, code), cell in sorted(merged.items())
        ]

    def totals(self) -> dict[str, int]:
        """Calls per outcome code over the retention window."""
        self._expire(int(self.clock()))
        out: dict[str, int] = {}
        for bucket in self._buckets.values():
            for (_, code), cell in bucket.items():
                out[code] = out.get(code, 0) + cell.count
        return out


GRANULARITIES = {"": 60, "1s": 1, "10s": 10, "1m": 60, "5m": 300, "15m": 900, "1h": 3600}


def parse_granularity(text: str) -> int | None:
    """Seconds for a granularity like "1m"; None when it is not one Confab knows."""
    return GRANULARITIES.get(text.strip().lower())
