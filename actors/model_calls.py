"""What a shard tells operators of its calls to language models: counts and warnings.

Every call the shard makes to a model provider, and every one its tenant's budget
refused, ends here (:meth:`ModelCalls.finished`, on the call's thread): it is counted for
the figures (``runtime.model_figures``), and a failed one is logged as one WARNING line
that names the provider, the reason, the conversation and how long the call took; never
the prompt, the answer or the key.

A provider that is down fails every call: at most one line per provider and reason is
written per ``window_s`` seconds. The next line after a window says how many failures
like it went unlogged in between, and so does a line of its own once a window with
unlogged failures is over (:meth:`ModelCalls.flush`, called with every status the shard
gives), so an outage's size shows even when it ends.

A call the caller cancelled (a chat frontend closed its stream) is counted, not logged:
nothing failed. A generation with no provider configured is neither: it was never a call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confab.runtime.model import ConversationKey
from confab.runtime.model_figures import ModelCallCounts, outcome_of
from confab.runtime.models import CANCELLED, NO_PROVIDER

log = logging.getLogger(__name__)

WINDOW_S = 10.0  # at most one warning per provider and reason this often


@dataclass(slots=True)
class _Window:
    opened: float  # when its line was written (the clock's seconds)
    unlogged: int = 0  # failures like it since


class ModelCalls:
    def __init__(
        self,
        shard_index: int,
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shard_index = shard_index
        self.window_s = window_s
        self.clock = clock
        self.counts = ModelCallCounts()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def finished(self, key: ConversationKey, provider: str, result: Mapping[str, Any]) -> None:
        """A call of ``key``'s turn to ``provider`` ended with ``result`` (any thread)."""
        reason = outcome_of(result)
        if reason == NO_PROVIDER:
            return
        self.counts.add(provider, result)
        if result.get("ok") or reason == CANCELLED:
            return
        now = self.clock()
        with self._lock:
            window = self._windows.get((provider, reason))
            if window is not None and now - window.opened < self.window_s:
                window.unlogged += 1
                return
            unlogged = window.unlogged if window is not None else 0
            self._windows[(provider, reason)] = _Window(now)
        elapsed = float(result.get("elapsed_ms", 0.0) or 0.0)
        more = f"; {unlogged} more like it not logged in the last {self.window_s:g}s" if unlogged else ""
        log.warning(
            "shard %d: model provider %r failed: %s (%s) for conversation %s after %.0f ms%s",
            self.shard_index,
            provider,
            reason,
            result.get("error", ""),
            key,
            elapsed,
            more,
        )

    def flush(self) -> None:
        """Say how many failures went unlogged in each window that is over."""
        now = self.clock()
        over: list[tuple[str, str, int]] = []
        with self._lock:
            for (provider, reason), window in list(self._windows.items()):
                if now - window.opened < self.window_s:
                    continue
                del self._windows[(provider, reason)]
                if window.unlogged:
                    over.append((provider, reason, window.unlogged))
        for provider, reason, unlogged in over:
            log.warning(
                "shard %d: model provider %r failed: %s, %d more time(s) in %gs not logged one by one",
                self.shard_index,
                provider,
                reason,
                unlogged,
                self.window_s,
            )
