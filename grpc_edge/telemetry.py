"""OpenTelemetry at the edge: server spans, and metric instruments over what the edge knows.

Set up by :class:`EdgeTelemetry` once the actor processes exist (see runtime.telemetry
on forks). With no exporter configured it installs nothing: no span interceptor, no
instrument, and ``RpcMetrics.on_record`` stays None, so the hot path is unchanged.

Instruments: every figure of ``grpc_edge.figures`` (the one list of names, GetMetrics' too),
with its unit and labels; the Prometheus names follow from them (see there). Among them
the conversation analytics (``confab.analytics.turns`` and the rest), which the shards
count from the turns they commit and report with their status: derived here, at the edge,
because the edge is where the scrape endpoint is (a shard process has none) and it
already hears every shard's figures each second; the durable counts are the store's
(Admin GetAnalytics). The model calls' figures come the same way (``runtime.model_figures``);
their two histograms are recorded here from what the shards' bucket counts grew by, whenever
the view of them is brought up to date (each collection brings it up to date first).

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

from confab.grpc_edge.figures import ANALYTICS, FIGURES, MODELS, LiveAnalyticsView
from confab.grpc_edge.health import HealthMonitor
from confab.grpc_edge.metrics import RpcMetrics
from confab.runtime import telemetry
from confab.runtime.analytics import live_labels
from confab.runtime.config import ConfabConfig
from confab.runtime.engine import Engine
from confab.runtime.model_figures import BOUNDS_S, HISTOGRAMS, ModelKey, histogram_records, model_labels

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
        self,
        config: ConfabConfig,
        engine: Engine,
        metrics: RpcMetrics,
        health: HealthMonitor,
        live: LiveAnalyticsView | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.health = health
        self.live = live if live is not None else LiveAnalyticsView()
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
        self.live.on_models = None
        telemetry.shutdown()

    def _register(self, meter: Any) -> None:
        rpc_requests, rpc_duration = FIGURES["confab.rpc.requests"], FIGURES["confab.rpc.duration"]
        requests = meter.create_counter(
            rpc_requests.name, unit=rpc_requests.unit, description=rpc_requests.description
        )
        duration = meter.create_histogram(
            rpc_duration.name,
            unit=rpc_duration.unit,
            description=rpc_duration.description,
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
        observed: dict[str, Any] = {
            "confab.rpc.in_flight": self._in_flight,
            "confab.link.queued": self._queued,
            "confab.link.in_flight": self._sent,
            "confab.link.commands_per_batch": self._per_batch,
            "confab.link.largest_batch": self._largest,
            "confab.shard.resident_conversations": self._resident,
            "confab.shard.store_latency": self._store_latency,
            "confab.shard.rss": self._rss,
            "confab.shard.commands": self._commands,
            "confab.shard.restarts": self._restarts,
            **{name: self._analytics(name) for name in ANALYTICS},
            **{name: self._models(name) for name in MODELS if name not in HISTOGRAMS},
        }
        recorded = {rpc_requests.name, rpc_duration.name, *HISTOGRAMS}
        assert set(observed) | recorded == set(FIGURES)
        histograms = {
            name: meter.create_histogram(
                name,
                unit=FIGURES[name].unit,
                description=FIGURES[name].description,
                explicit_bucket_boundaries_advisory=BOUNDS_S,
            )
            for name in HISTOGRAMS
        }

        def on_models(grew: dict[ModelKey, float]) -> None:
            for figure, provider, seconds, times in histogram_records(grew):
                labels = {"provider": provider}
                for _ in range(times):
                    histograms[figure].record(seconds, labels)

        self.live.on_models = on_models
        for name, callback in observed.items():
            figure = FIGURES[name]
            create = (
                meter.create_observable_counter if figure.kind == "counter" else meter.create_observable_gauge
            )
            create(name, [callback], unit=figure.unit, description=figure.description)

    # Callbacks: called on the exporter's thread; they only read what is already known.

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.metrics.in_flight)]

    def _queued(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(link.queued, {"shard": link.shard}) for link in self.engine.statistics().links]

    def _sent(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(link.in_flight, {"shard": link.shard}) for link in self.engine.statistics().links]

    def _per_batch(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                link.commands_sent / link.batches_sent if link.batches_sent else 0.0, {"shard": link.shard}
            )
            for link in self.engine.statistics().links
        ]

    def _largest(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(link.max_batch, {"shard": link.shard}) for link in self.engine.statistics().links]

    def _analytics(self, figure: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            totals = self.live.update(self.health.latest.shards).analytics
            return [Observation(value, live_labels(key)) for key, value in totals.items() if key[0] == figure]

        return observe

    def _models(self, figure: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            totals = self.live.update(self.health.latest.shards).models
            return [
                Observation(value, model_labels(key)) for key, value in totals.items() if key[0] == figure
            ]

        return observe

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
