"""Limits that keep one caller from taking the edge down for everyone.

- :class:`LimitsGuard` caps concurrent unary calls and open streams. A call
  over a cap gets RESOURCE_EXHAUSTED at once: grpc.aio would otherwise accept
  every call and let them all queue on the event loop and the shard links, so an
  overload would show up as ever longer latencies instead of a clear answer.
  Health and reflection are exempt: a saturated server must still say how it is.
- :class:`TenantRateLimiter` is a token bucket per tenant, charged per message by
  the services (one per ProcessMessage or stream message, N per batch of N).
  A charge either takes every token it asks for or none, so a rejected batch
  leaves nothing half-applied.

Content sizes (``limits.max_text_chars`` / ``max_payload_chars``) are checked
where the edge reads a message before sending it on, in :func:`grpc_edge.convert.wire_turn`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confab.grpc_edge.call import CallInfo
from confab.grpc_edge.guards import CallGuard, Context, Handler
from confab.runtime.config import LimitsConfig
from confab.runtime.errors import InvalidArgument, Overloaded, RateLimited

# Calls never limited: health must answer under load, reflection is tooling.
EXEMPT_SERVICES = (
    "/grpc.health.v1.Health/",
    "/mcp.health.v2.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
EXEMPT_METHODS = frozenset({"/mcp.engine.v2.MCPEngine/HealthCheck"})

# Hard cap on the bucket table, whatever the tenant ids callers make up. Evicting
# the least recently charged bucket only ever gives that tenant a fresh (full) one.
MAX_BUCKETS = 100_000


def is_exempt(method: str) -> bool:
    return method in EXEMPT_METHODS or method.startswith(EXEMPT_SERVICES)


class _Slots:
    """A counter with a cap; the event loop is single-threaded, so no lock."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.used = 0
        self.what = what

    def take(self) -> None:
        if self.used >= self.limit:
            raise Overloaded(f"too many {self.what} (limit {self.limit}); retry later")
        self.used += 1

    def give_back(self) -> None:
        self.used -= 1


class LimitsGuard(CallGuard):
    """Caps unary calls in flight and open streaming calls, separately.

    Streams are counted apart because they live long: a few hundred idle streams
    must not use up the budget of short calls, nor the reverse.
    """

    def __init__(self, *, max_in_flight_rpcs: int, max_concurrent_streams: int) -> None:
        self.calls = _Slots(max_in_flight_rpcs, "calls in flight")
        self.streams = _Slots(max_concurrent_streams, "open streams")
        self._pool: dict[str, _Slots] = {}  # by method, chosen at registration

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> LimitsGuard:
        return cls(
            max_in_flight_rpcs=limits.max_in_flight_rpcs,
            max_concurrent_streams=limits.max_concurrent_streams,
        )

    def covers(self, method: str, handler: Handler) -> bool:
        if is_exempt(method):
            return False
        streaming = handler.request_streaming or handler.response_streaming
        self._pool[method] = self.streams if streaming else self.calls
        return True

    def enter(self, call: CallInfo, request: Any, context: Context) -> None:
        self._pool[call.method].take()

    def exit(self, call: CallInfo, error: BaseException | None, context: Context) -> None:
        self._pool[call.method].give_back()


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # clock() when ``tokens`` was last computed


class TenantRateLimiter:
    """A token bucket per tenant: ``rate_per_s`` tokens a second, at most ``burst`` saved up.

    A rate of 0 turns it off. Buckets idle for ``burst / rate_per_s`` seconds are
    full again, exactly like a bucket never seen, so they are dropped: the table
    only holds tenants active in that window (and never more than MAX_BUCKETS).
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        # Least recently charged first, so expiry only ever looks at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> TenantRateLimiter:
        return cls(limits.tenant_rate_per_s, limits.tenant_burst)

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    @property
    def tenants(self) -> int:
        """Buckets held now (not ``__len__``: an empty limiter must not be falsy)."""
        return len(self._buckets)

    def charge(self, tenant_id: str, messages: int = 1) -> None:
        self.charge_all({tenant_id: messages})

    def charge_all(self, costs: Mapping[str, int]) -> None:
        """Take ``costs[tenant]`` tokens from each tenant's bucket, all or none.

        Raises RateLimited (with the wait until every bucket could pay) when one
        cannot pay now, InvalidArgument when one never could (more than ``burst``).
        """
        if not self.enabled:
            return
        now = self.clock()
        self._forget_idle(now)
        wait = 0.0
        for tenant_id, cost in costs.items():
            if cost > self.burst:
                raise InvalidArgument(
                    f"{cost} messages for tenant {tenant_id!r} in one call exceed its burst limit of"
                    f" {self.burst}; send at most {self.burst} per call",
                    field="messages",
                )
            missing = cost - self._tokens(tenant_id, now)
            wait = max(wait, missing / self.rate_per_s)
        if wait > 0:
            raise RateLimited(
                f"rate limit exceeded ({self.rate_per_s:g} messages/s per tenant, burst {self.burst});"
                f" retry in {wait:.2f}s",
                retry_after_s=wait,
            )
        for tenant_id, cost in costs.items():
            self._buckets[tenant_id] = _Bucket(self._tokens(tenant_id, now) - cost, now)
            self._buckets.move_to_end(tenant_id)
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)

    def _tokens(self, tenant_id: str, now: float) -> float:
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)

    def _forget_idle(self, now: float) -> None:
        refill_s = self.burst / self.rate_per_s
        while self._buckets:
            bucket = next(iter(self._buckets.values()))
            if now - bucket.updated < refill_s:
                break
            self._buckets.popitem(last=False)
