"""What the shards count of their calls to language models, for operators' figures.

A shard counts every call it makes to a model provider (``runtime.models``) when the call
ends, and every call its tenant's token budget refused, since its process started:

========================  =========  ======================================================
confab.model.calls        counter    by provider and outcome: ``ok``, or why it failed
                                     (``runtime.models.REASONS``, ``http_<status>``)
confab.model.duration     histogram  the whole call: every attempt and the pauses between
                                     them (seconds), by provider
confab.model.first_chunk  histogram  from the call to the first chunk of its answer
                                     (seconds), by provider
confab.model.tokens       counter    by provider and type: ``input`` (the prompt) or
                                     ``output`` (the answer), as the provider reports them
                                     (else estimated, as the budgets count them)
========================  =========  ======================================================

A generation that no provider could be asked for (none is configured: ``no_provider``)
is no call and is not counted. ``grpc_edge.figures`` lists these with the other figures.

A shard reports its counts with its status (``runtime.inspection.ShardStatus.models``) as
(figure, provider, item, value), cumulative. ``item`` is the outcome or the token type; for
a histogram, ``le:BOUND`` (the calls that took more than the bound before it and at most
BOUND seconds; ``le:inf`` beyond the last) and ``sum:BOUND`` (the seconds those calls took
together), so that the edge can rebuild the same histogram, its sum included, from what
the counts grew by (:func:`histogram_records`).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from confab.runtime.models import failure_reason

CALLS = "confab.model.calls"
DURATION = "confab.model.duration"
FIRST_CHUNK = "confab.model.first_chunk"
TOKENS = "confab.model.tokens"

# name: (kind, unit, description, labels)
MODEL_FIGURES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    CALLS: ("counter", "{call}", "calls to language models, by how they ended", ("provider", "outcome")),
    DURATION: ("histogram", "s", "a model call from start to end, retries included", ("provider",)),
    FIRST_CHUNK: ("histogram", "s", "a model call's time to the first chunk of its answer", ("provider",)),
    TOKENS: ("counter", "{token}", "tokens model calls spent", ("provider", "type")),
}
HISTOGRAMS = (DURATION, FIRST_CHUNK)

OK = "ok"
# Upper bounds (seconds) of the histograms' buckets: model answers take from a fraction of a
# second to a minute or two.
BOUNDS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_BOUND_NAMES = (*(f"{b:g}" for b in BOUNDS_S), "inf")

# (figure, provider, item)
ModelKey = tuple[str, str, str]


def outcome_of(result: Mapping[str, Any]) -> str:
    """How a model call ended: ``ok``, or its failure's reason."""
    return OK if result.get("ok") else failure_reason(result)


def bucket_name(seconds: float) -> str:
    """The bound of the bucket ``seconds`` falls in, as items name it (a bound holds itself)."""
    return _BOUND_NAMES[bisect.bisect_left(BOUNDS_S, seconds)]


class ModelCallCounts:
    """A shard's counts, added to on the calls' threads and read on the shard's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[ModelKey, float] = {}

    def add(self, provider: str, result: Mapping[str, Any]) -> None:
        """Count a call to ``provider`` that ended with ``result`` (a ``runtime.models`` result)."""
        adds: list[tuple[ModelKey, float]] = [((CALLS, provider, outcome_of(result)), 1.0)]
        if result.get("attempts") and "elapsed_ms" in result:  # it reached for the provider
            adds += _observed(DURATION, provider, float(result["elapsed_ms"]) / 1000.0)
        if "first_chunk_ms" in result:
            adds += _observed(FIRST_CHUNK, provider, float(result["first_chunk_ms"]) / 1000.0)
        usage = result.get("usage")
        if isinstance(usage, Mapping):
            for kind, field_name in (("input", "prompt_tokens"), ("output", "completion_tokens")):
                tokens = usage.get(field_name)
                if isinstance(tokens, int | float) and tokens > 0:
                    adds.append(((TOKENS, provider, kind), float(tokens)))
        with self._lock:
            for key, value in adds:
                self._totals[key] = self._totals.get(key, 0.0) + value

    def totals(self) -> tuple[tuple[str, str, str, float], ...]:
        with self._lock:
            return tuple(
                (figure, provider, item, value) for (figure, provider, item), value in self._totals.items()
            )


def _observed(figure: str, provider: str, seconds: float) -> list[tuple[ModelKey, float]]:
    seconds = max(0.0, seconds)
    bound = bucket_name(seconds)
    return [((figure, provider, f"le:{bound}"), 1.0), ((figure, provider, f"sum:{bound}"), seconds)]


def model_labels(key: ModelKey) -> dict[str, str]:
    """The attributes of a figure's point (histograms: the provider alone)."""
    figure, provider, item = key
    if figure == CALLS:
        return {"provider": provider, "outcome": item}
    if figure == TOKENS:
        return {"provider": provider, "type": item}
    return {"provider": provider}


def histogram_stats(totals: Mapping[ModelKey, float], figure: str) -> dict[str, dict[str, float]]:
    """Per provider, the ``mean``, ``p50`` and ``p99`` (seconds) of a histogram's counts so far;
    a quantile is the upper bound of the bucket that holds it (the last bound beyond it)."""
    counts: dict[str, dict[str, float]] = {}
    sums: dict[str, float] = {}
    for (name, provider, item), value in totals.items():
        if name != figure:
            continue
        kind, _, bound = item.partition(":")
        if kind == "le":
            counts.setdefault(provider, {})[bound] = value
        elif kind == "sum":
            sums[provider] = sums.get(provider, 0.0) + value
    stats = {}
    for provider, by_bound in counts.items():
        calls = sum(by_bound.values())
        if calls <= 0:
            continue
        stats[provider] = {
            "mean": sums.get(provider, 0.0) / calls,
            "p50": _quantile(by_bound, calls, 0.50),
            "p99": _quantile(by_bound, calls, 0.99),
        }
    return stats


def _quantile(by_bound: Mapping[str, float], calls: float, q: float) -> float:
    rank = math.ceil(q * calls)
    seen = 0.0
    for i, name in enumerate(_BOUND_NAMES):
        seen += by_bound.get(name, 0.0)
        if seen >= rank:
            return BOUNDS_S[min(i, len(BOUNDS_S) - 1)]
    return BOUNDS_S[-1]


def histogram_records(increases: Mapping[ModelKey, float]) -> Iterable[tuple[str, str, float, int]]:
    """What a histogram's counts grew by, as values to record into the same histogram:
    (figure, provider, value, times). A bucket's new calls are recorded as so many calls of
    their mean, which lies in the same bucket, so the buckets, the count and the sum come
    out as the shards counted them."""
    grew: dict[tuple[str, str, str], list[float]] = {}
    for (figure, provider, item), value in increases.items():
        if figure not in HISTOGRAMS:
            continue
        kind, _, bound = item.partition(":")
        cell = grew.setdefault((figure, provider, bound), [0.0, 0.0])
        cell[0 if kind == "le" else 1] += value
    for (figure, provider, bound), (count, total) in grew.items():
        times = round(count)
        if times <= 0:
            continue
        i = _BOUND_NAMES.index(bound) if bound in _BOUND_NAMES else len(BOUNDS_S)
        lower = BOUNDS_S[i - 1] if i > 0 else 0.0
        upper = BOUNDS_S[i] if i < len(BOUNDS_S) else math.inf
        mean = min(max(total / times, math.nextafter(lower, math.inf) if i > 0 else 0.0), upper)
        yield figure, provider, mean, times
