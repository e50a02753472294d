"""Baseline servers that Confab is measured against, on the same protos and options.

    python -m confab.tools.bench.baselines bare   --listen HOST:PORT
    python -m confab.tools.bench.baselines direct --listen HOST:PORT --data-dir DIR

* ``bare``: a grpc.aio MCPEngine that answers with a canned response: the cost of
  gRPC and protobuf alone, the ceiling for any server in Python.
* ``direct``: what a team would write without actors: the same edge conversion,
  the same flow and the same SQLite store, in one asyncio process, with an
  ``asyncio.Lock`` per conversation and one commit per message (on one store
  thread, so the event loop never blocks on SQLite). Its turn is the shard's
  (``runtime.flows.execution.turn``); it writes what a shard writes for a turn: the state,
  the turn's reply, and which old turns may go.

Both print ``serving on HOST:PORT`` once ready, like ``confab serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from confab.grpc_edge import convert
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime import VERSION
from confab.runtime.flows import FlowRegistry, builtin_flows
from confab.runtime.flows.execution import turn
from confab.runtime.model import ConversationKey, InboundMessage, TurnResult
from confab.runtime.model import new_id as new_message_id
from confab.runtime.protocol import codec
from confab.runtime.protocol.records import CommandKind
from confab.runtime.store import ConversationWrite, TurnRecord, open_store

SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 4 << 20),
    ("grpc.max_send_message_length", 4 << 20),
]


def canned_response() -> pb.ProcessMessageResponse:
    response = pb.ProcessMessageResponse(conversation_id="canned", current_state="chatting")
    response.status.success = True
    response.response.text = "You said: hello"
    response.conversation_state.current_state = "chatting"
    response.conversation_state.flow_id = "echo"
    response.conversation_state.message_count = 1
    response.metadata.request_id = new_message_id()
    return response


class BareService(pb_grpc.MCPEngineServicer):
    def __init__(self) -> None:
        self.canned = canned_response()

    async def ProcessMessage(
        self, request: pb.ProcessMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProcessMessageResponse:
        return self.canned

    async def BatchProcessMessages(
        self, request: pb.BatchProcessMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchProcessMessagesResponse:
        count = len(request.messages)
        return pb.BatchProcessMessagesResponse(responses=[self.canned] * count, successful_count=count)

    async def StreamConversation(
        self,
        request_iterator: AsyncIterator[pb.ConversationStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ConversationStreamResponse]:
        async for request in request_iterator:
            kind = request.WhichOneof("request_type")
            if kind == "init":
                yield pb.ConversationStreamResponse(ack=pb.StreamAck(stream_id="canned"))
            elif kind == "message":
                yield pb.ConversationStreamResponse(message_response=self.canned)
            elif kind == "close":
                return


class DirectService(pb_grpc.MCPEngineServicer):
    def __init__(self, store_path: Path) -> None:
        self.store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store = open_store(str(store_path))
        self.flows = FlowRegistry(builtin_flows(), "echo")
        self.locks: dict[ConversationKey, asyncio.Lock] = {}
        # Each conversation's stored state (None: not begun) and seq, as last written.
        self.conversations: dict[ConversationKey, tuple[bytes | None, int]] = {}

    async def _turn(self, key: ConversationKey, message: InboundMessage, message_id: str) -> TurnResult:
        loop = asyncio.get_running_loop()
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            kept = self.conversations.get(key)
            if kept is None:
                stored = await loop.run_in_executor(self.store_thread, self.store.load, key)
                kept = (None, 0) if stored is None else (stored.state, stored.seq)
            packed, seq = kept
            started = time.perf_counter()
            done = turn.begin(
                self.flows,
                key,
                lambda: None if packed is None else codec.unpack_state(packed),
                message,
                time.time(),
            )
            assert isinstance(done, turn.Done)  # the echo flow calls no webhook
            result = done.result(execution_time_ms=(time.perf_counter() - started) * 1000.0)
            state = codec.pack_state(done.state)
            said = message.content.text or message.content.payload
            record = TurnRecord(
                seq + 1, message_id, int(CommandKind.TURN), codec.pack_turn_reply(result, state), said
            )
            write = ConversationWrite(key, state, seq + 1, [record], base_seq=seq)
            now = time.time()
            write.let_old_turns_go(self.store.retention, now)
            await loop.run_in_executor(self.store_thread, self.store.write, [write])
            self.conversations[key] = (state, seq + 1)
            return result

    async def _answer(self, request: pb.ProcessMessageRequest) -> pb.ProcessMessageResponse:
        started, message_id = time.perf_counter(), new_message_id()
        key, message = convert.inbound_message(request)
        result = await self._turn(key, message, message_id)
        return convert.process_message_response(key, result, message_id, started, VERSION)

    async def ProcessMessage(
        self, request: pb.ProcessMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProcessMessageResponse:
        return await self._answer(request)

    async def BatchProcessMessages(
        self, request: pb.BatchProcessMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchProcessMessagesResponse:
        limit = asyncio.Semaphore(request.max_concurrency or 16)
        for item in request.messages:
            if not item.tenant_context.tenant_id:
                item.tenant_context.tenant_id = request.tenant_context.tenant_id

        async def one(item: pb.ProcessMessageRequest) -> pb.ProcessMessageResponse:
            async with limit:
                return await self._answer(item)

        responses = await asyncio.gather(*(one(item) for item in request.messages))
        return pb.BatchProcessMessagesResponse(responses=responses, successful_count=len(responses))

    async def StreamConversation(
        self,
        request_iterator: AsyncIterator[pb.ConversationStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ConversationStreamResponse]:
        async for request in request_iterator:
            kind = request.WhichOneof("request_type")
            if kind == "init":
                yield pb.ConversationStreamResponse(ack=pb.StreamAck(stream_id=new_message_id()))
            elif kind == "message":
                yield pb.ConversationStreamResponse(message_response=await self._answer(request.message))
            elif kind == "close":
                return


async def serve(kind: str, listen: str, data_dir: Path) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    service: pb_grpc.MCPEngineServicer = (
        BareService() if kind == "bare" else DirectService(data_dir / "direct.sqlite3")
    )
    pb_grpc.add_MCPEngineServicer_to_server(service, server)
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"{kind} baseline serving on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="baseline servers for the benchmark")
    parser.add_argument("kind", choices=["bare", "direct"])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--data-dir", default="./var/bench")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.kind, args.listen, data_dir))


if __name__ == "__main__":
    main()
