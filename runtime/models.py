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
A 429 or 503 with a ``Retry-After`` header (seconds, or a date) is retried no sooner than it
asks; a pause that does not fit in what is left of the call's deadline (below) is not taken:
the call fails at once, with the status's reason (``http_429``).

Timeouts: ``timeout_s`` bounds the connection, the wait for the first chunk and every wait
between two chunks (a stream that stalls fails). ``max_duration_s`` bounds the whole call,
every attempt and pause included, however steadily a stream keeps trickling: when it passes,
the stream is closed and the call fails (``timeout``); nothing waits or sleeps past it. The
caller may give a shorter deadline (``within_s``: a turn's caller's own); when that one passes
first, the call ends the same way, as ``cancelled`` (nobody waits for the answer any more).
A stream that ends without a ``finish_reason`` was cut; one whose chunk is not JSON, or not a
chunk, is malformed. Neither is retried once a chunk has arrived.

Cancellation: a ``cancel`` event set while a stream runs stops it at once: a watcher thread
(one per client, :class:`_Watcher`) shuts the stream's connection down, which ends the read
waiting for the next chunk, and the provider sees the request end; the deadline ends a stream
the same way. A call still waiting for the response to begin (its status and headers) or for
a whole answer (``stream: false``) notices within its timeout. The result is
``reason: "cancelled"``.

The key: ``api_key_env`` names the environment variable that holds it; the key is never in
the config, in a result, in an error or in a log line. A provider without ``api_key_env``
(a local server) is sent a placeholder, as the ``openai`` client must send something.

Usage: the provider's ``usage`` when it reports one; otherwise (and for a stream cut after
some text) an estimate of four characters a token, ``"estimated": True``. Budgets
(:class:`TokenBudget`) are kept per tenant and UTC day by the shards in the store
(``runtime.store``), which all shards of all hosts share.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import socket
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
    pause,
    retry_after_s,
    retry_pause_s,
)

log = logging.getLogger(__name__)

# What a model call answers (a flow's ``WebhookCall.kind``): a generate step (or a generative
# fallback), or a recognizer that asks what a message means.
GENERATE = "generate"
RECOGNIZE = "recognize"

ModelResult = CallResult
# Called with each piece of the answer's text, in order, on the call's thread.
ChunkSink = Callable[[str], None]

# Why a call failed (besides http_<status>).
TIMEOUT = "timeout"  # no connection, first chunk or next chunk within timeout_s; or max_duration_s passed
CONNECTION = "connection"  # the server could not be reached
CUT = "cut"  # the stream ended before the answer did
MALFORMED = "malformed"  # a chunk (or the answer) was not what the API sends
EMPTY = "empty"  # the model answered nothing
PROVIDER_ERROR = "provider_error"  # the provider reported an error in the stream
BUDGET = "budget"  # the tenant's token budget for the day is spent
CANCELLED = "cancelled"  # the caller stopped it (a chat frontend cancelled its stream) or its deadline passed
NO_PROVIDER = "no_provider"  # no provider is configured (or none of that name)
NO_KEY = "no_key"  # the environment variable that holds the key is not set
# Not the call's own: an operator gave it up (Admin.AbandonWebhook), and the shard says so.
ABANDONED = "abandoned"
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
# The statuses whose Retry-After header says when to try again (RFC 9110, RFC 6585).
RETRY_AFTER_STATUSES = (429, 503)
# How often the watcher looks at the open streams' cancel events (deadlines it waits for exactly).
WATCH_TICK_S = 0.02


def api_key(api_key_env: str) -> str:
    """The key a provider's ``api_key_env`` names, from the environment ("" when that variable is
    unset or empty; ``KEYLESS`` for a provider that names none)."""
    return os.environ.get(api_key_env, "") if api_key_env else KEYLESS


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
    max_duration_s: float = 60.0  # the whole call: every attempt, pause and chunk


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


def failure_reason(result: Mapping[str, Any]) -> str:
    """Why the call whose result is ``result`` failed: its reason (``REASONS``, ``http_<status>``,
    ``ABANDONED``), else ``failed``."""
    return str(result.get("reason") or "failed")


class ModelClient:
    """Calls the configured providers, each call on a thread of its own pool."""

    def __init__(self, providers: Iterable[ModelProvider], max_concurrent: int = 16) -> None:
        self._providers = {p.name: p for p in providers}
        self._default = next(iter(self._providers), "")
        self._pool = CallPool(max_concurrent, "confab-model")
        self._clients: dict[str, Any] = {}  # provider name -> its openai client, made on first use
        self._lock = threading.Lock()
        self._watcher = _Watcher()

    @property
    def configured(self) -> bool:
        return bool(self._providers)

    def provider(self, name: str) -> ModelProvider | None:
        """The provider ``name`` ("": the first configured), or None."""
        return self._providers.get(name or self._default)

    def close(self) -> None:
        self._pool.close()
        self._watcher.close()
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
        *,
        within_s: float | None = None,
        kind: str = GENERATE,
    ) -> Future[ModelResult]:
        """Ask provider ``name`` ("": the first configured) for the answer to ``request``.
        ``within_s``: the caller's own deadline, seconds from now, if it is shorter than the
        provider's ``max_duration_s``. ``kind``: what the call answers (GENERATE or RECOGNIZE);
        a provider is asked the same either way, but a client that answers by kind may use it."""
        provider = self.provider(name)
        if provider is None:
            error = (
                f"no model provider named {name!r} is configured"
                if name and self._providers
                else "no model provider is configured"
            )
            return answered(failure(NO_PROVIDER, error, chunks=0, attempts=0))
        deadline = _Deadline.of(provider, time.perf_counter(), within_s)
        return self._pool.submit(self._answer, provider, request, on_chunk, cancel, deadline)

    # On the call's thread ----------------------------------------------------------------

    def _answer(
        self,
        provider: ModelProvider,
        request: Mapping[str, Any],
        on_chunk: ChunkSink | None,
        cancel: threading.Event | None,
        deadline: _Deadline,
    ) -> ModelResult:
        """The call's result, whatever happens: a turn waits on it."""
        try:
            return self._complete(provider, request, on_chunk, cancel, deadline)
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
            key = api_key(provider.api_key_env)
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
        deadline: _Deadline,
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
        call = _Call(client, provider, request, reading, cancel, deadline, self._watcher)
        retry: _Retry | None = None
        attempts = 0
        for attempt in range(provider.retries + 1):
            if retry is not None:
                wait = max(retry_pause_s(attempt), retry.after_s or 0.0)
                if wait >= deadline.left():  # never slept past the deadline: fail now instead
                    asked = "" if retry.after_s is None else f" (Retry-After: {retry.after_s:g}s)"
                    error = f"{retry.error}; the next attempt{asked} would begin after {deadline.what}"
                    return _finished(failure(retry.reason, error), provider, request, reading, attempts)
                if not pause(wait, cancel):
                    break
            if cancel is not None and cancel.is_set():
                break
            if deadline.left() <= 0:
                return _finished(deadline.failure(reading), provider, request, reading, attempts)
            attempts += 1
            try:
                result = call.attempt()
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


@dataclass(frozen=True, slots=True)
class _Deadline:
    """When a call must be over (a ``time.perf_counter()``), and what it fails with then."""

    at: float
    reason: str  # TIMEOUT: the provider's max_duration_s; CANCELLED: the caller's deadline
    what: str  # the deadline, in words

    @staticmethod
    def of(provider: ModelProvider, now: float, within_s: float | None) -> _Deadline:
        if within_s is not None and within_s < provider.max_duration_s:
            return _Deadline(now + within_s, CANCELLED, "the caller's deadline")
        return _Deadline(
            now + provider.max_duration_s,
            TIMEOUT,
            f"the call's max_duration_s ({provider.max_duration_s:g}s)",
        )

    def left(self) -> float:
        """Seconds until the deadline (0 or less: it has passed)."""
        return self.at - time.perf_counter()

    def failure(self, reading: _Reading) -> ModelResult:
        return failure(self.reason, f"{self.what} passed, after {reading.chunks} chunk(s)")


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
    """An attempt failed in a way another attempt may not (and nothing was received).
    ``after_s``: how long the provider asked to wait first (its Retry-After header)."""

    def __init__(self, reason: str, error: str, after_s: float | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.after_s = after_s


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


@dataclass(slots=True)
class _Call:
    """One call's attempts, on its thread."""

    client: Any
    provider: ModelProvider
    request: Mapping[str, Any]
    reading: _Reading
    cancel: threading.Event | None
    deadline: _Deadline
    watcher: _Watcher

    def attempt(self) -> ModelResult:
        """One attempt: the answer, or a failure; raises _Retry for what may be tried again."""
        import openai

        provider, reading = self.provider, self.reading
        arguments: dict[str, Any] = {
            "model": provider.model,
            "messages": list(self.request.get("messages", ())),
            "max_tokens": int(self.request.get("max_tokens") or provider.max_tokens),
            "temperature": float(self.request.get("temperature", provider.temperature)),
            # Each wait of this attempt ends by the call's deadline too.
            "timeout": max(min(provider.timeout_s, self.deadline.left()), 0.001),
        }
        key = self.request.get("idempotency_key")
        if isinstance(key, str) and key:
            arguments["extra_headers"] = {IDEMPOTENCY_HEADER: key}
        if self.request.get("json"):
            arguments["response_format"] = {"type": "json_object"}
        try:
            if not provider.stream:
                return _whole(self.client.chat.completions.create(**arguments), reading, self.cancel)
            return self._stream(
                self.client.chat.completions.create(
                    stream=True, stream_options={"include_usage": True}, **arguments
                )
            )
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == RETRIED_STATUS or status >= 500:
                after = None
                if status in RETRY_AFTER_STATUSES:
                    after = retry_after_s(exc.response.headers.get("retry-after"))
                raise _Retry(f"http_{status}", f"HTTP {status}", after) from None
            return failure(f"http_{status}", f"HTTP {status}")
        except openai.APITimeoutError:
            if (stopped := self._stopped()) is not None:
                return stopped
            error = f"no answer within {provider.timeout_s:g}s"
            if not reading.received:
                raise _Retry(TIMEOUT, error) from None
            return failure(TIMEOUT, f"{error} after {reading.chunks} chunk(s)")
        except openai.APIConnectionError:
            if (stopped := self._stopped()) is not None:
                return stopped  # the watcher ended the stream
            if not reading.received:
                raise _Retry(CONNECTION, "the connection to the provider failed") from None
            return failure(CUT, f"the stream broke off after {reading.chunks} chunk(s)")
        except openai.APIError:  # an error event in the stream, in the provider's words
            return failure(PROVIDER_ERROR, "the provider reported an error in its answer")
        except (_Malformed, ValueError, TypeError, AttributeError):
            if (stopped := self._stopped()) is not None:
                return stopped
            return failure(MALFORMED, f"a chunk was not a chat completion chunk (after {reading.chunks})")

    def _stream(self, stream: Any) -> ModelResult:
        reading = self.reading
        watched = self.watcher.watch(stream.response, self.cancel, self.deadline.at)
        try:
            for chunk in stream:
                reading.received = True
                if not reading.finished and (stopped := self._stopped()) is not None:
                    return stopped
                _read_chunk(chunk, reading)
                if reading.finished:  # the answer is whole: what is left of the stream is not cut
                    self.watcher.forget(watched)
        finally:
            self.watcher.forget(watched)  # before the connection may go back to the client's pool
            stream.close()  # also on cancel: the provider sees the request end
        if not reading.finished:
            return self._stopped() or failure(
                CUT, f"the stream ended without finishing, after {reading.chunks} chunk(s)"
            )
        return {"ok": True, "text": reading.text}

    def _stopped(self) -> ModelResult | None:
        """The failure of a call cancelled or past its deadline (None: neither)."""
        if self.cancel is not None and self.cancel.is_set():
            return failure(CANCELLED, f"cancelled after {self.reading.chunks} chunk(s)")
        if self.deadline.left() <= 0:
            return self.deadline.failure(self.reading)
        return None


@dataclass(frozen=True, slots=True)
class _Watched:
    """A stream the watcher ends when ``cancel`` is set or at ``at`` (a ``time.perf_counter()``)."""

    connection: socket.socket
    cancel: threading.Event | None
    at: float

    def due(self, now: float) -> bool:
        return now >= self.at or (self.cancel is not None and self.cancel.is_set())


class _Watcher:
    """Ends a stream at once when its call is cancelled or its deadline passes.

    The thread reading a stream waits in the socket for the next chunk, which a slow model may
    take long over (up to ``timeout_s``). This thread, one per client and started with its first
    stream, shuts the stream's connection down then: the read returns at once, the call ends as
    cancelled or timed out, and the provider sees the request end.

    A stream is forgotten, under the same lock, as soon as its answer is whole (its
    ``finish_reason`` came), so before its connection can go back to the client's pool for
    another call to use. One that ends without a ``finish_reason`` (cut) is forgotten just
    after; in that instant the watcher may still shut its connection down, idle in the pool,
    which the pool then finds closed and replaces (or, had another call taken it in that same
    instant, that call's attempt fails as a connection error, and is retried)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: dict[int, _Watched] = {}
        self._keys = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, response: Any, cancel: threading.Event | None, at: float) -> int:
        """Watch the stream of ``response``; the key to forget it by (0: it cannot be watched, as
        its transport shows no socket: it is looked at between chunks only)."""
        stream = getattr(response, "extensions", {}).get("network_stream")
        connection = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(connection, socket.socket):
            return 0
        with self._changed:
            if self._closed:
                return 0
            key = next(self._keys)
            self._open[key] = _Watched(connection, cancel, at)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="confab-model-watcher", daemon=True)
                self._thread.start()
            self._changed.notify()
        return key

    def forget(self, key: int) -> None:
        if key:
            with self._changed:
                self._open.pop(key, None)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._open.clear()
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                if not self._open:
                    self._changed.wait()
                    continue
                now = time.perf_counter()
                for key, watched in list(self._open.items()):
                    if watched.due(now):
                        del self._open[key]
                        _shut_down(watched.connection)
                # Deadlines are waited for exactly; cancel events are looked at every tick.
                nearest = min((w.at for w in self._open.values()), default=now + WATCH_TICK_S)
                self._changed.wait(min(WATCH_TICK_S, max(nearest - time.perf_counter(), 0.0)))


def _shut_down(connection: socket.socket) -> None:
    """End the read waiting on ``connection`` (closing it would not wake that read)."""
    with contextlib.suppress(OSError):  # closed meanwhile: nothing waits on it any more
        # socket.socket's own: a TLS socket's would drop its TLS state under the reading thread.
        socket.socket.shutdown(connection, socket.SHUT_RDWR)


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
