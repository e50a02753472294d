"""The gRPC server: services, guards and health around an engine, started and stopped in order.

Start: the engine first (the actor processes are forked before gRPC starts any
thread), then the services. Stop: health says NOT_SERVING, open streams end
(answering what they had read), in-flight calls get ``shutdown_grace_s`` to
finish, then the engine stops every shard.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc

from confab.grpc_edge import reflection_service, tls
from confab.grpc_edge.access_log import AccessLog, flush_access_lines
from confab.grpc_edge.admin_service import AdminService
from confab.grpc_edge.auth import Authenticator, AuthGuard
from confab.grpc_edge.decoding import DecodeGuard
from confab.grpc_edge.engine_service import EngineService
from confab.grpc_edge.figures import LiveAnalyticsView
from confab.grpc_edge.guards import GuardedRegistry
from confab.grpc_edge.health import HealthMonitor, HealthService
from confab.grpc_edge.limits import LimitsGuard, TenantRateLimiter
from confab.grpc_edge.metrics import RpcMetrics
from confab.grpc_edge.metrics_service import MetricsReport
from confab.grpc_edge.observe import ObserverGuard
from confab.grpc_edge.streams import StreamSettings
from confab.grpc_edge.telemetry import EdgeTelemetry
from confab.protos import (
    admin_pb2_grpc,
    health_pb2_grpc,
    mcp_engine_pb2_grpc,
)
from confab.runtime.config import ConfabConfig
from confab.runtime.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EdgeSecurity:
    """Who may call, and the TLS credentials: key and certificate files, read once, at start."""

    authenticator: Authenticator | None
    credentials: grpc.ServerCredentials | None

    @classmethod
    def from_config(cls, config: ConfabConfig) -> EdgeSecurity:
        """Reads every file now, so a bad one stops the start before anything else happens."""
        return cls(Authenticator.from_config(config.auth), tls.server_credentials(config.tls))


class ConfabServer:
    def __init__(
        self, config: ConfabConfig, engine: Engine, security: EdgeSecurity, *, share_port: bool = False
    ) -> None:
        """``share_port``: one of several edge processes of this host, listening on the same port
        (SO_REUSEPORT); otherwise the port is this process's alone."""
        self.config = config
        self.share_port = share_port
        self.engine = engine
        self.security = security
        self.metrics = RpcMetrics()
        self.streams = StreamSettings(config.server.stream_idle_timeout_s)
        self.access_log = AccessLog(log_message_text=config.logging.log_message_text)
        self.health: HealthMonitor | None = None
        self.telemetry: EdgeTelemetry | None = None
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        cfg = self.config.server
        authenticator, credentials = self.security.authenticator, self.security.credentials
        if authenticator is None:
            log.warning("authentication is off (auth.mode: off): any caller may act on any tenant")
        await self.engine.start()
        try:
            self.health = HealthMonitor(self.engine, self.metrics)
            # After engine.start: exporter threads must not exist when Thespian forks.
            live = LiveAnalyticsView()
            self.telemetry = EdgeTelemetry(self.config, self.engine, self.metrics, self.health, live)
            server = grpc.aio.server(
                # OpenTelemetry's server spans, only when tracing is on: outside everything else.
                interceptors=self.telemetry.interceptors(),
                options=[
                    # Share the port only with this host's other edges (the host process holds the
                    # port for them: tools.edges); alone, never (gRPC's default on Linux would).
                    ("grpc.so_reuseport", 1 if self.share_port else 0),
                    ("grpc.max_receive_message_length", cfg.max_message_bytes),
                    ("grpc.max_send_message_length", cfg.max_message_bytes),
                ],
            )
            # Every method of every service goes through these, outermost first (grpc_edge.guards).
            services = GuardedRegistry(
                server,
                [
                    # Metrics and one access line for every call, those refused inside included.
                    ObserverGuard(self.metrics, self.access_log, traced=self.telemetry.tracing),
                    DecodeGuard(),
                    AuthGuard(authenticator),
                    # After auth: unauthenticated callers are turned away before they hold a slot.
                    LimitsGuard.from_config(self.config.limits),
                ],
            )
            mcp_engine_pb2_grpc.add_MCPEngineServicer_to_server(
                EngineService(
                    self.engine,
                    self.health,
                    MetricsReport(self.engine, self.metrics, self.health, live),
                    max_batch_messages=cfg.max_batch_messages,
                    stream=self.streams,
                    limits=self.config.limits,
                    rate_limiter=TenantRateLimiter.from_config(self.config.limits),
                ),
                services,
            )
            admin_pb2_grpc.add_AdminServicer_to_server(
                AdminService(self.engine, self.health, limits=self.config.limits), services
            )
            health_pb2_grpc.add_HealthServicer_to_server(HealthService(self.health), services)
            std_health_pb2_grpc.add_HealthServicer_to_server(self.health.std_servicer, services)
            reflection_service.add(services)
            self.port = tls.add_port(server, cfg.listen, credentials)  # OSError: cannot listen there
            log.info("listening on port %d (%s)", self.port, tls.describe(self.config.tls))
            await self.health.start()
            await server.start()
            self._server = server
            self.engine.host.edge_serving(self.address)  # the other hosts' operators see it
        except BaseException:
            if self.telemetry is not None:
                self.telemetry.close()
            await self.engine.close()
            raise

    async def reload_flows(self) -> None:
        """Load the flow files again on every shard, without dropping traffic (SIGHUP)."""
        reload = await self.engine.reload_flows()
        for failure in reload.failed:
            log.error("flow reload: %s", failure)
        for problem in reload.skipped:
            log.error("flow reload: file skipped: %s", problem)
        log.info("flows reloaded: %s", ", ".join(reload.loaded))

    @property
    def address(self) -> str:
        host = self.config.server.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.drain()
        self.streams.registry.drain()
        flush_access_lines()  # the calls served so far, before the drain's own lines
        if self.config.cluster.enabled:
            # Hand this host's share to the others first, serving on meanwhile: calls in flight
            # here, and calls at other edges for conversations held here, go to the new holders.
            await self.engine.leave(self.config.cluster.handoff_timeout_s)  # it logs how it went
        started = time.monotonic()
        if self._server is not None:
            await self._server.stop(self.config.server.shutdown_grace_s)
            self._server = None
        flush_access_lines()  # every call has ended: the last lines are queued
        log.info("gRPC server stopped in %.1fs; stopping the shards", time.monotonic() - started)
        if self.health is not None:
            await self.health.stop()
        started = time.monotonic()
        await self.engine.close()
        log.info("shards and actor system stopped in %.1fs", time.monotonic() - started)
        if self.telemetry is not None:
            self.telemetry.close()  # last: flushes the spans of the calls that just finished
