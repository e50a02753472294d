"""GetMetrics: the traffic the edge served, and the engine's live figures.

The names are the OpenTelemetry instruments' (``grpc_edge.figures``, the one list: the
Prometheus endpoint serves the same figures, named by Prometheus' convention):

====================================  =========  ===========================================
name                                  type       points
====================================  =========  ===========================================
confab.rpc.requests                   counter    calls per interval, by method and code
confab.rpc.duration                   histogram  per interval, by method and code: ``stat``
                                                 ``mean``, ``p50`` (histogram bucket bound),
                                                 ``p99``; seconds
confab.rpc.in_flight                  gauge      calls being served now
confab.link.queued                    gauge      commands waiting to be sent, by shard
confab.link.in_flight                 gauge      commands sent to a shard, unanswered, by shard
confab.link.commands_per_batch        gauge      mean commands per edge→shard message, by shard
confab.link.largest_batch             gauge      most commands one edge→shard message carried
confab.shard.resident_conversations   gauge      conversations in memory, by shard
confab.shard.commands                 counter    commands run since the shard started, by shard
confab.shard.store_latency            gauge      a shard's last store round trip (ms), by shard
confab.shard.rss                      gauge      a shard process's resident memory (bytes)
confab.shard.restarts                 counter    shard processes replaced by the supervisor
confab.analytics.sessions_started     counter    by tenant and flow
confab.analytics.turns                counter    by tenant, flow and state
confab.analytics.sessions_completed   counter    by tenant, flow and state (terminal)
confab.analytics.sessions_abandoned   counter    by tenant, flow and state, found when the user
                                                 came back (GetAnalytics counts every one)
confab.analytics.handoffs             counter    by tenant, flow and state
confab.analytics.fallbacks            counter    by tenant, flow and state
confab.analytics.slot_reprompts       counter    by tenant, flow and state
confab.analytics.slots_given_up       counter    by tenant, flow and state
confab.analytics.webhook_calls        counter    by tenant, flow, webhook and outcome
                                                 (ok, failed, timeout, abandoned)
confab.analytics.webhook_duration     counter    seconds spent in calls, by tenant, flow, webhook
confab.model.calls                    counter    calls to language models, by provider and
                                                 outcome (ok, or the failure's reason)
confab.model.duration                 histogram  a whole model call, by provider: ``stat``
                                                 ``mean``, ``p50``, ``p99`` (seconds)
confab.model.first_chunk              histogram  time to an answer's first chunk, likewise
confab.model.tokens                   counter    by provider and type (input, output)
====================================  =========  ===========================================

Time-series metrics honour ``start_time``/``end_time`` (default: the last hour) and
``granularity`` (1s, 10s, 1m, 5m, 15m, 1h; default 1m); live figures are one point, now.
The analytics figures (counted since this host's shards started, docs/analytics.md) are a
tenant's own for a tenant's credentials, every tenant's for an operator's; the model figures
(also since this host's shards started, ``runtime.model_figures``) are by provider, no tenant's. The names
GetMetrics had before (``rpc.requests``, ``engine.shard.commands``, ``link.queued``...) are
still accepted and answered under the new name.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import timestamp_pb2

from confab.grpc_edge import auth, convert
from confab.grpc_edge.figures import ALIASES, ANALYTICS, FIGURES, MODELS, LiveAnalyticsView
from confab.grpc_edge.health import HealthMonitor
from confab.grpc_edge.metrics import GRANULARITIES, RpcMetrics, RpcPoint, parse_granularity
from confab.protos import mcp_engine_pb2 as pb
from confab.runtime.analytics import LiveKey, live_labels
from confab.runtime.engine import Engine
from confab.runtime.errors import InvalidArgument
from confab.runtime.inspection import ShardStatus
from confab.runtime.model_figures import HISTOGRAMS, ModelKey, histogram_stats, model_labels

RPC_SERIES = ("confab.rpc.requests", "confab.rpc.duration")
METRIC_NAMES = tuple(FIGURES)
LIVE = tuple(n for n in METRIC_NAMES if n not in RPC_SERIES)


class MetricsReport:
    def __init__(
        self,
        engine: Engine,
        metrics: RpcMetrics,
        health: HealthMonitor | None = None,
        live: LiveAnalyticsView | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.health = health
        self.live = live if live is not None else LiveAnalyticsView()

    async def collect(self, request: pb.GetMetricsRequest) -> list[pb.MetricData]:
        asked = list(request.metric_names) or list(METRIC_NAMES)
        unknown = [n for n in asked if n not in FIGURES and n not in ALIASES]
        if unknown:
            raise InvalidArgument(
                f"unknown metric names {unknown}; known: {list(METRIC_NAMES)}", field="metric_names"
            )
        names = list(dict.fromkeys(ALIASES.get(n, n) for n in asked))
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
            if name == "confab.rpc.requests":
                out.append(_requests(points))
            elif name == "confab.rpc.duration":
                out.append(_durations(points))
        live = [n for n in names if n in LIVE]
        if live and start <= now < end:
            out.extend(await self._live(live, now))
        return out

    async def _live(self, names: list[str], now: float) -> list[pb.MetricData]:
        """One point each; shard figures fresh from every shard that answers within a second."""
        stats = self.engine.statistics()
        wants_shards = any(
            n.startswith(("confab.shard.", "confab.analytics.", "confab.model.")) for n in names
        )
        cluster = await self.engine.refresh_cluster(1.0) if wants_shards else self.engine.cluster()
        shards: list[ShardStatus] = [v.status for v in cluster.shards if v.status is not None]
        values: dict[str, list[tuple[float, dict[str, Any]]]] = {
            "confab.rpc.in_flight": [(float(self.metrics.in_flight), {})],
            "confab.shard.resident_conversations": [
                (float(s.resident_conversations), {"shard": s.index}) for s in shards
            ],
            "confab.shard.commands": [(float(s.commands), {"shard": s.index}) for s in shards],
            "confab.shard.store_latency": [(s.store_latency_ms, {"shard": s.index}) for s in shards],
            "confab.shard.rss": [(float(s.rss_bytes), {"shard": s.index}) for s in shards],
            "confab.shard.restarts": [(float(stats.shard_restarts), {})],
            "confab.link.queued": [(float(link.queued), {"shard": link.shard}) for link in stats.links],
            "confab.link.in_flight": [(float(link.in_flight), {"shard": link.shard}) for link in stats.links],
            "confab.link.largest_batch": [
                (float(link.max_batch), {"shard": link.shard}) for link in stats.links
            ],
            "confab.link.commands_per_batch": [
                (link.commands_sent / link.batches_sent if link.batches_sent else 0.0, {"shard": link.shard})
                for link in stats.links
            ],
        }
        if any(n in ANALYTICS or n in MODELS for n in names):
            here = [v.status for v in cluster.shards if v.status is not None and v.host == cluster.this_host]
            totals = self.live.update(here)
            values.update(self._analytics(totals.analytics))
            values.update(_models(totals.models))
        out = []
        for name in names:
            data = pb.MetricData(name=name, type=FIGURES[name].kind)
            for value, attributes in values.get(name, []):
                point = data.points.add(value=value)
                point.timestamp.CopyFrom(convert.timestamp(now))
                convert.fill_struct(point.attributes, attributes)
            out.append(data)
        return out

    def _analytics(self, totals: dict[LiveKey, float]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        """This host's shards' analytics, a tenant's own for a tenant's credentials."""
        principal = auth.current_principal()
        tenant = None if principal is None or auth.OPERATOR_ROLE in principal.roles else principal.tenant_id
        out: dict[str, list[tuple[float, dict[str, Any]]]] = {name: [] for name in ANALYTICS}
        for key, value in sorted(totals.items()):
            if tenant is None or key[1] == tenant:
                out[key[0]].append((value, dict(live_labels(key))))
        return out


def _models(totals: dict[ModelKey, float]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """This host's shards' model calls: counters as they stand, histograms as their mean and quantiles."""
    out: dict[str, list[tuple[float, dict[str, Any]]]] = {name: [] for name in MODELS}
    for key, value in sorted(totals.items()):
        if key[0] not in HISTOGRAMS:
            out[key[0]].append((value, model_labels(key)))
    for figure in HISTOGRAMS:
        for provider, stats in sorted(histogram_stats(totals, figure).items()):
            for stat, seconds in stats.items():
                out[figure].append((seconds, {"provider": provider, "stat": stat}))
    return out


def _requests(points: list[RpcPoint]) -> pb.MetricData:
    data = pb.MetricData(name="confab.rpc.requests", type="counter")
    for p in points:
        _point(data, p.start, float(p.count), {"method": p.method, "code": p.code})
    return data


def _durations(points: list[RpcPoint]) -> pb.MetricData:
    data = pb.MetricData(name="confab.rpc.duration", type="histogram")
    for p in points:
        for stat, value_ms in (("mean", p.avg_ms), ("p50", p.p50_ms), ("p99", p.p99_ms)):
            _point(data, p.start, value_ms / 1000.0, {"method": p.method, "code": p.code, "stat": stat})
    return data


def _point(data: pb.MetricData, at: float, value: float, attributes: dict[str, Any]) -> None:
    point = data.points.add(value=value)
    point.timestamp.CopyFrom(convert.timestamp(at))
    convert.fill_struct(point.attributes, attributes)


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9
