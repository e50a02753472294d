"""grpc_edge.convert: protobuf ⇄ domain, request validation, response building."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from google.protobuf import json_format

from confab.grpc_edge import convert
from confab.protos import common_pb2 as common
from confab.protos import mcp_engine_pb2 as engine
from confab.runtime.config import LimitsConfig
from confab.runtime.errors import ConversationNotFound, InvalidArgument, Overloaded, Unavailable
from confab.runtime.model import (
    Button,
    CarouselCard,
    Content,
    ConversationKey,
    ConversationState,
    QuickReply,
    TurnResult,
)
from confab.runtime.protocol.codec import pack, unpack


def rich_content() -> engine.MessageContent:
    content = engine.MessageContent(
        type=common.MESSAGE_TYPE_CAROUSEL,
        text="choose",
        payload="CHOOSE",
        language="de",
    )
    content.quick_replies.add(title="Yes", payload="Y", content_type="text")
    content.quick_replies.add(title="No", payload="N")
    content.buttons.add(type=engine.Button.BUTTON_TYPE_URL, title="Site", url="https://example.com")
    content.buttons.add(type=engine.Button.BUTTON_TYPE_PHONE, title="Call", payload="+331234")
    card = content.carousel.add(title="Card 1", subtitle="first", image_url="https://img/1.png")
    card.buttons.add(type=engine.Button.BUTTON_TYPE_POSTBACK, title="Pick", payload="PICK_1")
    card.buttons.add(type=engine.Button.BUTTON_TYPE_SHARE, title="Share")
    content.carousel.add(title="Card 2")
    content.media.url = "https://media/a.jpg"
    content.media.mime_type = "image/jpeg"
    content.media.size_bytes = 2048
    content.media.duration_ms = 1500
    content.media.dimensions.width = 640
    content.media.dimensions.height = 480
    content.media.detected_objects.extend(["cat", "hat"])
    content.media.ocr_confidence = 0.5
    content.location.latitude = 48.8566
    content.location.longitude = 2.3522
    content.location.accuracy_meters = 12
    content.location.place_name = "Paris"
    content.form.form_id = "signup"
    content.form.form_data.update({"name": "Ann", "age": 31, "tags": ["a", "b"]})
    content.form.validation_status = "valid"
    content.form.submitted_at.FromSeconds(1_700_000_000)
    content.metadata.update({"source": "app", "nested": {"flag": True, "n": 2.5}, "list": [1, "x", None]})
    return content


def full_request(**overrides: object) -> engine.ProcessMessageRequest:
    request = engine.ProcessMessageRequest(
        tenant_context=common.TenantContext(tenant_id="acme"),
        conversation_id="conv-1",
        user_id="user-1",
        channel=common.CHANNEL_WHATSAPP,
        session_id="sess-1",
        content=engine.MessageContent(text="hello"),
    )
    for name, value in overrides.items():
        field = getattr(request, name)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


# Validation -------------------------------------------------------------------------


def test_valid_minimal_request() -> None:
    key, message = convert.inbound_message(full_request())
    assert key == ConversationKey("acme", "conv-1")
    assert message.user_id == "user-1"
    assert message.channel == "whatsapp"
    assert message.session_id == "sess-1"
    assert message.content.text == "hello"
    assert message.content.type == "unknown"  # MESSAGE_TYPE_UNKNOWN (0) was sent
    assert message.content.media is None
    assert message.content.location is None
    assert message.content.form is None
    assert message.content.metadata == {}
    assert message.hints.priority == "normal"


def _invalid(request: engine.ProcessMessageRequest, prefix: str = "") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        convert.inbound_message(request, prefix)
    return info.value


@pytest.mark.parametrize("prefix", ["", "messages[3]."])
@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("tenant_context.tenant_id", lambda r: r.tenant_context.ClearField("tenant_id")),
        ("tenant_context.tenant_id", lambda r: r.ClearField("tenant_context")),
        ("conversation_id", lambda r: r.ClearField("conversation_id")),
        ("user_id", lambda r: r.ClearField("user_id")),
        ("content", lambda r: r.ClearField("content")),
        ("content", lambda r: r.content.ClearField("text")),
    ],
)
def test_validation_error_names_the_field(
    prefix: str, field: str, mutate: Callable[[engine.ProcessMessageRequest], object]
) -> None:
    request = full_request()
    mutate(request)
    error = _invalid(request, prefix)
    assert error.field == f"{prefix}{field}"
    assert field.split(".")[-1] in error.message
    assert error.reason == "INVALID_ARGUMENT"


def test_validation_checks_tenant_first() -> None:
    error = _invalid(engine.ProcessMessageRequest())
    assert error.field == "tenant_context.tenant_id"


def test_validation_checks_conversation_before_user() -> None:
    request = engine.ProcessMessageRequest(tenant_context=common.TenantContext(tenant_id="t"))
    assert _invalid(request).field == "conversation_id"


def test_payload_alone_is_enough_content() -> None:
    request = full_request(content=engine.MessageContent(payload="BUTTON_1"))
    _, message = convert.inbound_message(request)
    assert message.content.payload == "BUTTON_1"
    assert message.content.text == ""


def test_conversation_key_prefix() -> None:
    with pytest.raises(InvalidArgument) as info:
        convert.conversation_key(common.TenantContext(tenant_id="t"), "", "stream.")
    assert info.value.field == "stream.conversation_id"
    assert convert.conversation_key(common.TenantContext(tenant_id="t"), "c") == ConversationKey("t", "c")


# Inbound content ------------------------------------------------------------------------


def test_rich_content_inbound() -> None:
    _, message = convert.inbound_message(full_request(content=rich_content()))
    content = message.content
    assert content.type == "carousel"
    assert (content.text, content.payload, content.language) == ("choose", "CHOOSE", "de")
    assert content.quick_replies == [QuickReply("Yes", "Y", "text"), QuickReply("No", "N", "")]
    assert content.buttons == [
        Button("Site", "url", "", "https://example.com"),
        Button("Call", "phone", "+331234", ""),
    ]
    assert content.carousel == [
        CarouselCard(
            "Card 1",
            "first",
            "https://img/1.png",
            [Button("Pick", "postback", "PICK_1", ""), Button("Share", "share", "", "")],
        ),
        CarouselCard("Card 2", "", "", []),
    ]
    assert content.media is not None
    assert content.media["url"] == "https://media/a.jpg"
    assert content.media["mime_type"] == "image/jpeg"  # proto field names are kept
    assert int(content.media["size_bytes"]) == 2048
    assert content.media["dimensions"] == {"width": 640, "height": 480}
    assert content.media["detected_objects"] == ["cat", "hat"]
    assert content.location == {
        "latitude": 48.8566,
        "longitude": 2.3522,
        "accuracy_meters": 12,
        "place_name": "Paris",
    }
    assert content.form is not None
    assert content.form["form_id"] == "signup"
    assert content.form["form_data"] == {"name": "Ann", "age": 31, "tags": ["a", "b"]}
    assert content.metadata == {"source": "app", "nested": {"flag": True, "n": 2.5}, "list": [1, "x", None]}


def test_processing_hints_inbound() -> None:
    request = full_request()
    hints = request.processing_hints
    hints.priority = common.PRIORITY_URGENT
    hints.expected_response_type = "text"
    hints.bypass_automation = True
    hints.require_human_review = True
    hints.bypass_cache = True
    hints.force_flow = "echo"
    hints.custom_hints.update({"x": "y"})
    _, message = convert.inbound_message(request)
    assert message.hints.priority == "urgent"
    assert message.hints.expected_response_type == "text"
    assert message.hints.bypass_automation
    assert message.hints.require_human_review
    assert message.hints.bypass_cache
    assert message.hints.force_flow == "echo"
    assert message.hints.custom_hints == {"x": "y"}


@pytest.mark.parametrize(
    ("value", "name"),
    [(common.CHANNEL_UNKNOWN, "unknown"), (common.CHANNEL_WEB, "web"), (common.CHANNEL_SMS, "sms")],
)
def test_channel_names(value: int, name: str) -> None:
    _, message = convert.inbound_message(full_request(channel=value))
    assert message.channel == name


def _with_id(field: str, value: str) -> engine.ProcessMessageRequest:
    request = full_request()
    if field == "tenant_id":
        request.tenant_context.tenant_id = value
    else:
        setattr(request, field, value)
    return request


ID_FIELDS = [
    ("tenant_id", "tenant_context.tenant_id"),
    ("conversation_id", "conversation_id"),
    ("user_id", "user_id"),
    ("session_id", "session_id"),
]


@pytest.mark.parametrize(("attribute", "field"), ID_FIELDS)
def test_ids_are_bounded_and_the_error_names_the_field(attribute: str, field: str) -> None:
    convert.inbound_message(_with_id(attribute, "x" * 128))  # the default limit itself is fine
    with pytest.raises(InvalidArgument) as caught:
        convert.inbound_message(_with_id(attribute, "x" * 10_254))
    assert caught.value.field == field and "at most 128" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        convert.inbound_message(_with_id(attribute, "x" * 11), limits=LimitsConfig(max_id_chars=10))
    assert caught.value.field == field


@pytest.mark.parametrize(("attribute", "field"), ID_FIELDS)
@pytest.mark.parametrize(
    "bad", ["a\nb", "tab\there", "nul\x00", "del\x7f", "rtl\u202eoverride", "line\u2028sep"]
)
def test_ids_refuse_control_and_format_characters(attribute: str, field: str, bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.inbound_message(_with_id(attribute, bad))
    assert caught.value.field == field and "control" in caught.value.message


def test_printable_unicode_ids_are_fine() -> None:
    key, _ = convert.inbound_message(_with_id("conversation_id", "ü-ñ-✓ 😀 order 7"))
    assert key.conversation_id == "ü-ñ-✓ 😀 order 7"


def test_unknown_enum_values_are_refused_naming_the_field() -> None:
    cases: list[tuple[Callable[[engine.ProcessMessageRequest], object], str]] = [
        (lambda r: setattr(r, "channel", 99), "channel"),
        (lambda r: setattr(r.content, "type", 99), "content.type"),
        (lambda r: setattr(r.processing_hints, "priority", 42), "processing_hints.priority"),
        (lambda r: r.content.buttons.add(type=17, title="b"), "content.buttons[0].type"),
        (
            lambda r: r.content.carousel.add(title="c").buttons.add(type=9, title="b"),
            "content.carousel[0].buttons[0].type",
        ),
    ]
    for mutate, field in cases:
        request = full_request()
        mutate(request)
        with pytest.raises(InvalidArgument) as caught:
            convert.inbound_message(request, prefix="messages[3].")
        assert caught.value.field == "messages[3]." + field
    # Zero is proto3's "not set", known to every enum: accepted.
    _, message = convert.inbound_message(full_request(channel=0))
    assert message.channel == "unknown"


# Outbound content -----------------------------------------------------------------------


def test_rich_content_round_trip_proto_to_domain_to_proto() -> None:
    original = rich_content()
    domain = convert.inbound_content(original)
    out = engine.MessageContent()
    convert.outbound_content(domain, out)
    assert out == original


def test_rich_content_round_trip_survives_the_wire() -> None:
    original = rich_content()
    domain = Content.from_wire(unpack(pack(convert.inbound_content(original).to_wire())))
    out = engine.MessageContent()
    convert.outbound_content(domain, out)
    assert out == original


def test_outbound_from_domain_content() -> None:
    content = Content(
        type="quick_reply",
        text="Hello",
        quick_replies=[QuickReply("Say hi", "hi")],
        buttons=[Button("Open", "url", url="https://x"), Button("Odd", "no-such-type")],
        carousel=[CarouselCard("C", buttons=[Button("Login", "login")])],
        media={"url": "https://m", "size_bytes": 10},
        location={"latitude": 1.5, "longitude": -2.25},
        form={"form_id": "f", "form_data": {"k": "v"}},
        metadata={"a": 1, "b": {"c": [True]}},
    )
    out = engine.MessageContent()
    convert.outbound_content(content, out)
    assert out.type == common.MESSAGE_TYPE_QUICK_REPLY
    assert out.text == "Hello"
    assert [(q.title, q.payload) for q in out.quick_replies] == [("Say hi", "hi")]
    assert out.buttons[0].type == engine.Button.BUTTON_TYPE_URL
    assert out.buttons[0].url == "https://x"
    assert out.buttons[1].type == engine.Button.BUTTON_TYPE_POSTBACK  # unknown names fall back
    assert out.carousel[0].buttons[0].type == engine.Button.BUTTON_TYPE_LOGIN
    assert out.media.url == "https://m"
    assert out.media.size_bytes == 10
    assert (out.location.latitude, out.location.longitude) == (1.5, -2.25)
    assert out.form.form_id == "f"
    assert json_format.MessageToDict(out.form.form_data) == {"k": "v"}
    assert json_format.MessageToDict(out.metadata) == {"a": 1, "b": {"c": [True]}}


def test_outbound_plain_content_leaves_optional_parts_unset() -> None:
    out = engine.MessageContent()
    convert.outbound_content(Content(text="hi"), out)
    assert out.type == common.MESSAGE_TYPE_TEXT
    assert not out.HasField("media")
    assert not out.HasField("location")
    assert not out.HasField("form")
    assert len(out.metadata.fields) == 0
    assert len(out.buttons) == len(out.quick_replies) == len(out.carousel) == 0


def test_unknown_message_type_goes_out_as_text() -> None:
    out = engine.MessageContent()
    convert.outbound_content(Content(type="hologram", text="x"), out)
    assert out.type == common.MESSAGE_TYPE_TEXT


# Conversation state ---------------------------------------------------------------------


def full_state() -> ConversationState:
    return ConversationState(
        current_state="chatting",
        flow_id="echo",
        flow_version="1",
        previous_states=["start", "middle"],
        slots={"city": "Paris"},
        variables={"last_message": "hi", "n": 2},
        user_profile={"name": "Ann"},
        intent_history=["greet", "ask"],
        current_intent="ask",
        intent_confidence=0.75,
        created_at=1_700_000_000.25,
        last_activity=1_700_000_123.5,
        message_count=42,
        error_count=3,
    )


def test_conversation_state_fills_every_field() -> None:
    out = engine.ConversationState()
    convert.conversation_state(full_state(), out)
    assert out.current_state == "chatting"
    assert out.flow_id == "echo"
    assert out.flow_version == "1"
    assert list(out.previous_states) == ["start", "middle"]
    assert json_format.MessageToDict(out.slots) == {"city": "Paris"}
    assert json_format.MessageToDict(out.variables) == {"last_message": "hi", "n": 2}
    assert json_format.MessageToDict(out.user_profile) == {"name": "Ann"}
    assert list(out.intent_history) == ["greet", "ask"]
    assert out.current_intent == "ask"
    assert out.intent_confidence == 0.75
    assert (out.created_at.seconds, out.created_at.nanos) == (1_700_000_000, 250_000_000)
    assert (out.last_activity.seconds, out.last_activity.nanos) == (1_700_000_123, 500_000_000)
    assert out.message_count == 42
    assert out.error_count == 3
    # Every field of the proto message is set by conversation_state.
    set_fields = {f.name for f, _ in out.ListFields()}
    assert set_fields == {f.name for f in engine.ConversationState.DESCRIPTOR.fields}


def test_timestamp() -> None:
    ts = convert.timestamp(12.75)
    assert (ts.seconds, ts.nanos) == (12, 750_000_000)
    assert convert.timestamp(0.0).seconds == 0


# Responses ------------------------------------------------------------------------------


def test_process_message_response() -> None:
    result = TurnResult(
        response=Content(text="You said: hi", quick_replies=[QuickReply("Say hi", "hi")]),
        state=full_state(),
        context_updates={"last_message": "hi"},
        actions_performed=["echo"],
        ab_variant="B",
        queue_time_ms=3.9,
        execution_time_ms=7.2,
    )
    started = time.perf_counter()
    response = convert.process_message_response(ConversationKey("t", "c"), result, "req-1", started, "9.9")
    assert response.status.success
    assert response.status.message == "processed"
    assert response.conversation_id == "c"
    assert response.current_state == "chatting"
    assert response.ab_variant == "B"
    assert response.response.text == "You said: hi"
    assert json_format.MessageToDict(response.context_updates) == {"last_message": "hi"}
    assert list(response.actions_performed) == ["echo"]
    assert response.conversation_state.message_count == 42
    assert response.performance_metrics.execution_time_ms == 7
    assert response.performance_metrics.queue_time_ms == 3
    assert response.performance_metrics.cache_status == "miss"
    assert response.metadata.request_id == "req-1"
    assert response.metadata.version == "9.9"
    assert response.metadata.processing_time_ms >= 0
    assert response.metadata.timestamp.seconds > 0

    result.replayed = True
    replayed = convert.process_message_response(ConversationKey("t", "c"), result, "req-2", started, "9.9")
    assert replayed.status.success
    assert replayed.performance_metrics.cache_status == "replayed"
    assert "already processed" in replayed.status.message


@pytest.mark.parametrize(
    "error",
    [ConversationNotFound("conversation t/c not found"), Overloaded("queue full"), Unavailable("store down")],
    ids=lambda e: type(e).__name__,
)
def test_error_response(error: Exception) -> None:
    assert isinstance(error, ConversationNotFound | Overloaded | Unavailable)
    response = convert.error_response("conv-9", error, "req-3", time.perf_counter(), "1.0")
    assert response.conversation_id == "conv-9"
    assert not response.status.success
    assert response.status.error_code == error.reason
    assert response.status.message == error.message
    assert len(response.status.details.fields) == 0
    assert response.metadata.request_id == "req-3"
    assert response.metadata.version == "1.0"
    assert not response.HasField("conversation_state")


def test_error_response_for_invalid_argument_names_field() -> None:
    error = InvalidArgument("messages[1].user_id is required", field="messages[1].user_id")
    response = convert.error_response("conv-2", error, "req-4", time.perf_counter(), "1.0")
    assert response.conversation_id == "conv-2"
    assert response.status.error_code == "INVALID_ARGUMENT"
    assert json_format.MessageToDict(response.status.details) == {"field": "messages[1].user_id"}


def test_enum_tables_cover_proto_enums() -> None:
    assert set(convert.MESSAGE_TYPES) == set(common.MessageType.values())
    assert convert.MESSAGE_TYPES[common.MESSAGE_TYPE_QUICK_REPLY] == "quick_reply"
    assert convert.BUTTON_TYPES[engine.Button.BUTTON_TYPE_POSTBACK] == "postback"
    assert convert.PRIORITIES[common.PRIORITY_CRITICAL] == "critical"
    assert convert.CHANNELS[common.CHANNEL_TEAMS] == "teams"
