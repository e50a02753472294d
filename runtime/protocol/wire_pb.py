"""The wire API's messages (protobuf) ⇄ domain records: the one codec of the gRPC API.

ProcessMessage requests (alone, in a batch, in a stream) cross the edge as the client
serialized them: the edge reads only what it routes and limits by (:func:`check_routing`,
:func:`idempotency_key`); the shard reads the rest here (:func:`read_turn`) and answers
with the serialized response, made here from the turn's packed reply
(:func:`turn_response`), which the edge returns as it is, with its call's ``metadata``
appended (:func:`metadata_tail`: a serialized message followed by another is the two
merged). The edge converts what it still converts with these same functions
(``grpc_edge.convert`` re-exports them): nothing of the API is converted in two places.

Inbound: validate a request and turn it into domain records (``InvalidArgument``
names the offending field). Outbound: turn domain results into response messages.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from confab.protos import common_pb2 as common
from confab.protos import mcp_engine_pb2 as engine
from confab.runtime.config import LimitsConfig
from confab.runtime.errors import ConfabError, InvalidArgument
from confab.runtime.model import (
    Button,
    CarouselCard,
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    ProcessingHints,
    QuickReply,
    TurnResult,
)
from confab.runtime.protocol import codec

# Enum names, lower-cased without their prefix: MESSAGE_TYPE_QUICK_REPLY -> "quick_reply".
MESSAGE_TYPES = {v: n.removeprefix("MESSAGE_TYPE_").lower() for n, v in common.MessageType.items()}
MESSAGE_TYPE_VALUES = {n: v for v, n in MESSAGE_TYPES.items()}
CHANNELS = {v: n.removeprefix("CHANNEL_").lower() for n, v in common.Channel.items()}
PRIORITIES = {v: n.removeprefix("PRIORITY_").lower() for n, v in common.Priority.items()}
BUTTON_TYPES = {v: n.removeprefix("BUTTON_TYPE_").lower() for n, v in engine.Button.ButtonType.items()}
BUTTON_TYPE_VALUES = {n: v for v, n in BUTTON_TYPES.items()}


# Inbound ---------------------------------------------------------------------------

# For callers that pass no limits (tools, tests): the bundled defaults.
DEFAULT_LIMITS = LimitsConfig()
# The key of ProcessMessageRequest.metadata.custom_metadata naming the turn of the last reply
# the user had seen (ProcessMessageResponse.turn); docs/api.md, "Which turn the user has seen".
SEEN_TURN_KEY = "confab.seen_turn"
MAX_TURN = 2**31 - 1  # a reply's turn is an int32


def require(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    return value


def identifier(value: str, field: str, limits: LimitsConfig, *, required: bool = True) -> str:
    """A tenant, conversation, user or session id: bounded, and printable (it reaches logs and shells)."""
    if not value:
        return require(value, field) if required else value
    if len(value) > limits.max_id_chars:
        raise InvalidArgument(
            f"{field} has {len(value)} characters; at most {limits.max_id_chars} are allowed", field=field
        )
    # isprintable() is False for control, format and separator characters (but the space).
    if not value.isprintable():
        raise InvalidArgument(f"{field} must not contain control or format characters", field=field)
    return value


def key_of(
    tenant_id: str, conversation_id: str, prefix: str = "", limits: LimitsConfig | None = None
) -> ConversationKey:
    limits = limits or DEFAULT_LIMITS
    return ConversationKey(
        identifier(tenant_id, f"{prefix}tenant_context.tenant_id", limits),
        identifier(conversation_id, f"{prefix}conversation_id", limits),
    )


def conversation_key(
    tenant: common.TenantContext, conversation_id: str, prefix: str = "", limits: LimitsConfig | None = None
) -> ConversationKey:
    return key_of(tenant.tenant_id, conversation_id, prefix, limits)


def known(value: int, names: dict[int, str], field: str) -> str:
    """The name of an enum value; values this server does not know are refused, not guessed."""
    name = names.get(value)
    if name is None:
        raise InvalidArgument(
            f"{field} is {value}, which is not one of {sorted(names)}; see the .proto files", field=field
        )
    return name


def check_routing(
    request: engine.ProcessMessageRequest, prefix: str = "", limits: LimitsConfig | None = None
) -> ConversationKey:
    """What the edge checks of a ProcessMessageRequest before it sends it on: the ids, that it
    has content, and the content's sizes (the limits). Its key, once they pass."""
    limits = limits or DEFAULT_LIMITS
    key = conversation_key(request.tenant_context, request.conversation_id, prefix, limits)
    identifier(request.user_id, f"{prefix}user_id", limits)
    identifier(request.session_id, f"{prefix}session_id", limits, required=False)
    content = request.content
    text, payload = content.text, content.payload
    if not text and not payload:
        raise InvalidArgument("content needs text or payload", field=f"{prefix}content")
    # The message names sizes only, never the content: error texts reach logs.
    for name, value, most in (
        ("text", text, limits.max_text_chars),
        ("payload", payload, limits.max_payload_chars),
    ):
        if len(value) > most:
            raise InvalidArgument(
                f"{prefix}content.{name} has {len(value)} characters; at most {most} are allowed",
                field=f"{prefix}content.{name}",
            )
    return key


def idempotency_key(
    request: engine.ProcessMessageRequest, prefix: str = "", limits: LimitsConfig | None = None
) -> str:
    """The client's idempotency key (``metadata.request_id``), checked; "" for none."""
    if not request.HasField("metadata"):
        return ""
    field = f"{prefix}metadata.request_id"
    return identifier(request.metadata.request_id, field, limits or DEFAULT_LIMITS, required=False)


def message_of(request: engine.ProcessMessageRequest, prefix: str = "") -> InboundMessage:
    """The message of a request whose routing fields passed :func:`check_routing`; the rest
    (enums, hints, structs, the turn its user has seen) is checked here."""
    channel = CHANNELS.get(request.channel) or known(request.channel, CHANNELS, f"{prefix}channel")
    hints = (
        processing_hints(request.processing_hints, prefix)
        if request.HasField("processing_hints")
        else ProcessingHints()
    )
    content = inbound_content(request.content, prefix)
    seen = seen_turn(request, prefix)
    return InboundMessage(request.user_id, content, channel, request.session_id, hints, seen)


def seen_turn(request: engine.ProcessMessageRequest, prefix: str = "") -> int | None:
    """``metadata.custom_metadata["confab.seen_turn"]``: the turn of the last reply the user had
    seen (a whole number >= 0, as a JSON number or a string of digits); None when absent."""
    if not request.HasField("metadata") or not request.metadata.HasField("custom_metadata"):
        return None
    value = request.metadata.custom_metadata.fields.get(SEEN_TURN_KEY)
    if value is None:
        return None
    field = f"{prefix}metadata.custom_metadata.{SEEN_TURN_KEY}"
    kind = value.WhichOneof("kind")
    if kind == "number_value" and value.number_value.is_integer() and 0 <= value.number_value <= MAX_TURN:
        return int(value.number_value)
    # A string of digits too: the JSON form of a 64-bit integer is a string.
    text = value.string_value if kind == "string_value" else ""
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_TURN)) and int(text) <= MAX_TURN:
        return int(text)
    raise InvalidArgument(
        f"{field} must be the turn of a reply the user has seen: a whole number from 0 to {MAX_TURN}",
        field=field,
    )


def inbound_message(
    request: engine.ProcessMessageRequest, prefix: str = "", limits: LimitsConfig | None = None
) -> tuple[ConversationKey, InboundMessage]:
    """Validate a ProcessMessageRequest; ``prefix`` locates it inside a batch or stream."""
    key = check_routing(request, prefix, limits)
    return key, message_of(request, prefix)


def read_turn(data: bytes, prefix: str = "") -> InboundMessage:
    """The message of a serialized ProcessMessageRequest the edge checked and sent on (the
    shard's side): InvalidArgument, naming the field, for what the edge does not check."""
    try:
        request = engine.ProcessMessageRequest.FromString(data)
    except DecodeError as exc:  # the edge parsed these very bytes: not from a Confab edge
        raise InvalidArgument(f"the request is not a valid protobuf message ({exc})") from exc
    return message_of(request, prefix)


def inbound_content(content: engine.MessageContent, prefix: str = "") -> Content:
    # Most messages are a text or a payload alone: every part they do not have is skipped.
    result = Content(
        MESSAGE_TYPES.get(content.type) or known(content.type, MESSAGE_TYPES, f"{prefix}content.type"),
        content.text,
        content.payload,
        content.language,
    )
    if content.quick_replies:
        result.quick_replies = [QuickReply(q.title, q.payload, q.content_type) for q in content.quick_replies]
    if content.buttons:
        result.buttons = [
            _button(b, f"{prefix}content.buttons[{i}].type") for i, b in enumerate(content.buttons)
        ]
    if content.carousel:
        result.carousel = [
            CarouselCard(
                c.title,
                c.subtitle,
                c.image_url,
                [
                    _button(b, f"{prefix}content.carousel[{i}].buttons[{j}].type")
                    for j, b in enumerate(c.buttons)
                ],
            )
            for i, c in enumerate(content.carousel)
        ]
    if content.HasField("media"):
        result.media = _as_dict(content.media)
    if content.HasField("location"):
        result.location = _as_dict(content.location)
    if content.HasField("form"):
        result.form = _as_dict(content.form)
    if content.HasField("metadata"):
        result.metadata = struct_to_dict(content.metadata, f"{prefix}content.metadata")
    return result


def processing_hints(hints: engine.ProcessingHints, prefix: str = "") -> ProcessingHints:
    return ProcessingHints(
        priority=known(hints.priority, PRIORITIES, f"{prefix}processing_hints.priority")
        if hints.priority
        else "normal",
        expected_response_type=hints.expected_response_type,
        bypass_automation=hints.bypass_automation,
        require_human_review=hints.require_human_review,
        bypass_cache=hints.bypass_cache,
        force_flow=hints.force_flow,
        custom_hints=struct_to_dict(hints.custom_hints, f"{prefix}processing_hints.custom_hints"),
    )


def _button(b: engine.Button, field: str) -> Button:
    return Button(b.title, known(b.type, BUTTON_TYPES, field), b.payload, b.url)


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def struct_to_dict(struct: Struct, field: str = "") -> dict[str, Any]:
    if not struct.fields:
        return {}
    try:
        return json_format.MessageToDict(struct)
    except ValueError as exc:  # NaN and infinities have no JSON form, so no Struct value either
        where = field or "a Struct"
        raise InvalidArgument(f"{where} holds a value JSON cannot carry: {exc}", field=field) from exc


# Outbound --------------------------------------------------------------------------


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    set_timestamp(ts, seconds)
    return ts


def set_timestamp(ts: Timestamp, seconds: float) -> None:
    """Fill ``ts`` in place (cheaper than building one and copying it in)."""
    whole = int(seconds)
    ts.seconds = whole
    ts.nanos = int((seconds - whole) * 1e9)


def fill_struct(struct: Struct, values: dict[str, Any]) -> None:
    if values:
        struct.update(values)


def outbound_content(content: Content, out: engine.MessageContent) -> None:
    out.type = MESSAGE_TYPE_VALUES.get(content.type, common.MESSAGE_TYPE_TEXT)  # type: ignore[assignment]
    out.text = content.text
    out.payload = content.payload
    out.language = content.language
    for q in content.quick_replies:
        out.quick_replies.add(title=q.title, payload=q.payload, content_type=q.content_type)
    for b in content.buttons:
        _outbound_button(b, out.buttons.add())
    for card in content.carousel:
        c = out.carousel.add(title=card.title, subtitle=card.subtitle, image_url=card.image_url)
        for b in card.buttons:
            _outbound_button(b, c.buttons.add())
    if content.media is not None:
        json_format.ParseDict(content.media, out.media)
    if content.location is not None:
        json_format.ParseDict(content.location, out.location)
    if content.form is not None:
        json_format.ParseDict(content.form, out.form)
    fill_struct(out.metadata, content.metadata)


def _outbound_button(button: Button, out: engine.Button) -> None:
    out.type = BUTTON_TYPE_VALUES.get(button.type, engine.Button.BUTTON_TYPE_POSTBACK)  # type: ignore[assignment]
    out.title, out.payload, out.url = button.title, button.payload, button.url


def conversation_state(state: ConversationState, out: engine.ConversationState) -> None:
    out.current_state = state.current_state
    out.flow_id = state.flow_id
    out.flow_version = state.flow_version
    out.previous_states.extend(state.previous_states)
    fill_struct(out.slots, state.slots)
    fill_struct(out.variables, state.variables)
    fill_struct(out.user_profile, state.user_profile)
    out.intent_history.extend(state.intent_history)
    out.current_intent = state.current_intent
    out.intent_confidence = state.intent_confidence
    set_timestamp(out.created_at, state.created_at)
    set_timestamp(out.last_activity, state.last_activity)
    out.message_count = state.message_count
    out.error_count = state.error_count


def metadata(out: common.Metadata, request_id: str, started: float, version: str) -> None:
    """Fill response metadata; ``started`` is the request's ``time.perf_counter()``."""
    out.request_id = request_id
    set_timestamp(out.timestamp, time.time())
    out.version = version
    out.processing_time_ms = int((time.perf_counter() - started) * 1000)


def process_message_response(
    key: ConversationKey,
    result: TurnResult,
    request_id: str,
    started: float,
    version: str,
    out: engine.ProcessMessageResponse | None = None,
) -> engine.ProcessMessageResponse:
    """The response to one processed message, built in ``out`` when given (no copy)."""
    response = out if out is not None else engine.ProcessMessageResponse()
    turn_fields(key.conversation_id, result, response)
    metadata(response.metadata, request_id, started, version)
    return response


def turn_fields(conversation_id: str, result: TurnResult, response: engine.ProcessMessageResponse) -> None:
    """Every field of the response to a processed message but its ``metadata`` (the call's)."""
    response.conversation_id = conversation_id
    response.current_state = result.state.current_state
    response.turn = result.turn
    response.ab_variant = result.ab_variant
    response.status.success = True
    response.status.message = "already processed; original reply" if result.replayed else "processed"
    outbound_content(result.response, response.response)
    fill_struct(response.context_updates, result.context_updates)
    response.actions_performed.extend(result.actions_performed)
    conversation_state(result.state, response.conversation_state)
    perf = response.performance_metrics
    perf.execution_time_ms = int(result.execution_time_ms)
    perf.queue_time_ms = int(result.queue_time_ms)
    perf.cache_status = "replayed" if result.replayed else "miss"


def turn_response(reply: bytes, conversation_id: str, *, replayed: bool = False) -> bytes:
    """The serialized ProcessMessageResponse of a turn's packed reply (``codec``), without its
    ``metadata`` (the shard's side: what the edge returns, :func:`metadata_tail` appended)."""
    result = codec.unpack_reply(reply, replayed=replayed)
    assert isinstance(result, TurnResult)
    response = engine.ProcessMessageResponse()
    turn_fields(conversation_id, result, response)
    return response.SerializeToString()


def metadata_tail(request_id: str, started: float, version: str) -> bytes:
    """A serialized ProcessMessageResponse holding only ``metadata``: appended to a
    :func:`turn_response`, the bytes are that response with this metadata (the edge's side)."""
    response = engine.ProcessMessageResponse()
    metadata(response.metadata, request_id, started, version)
    return response.SerializeToString()


def error_response(
    conversation_id: str,
    error: ConfabError,
    request_id: str,
    started: float,
    version: str,
    out: engine.ProcessMessageResponse | None = None,
) -> engine.ProcessMessageResponse:
    """An item of a batch that failed alone; it keeps its conversation_id. Built in ``out`` if given."""
    response = out if out is not None else engine.ProcessMessageResponse()
    response.conversation_id = conversation_id
    response.status.success = False
    response.status.error_code = error.reason
    response.status.message = error.message
    if isinstance(error, InvalidArgument) and error.field:
        response.status.details.update({"field": error.field})
    metadata(response.metadata, request_id, started, version)
    return response
