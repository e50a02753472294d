"""The edge's side of the wire API: what it reads of a request before sending it on.

The conversion itself (protobuf ⇄ domain, request validation, response building) is
``runtime.protocol.wire_pb``'s, the one codec of the API, which the shards use too:
a ProcessMessage request (alone, in a batch or a stream) goes to its shard as the client
serialized it, and the shard answers with the serialized response. The edge reads only
what it authenticates, authorises, limits and routes by (:func:`wire_turn`), and
converts what no shard answers (health, metrics, state lookups' records, failed items).
Its names are re-exported here for the edge's modules, tools and tests.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from confab.protos import mcp_engine_pb2 as engine
from confab.runtime.config import LimitsConfig
from confab.runtime.engine import TurnRequest, WireTurnRequest
from confab.runtime.errors import InvalidArgument
from confab.runtime.protocol.wire_pb import (
    BUTTON_TYPE_VALUES,
    BUTTON_TYPES,
    CHANNELS,
    DEFAULT_LIMITS,
    MESSAGE_TYPE_VALUES,
    MESSAGE_TYPES,
    PRIORITIES,
    check_routing,
    conversation_key,
    conversation_state,
    error_response,
    fill_struct,
    idempotency_key,
    identifier,
    inbound_content,
    inbound_message,
    key_of,
    known,
    metadata,
    metadata_tail,
    outbound_content,
    process_message_response,
    processing_hints,
    require,
    set_timestamp,
    struct_to_dict,
    timestamp,
)

__all__ = [
    "BUTTON_TYPES",
    "BUTTON_TYPE_VALUES",
    "CHANNELS",
    "DEFAULT_LIMITS",
    "MESSAGE_TYPES",
    "MESSAGE_TYPE_VALUES",
    "PRIORITIES",
    "conversation_key",
    "conversation_state",
    "error_response",
    "fill_struct",
    "identifier",
    "inbound_content",
    "inbound_message",
    "key_of",
    "known",
    "metadata",
    "metadata_tail",
    "outbound_content",
    "parse_request",
    "process_message_response",
    "processing_hints",
    "require",
    "set_timestamp",
    "struct_to_dict",
    "timestamp",
    "turn_request",
    "wire_turn",
]


def turn_request(
    request: engine.ProcessMessageRequest,
    message_id: str,
    prefix: str = "",
    limits: LimitsConfig | None = None,
) -> TurnRequest:
    """A validated message for the engine, converted here; ``metadata.request_id`` is the
    client's idempotency key."""
    limits = limits or DEFAULT_LIMITS
    key, message = inbound_message(request, prefix, limits)
    return TurnRequest(key, message, message_id, idempotency_key(request, prefix, limits))


def parse_request(data: bytes) -> engine.ProcessMessageRequest:
    """A serialized ProcessMessageRequest, parsed (upb: C speed) to read its routing fields;
    INVALID_ARGUMENT, as the decode guard says it, when it is not one."""
    try:
        return engine.ProcessMessageRequest.FromString(data)
    except DecodeError as exc:
        problem = str(exc).split(": ", 1)[-1]
        raise InvalidArgument(f"the request is not a valid protobuf message ({problem})") from exc


def wire_turn(
    request: engine.ProcessMessageRequest,
    data: bytes,
    message_id: str,
    prefix: str = "",
    limits: LimitsConfig | None = None,
) -> WireTurnRequest:
    """A message for the engine that its shard converts: ``data`` is ``request`` serialized.
    Checked here: ids, content presence and sizes (the limits), the idempotency key."""
    limits = limits or DEFAULT_LIMITS
    key = check_routing(request, prefix, limits)
    content = request.content
    return WireTurnRequest(
        key,
        data,
        message_id,
        idempotency_key(request, prefix, limits),
        prefix,
        content.text or content.payload,
    )
