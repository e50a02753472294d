"""The shard protocol's bytes: records, frames, replies and outcomes, through msgpack and back."""

from __future__ import annotations

from typing import Any

import pytest

from confab.runtime.errors import (
    ERRORS_BY_REASON,
    ConfabError,
    ConversationNotFound,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from confab.runtime.model import (
    Button,
    CarouselCard,
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    ProcessingHints,
    QuickReply,
    ResetResult,
    StateResult,
    TurnResult,
)
from confab.runtime.protocol import codec
from confab.runtime.protocol.codec import FrameDecoder, FrameError, frame, pack, unpack
from confab.runtime.protocol.records import (
    BATCH,
    CANCEL,
    DELTA,
    DONE,
    ERROR,
    REPLAYED,
    Command,
    CommandBatch,
    CommandKind,
    LateOutcomes,
    OutcomeBatch,
    Routed,
    RoutedBatch,
    ShapeError,
    TextDelta,
    WireMessage,
    cancel_frame,
    cancels_from_frame,
    decode_outcome,
    delta_entry_wire,
    deltas_frame,
    deltas_from_frame,
    error_outcome,
)


def through_msgpack(wire: Any) -> Any:
    """What the other process sees: the wire form after a msgpack round trip."""
    return unpack(pack(wire))


def sample_content() -> Content:
    return Content(
        type="carousel",
        text="pick one",
        payload="PICK",
        language="fr",
        quick_replies=[QuickReply("Yes", "YES", "text"), QuickReply("No")],
        buttons=[Button("Open", "url", "", "https://example.com"), Button("Go", payload="GO")],
        carousel=[
            CarouselCard("Card A", "sub A", "https://img/a.png", [Button("Buy", "postback", "BUY_A")]),
            CarouselCard("Card B"),
        ],
        media={"url": "https://m/1.jpg", "mime_type": "image/jpeg", "dimensions": {"width": 3}},
        location={"latitude": 48.85, "longitude": 2.35, "place_name": "Paris"},
        form={"form_id": "f1", "form_data": {"name": "Ann", "age": 31}},
        metadata={"source": "test", "nested": {"k": [1, 2.5, "x", None, True]}},
    )


def sample_state(count: int = 7) -> ConversationState:
    return ConversationState(
        current_state="chatting",
        flow_id="echo",
        flow_version="1",
        previous_states=["start"],
        slots={"city": "Paris"},
        variables={"last_message": "hi", "n": 3},
        user_profile={"name": "Ann", "vip": True},
        intent_history=["greet", "ask"],
        current_intent="ask",
        intent_confidence=0.875,
        created_at=1_700_000_000.25,
        last_activity=1_700_000_100.5,
        message_count=count,
        error_count=2,
    )


def sample_message() -> InboundMessage:
    return InboundMessage(
        user_id="u-1",
        content=sample_content(),
        channel="whatsapp",
        session_id="s-9",
        hints=ProcessingHints(
            priority="high",
            expected_response_type="text",
            bypass_automation=True,
            require_human_review=True,
            bypass_cache=True,
            force_flow="echo",
            custom_hints={"a": 1, "b": [True, "x"]},
        ),
        seen_turn=7,
    )


def sample_turn_result() -> TurnResult:
    return TurnResult(
        response=sample_content(),
        state=sample_state(),
        context_updates={"last_message": "hi"},
        actions_performed=["greet", "echo"],
        ab_variant="B",
        queue_time_ms=1.5,
        execution_time_ms=0.25,
        replayed=True,
    )


# Model records ------------------------------------------------------------------------

RECORDS: list[Any] = [
    QuickReply("t", "p", "c"),
    QuickReply("only title"),
    Button("b", "phone", "+3312345", ""),
    Button("default"),
    CarouselCard("c", "s", "i", [Button("x"), Button("y", "url", url="https://u")]),
    CarouselCard("empty"),
    Content(),
    sample_content(),
    ProcessingHints(),
    sample_message().hints,
    InboundMessage("u", Content(text="hi")),
    sample_message(),
    ConversationState("start", "echo", "1", created_at=1.0, last_activity=2.0),
    sample_state(),
    sample_turn_result(),
    TurnResult(Content(text="r"), sample_state(1)),
    ResetResult("chatting", sample_state(0)),
    ResetResult("chatting", sample_state(0), replayed=True),
    StateResult(sample_state()),
]


def test_a_message_recorded_before_seen_turn_reads_without_one() -> None:
    """Stored turns keep the message's wire list; those of older versions have five items."""
    old = InboundMessage("u", Content(text="hi"), "sms").to_wire()[:5]
    assert InboundMessage.from_wire(old) == InboundMessage("u", Content(text="hi"), "sms", seen_turn=None)
    message, now, answers = codec.unpack_recorded(codec.pack([old, 5.0, {}]))
    assert (message.seen_turn, now, answers) == (None, 5.0, {})


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_model_record_round_trip(record: Any) -> None:
    cls = type(record)
    direct = cls.from_wire(record.to_wire())
    assert direct == record
    assert type(direct) is cls
    over_msgpack = cls.from_wire(through_msgpack(record.to_wire()))
    assert over_msgpack == record
    assert type(over_msgpack) is cls


def test_round_trip_keeps_nested_types() -> None:
    content = Content.from_wire(through_msgpack(sample_content().to_wire()))
    assert all(isinstance(q, QuickReply) for q in content.quick_replies)
    assert all(isinstance(b, Button) for b in content.buttons)
    assert all(isinstance(c, CarouselCard) for c in content.carousel)
    assert isinstance(content.carousel[0].buttons[0], Button)
    assert content.carousel[0].buttons[0].payload == "BUY_A"
    assert content.media == {"url": "https://m/1.jpg", "mime_type": "image/jpeg", "dimensions": {"width": 3}}


def test_state_round_trip_keeps_float_precision_and_ints() -> None:
    state = ConversationState.from_wire(through_msgpack(sample_state(41).to_wire()))
    assert state.created_at == 1_700_000_000.25
    assert state.intent_confidence == 0.875
    assert state.message_count == 41
    assert isinstance(state.message_count, int)


def test_conversation_key_str() -> None:
    assert str(ConversationKey("acme", "c-1")) == "acme/c-1"


# Commands and batches -----------------------------------------------------------------

KEY = ConversationKey("tenant-a", "conv-1")


def sample_commands() -> list[Command]:
    return [
        Command(CommandKind.TURN, "m-1", KEY, sample_message()),
        Command(CommandKind.GET_STATE, "m-2", KEY),
        Command(CommandKind.RESET, "m-3", ConversationKey("tenant-b", "conv-2"), "user asked"),
    ]


@pytest.mark.parametrize("command", sample_commands(), ids=lambda c: c.kind.name)
def test_command_round_trip(command: Command) -> None:
    back = Command.from_wire(through_msgpack(command.to_wire()))
    assert back == command
    assert back.kind is command.kind
    assert isinstance(back.kind, CommandKind)
    assert back.mutates is command.mutates


def test_command_mutates() -> None:
    turn, get_state, reset = sample_commands()
    assert turn.mutates
    assert not get_state.mutates
    assert reset.mutates


def test_command_body_types_after_decode() -> None:
    turn, get_state, reset = (Command.from_wire(through_msgpack(c.to_wire())) for c in sample_commands())
    assert isinstance(turn.body, InboundMessage)
    assert get_state.body is None
    assert reset.body == "user asked"


def test_command_batch_frame_round_trip() -> None:
    batch = CommandBatch(12345, sample_commands(), want_lifecycle=True)
    back = CommandBatch.from_frame(through_msgpack(batch.to_frame()))
    assert back == batch
    assert [c.kind for c in back.commands] == [CommandKind.TURN, CommandKind.GET_STATE, CommandKind.RESET]


def test_empty_command_batch() -> None:
    assert CommandBatch.from_frame(through_msgpack(CommandBatch(0, []).to_frame())) == CommandBatch(0, [])


def _reply(result: Any) -> bytes:
    if isinstance(result, TurnResult):
        return codec.pack_turn_reply(result, codec.pack_state(result.state))
    if isinstance(result, ResetResult):
        return codec.pack_reset_reply(result.previous_state, codec.pack_state(result.state))
    return codec.pack_state_reply(codec.pack_state(result.state))


def test_outcome_batch_frame_round_trip() -> None:
    outcomes = [
        [DONE, _reply(sample_turn_result())],
        error_outcome(ConversationNotFound("nope")),
        [REPLAYED, _reply(StateResult(sample_state()))],
    ]
    back = OutcomeBatch.from_frame(
        through_msgpack(OutcomeBatch(7, outcomes, [["activation", "t", "c"]]).to_frame())
    )
    assert back.batch_id == 7 and back.lifecycle == [["activation", "t", "c"]]
    turn = decode_outcome(back.outcomes[0])
    assert isinstance(turn, TurnResult) and not turn.replayed
    expected = sample_turn_result()
    expected.replayed = False
    assert turn == expected
    error = decode_outcome(back.outcomes[1])
    assert isinstance(error, ConversationNotFound) and error.message == "nope"
    assert decode_outcome(back.outcomes[2]) == StateResult(sample_state())


def test_late_outcomes_frame_round_trip() -> None:
    late = LateOutcomes(
        [(3, 0, [DONE, _reply(StateResult(sample_state()))]), (4, 2, error_outcome(Unavailable("x")))]
    )
    assert LateOutcomes.from_frame(through_msgpack(late.to_frame())) == late


def test_frames_are_msgpack_lists_tagged_by_kind() -> None:
    batch = CommandBatch(3, [Command(CommandKind.GET_STATE, "id", KEY)])
    assert unpack(pack(batch.to_frame())) == [BATCH, 3, [[2, "id", "tenant-a", "conv-1", None, 0]], False]


# Frames on a byte stream --------------------------------------------------------------


def test_frames_decode_however_the_bytes_are_split() -> None:
    values = [[1, "a"], {"k": [1, 2]}, "x" * 5000, []]
    stream = b"".join(frame(v) for v in values)
    for chunk in (1, 3, 7, 4096, len(stream)):
        decoder = FrameDecoder()
        seen: list[Any] = []
        for start in range(0, len(stream), chunk):
            seen.extend(decoder.feed(stream[start : start + chunk]))
        assert seen == values


def test_a_frame_longer_than_the_limit_is_refused_before_it_is_read() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(FrameError):
        decoder.feed(frame("y" * 200)[:10])  # the header alone says too much


# Replies ------------------------------------------------------------------------------

RESULTS: list[Any] = [
    sample_turn_result(),
    TurnResult(Content(text="x"), sample_state(1)),
    ResetResult("chatting", sample_state(0)),
    StateResult(sample_state()),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("replayed", [False, True])
def test_reply_round_trip(result: Any, replayed: bool) -> None:
    back = codec.unpack_reply(through_msgpack(_reply(result)), replayed=replayed)
    assert type(back) is type(result)
    if isinstance(result, TurnResult | ResetResult) and isinstance(back, TurnResult | ResetResult):
        assert back.replayed is replayed
        result.replayed = replayed
    assert back == result


def test_a_reply_embeds_the_packed_state_once() -> None:
    state = codec.pack_state(sample_state())
    reply = codec.pack_turn_reply(sample_turn_result(), state)
    assert codec.reply_state(reply) == state  # the stored state's very bytes, not a re-encoding


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_replies_stored_before_packed_state_still_decode(result: Any) -> None:
    tag = {TurnResult: 1, ResetResult: 2, StateResult: 3}[type(result)]
    legacy = pack([tag, result.to_wire()])
    back = codec.unpack_reply(legacy, replayed=True)
    assert type(back) is type(result) and back.state == result.state


# Outcomes -----------------------------------------------------------------------------


ERROR_CLASSES: list[type[ConfabError]] = [
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    ConversationNotFound,
    FailedPrecondition,
    Overloaded,
    RateLimited,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    InternalError,
]


def test_every_error_subclass_is_covered() -> None:
    assert set(ERRORS_BY_REASON.values()) == set(ERROR_CLASSES)
    assert len({cls.reason for cls in ERROR_CLASSES}) == len(ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_outcome_round_trip(cls: type[ConfabError]) -> None:
    error = cls(f"something about {cls.__name__}: ünïcode ✓")
    wire = error_outcome(error)
    assert wire[0] == ERROR
    back = decode_outcome(through_msgpack(wire))
    assert type(back) is cls
    assert isinstance(back, ConfabError)
    assert back.reason == cls.reason
    assert back.message == error.message
    assert str(back) == error.message


def test_an_invalid_argument_keeps_its_field() -> None:
    back = decode_outcome(through_msgpack(error_outcome(InvalidArgument("bad", field="state"))))
    assert isinstance(back, InvalidArgument) and back.field == "state"


def test_unknown_error_reason_becomes_internal() -> None:
    back = decode_outcome([ERROR, "SOMETHING_NEW", "from a newer peer", ""])
    assert type(back) is InternalError
    assert back.message == "from a newer peer"


@pytest.mark.parametrize(
    ("trace", "budget_s"), [(None, None), ("00-trace", None), (None, 1.5), ("00-t", 0.25)]
)
def test_a_routed_command_is_read_by_the_shard_as_one_command_with_its_routing(
    trace: str | None, budget_s: float | None
) -> None:
    # The edge sends the command it was given and, beside it, the epoch and the time left;
    # the shard reads one Command carrying both, from the very bytes a stamped command made.
    made = Command(CommandKind.TURN, "m-9", KEY, sample_message(), trace)
    frame = RoutedBatch(4, [Routed(made, 7, budget_s)], True).to_frame()
    stamped = Command(CommandKind.TURN, "m-9", KEY, sample_message(), trace, budget_s, 7)
    assert pack(frame) == pack(CommandBatch(4, [stamped], True).to_frame())
    assert CommandBatch.from_frame(through_msgpack(frame)).commands == [stamped]
    assert made.epoch == 0 and made.budget_s is None  # sending it changed nothing


# Deltas and cancels ----------------------------------------------------------------------


@pytest.mark.parametrize(("trace", "budget_s"), [(None, None), ("00-t", None), (None, 2.0), ("00-t", 0.5)])
def test_a_command_that_wants_deltas_says_so_on_the_wire_and_a_plain_one_does_not(
    trace: str | None, budget_s: float | None
) -> None:
    wanting = Command(
        CommandKind.WIRE_TURN, "m-1", KEY, WireMessage(b"\x01", "message."), trace, wants_deltas=True
    )
    wire = through_msgpack(Routed(wanting, 3, budget_s).to_wire())
    assert len(wire) == 9 and wire[8] is True
    back = Command.from_wire(wire)
    assert back.wants_deltas and (back.trace, back.budget_s, back.epoch) == (trace, budget_s, 3)
    plain = Command(CommandKind.WIRE_TURN, "m-1", KEY, WireMessage(b"\x01", "message."), trace)
    plain_wire = through_msgpack(Routed(plain, 3, budget_s).to_wire())
    assert len(plain_wire) < 9  # unchanged for a command that does not
    assert not Command.from_wire(plain_wire).wants_deltas


@pytest.mark.parametrize("flag", [1, "yes", None, 0.0])
def test_a_wants_deltas_that_is_not_a_bool_is_a_shape_error(flag: Any) -> None:
    wire = Command(CommandKind.TURN, "m-1", KEY, sample_message(), wants_deltas=True).to_wire()
    wire[8] = flag
    with pytest.raises(ShapeError, match="wants_deltas must be bool"):
        Command.from_wire(through_msgpack(wire))


def test_delta_and_cancel_frames_round_trip_in_order() -> None:
    deltas = [
        (4, 0, TextDelta("g-1", 0, "Hel")),
        (4, 0, TextDelta("g-1", 1, "lo")),
        (9, 2, TextDelta("g-2", 0, "")),
    ]
    frame = deltas_frame([delta_entry_wire(b, p, d) for b, p, d in deltas])
    assert frame[0] == DELTA
    assert deltas_from_frame(through_msgpack(frame)) == deltas
    cancels = cancel_frame([(4, 0), (9, 2)])
    assert cancels[0] == CANCEL
    assert cancels_from_frame(through_msgpack(cancels)) == [(4, 0), (9, 2)]


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        ([DELTA], "must be \\[DELTA, entries\\]"),
        ([DELTA, {"a": 1}], "must be \\[DELTA, entries\\]"),
        ([DELTA, [[1, 0, "g", 0]]], "a delta must be"),
        ([DELTA, [[1, 0, "g", "0", "x"]]], "sequence must be int"),
        ([DELTA, [[1, 0, "g", 0, b"x"]]], "text must be str"),
        ([DELTA, [[1, True, "g", 0, "x"]]], "position must be int"),
        ([DELTA, [[1, 0, 7, 0, "x"]]], "stream id must be str"),
    ],
)
def test_a_malformed_delta_frame_is_a_shape_error(frame: list[Any], complaint: str) -> None:
    with pytest.raises(ShapeError, match=complaint):
        deltas_from_frame(through_msgpack(frame))


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        ([CANCEL, 5], "must be \\[CANCEL, commands\\]"),
        ([CANCEL, [[1]]], "must be \\[batch_id, position\\]"),
        ([CANCEL, [["1", 0]]], "batch id must be int"),
        ([CANCEL, [[1, None]]], "position must be int"),
    ],
)
def test_a_malformed_cancel_frame_is_a_shape_error(frame: list[Any], complaint: str) -> None:
    with pytest.raises(ShapeError, match=complaint):
        cancels_from_frame(through_msgpack(frame))
