"""Health: real checks of the actor system, each shard and the store.

:class:`HealthMonitor` re-checks every ``interval_s`` and on demand, and feeds
every health surface from one report: ``mcp.health.v2.Health`` (Check, Watch,
GetDetailedHealth), ``MCPEngine.HealthCheck`` and the standard
``grpc.health.v1.Health`` that load balancers and Kubernetes probe. When the
server drains, it reports NOT_SERVING everywhere before in-flight calls finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health as std_health
from grpc_health.v1 import health_pb2 as std_health_pb2

from ..actors.messages import ShardStatistics
from ..protos import common_pb2 as common
from ..protos import health_pb2 as pb
from ..protos import health_pb2_grpc as pb_grpc
from ..runtime import VERSION
from ..runtime.engine import Engine
from . import convert
from .metrics import RpcMetrics

log = logging.getLogger(__name__)

SERVICES = ("", "mcp.engine.v2.MCPEngine", "mcp.health.v2.Health")
SERVING, NOT_SERVING = common.HEALTH_SERVING, common.HEALTH_NOT_SERVING


@dataclass(frozen=True, slots=True)
class DependencyCheck:
    name: str
    type: str
    ok: bool
    latency_ms: float
    error: str
    checked_at: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: common.HealthStatus
    checked_at: float
    dependencies: tuple[DependencyCheck, ...] = ()
    shards: tuple[ShardStatistics, ...] = ()
    draining: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "draining": self.draining,
            "shards": len(self.shards),
            "resident_conversations": sum(s.resident_conversations for s in self.shards),
            "failing": [d.name for d in self.dependencies if not d.ok],
        }


class HealthMonitor:
    def __init__(self, engine: Engine, metrics: RpcMetrics, interval_s: float = 2.0) -> None:
        self.engine = engine
        self.metrics = metrics
        self.interval_s = interval_s
        self.std_servicer = std_health.aio.HealthServicer()
        self.latest = HealthReport(status=common.HEALTH_UNKNOWN, checked_at=time.time())
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._process = psutil.Process()

    async def start(self) -> None:
        await self.check()
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
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")

    async def check(self) -> HealthReport:
        now = time.time()
        started = time.perf_counter()
        supervisor_error = await self.engine.check_supervisor()
        checks = [
            DependencyCheck(
                "actor_system",
                "thespian",
                supervisor_error is None,
                (time.perf_counter() - started) * 1000,
                supervisor_error or "",
                now,
            )
        ]
        shards: list[ShardStatistics] = []
        for index, result in enumerate(await self.engine.shard_statistics()):
            if isinstance(result, ShardStatistics):
                shards.append(result)
                checks.append(DependencyCheck(f"shard-{index}", "shard", True, 0.0, "", now))
            else:
                checks.append(DependencyCheck(f"shard-{index}", "shard", False, 0.0, str(result), now))
        store_errors = [s.store_error for s in shards if not s.store_ok]
        checks.append(
            DependencyCheck(
                "store",
                "sqlite",
                bool(shards) and not store_errors,
                max((s.store_latency_ms for s in shards), default=0.0),
                "; ".join(store_errors) if shards else "no shard could reach the store",
                now,
            )
        )
        healthy = all(c.ok for c in checks) and not self._draining
        report = HealthReport(
            SERVING if healthy else NOT_SERVING, now, tuple(checks), tuple(shards), self._draining
        )
        await self._publish(report)
        return report

    async def _publish(self, report: HealthReport) -> None:
        changed = report.status != self.latest.status
        self.latest = report
        if not changed:
            return
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

    def resource_usage(self, shards: tuple[ShardStatistics, ...]) -> pb.ResourceUsage:
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
        disk = psutil.disk_usage(str(self.engine.config.store_path.parent))
        usage.disk_usage.update({"total_bytes": disk.total, "used_bytes": disk.used, "percent": disk.percent})
        return usage


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
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthCheckResponse:
        return self._response(request.service, self.monitor.latest)

    async def Watch(
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HealthCheckResponse]:
        async for report in self.monitor.changes():
            yield self._response(request.service, report)

    async def GetDetailedHealth(
        self, request: pb.DetailedHealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetailedHealthResponse:
        report = await self.monitor.check()
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
