"""A local OpenAI-compatible chat-completions server: a stand-in for a model provider, for the
tests, the deltas benchmark (``tools.bench.deltas``) and trying flows without a model (start a
:class:`ModelStandIn` and name its ``url`` as a provider's ``base_url``). It answers what its
script says, never what a model would: it is no model.

``POST /v1/chat/completions`` answers as the API does: a whole ``chat.completion``, or with
``"stream": true`` server-sent events (``data: {chunk}`` ... ``data: [DONE]``), the usage in
a last chunk when ``stream_options.include_usage`` asks for it. What it answers is a
:class:`Script` (one for every request, or one chosen per request by ``choose``): the text
and its chunks, a delay (or a gate to wait for) before the first chunk and between chunks,
a status to fail with (for the first N requests, or all, with a ``Retry-After`` header or
without), a stream cut after K chunks, a chunk that is not JSON, usage or none.

It records every request (:class:`Received`: headers, JSON body, when it came), and how each ended:
answered in full, cut by the script, or left by the client (the connection closed while it
still had chunks to send). It runs on 127.0.0.1, on a free port, on a thread of its own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_USAGE = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
WAIT_S = 10.0


@dataclass
class Script:
    text: str = "Happy to help."
    chunks: list[str] | None = None  # the pieces of the answer; default: the text word by word
    first_delay_s: float = 0.0  # before the first chunk (or the whole answer)
    chunk_delay_s: float = 0.0  # between two chunks
    fail_status: int = 0  # answer with this HTTP status...
    fail_times: int = -1  # ...for the first N requests of this script (-1: every one)
    retry_after: str | None = None  # ...with this Retry-After header (seconds, or an HTTP date)
    cut_after: int | None = None  # close the connection after this many chunks of text
    malformed_after: int | None = None  # send a chunk that is not JSON after this many
    finish: bool = True  # the last chunk has a finish_reason
    usage: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_USAGE))  # None: none
    gate: threading.Event | None = None  # set: the answer may begin (after first_delay_s)
    failed: int = 0  # requests failed so far

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]


@dataclass
class Received:
    """One request the stand-in got, and how it ended."""

    headers: dict[str, str]  # by lower-case name
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it came
    chunks_sent: int = 0
    completed: bool = False  # the whole answer went out
    cut: bool = False  # the script cut it
    left: bool = False  # the client closed the connection before the answer was all sent
    ended: threading.Event = field(default_factory=threading.Event)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def user_text(self) -> str:
        """The content of every message of the request, one per line."""
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


class ModelStandIn:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        # Chooses the script of each request from its body (else ``script`` answers every one).
        self.choose: Callable[[dict[str, Any]], Script] | None = None
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="model-standin", daemon=True)
        self._closing = threading.Event()  # gates open: nothing waits on a test that is over
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL a provider is configured with."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ModelStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(WAIT_S)
        return self

    def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()

    def __enter__(self) -> ModelStandIn:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def everything_sent(self) -> str:
        """Every header and body of every request, as one text (to look for what must not be there)."""
        return "\n".join(json.dumps([r.headers, r.body]) for r in self.received())

    # On the stand-in's own thread ----------------------------------------------------------

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        received = Received({k.lower(): v for k, v in request.headers.items()}, body)
        with self._lock:
            self.requests.append(received)
            script = self.choose(body) if self.choose is not None else self.script
            failing = script.fail_status and (script.fail_times < 0 or script.failed < script.fail_times)
            if failing:
                script.failed += 1
        try:
            if failing:
                return web.json_response(
                    {"error": {"message": "scripted failure", "type": "server_error"}},
                    status=script.fail_status,
                    headers={} if script.retry_after is None else {"Retry-After": script.retry_after},
                )
            await asyncio.sleep(script.first_delay_s)
            while script.gate is not None and not script.gate.is_set() and not self._closing.is_set():
                await asyncio.sleep(0.01)
            if not body.get("stream"):
                received.completed = True
                return web.json_response(_completion(body, script))
            return await self._stream(request, body, script, received)
        finally:
            received.ended.set()

    async def _stream(
        self, request: web.Request, body: dict[str, Any], script: Script, received: Received
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        model = str(body.get("model", ""))
        try:
            for i, piece in enumerate(script.pieces()):
                if i and script.chunk_delay_s:
                    await asyncio.sleep(script.chunk_delay_s)
                if request.transport is None or request.transport.is_closing():
                    received.left = True
                    return response
                if script.cut_after == i:
                    received.cut = True
                    request.transport.close()
                    return response
                if script.malformed_after == i:
                    await response.write(b'data: {"choices": [{"delta": {"content": \n\n')
                await response.write(_event(_chunk(model, {"content": piece}, None)))
                received.chunks_sent += 1
            if script.finish:
                await response.write(_event(_chunk(model, {}, "stop")))
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            if include_usage and script.usage is not None:
                usage_chunk = {**_chunk(model, {}, None), "choices": [], "usage": script.usage}
                await response.write(_event(usage_chunk))
            # Before the end is written: a client that read it may look at once.
            received.completed = True
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            received.left = True
        return response


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _completion(body: dict[str, Any], script: Script) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 0,
        "model": str(body.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(script.pieces())},
                "finish_reason": "stop",
            }
        ],
    }
    if script.usage is not None:
        answer["usage"] = script.usage
    return answer
