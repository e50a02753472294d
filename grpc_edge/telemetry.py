"""OpenTelemetry at the edge: server spans, and metric instruments over what the edge knows.

Set up by :class:`EdgeTelemetry` once the actor processes exist (see runtime.telemetry
on forks). With no exporter configured it installs nothing: no span interceptor, no
instrument, and ``RpcMetrics.on_record`` stays None, so the hot path is unchanged.

Instruments (Prometheus names in brackets; ``shard`` is the shard index):

==================================  ===========================================================
confab.rpc.requests                 counter: calls, by ``method`` and ``code`` [confab_rpc_requests_total]
confab.rpc.duration                 histogram (s): call duration, same keys [confab_rpc_duration_seconds]
confab.rpc.in_flight                gauge: calls being served [confab_rpc_in_flight]
confab.link.queued                  gauge: commands waiting at the edge for a shard [confab_link_queued]
confab.link.in_flight               gauge: commands sent to a shard, unanswered [confab_link_in_flight]
confab.shard.resident_conversations gauge: conversations in a shard's memory
confab.shard.commands               counter: commands a shard process ran (restarts at 0 with it)
confab.shard.store_latency          gauge (ms): a shard's last store round trip
confab.shard.rss                    gauge (By): a shard process's resident memory
confab.shard.restarts               counter: shard processes replaced by the supervisor
==================================  ===========================================================

Observable instruments are read when an exporter collects (Prometheus: on each scrape,
on its HTTP thread), so their callbacks never ask a shard: shard figures come from the
report :class:`~.health.HealthMonitor` refreshes every couple of seconds, link
figures from the links' own counters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import grpc
from opentelemetry.metrics import CallbackOptions, Observation

from confab.grpc_edge.health import HealthMonitor
from confab.grpc_edge.metrics import RpcMetrics
from confab.runtime import telemetry
from confab.runtime.config import ConfabConfig
from confab.runtime.engine import Engine

log = logging.getLogger(__name__)

# Call durations in seconds: 0.5 ms .. 30 s (the SDK's default buckets are sized for ms).
DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SERVICE_NAME = "confab"


class EdgeTelemetry:
    def __init__(
        self, config: ConfabConfig, engine: Engine, metrics: RpcMetrics, health: HealthMonitor
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.health = health
        listen = [config.telemetry.metrics_listen] if config.telemetry.metrics_listen else []
        try:
            self.tracing = telemetry.configure_tracing(SERVICE_NAME, {"confab.role": "edge"})
            provider = telemetry.configure_metrics(SERVICE_NAME, listen, {"confab.role": "edge"})
        except BaseException:  # e.g. the scrape port is taken: undo whatever was set up
            telemetry.shutdown()
            raise
        if provider is not None:
            self._register(provider.get_meter("confab"))

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The span interceptor (to go outermost), or nothing while tracing is off."""
        if not self.tracing:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        # The instrumentor honours OTEL_PYTHON_GRPC_EXCLUDED_SERVICES; the bare interceptor
        # does not, so do it here (e.g. to leave grpc.health.v1.Health probes untraced).
        excluded = [s.strip() for s in os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",")]
        conditions = [filters.service_name(s) for s in excluded if s]
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(
            tracer_provider=telemetry.tracer_provider(),
            filter_=filters.negate(filters.any_of(*conditions)) if conditions else None,
        )
        return [interceptor]

    def close(self) -> None:
        if self.metrics.on_record is not None:
            self.metrics.on_record = None
        telemetry.shutdown()

    def _register(self, meter: Any) -> None:
        requests = meter.create_counter("confab.rpc.requests", unit="{call}", description="RPCs served")
        duration = meter.create_histogram(
            "confab.rpc.duration",
            unit="s",
            description="RPC duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        attributes: dict[tuple[str, str], dict[str, str]] = {}

        def on_record(method: str, code: str, duration_s: float) -> None:
            # One attribute dict per (method, code), reused: the SDK hashes it on every call.
            key = (method, code)
            labels = attributes.get(key)
            if labels is None:
                labels = attributes[key] = {"method": method, "code": code}
            requests.add(1, labels)
            duration.record(duration_s, labels)

        self.metrics.on_record = on_record
        gauges = {
            "confab.rpc.in_flight": ("{call}", "RPCs being served", self._in_flight),
            "confab.link.queued": ("{command}", "commands queued at the edge per shard", self._queued),
            "confab.link.in_flight": ("{command}", "commands sent to a shard, unanswered", self._sent),
            "confab.shard.resident_conversations": (
                "{conversation}",
                "conversations in memory",
                self._resident,
            ),
            "confab.shard.store_latency": ("ms", "a shard's last store round trip", self._store_latency),
            "confab.shard.rss": ("By", "a shard process's resident memory", self._rss),
        }
        for name, (unit, description, callback) in gauges.items():
            meter.create_observable_gauge(name, [callback], unit=unit, description=description)
        meter.create_observable_counter(
            "confab.shard.commands", [self._commands], unit="{command}", description="commands a shard ran"
        )
        meter.create_observable_counter(
            "confab.shard.restarts",
            [self._restarts],
            unit="{restart}",
            description="shard processes replaced",
        )

    # Callbacks: called on the exporter's thread; they only read what is already known.

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.metrics.in_flight)]

    def _queued(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(link.queued, {"shard": link.shard}) for link in self.engine.statistics().links]

    def _sent(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(link.in_flight, {"shard": link.shard}) for link in self.engine.statistics().links]

    def _resident(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.resident_conversations, {"shard": s.index}) for s in self.health.latest.shards]

    def _store_latency(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.store_latency_ms, {"shard": s.index}) for s in self.health.latest.shards]

    def _rss(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.rss_bytes, {"shard": s.index}) for s in self.health.latest.shards]

    def _commands(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.commands, {"shard": s.index}) for s in self.health.latest.shards]

    def _restarts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.engine.statistics().shard_restarts)]
