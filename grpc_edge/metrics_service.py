"""GetMetrics: the traffic the edge served, and the engine's live figures.

Metric names (``GetMetricsRequest.metric_names`` selects among them; empty means all):

=================================  =======  ==============================================
name                               type     points
=================================  =======  ==============================================
rpc.requests                       counter  calls per interval, by method and status code
rpc.latency.avg_ms                 gauge    mean duration per interval, by method and code
rpc.latency.p50_ms                 gauge    median (histogram bucket bound), same keys
rpc.latency.p99_ms                 gauge    99th percentile, same keys
rpc.in_flight                      gauge    calls being served now
engine.shard.resident_conversations gauge   conversations in memory, by shard
engine.shard.commands              counter  commands run since the shard started, by shard
engine.shard.restarts              counter  shard processes replaced by the supervisor
link.queued                        gauge    commands waiting to be sent, by shard
link.commands_per_batch            gauge    mean commands per edge→shard message, by shard
link.largest_batch                 gauge    most commands one edge→shard message carried, by shard
=================================  =======  ==============================================

Time-series metrics honour ``start_time``/``end_time`` (default: the last hour) and
``granularity`` (1s, 10s, 1m, 5m, 15m, 1h; default 1m); live figures are one point, now.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import timestamp_pb2

from confab.grpc_edge import convert
from confab.grpc_edge.metrics import GRANULARITIES, RpcMetrics, RpcPoint, parse_granularity
from confab.protos import mcp_engine_pb2 as pb
from confab.runtime.engine import Engine
from confab.runtime.errors import InvalidArgument
from confab.runtime.inspection import ShardStatus

RPC_SERIES = {
    "rpc.requests": ("counter", lambda p: float(p.count)),
    "rpc.latency.avg_ms": ("gauge", lambda p: p.avg_ms),
    "rpc.latency.p50_ms": ("gauge", lambda p: p.p50_ms),
    "rpc.latency.p99_ms": ("gauge", lambda p: p.p99_ms),
}
LIVE = (
    "rpc.in_flight",
    "engine.shard.resident_conversations",
    "engine.shard.commands",
    "engine.shard.restarts",
    "link.queued",
    "link.commands_per_batch",
    "link.largest_batch",
)
METRIC_NAMES = (*RPC_SERIES, *LIVE)


class MetricsReport:
    def __init__(self, engine: Engine, metrics: RpcMetrics) -> None:
        self.engine = engine
        self.metrics = metrics

    async def collect(self, request: pb.GetMetricsRequest) -> list[pb.MetricData]:
        names = list(request.metric_names) or list(METRIC_NAMES)
        unknown = [n for n in names if n not in METRIC_NAMES]
        if unknown:
            raise InvalidArgument(
                f"unknown metric names {unknown}; known: {list(METRIC_NAMES)}", field="metric_names"
            )
        granularity = parse_granularity(request.granularity)
        if granularity is None:
            raise InvalidArgument(
                f"granularity must be one of {sorted(k for k in GRANULARITIES if k)}", field="granularity"
            )
        now = time.time()
        end = _seconds(request.end_time) if request.HasField("end_time") else now + 1
        start = _seconds(request.start_time) if request.HasField("start_time") else end - 3600
        if start >= end:
            raise InvalidArgument("start_time must be before end_time", field="start_time")

        out: list[pb.MetricData] = []
        points = self.metrics.points(start, end, granularity) if any(n in RPC_SERIES for n in names) else []
        for name in names:
            if name in RPC_SERIES:
                kind, value_of = RPC_SERIES[name]
                out.append(_series(name, kind, points, value_of))
        live = [n for n in names if n in LIVE]
        if live and start <= now < end:
            out.extend(await self._live(live, now))
        return out

    async def _live(self, names: list[str], now: float) -> list[pb.MetricData]:
        """One point each; shard figures fresh from every shard that answers within a second."""
        stats = self.engine.statistics()
        wants_shards = any(n.startswith("engine.shard.") and n != "engine.shard.restarts" for n in names)
        cluster = await self.engine.refresh_cluster(1.0) if wants_shards else self.engine.cluster()
        shards: list[ShardStatus] = [v.status for v in cluster.shards if v.status is not None]
        values: dict[str, tuple[str, list[tuple[float, dict[str, Any]]]]] = {
            "rpc.in_flight": ("gauge", [(float(self.metrics.in_flight), {})]),
            "engine.shard.resident_conversations": (
                "gauge",
                [(float(s.resident_conversations), {"shard": s.index}) for s in shards],
            ),
            "engine.shard.commands": ("counter", [(float(s.commands), {"shard": s.index}) for s in shards]),
            "engine.shard.restarts": ("counter", [(float(stats.shard_restarts), {})]),
            "link.queued": ("gauge", [(float(link.queued), {"shard": link.shard}) for link in stats.links]),
            "link.largest_batch": (
                "gauge",
                [(float(link.max_batch), {"shard": link.shard}) for link in stats.links],
            ),
            "link.commands_per_batch": (
                "gauge",
                [
                    (
                        link.commands_sent / link.batches_sent if link.batches_sent else 0.0,
                        {"shard": link.shard},
                    )
                    for link in stats.links
                ],
            ),
        }
        out = []
        for name in names:
            kind, samples = values[name]
            data = pb.MetricData(name=name, type=kind)
            for value, attributes in samples:
                point = data.points.add(value=value)
                point.timestamp.CopyFrom(convert.timestamp(now))
                convert.fill_struct(point.attributes, attributes)
            out.append(data)
        return out


def _series(name: str, kind: str, points: list[RpcPoint], value_of: Any) -> pb.MetricData:
    data = pb.MetricData(name=name, type=kind)
    for p in points:
        point = data.points.add(value=value_of(p))
        point.timestamp.CopyFrom(convert.timestamp(p.start))
        convert.fill_struct(point.attributes, {"method": p.method, "code": p.code})
    return data


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9
