"""Health: what the edge knows of the actor system, each shard and the store, as one report.

:class:`HealthMonitor` re-checks every ``interval_s`` (and on demand) and feeds every
health surface from one report: ``mcp.health.v2.Health`` (Check, Watch,
GetDetailedHealth), ``MCPEngine.HealthCheck`` and the standard
``grpc.health.v1.Health`` that load balancers and Kubernetes probe.

A check never waits on a shard: the engine's links hear from every shard each
heartbeat (``runtime.engine.link``), so a shard that is stopped or hung shows as
unresponsive within the heartbeat timeout, and a store whose writes fail shows in
the shards' answers. Any of those, a supervisor being replaced, or a server that
drains (NOT_SERVING everywhere before in-flight calls finish) makes the report
NOT_SERVING, with the dependency and the reason in its details; the report turns
SERVING again by itself once they recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health as std_health
from grpc_health.v1 import health_pb2 as std_health_pb2

from confab.grpc_edge import convert
from confab.grpc_edge.metrics import RpcMetrics
from confab.protos import common_pb2 as common
from confab.protos import health_pb2 as pb
from confab.protos import health_pb2_grpc as pb_grpc
from confab.runtime import VERSION
from confab.runtime.config import is_database_url
from confab.runtime.engine import Engine
from confab.runtime.inspection import ClusterView, ShardStatus

log = logging.getLogger(__name__)

SERVICES = ("", "mcp.engine.v2.MCPEngine", "mcp.health.v2.Health")
# grpc.health.v1 service name that says whether every virtual shard has a holder this edge
# reaches. Not part of the overall status: while a host's share moves, this edge still serves
# every other conversation (and holds the moving ones' requests until they have a holder).
CLUSTER_SERVICE = "confab.cluster"
FRESH_WAIT_S = 1.0  # longest a detailed health check waits for a shard's own answer
SERVING, NOT_SERVING = common.HEALTH_SERVING, common.HEALTH_NOT_SERVING


@dataclass(frozen=True, slots=True)
class DependencyCheck:
    name: str
    type: str
    ok: bool
    latency_ms: float
    error: str
    checked_at: float
    required: bool = True  # part of the overall status (the cluster's completeness is not)


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: common.HealthStatus
    checked_at: float
    dependencies: tuple[DependencyCheck, ...] = ()
    shards: tuple[ShardStatus, ...] = ()
    draining: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "draining": self.draining,
            "shards": len(self.shards),
            "resident_conversations": sum(s.resident_conversations for s in self.shards),
            "failing": [d.name for d in self.dependencies if not d.ok],
            "problems": {d.name: d.error for d in self.dependencies if not d.ok},
            # Which edge process answered (`confab serve --edges N`: each has its own engine and health).
            "edge_pid": os.getpid(),
        }


class HealthMonitor:
    def __init__(self, engine: Engine, metrics: RpcMetrics, interval_s: float = 1.0) -> None:
        self.engine = engine
        self.metrics = metrics
        self.interval_s = interval_s
        self.std_servicer = std_health.aio.HealthServicer()
        self.latest = HealthReport(status=common.HEALTH_UNKNOWN, checked_at=time.time())
        self._changed = asyncio.Condition()
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._process = psutil.Process()

    async def start(self) -> None:
        await self.check()
        self.engine.on_change = self._poke.set  # a shard reached or lost: check now, not at the next tick
        self._task = asyncio.create_task(self._loop(), name="confab-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self) -> None:
        """Report NOT_SERVING from now on (shutdown has begun)."""
        self._draining = True
        await self._publish(
            HealthReport(NOT_SERVING, time.time(), self.latest.dependencies, self.latest.shards, True)
        )
        await self.std_servicer.enter_graceful_shutdown()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval_s)
            self._poke.clear()
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")

    async def check(self, *, fresh: bool = False) -> HealthReport:
        """Report on what the heartbeats said, or (``fresh``) on what every shard says now,
        waiting a second at most for each."""
        cluster = await self.engine.refresh_cluster(FRESH_WAIT_S) if fresh else self.engine.cluster()
        now = time.time()
        host_problem = self.engine.host.problem()
        checks = [DependencyCheck("actor_system", "thespian", not host_problem, 0.0, host_problem, now)]
        shards: list[ShardStatus] = []
        for view in cluster.shards:
            if view.host != cluster.this_host:
                continue  # another host's: its edge reports it; here it counts toward the cluster
            latency = view.status.store_latency_ms if view.status is not None else 0.0
            checks.append(
                DependencyCheck(f"shard-{view.index}", "shard", view.responsive, latency, view.error, now)
            )
            if view.responsive and view.status is not None:
                shards.append(view.status)
        checks.append(
            DependencyCheck(
                "store",
                _store_kind(cluster.store),
                cluster.store_ok,
                cluster.store_latency_ms,
                cluster.store_error,
                now,
            )
        )
        checks.append(_cluster_check(cluster, now))
        healthy = all(c.ok for c in checks if c.required) and not self._draining
        report = HealthReport(
            SERVING if healthy else NOT_SERVING, now, tuple(checks), tuple(shards), self._draining
        )
        await self._publish(report)
        return report

    async def _publish(self, report: HealthReport) -> None:
        changed = report.status != self.latest.status
        cluster_ok = all(d.ok for d in report.dependencies if d.name == "cluster")
        cluster_changed = cluster_ok != all(d.ok for d in self.latest.dependencies if d.name == "cluster")
        if cluster_changed or changed or report.draining != self.latest.draining:
            complete = cluster_ok and not report.draining
            problem = next((d.error for d in report.dependencies if d.name == "cluster" and not d.ok), "")
            if problem and cluster_changed:
                log.warning("cluster incomplete: %s", problem)
            elif cluster_changed and self.latest.dependencies:
                log.info("cluster complete")
            await self.std_servicer.set(
                CLUSTER_SERVICE,
                std_health_pb2.HealthCheckResponse.SERVING
                if complete
                else std_health_pb2.HealthCheckResponse.NOT_SERVING,
            )
        self.latest = report
        if not changed:
            return
        if report.status == SERVING:
            log.info("health: SERVING")
        elif not report.draining:
            problems = "; ".join(f"{d.name}: {d.error}" for d in report.dependencies if not d.ok)
            log.warning("health: NOT_SERVING: %s", problems)
        std = (
            std_health_pb2.HealthCheckResponse.SERVING
            if report.status == SERVING
            else std_health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in SERVICES:
            await self.std_servicer.set(service, std)
        async with self._changed:
            self._changed.notify_all()

    async def changes(self) -> AsyncIterator[HealthReport]:
        """The current report, then each report whose status differs from the last."""
        last = None
        while True:
            report = self.latest
            if report.status != last:
                last = report.status
                yield report
            async with self._changed:
                await self._changed.wait()

    def resource_usage(self, shards: tuple[ShardStatus, ...]) -> pb.ResourceUsage:
        memory = psutil.virtual_memory()
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            threads = self._process.num_threads()
            cpu = self._process.cpu_percent(None)
        used = rss + sum(s.rss_bytes for s in shards)
        usage = pb.ResourceUsage(
            cpu_percent=cpu,
            memory_used_bytes=used,
            memory_total_bytes=memory.total,
            memory_percent=100.0 * used / memory.total,
            active_connections=self.metrics.in_flight,
            goroutines=threads,
        )
        disk = psutil.disk_usage(str(self.engine.config.store_dir))
        usage.disk_usage.update({"total_bytes": disk.total, "used_bytes": disk.used, "percent": disk.percent})
        return usage


def _store_kind(store: str) -> str:
    return "postgresql" if is_database_url(store) else "sqlite"


def _cluster_check(cluster: ClusterView, now: float) -> DependencyCheck:
    unowned = cluster.unowned
    problems = []
    if unowned:
        problems.append(
            f"{len(unowned)} of {len(cluster.owners)} virtual shards have no holder this edge reaches"
        )
    if not cluster.in_touch:
        problems.append("this host cannot write its heartbeat to the store's member table")
    for state in ("lost", "unreachable"):
        hosts = [h.host for h in cluster.hosts if h.state == state]
        if hosts and problems:
            problems.append(f"{state}: {', '.join(hosts)}")
    ok = cluster.complete
    # A host that cannot beat, or that the others cannot reach (it gave its share up), can route
    # nothing it does not hold itself: it is not serving at all, so a load balancer drains it.
    # A few virtual shards moving is the cluster's business, not a reason to drain this edge.
    this = next((h for h in cluster.hosts if h.host == cluster.this_host), None)
    alone = not cluster.in_touch or (this is not None and this.state == "unreachable")
    return DependencyCheck("cluster", "cluster", ok, 0.0, "; ".join(problems), now, required=alone)


class HealthService(pb_grpc.HealthServicer):
    """``mcp.health.v2.Health``."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor

    def _status_for(self, service: str, report: HealthReport) -> common.HealthStatus:
        return report.status if service in SERVICES else common.HEALTH_SERVICE_UNKNOWN

    def _response(self, service: str, report: HealthReport) -> pb.HealthCheckResponse:
        response = pb.HealthCheckResponse(service=service, status=self._status_for(service, report))
        response.timestamp.CopyFrom(convert.timestamp(report.checked_at))
        convert.fill_struct(response.details, report.summary())
        return response

    async def Check(
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HealthCheckResponse:
        return self._response(request.service, self.monitor.latest)

    async def Watch(
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.HealthCheckResponse]:
        async for report in self.monitor.changes():
            yield self._response(request.service, report)

    async def GetDetailedHealth(
        self, request: pb.DetailedHealthRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DetailedHealthResponse:
        report = await self.monitor.check(fresh=True)
        response = pb.DetailedHealthResponse(
            service=request.service, status=self._status_for(request.service, report), version=VERSION
        )
        response.timestamp.CopyFrom(convert.timestamp(report.checked_at))
        response.uptime_since.CopyFrom(convert.timestamp(self.monitor.engine.started_at))
        if request.include_dependencies:
            for check in report.dependencies:
                dependency = response.dependencies.add(
                    name=check.name,
                    type=check.type,
                    status=SERVING if check.ok else NOT_SERVING,
                    response_time_ms=int(check.latency_ms),
                    error_message=check.error,
                )
                dependency.last_check.CopyFrom(convert.timestamp(check.checked_at))
        response.resource_usage.CopyFrom(self.monitor.resource_usage(report.shards))
        if request.include_metrics:
            stats = self.monitor.engine.statistics()
            convert.fill_struct(
                response.metrics,
                {
                    "rpc_in_flight": self.monitor.metrics.in_flight,
                    "rpc_calls_by_code": self.monitor.metrics.totals(),
                    "shard_restarts": stats.shard_restarts,
                    "commands_sent": sum(link.commands_sent for link in stats.links),
                    "batches_sent": sum(link.batches_sent for link in stats.links),
                },
            )
        convert.fill_struct(
            response.details,
            {
                **report.summary(),
                "shard_detail": [
                    {
                        "index": s.index,
                        "pid": s.pid,
                        "generation": s.generation,
                        "resident_conversations": s.resident_conversations,
                        "commands": s.commands,
                        "rss_bytes": s.rss_bytes,
                    }
                    for s in report.shards
                ],
            },
        )
        return response
