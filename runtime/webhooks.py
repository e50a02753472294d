"""Webhook calls made by flows, off the shard's thread.

A shard runs its conversations one turn at a time on one thread; a webhook can
take seconds. :class:`WebhookClient` runs each call on a small thread pool
(``runtime.outbound``, which language model calls share) and hands back a future, so
the shard keeps serving other conversations while that conversation's later messages
wait, in order, for the answer.

The request is ``POST <url>`` with a JSON body (docs/flows.md, "Webhooks")::

    {"webhook": "price", "idempotency_key": "9f2c...", "flow": "pizza", "flow_version": "3",
     "conversation": {"tenant_id": "acme", "conversation_id": "c-1"},
     "state": "pricing", "slots": {...}, "variables": {...}, "user_profile": {...},
     "message": {"text": "...", "payload": "...", "channel": "web", "language": "en"}}

plus ``"slot"`` and ``"value"`` when the call checks a slot's value. The body's
``idempotency_key`` is also sent as the ``Idempotency-Key`` header: every retry of a
call carries the same key, so a service that remembers the keys it has acted on (a card
blocked) can answer a retry without acting twice.

A 2xx answer with a JSON body succeeds; anything else (timeout, connection error,
other status, a body that is not JSON) is retried ``retries`` times, then fails.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confab.runtime.outbound import IDEMPOTENCY_HEADER, CallPool, CallResult, answered, elapsed_ms

# What a call produced: {"ok": True, "status": 200, "body": ...} or {"ok": False, "error": "..."},
# with "elapsed_ms" (every attempt included) and, for a call whose last attempt timed out,
# "timed_out": True (for analytics; a flow reads ok, body and error only).
WebhookResult = CallResult
MAX_RESPONSE_BYTES = 1 << 20
__all__ = ["IDEMPOTENCY_HEADER", "MAX_RESPONSE_BYTES", "WebhookClient", "WebhookResult", "WebhookTarget"]


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    name: str
    url: str
    timeout_s: float
    retries: int
    headers: tuple[tuple[str, str], ...] = ()


class WebhookClient:
    def __init__(self, targets: Iterable[WebhookTarget], max_concurrent: int = 16) -> None:
        self._targets = {t.name: t for t in targets}
        self._pool = CallPool(max_concurrent, "confab-webhook")

    def close(self) -> None:
        self._pool.close()

    def call(self, name: str, body: dict[str, Any]) -> Future[WebhookResult]:
        target = self._targets.get(name)
        if target is None:
            return answered({"ok": False, "error": f"no webhook named {name!r} is configured"})
        return self._pool.submit(_post_with_retries, target, body)


def _post_with_retries(target: WebhookTarget, body: dict[str, Any]) -> WebhookResult:
    data = json.dumps(body, default=str).encode()
    headers = {"Content-Type": "application/json", **dict(target.headers)}
    key = body.get("idempotency_key")
    if isinstance(key, str) and key:
        headers[IDEMPOTENCY_HEADER] = key
    error = ""
    started = time.perf_counter()
    timed_out = False
    for _ in range(target.retries + 1):
        timed_out = False
        request = urllib.request.Request(target.url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=target.timeout_s) as response:
                payload = response.read(MAX_RESPONSE_BYTES + 1)
                if len(payload) > MAX_RESPONSE_BYTES:
                    error = "the answer is larger than 1 MiB"
                    continue
                answer = json.loads(payload or b"null")
                took = elapsed_ms(started)
                return {"ok": True, "status": response.status, "body": answer, "elapsed_ms": took}
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            timed_out = isinstance(exc, TimeoutError) or isinstance(
                getattr(exc, "reason", None), TimeoutError
            )
        except ValueError:
            error = "the answer is not JSON"
    failed: WebhookResult = {"ok": False, "error": error, "elapsed_ms": elapsed_ms(started)}
    if timed_out:
        failed["timed_out"] = True
    return failed
