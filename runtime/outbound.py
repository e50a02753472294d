"""What the calls flows make to services outside Confab have in common: webhooks
(``runtime.webhooks``) and language models (``runtime.models``).

A shard runs its conversations one turn at a time on one thread, and an outside call can
take seconds. Each call therefore runs on a small thread pool (:class:`CallPool`) and
hands back a future: the shard serves other conversations meanwhile, and the calling
conversation's later messages wait, in order, for the answer.

Every attempt of one call carries the same ``Idempotency-Key`` header, so a service that
remembers the keys it has acted on can answer a retry without acting twice; the key is
derived from the turn (``runtime.flows.execution.interpreter.idempotency_key``), so the
replay of a turn after a restart sends it again too.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec

IDEMPOTENCY_HEADER = "Idempotency-Key"
# A call's result, as the flow that made it reads it (each kind documents its own keys).
CallResult = dict[str, Any]

# Pauses before the 2nd, 3rd... attempt of a call that may be retried (seconds; the last repeats).
RETRY_PAUSES_S = (0.2, 0.5, 1.0, 2.0)

P = ParamSpec("P")


class CallPool:
    """A bounded pool of threads making one kind of outside call."""

    def __init__(self, max_concurrent: int, thread_name_prefix: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix=thread_name_prefix)

    def submit(self, call: Callable[P, CallResult], *args: P.args, **kwargs: P.kwargs) -> Future[CallResult]:
        return self._pool.submit(call, *args, **kwargs)

    def close(self) -> None:
        """Stop taking calls; those not started are dropped, those running end on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def answered(result: CallResult) -> Future[CallResult]:
    """A call answered at once, without a thread (an unknown target, a refusal)."""
    future: Future[CallResult] = Future()
    future.set_result(result)
    return future


def retry_pause_s(attempt: int) -> float:
    """The pause before attempt ``attempt`` (1 = the first retry), when the service asks none."""
    return RETRY_PAUSES_S[min(attempt, len(RETRY_PAUSES_S)) - 1]


def pause(seconds: float, cancel: threading.Event | None = None) -> bool:
    """Wait ``seconds``; False if ``cancel`` was set meanwhile (the wait ends then)."""
    if cancel is None:
        time.sleep(seconds)
        return True
    return not cancel.wait(seconds)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """How long a ``Retry-After`` header asks to wait before the next attempt: seconds, or an HTTP
    date (RFC 9110; one in the past asks for no wait). None: no header, or one that does not read."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": the RFC's dates are in GMT anyway
            when = when.replace(tzinfo=datetime.UTC)
        seconds = max(when.timestamp() - (time.time() if now is None else now), 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``)."""
    return (time.perf_counter() - started) * 1000.0
