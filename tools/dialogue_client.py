"""Plays scripted dialogues against a running server, as a client would.

The gRPC counterpart of ``runtime.flows.authoring.runner.FlowRunner``: each turn is one
ProcessMessage call (with ``force_flow`` naming the dialogue file's flow).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from confab.protos import common_pb2
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.errors import error_from_reason
from confab.runtime.flows.authoring.dialogues import ScriptedGenerations, TurnView, WebhookAnswers
from confab.runtime.model import ConversationKey


class GrpcRunner:
    pins_time = False  # the server's clock, webhooks and models are its own

    def __init__(self, target: str, *, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.MCPEngineStub(self._channel)
        self._metadata = metadata

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(
        self,
        conversation: ConversationKey,
        text: str,
        payload: str,
        channel: str,
        flow: str,
        *,
        language: str = "",
        now: float | None = None,
        webhooks: WebhookAnswers | None = None,
        generations: ScriptedGenerations | None = None,
    ) -> TurnView:
        request = pb.ProcessMessageRequest(
            tenant_context={"tenant_id": conversation.tenant_id},
            conversation_id=conversation.conversation_id,
            user_id="dialogue",
            content={"text": text, "payload": payload, "language": language},
        )
        request.channel = _channel(channel)  # type: ignore[assignment]
        if flow:
            request.processing_hints.force_flow = flow
        try:
            reply = self._stub.ProcessMessage(request, metadata=self._metadata, timeout=30)
        except grpc.RpcError as exc:
            raise error_from_reason("UNAVAILABLE", f"{exc.code().name}: {exc.details()}") from exc
        state = reply.conversation_state
        return TurnView(
            text=reply.response.text,
            state=reply.current_state,
            intent=state.current_intent,
            slots=_as_dict(state.slots),
            variables=_as_dict(state.variables),
            actions=list(reply.actions_performed),
            quick_replies=[q.title for q in reply.response.quick_replies],
            buttons=[b.title for b in reply.response.buttons],
            error_count=state.error_count,
        )


def _channel(name: str) -> int:
    try:
        return int(common_pb2.Channel.Value(f"CHANNEL_{name.upper()}"))
    except ValueError:
        return int(common_pb2.CHANNEL_UNKNOWN)


def _as_dict(struct: Any) -> dict[str, Any]:
    values = json_format.MessageToDict(struct) if struct.fields else {}
    # Struct numbers are doubles: give whole numbers back as ints, as the flow stored them.
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}
