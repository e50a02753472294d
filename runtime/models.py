"""Language models that flows call (``generate`` steps), off the shard's thread.

A provider is any server that speaks the OpenAI-compatible chat-completions API (OpenAI,
vLLM, Ollama, llama.cpp's server, a LiteLLM proxy), named in the server config
(``models.providers``, docs/flows.md "Generative steps"). :class:`ModelClient` calls one
through the ``openai`` package's synchronous client on a small thread pool
(``runtime.outbound``, which webhooks share) and hands back a future, like webhooks:
the shard serves other conversations while the call runs.

A request (what a generate step asks, ``runtime.flows.execution.interpreter``)::

    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...],
     "idempotency_key": "9f2c...",
     "max_tokens": 200, "temperature": 0.2,   # optional: the provider's otherwise
     "json": true}                             # optional: ask for a JSON object

and what comes back (:data:`ModelResult`)::

    {"ok": True, "text": "...", "usage": {"prompt_tokens": 31, "completion_tokens": 12,
     "total_tokens": 43, "estimated": False}, "chunks": 5, "attempts": 1, "provider": "local",
     "elapsed_ms": 812.0, "first_chunk_ms": 240.0}
    {"ok": False, "error": "HTTP 429", "reason": "http_429", "chunks": 0, ...}

``reason`` is one of :data:`REASONS` or ``http_<status>``. Answers are streamed (server-sent
events; ``stream_options.include_usage`` asks for the token counts) unless the provider says
``stream: false``. Each piece of text is handed to ``on_chunk`` as it arrives, on the call's
thread: that is what reaches a chat frontend as deltas.

Retries: a connection error, a timeout, a 429 or a 5xx is retried up to ``retries`` times,
with a pause between attempts, and only while no chunk of the answer has been received (a
user may have seen the first chunks: the answer is never started twice). Every attempt
carries the same ``Idempotency-Key`` header. The ``openai`` client's own retries are off.

Timeouts: ``timeout_s`` bounds the connection, the wait for the first chunk and every wait
between two chunks (a stream that stalls fails, one that keeps coming may run longer).
A stream that ends without a ``finish_reason`` was cut; one whose chunk is not JSON, or not a
chunk, is malformed. Neither is retried once a chunk has arrived.

Cancellation: a ``cancel`` event set while a stream runs stops it at the next chunk; the
HTTP response is closed then, so the provider sees the request end. A call waiting for its
first chunk notices within ``timeout_s``. The result is ``reason: "cancelled"``.

The key: ``api_key_env`` names the environment variable that holds it; the key is never in
the config, in a result, in an error or in a log line. A provider without ``api_key_env``
(a local server) is sent a placeholder, as the ``openai`` client must send something.

Usage: the provider's ``usage`` when it reports one; otherwise (and for a stream cut after
some text) an estimate of four characters a token, ``"estimated": True``. Budgets
(:class:`TokenBudget`) are kept per tenant and UTC day by the shards in the store
(``runtime.store``), which all shards of all hosts share.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confab.runtime.outbound import (
    IDEMPOTENCY_HEADER,
    CallPool,
    CallResult,
    answered,
    elapsed_ms,
    pause_before_retry,
)

log = logging.getLogger(__name__)

ModelResult = CallResult
# Called with each piece of the answer's text, in order, on the call's thread.
ChunkSink = Callable[[str], None]

# Why a call failed (besides http_<status>).
TIMEOUT = "timeout"  # no connection, first chunk or next chunk within timeout_s
CONNECTION = "connection"  # the server could not be reached
CUT = "cut"  # the stream ended before the answer did
MALFORMED = "malformed"  # a chunk (or the answer) was not what the API sends
EMPTY = "empty"  # the model answered nothing
PROVIDER_ERROR = "provider_error"  # the provider reported an error in the stream
BUDGET = "budget"  # the tenant's token budget for the day is spent
CANCELLED = "cancelled"  # the caller stopped it (a chat frontend cancelled its stream)
NO_PROVIDER = "no_provider"  # no provider is configured (or none of that name)
NO_KEY = "no_key"  # the environment variable that holds the key is not set
REASONS = (
    TIMEOUT,
    CONNECTION,
    CUT,
    MALFORMED,
    EMPTY,
    PROVIDER_ERROR,
    BUDGET,
    CANCELLED,
    NO_PROVIDER,
    NO_KEY,
)

CHARS_PER_TOKEN = 4  # the estimate, when a server reports no usage
# Sent as the key to a provider that needs none (the openai client refuses to send nothing).
KEYLESS = "unused"
# A status worth another attempt: rate limited, or the server's own trouble.
RETRIED_STATUS = 429


@dataclass(frozen=True, slots=True)
class ModelProvider:
    """A chat-completions server flows may call, by name (config ``models.providers``)."""

    name: str
    base_url: str  # e.g. http://127.0.0.1:11434/v1 (Ollama), https://api.openai.com/v1
    model: str
    api_key_env: str = ""  # the NAME of the environment variable holding the key ("" = none)
    timeout_s: float = 30.0  # per attempt: connection, first chunk, and between chunks
    retries: int = 1  # attempts after the first, before any chunk arrived
    max_tokens: int = 512
    temperature: float = 0.3
    stream: bool = True  # false: ask for the whole answer at once (nothing streams)


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """Tokens a tenant may spend per UTC day, over every provider (0 = no limit)."""

    tokens_per_day: int = 0
    tenants: tuple[tuple[str, int], ...] = ()  # (tenant, its own limit) instead of tokens_per_day

    def limit(self, tenant_id: str) -> int:
        for tenant, tokens in self.tenants:
            if tenant == tenant_id:
                return tokens
        return self.tokens_per_day


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Everything a shard needs to call models: the providers, the budget, its pool's size."""

    providers: tuple[ModelProvider, ...] = ()
    budget: TokenBudget = field(default_factory=TokenBudget)
    max_concurrent: int = 16

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.providers)


def utc_day(at: float) -> str:
    """The UTC day of ``at`` (Unix seconds), as budgets are counted: ``2026-03-12``."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def estimate_tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


def tokens_spent(result: Mapping[str, Any]) -> int:
    """What a call's result counts against its tenant's budget."""
    usage = result.get("usage")
    if not isinstance(usage, Mapping):
        return 0
    total = usage.get("total_tokens")
    return int(total) if isinstance(total, int | float) and total > 0 else 0


def failure(reason: str, error: str, **more: Any) -> ModelResult:
    """A failed call's result."""
    result: ModelResult = {"ok": False, "reason": reason, "error": error, **more}
    if reason == TIMEOUT:
        result["timed_out"] = True
    return result


class ModelClient:
    """Calls the configured providers, each call on a thread of its own pool."""

    def __init__(self, providers: Iterable[ModelProvider], max_concurrent: int = 16) -> None:
        self._providers = {p.name: p for p in providers}
        self._default = next(iter(self._providers), "")
        self._pool = CallPool(max_concurrent, "confab-model")
        self._clients: dict[str, Any] = {}  # provider name -> its openai client, made on first use
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._providers)

    def provider(self, name: str) -> ModelProvider | None:
        """The provider ``name`` ("": the first configured), or None."""
        return self._providers.get(name or self._default)

    def close(self) -> None:
        self._pool.close()
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def call(
        self,
        name: str,
        request: Mapping[str, Any],
        on_chunk: ChunkSink | None = None,
        cancel: threading.Event | None = None,
    ) -> Future[ModelResult]:
        """Ask provider ``name`` ("": the first configured) for the answer to ``request``."""
        provider = self.provider(name)
        if provider is None:
            error = (
                f"no model provider named {name!r} is configured"
                if name and self._providers
                else "no model provider is configured"
            )
            return answered(failure(NO_PROVIDER, error, chunks=0, attempts=0))
        return self._pool.submit(self._answer, provider, request, on_chunk, cancel)

    # On the call's thread ----------------------------------------------------------------

    def _answer(
        self,
        provider: ModelProvider,
        request: Mapping[str, Any],
        on_chunk: ChunkSink | None,
        cancel: threading.Event | None,
    ) -> ModelResult:
        """The call's result, whatever happens: a turn waits on it."""
        try:
            return self._complete(provider, request, on_chunk, cancel)
        except Exception as exc:  # a client library's surprise must not leave a turn hanging
            log.warning(
                "model provider %r: the call failed unexpectedly: %s", provider.name, type(exc).__name__
            )
            return failure(PROVIDER_ERROR, f"the call failed: {type(exc).__name__}", provider=provider.name)

    def _client(self, provider: ModelProvider) -> Any:
        with self._lock:
            client = self._clients.get(provider.name)
            if client is not None:
                return client
            key = os.environ.get(provider.api_key_env, "") if provider.api_key_env else KEYLESS
            if not key:
                return None
            import openai  # here: half a second to import, and only a server with providers needs it

            client = openai.OpenAI(
                api_key=key, base_url=provider.base_url, timeout=provider.timeout_s, max_retries=0
            )
            self._clients[provider.name] = client
            return client

    def _complete(
        self,
        provider: ModelProvider,
        request: Mapping[str, Any],
        on_chunk: ChunkSink | None,
        cancel: threading.Event | None,
    ) -> ModelResult:
        started = time.perf_counter()
        client = self._client(provider)
        if client is None:
            return failure(
                NO_KEY,
                f"the environment variable {provider.api_key_env} (the key of model provider"
                f" {provider.name!r}) is not set",
                chunks=0,
                attempts=0,
                provider=provider.name,
            )
        reading = _Reading(started, _sink(on_chunk, provider.name))
        retry: _Retry | None = None
        attempts = 0
        for attempt in range(provider.retries + 1):
            if attempt and not pause_before_retry(attempt, cancel):
                break
            if cancel is not None and cancel.is_set():
                break
            attempts += 1
            try:
                result = _attempt(client, provider, request, reading, cancel)
            except _Retry as again:
                retry = again
                continue
            return _finished(result, provider, request, reading, attempts)
        if cancel is not None and cancel.is_set():
            result = failure(CANCELLED, "cancelled before the answer began")
        else:
            assert retry is not None
            result = failure(retry.reason, retry.error)
        return _finished(result, provider, request, reading, attempts)


@dataclass(slots=True)
class _Reading:
    """What one call has received so far, across its attempts."""

    started: float
    sink: ChunkSink
    pieces: list[str] = field(default_factory=list)
    chunks: int = 0  # pieces of text handed on
    received: bool = False  # any chunk at all (no retry after one)
    finished: bool = False  # a finish_reason came
    first_chunk_ms: float | None = None
    usage: Mapping[str, Any] | None = None

    def add(self, text: str) -> None:
        if self.first_chunk_ms is None:
            self.first_chunk_ms = elapsed_ms(self.started)
        self.pieces.append(text)
        self.chunks += 1
        self.sink(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class _Retry(Exception):
    """An attempt failed in a way another attempt may not (and nothing was received)."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class _Malformed(Exception):
    pass


def _sink(on_chunk: ChunkSink | None, provider: str) -> ChunkSink:
    """``on_chunk``, its failures logged and kept from the call (the answer goes on)."""
    if on_chunk is None:
        return lambda _text: None

    def sink(text: str) -> None:
        try:
            on_chunk(text)
        except Exception:
            log.exception("a chunk of model provider %r's answer could not be handed on", provider)

    return sink


def _attempt(
    client: Any,
    provider: ModelProvider,
    request: Mapping[str, Any],
    reading: _Reading,
    cancel: threading.Event | None,
) -> ModelResult:
    """One attempt: the answer, or a failure; raises _Retry for what may be tried again."""
    import openai

    arguments: dict[str, Any] = {
        "model": provider.model,
        "messages": list(request.get("messages", ())),
        "max_tokens": int(request.get("max_tokens") or provider.max_tokens),
        "temperature": float(request.get("temperature", provider.temperature)),
    }
    key = request.get("idempotency_key")
    if isinstance(key, str) and key:
        arguments["extra_headers"] = {IDEMPOTENCY_HEADER: key}
    if request.get("json"):
        arguments["response_format"] = {"type": "json_object"}
    try:
        if not provider.stream:
            return _whole(client.chat.completions.create(**arguments), reading, cancel)
        stream = client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **arguments
        )
        try:
            for chunk in stream:
                reading.received = True
                if cancel is not None and cancel.is_set():
                    return failure(CANCELLED, f"cancelled after {reading.chunks} chunk(s)")
                _read_chunk(chunk, reading)
        finally:
            stream.close()  # also on cancel: the provider sees the request end
    except openai.APIStatusError as exc:
        status = exc.status_code
        if status == RETRIED_STATUS or status >= 500:
            raise _Retry(f"http_{status}", f"HTTP {status}") from None
        return failure(f"http_{status}", f"HTTP {status}")
    except openai.APITimeoutError:
        error = f"no answer within {provider.timeout_s:g}s"
        if not reading.received:
            raise _Retry(TIMEOUT, error) from None
        return failure(TIMEOUT, f"{error} after {reading.chunks} chunk(s)")
    except openai.APIConnectionError:
        if not reading.received:
            raise _Retry(CONNECTION, "the connection to the provider failed") from None
        return failure(CUT, f"the stream broke off after {reading.chunks} chunk(s)")
    except openai.APIError:  # an error event in the stream, in the provider's words
        return failure(PROVIDER_ERROR, "the provider reported an error in its answer")
    except (_Malformed, ValueError, TypeError, AttributeError):
        return failure(MALFORMED, f"a chunk was not a chat completion chunk (after {reading.chunks})")
    if cancel is not None and cancel.is_set():
        return failure(CANCELLED, f"cancelled after {reading.chunks} chunk(s)")
    if not reading.finished:
        return failure(CUT, f"the stream ended without finishing, after {reading.chunks} chunk(s)")
    return {"ok": True, "text": reading.text}


def _read_chunk(chunk: Any, reading: _Reading) -> None:
    choices = getattr(chunk, "choices", None)
    usage = getattr(chunk, "usage", None)
    if choices is None and usage is None:
        raise _Malformed
    if usage is not None:
        reading.usage = _usage_of(usage)
    for choice in choices or ():
        content = getattr(choice.delta, "content", None) if choice.delta is not None else None
        if content:
            if not isinstance(content, str):
                raise _Malformed
            reading.add(content)
        if choice.finish_reason:
            reading.finished = True


def _whole(completion: Any, reading: _Reading, cancel: threading.Event | None) -> ModelResult:
    """A non-streamed answer: handed on as one chunk."""
    reading.received = True
    choices = getattr(completion, "choices", None)
    if not choices:
        raise _Malformed
    content = choices[0].message.content
    if content is not None and not isinstance(content, str):
        raise _Malformed
    usage = getattr(completion, "usage", None)
    if usage is not None:
        reading.usage = _usage_of(usage)
    if cancel is not None and cancel.is_set():
        return failure(CANCELLED, "cancelled while the answer was written")
    reading.finished = True
    if content:
        reading.add(content)
    return {"ok": True, "text": reading.text}


def _usage_of(usage: Any) -> dict[str, Any]:
    counts = {
        name: int(getattr(usage, name, 0) or 0)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    counts["total_tokens"] = counts["total_tokens"] or counts["prompt_tokens"] + counts["completion_tokens"]
    return {**counts, "estimated": False}


def _finished(
    result: ModelResult,
    provider: ModelProvider,
    request: Mapping[str, Any],
    reading: _Reading,
    attempts: int,
) -> ModelResult:
    """``result`` with what every result carries: the timings, the chunks, the usage."""
    if result.get("ok") and not reading.text.strip():
        result = failure(EMPTY, "the model answered nothing")
    result.update(provider=provider.name, attempts=attempts, chunks=reading.chunks)
    result["elapsed_ms"] = elapsed_ms(reading.started)
    if reading.first_chunk_ms is not None:
        result["first_chunk_ms"] = reading.first_chunk_ms
    usage = reading.usage
    if usage is None and reading.chunks:
        prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", ()))
        prompt_tokens, completion_tokens = estimate_tokens(prompt), estimate_tokens(len(reading.text))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "estimated": True,
        }
    if usage is not None:
        result["usage"] = dict(usage)
    return result


__all__ = [
    "BUDGET",
    "CANCELLED",
    "CONNECTION",
    "CUT",
    "EMPTY",
    "MALFORMED",
    "NO_KEY",
    "NO_PROVIDER",
    "PROVIDER_ERROR",
    "REASONS",
    "TIMEOUT",
    "ChunkSink",
    "ModelClient",
    "ModelProvider",
    "ModelResult",
    "ModelSettings",
    "TokenBudget",
    "estimate_tokens",
    "failure",
    "tokens_spent",
    "utc_day",
]
