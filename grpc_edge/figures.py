"""The one list of Confab's metric names: GetMetrics and the OpenTelemetry instruments (so the
Prometheus endpoint) serve the same figures under the same names.

A name is the OpenTelemetry instrument's (``confab.rpc.requests``). Prometheus spells it its
own way, by the OpenTelemetry convention: dots become underscores, the unit is appended
(``s`` as ``_seconds``, ``ms`` as ``_milliseconds``, ``By`` as ``_bytes``; ``{call}`` and
the like add nothing) and a counter ends in ``_total``: ``confab_rpc_requests_total``,
``confab_rpc_duration_seconds`` (a histogram: ``_bucket``, ``_sum``, ``_count``),
``confab_shard_rss_bytes``. ``tests/test_observability.py`` checks the two sets match.

GetMetrics answers a counter with its increase per interval (RPC counts, which the edge
keeps per second) or its value now (the shards' figures); a histogram with its mean and
quantiles (attribute ``stat``: ``mean``, ``p50``, ``p99``; seconds) per interval (RPC
durations) or over everything the shards counted (model calls, ``runtime.model_figures``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confab.runtime.analytics import LIVE_FIGURES, LiveKey
from confab.runtime.inspection import ShardStatus
from confab.runtime.model_figures import MODEL_FIGURES, ModelKey


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    description: str
    labels: tuple[str, ...] = ()


_FIGURES = [
    Figure("confab.rpc.requests", "counter", "{call}", "RPCs served", ("method", "code")),
    Figure("confab.rpc.duration", "histogram", "s", "RPC duration", ("method", "code")),
    Figure("confab.rpc.in_flight", "gauge", "{call}", "RPCs being served"),
    Figure("confab.link.queued", "gauge", "{command}", "commands queued at the edge per shard", ("shard",)),
    Figure("confab.link.in_flight", "gauge", "{command}", "commands sent to a shard, unanswered", ("shard",)),
    Figure(
        "confab.link.commands_per_batch",
        "gauge",
        "{command}",
        "mean commands per edge-to-shard message",
        ("shard",),
    ),
    Figure(
        "confab.link.largest_batch",
        "gauge",
        "{command}",
        "most commands one edge-to-shard message carried",
        ("shard",),
    ),
    Figure(
        "confab.shard.resident_conversations",
        "gauge",
        "{conversation}",
        "conversations in memory",
        ("shard",),
    ),
    Figure("confab.shard.commands", "counter", "{command}", "commands a shard ran", ("shard",)),
    Figure("confab.shard.store_latency", "gauge", "ms", "a shard's last store round trip", ("shard",)),
    Figure("confab.shard.rss", "gauge", "By", "a shard process's resident memory", ("shard",)),
    Figure("confab.shard.restarts", "counter", "{restart}", "shard processes replaced"),
    *(
        Figure(name, "counter", unit, description, labels)
        for name, (unit, description, labels) in LIVE_FIGURES.items()
    ),
    *(
        Figure(name, kind, unit, description, labels)
        for name, (kind, unit, description, labels) in MODEL_FIGURES.items()
    ),
]
FIGURES: dict[str, Figure] = {f.name: f for f in _FIGURES}
ANALYTICS = tuple(LIVE_FIGURES)
MODELS = tuple(MODEL_FIGURES)

# GetMetrics' names before they were the instruments' (accepted, answered under the new name).
ALIASES = {
    "rpc.requests": "confab.rpc.requests",
    "rpc.latency.avg_ms": "confab.rpc.duration",
    "rpc.latency.p50_ms": "confab.rpc.duration",
    "rpc.latency.p99_ms": "confab.rpc.duration",
    "rpc.in_flight": "confab.rpc.in_flight",
    "engine.shard.resident_conversations": "confab.shard.resident_conversations",
    "engine.shard.commands": "confab.shard.commands",
    "engine.shard.restarts": "confab.shard.restarts",
    "link.queued": "confab.link.queued",
    "link.commands_per_batch": "confab.link.commands_per_batch",
    "link.largest_batch": "confab.link.largest_batch",
}


@dataclass(frozen=True, slots=True)
class LiveTotals:
    """What this host's shards counted since they started, added up."""

    analytics: dict[LiveKey, float]
    models: dict[ModelKey, float]


class LiveAnalyticsView:
    """The shards' live analytics and model calls added up, as counters that only go up.

    Each shard reports what it counted since its process started; a replaced shard (a new
    generation at the same index) starts again at 0, so the view adds each report's increase
    over the last one of the same process, and a new process's figures whole. A report older
    than one seen already (GetMetrics asks the shards afresh; the health monitor's may be a
    second old) is passed over: every figure only goes up. Read from the exporter's thread and
    the event loop alike: one lock.

    ``on_models`` hears what the model figures grew by, once per increase, whoever asked
    (the OpenTelemetry histograms are recorded from it: ``grpc_edge.telemetry``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # index -> (generation, pid, what it reported)
        self._seen: dict[int, tuple[int, int, dict[tuple[str, ...], float]]] = {}
        self._analytics: dict[LiveKey, float] = {}
        self._models: dict[ModelKey, float] = {}
        self.on_models: Callable[[dict[ModelKey, float]], None] | None = None

    def update(self, shards: Iterable[ShardStatus]) -> LiveTotals:
        with self._lock:
            grew: dict[ModelKey, float] = {}
            for status in shards:
                analytics: dict[LiveKey, float] = {
                    (a[0], a[1], a[2], a[3], a[4], a[5]): a[6] for a in status.analytics
                }
                models: dict[ModelKey, float] = {(m[0], m[1], m[2]): m[3] for m in status.models}
                current: dict[tuple[str, ...], float] = {k: v for k, v in analytics.items()}
                current.update((k, v) for k, v in models.items())
                seen = self._seen.get(status.index)
                same = seen is not None and seen[:2] == (status.generation, status.pid)
                before = seen[2] if seen is not None and same else {}
                if any(current.get(key, -1.0) < value for key, value in before.items()):
                    continue  # an older report than one seen already (a fresh one came first)
                for key, value in analytics.items():
                    increase = value - before.get(key, 0.0)
                    if increase:
                        self._analytics[key] = self._analytics.get(key, 0.0) + increase
                for model_key, value in models.items():
                    increase = value - before.get(model_key, 0.0)
                    if increase:
                        self._models[model_key] = self._models.get(model_key, 0.0) + increase
                        grew[model_key] = grew.get(model_key, 0.0) + increase
                self._seen[status.index] = (status.generation, status.pid, current)
            if grew and self.on_models is not None:
                self.on_models(grew)
            return LiveTotals(dict(self._analytics), dict(self._models))
