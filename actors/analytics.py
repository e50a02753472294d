"""A shard's live analytics: what the turns it committed counted since the process started.

The durable counts are the store's (written with the turns, ``runtime.analytics``); these
are the same counts kept in memory, added only once their round is committed, and shown
to the edge with the shard's status, whence its OpenTelemetry instruments and GetMetrics
read them. Bounded: past ``MAX_LIVE_KEYS`` keys new ones are not shown live.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confab.runtime.analytics import MAX_LIVE_KEYS, LiveKey, live_deltas
from confab.runtime.store import ConversationWrite

log = logging.getLogger(__name__)


class LiveAnalytics:
    def __init__(self, max_keys: int = MAX_LIVE_KEYS) -> None:
        self.max_keys = max_keys
        self.totals: dict[LiveKey, float] = {}
        self._warned = False

    def add_committed(self, writes: Sequence[ConversationWrite]) -> None:
        totals = self.totals
        for write in writes:
            for part in write.analytics:
                for key, value in live_deltas(part).items():
                    if key in totals:
                        totals[key] += value
                    elif len(totals) < self.max_keys:
                        totals[key] = value
                    elif not self._warned:
                        self._warned = True
                        log.warning(
                            "live analytics: more than %d series; new ones are not shown", self.max_keys
                        )

    def to_wire(self) -> list[list[object]]:
        return [[*key, value] for key, value in self.totals.items()]
