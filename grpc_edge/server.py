"""The gRPC server: engine, services, interceptors and health, started and stopped in order.

Start: the engine first (Thespian forks its processes before gRPC starts any
thread), then the services. Stop: health says NOT_SERVING, in-flight calls get
``shutdown_grace_s`` to finish, then the engine stops every actor process.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..protos import health_pb2, health_pb2_grpc, mcp_engine_pb2, mcp_engine_pb2_grpc
from ..runtime.config import ConfabConfig
from ..runtime.engine import Engine
from .call import CallInterceptor
from .decoding import DecodeGuardInterceptor
from .engine_service import EngineService
from .health import HealthMonitor, HealthService
from .interceptors import MetricsInterceptor
from .metrics import RpcMetrics
from .metrics_service import MetricsReport

log = logging.getLogger(__name__)


class ConfabServer:
    def __init__(self, config: ConfabConfig) -> None:
        self.config = config
        self.engine = Engine(config)
        self.metrics = RpcMetrics()
        self.health: HealthMonitor | None = None
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        cfg = self.config.server
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.engine.start, loop)
        try:
            self.health = HealthMonitor(self.engine, self.metrics)
            server = grpc.aio.server(
                # Outermost first: CallInterceptor makes the CallInfo every later layer uses.
                interceptors=[CallInterceptor(), DecodeGuardInterceptor(), MetricsInterceptor(self.metrics)],
                options=[
                    # Never share the port with another process (gRPC's default on Linux).
                    ("grpc.so_reuseport", 0),
                    ("grpc.max_receive_message_length", cfg.max_message_bytes),
                    ("grpc.max_send_message_length", cfg.max_message_bytes),
                ],
            )
            mcp_engine_pb2_grpc.add_MCPEngineServicer_to_server(
                EngineService(
                    self.engine,
                    self.health,
                    MetricsReport(self.engine, self.metrics),
                    max_batch_messages=cfg.max_batch_messages,
                    stream_idle_timeout_s=cfg.stream_idle_timeout_s,
                ),
                server,
            )
            health_pb2_grpc.add_HealthServicer_to_server(HealthService(self.health), server)
            std_health_pb2_grpc.add_HealthServicer_to_server(self.health.std_servicer, server)
            reflection.enable_server_reflection(
                (
                    mcp_engine_pb2.DESCRIPTOR.services_by_name["MCPEngine"].full_name,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    std_health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
            self.port = server.add_insecure_port(cfg.listen)
            if self.port == 0:
                raise OSError(f"cannot listen on {cfg.listen}")
            await self.health.start()
            await server.start()
            self._server = server
        except BaseException:
            await asyncio.to_thread(self.engine.close)
            raise

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
        if self._server is not None:
            await self._server.stop(self.config.server.shutdown_grace_s)
            self._server = None
        if self.health is not None:
            await self.health.stop()
        await asyncio.to_thread(self.engine.close)
