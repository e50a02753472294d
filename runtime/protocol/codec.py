"""Every binary format Confab writes, in one place: msgpack, and the frames that carry it.

- **Records** are positional lists (``to_wire()`` of the domain dataclasses and of
  ``protocol.records``), packed with msgpack. New fields are appended, so older
  readers keep working.
- **A conversation's state** is packed once per turn (:func:`pack_state`); those bytes
  are what the store keeps, what the turn's reply embeds, and what the edge unpacks.
- **A reply** (:func:`pack_turn_reply` and friends) is what one command answered. The
  shard stores it with the turn (a re-sent command is answered from it) and sends
  the same bytes to the edge, so a result is serialized once, not per hop.
- **Frames** on the data plane: a 4-byte big-endian length, then one msgpack value.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from confab.runtime.model import (
    Content,
    ConversationState,
    InboundMessage,
    JsonDict,
    ResetResult,
    StateResult,
    TurnResult,
)

# Reply tags. 1..3 are the replies stored before replies embedded packed state:
# still read, so a re-sent command is answered after an upgrade too.
_LEGACY_TURN, _LEGACY_RESET, _LEGACY_STATE = 1, 2, 3
TURN_REPLY, RESET_REPLY, STATE_REPLY = 11, 12, 13

Result = TurnResult | ResetResult | StateResult


def pack(value: Any) -> bytes:
    # msgpack has no type information: this is where what packb returns gets its type.
    packed: bytes = msgpack.packb(value)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data)


# State and replies -----------------------------------------------------------------------


def pack_state(state: ConversationState) -> bytes:
    return pack(state.to_wire())


def unpack_state(data: bytes) -> ConversationState:
    return ConversationState.from_wire(unpack(data))


def pack_turn_reply(result: TurnResult, state: bytes) -> bytes:
    return pack(
        [
            TURN_REPLY,
            result.response.to_wire(),
            state,
            result.context_updates,
            result.actions_performed,
            result.ab_variant,
            result.queue_time_ms,
            result.execution_time_ms,
            result.state_before,
        ]
    )


def pack_reset_reply(previous_state: str, state: bytes) -> bytes:
    return pack([RESET_REPLY, previous_state, state])


def pack_state_reply(state: bytes) -> bytes:
    return pack([STATE_REPLY, state])


def unpack_reply(data: bytes, *, replayed: bool = False) -> Result:
    """A reply as its domain record; ``replayed`` marks the answer to a command seen before."""
    w = unpack(data)
    tag = w[0]
    if tag == TURN_REPLY:
        return TurnResult(
            Content.from_wire(w[1]), unpack_state(w[2]), w[3], w[4], w[5], w[6], w[7], replayed, w[8]
        )
    if tag == RESET_REPLY:
        return ResetResult(w[1], unpack_state(w[2]), replayed)
    if tag == STATE_REPLY:
        return StateResult(unpack_state(w[1]))
    if tag == _LEGACY_TURN:
        turn = TurnResult.from_wire(w[1])
        turn.replayed = replayed
        return turn
    if tag == _LEGACY_RESET:
        reset = ResetResult.from_wire(w[1])
        reset.replayed = replayed
        return reset
    if tag == _LEGACY_STATE:
        return StateResult.from_wire(w[1])
    raise ValueError(f"unknown reply tag {tag!r}")


def reply_state_before(data: bytes) -> str:
    """The state a turn's reply says its conversation was in before the turn, without
    decoding the reply's content or state."""
    w = unpack(data)
    if w[0] == TURN_REPLY:
        before: str = w[8]
        return before
    result = unpack_reply(data)
    return result.state_before if isinstance(result, TurnResult) else ""


def reply_state(data: bytes) -> bytes | None:
    """The packed state a reply carries (None for a legacy reply), without decoding it."""
    w = unpack(data)
    state: bytes
    if w[0] in (TURN_REPLY, RESET_REPLY):
        state = w[2]
    elif w[0] == STATE_REPLY:
        state = w[1]
    else:
        return None
    return state


# Recorded turns ---------------------------------------------------------------------------


def pack_recorded(message: InboundMessage, now: float, webhook_results: dict[str, JsonDict]) -> bytes:
    """What a turn answered, as kept for replays: the message, its time, its webhook answers."""
    return pack([message.to_wire(), now, webhook_results])


def unpack_recorded(data: bytes) -> tuple[InboundMessage, float, dict[str, JsonDict]]:
    w = unpack(data)
    return InboundMessage.from_wire(w[0]), w[1], w[2]


# Frames ----------------------------------------------------------------------------------

_LENGTH = struct.Struct(">I")
HEADER_BYTES = _LENGTH.size
# A frame larger than this is a protocol error (a peer that is not a Confab process,
# or a corrupt stream): the connection is dropped rather than a buffer grown without end.
# The data plane's own limit is ``data_plane.max_frame_bytes`` (security.DataPlaneSettings).
MAX_FRAME_BYTES = 16 * 1024 * 1024


class FrameError(ValueError):
    pass


def frame(value: Any) -> bytes:
    body: bytes = msgpack.packb(value)
    return _LENGTH.pack(len(body)) + body


def frame_length(header: bytes, max_frame_bytes: int = MAX_FRAME_BYTES) -> int:
    """The length a frame's ``HEADER_BYTES`` announce; FrameError when it is over the limit
    (checked before the body is read, so that a lying header costs nothing)."""
    (length,) = _LENGTH.unpack(header)
    if length > max_frame_bytes:
        raise FrameError(f"a frame of {length} bytes is larger than {max_frame_bytes}")
    size: int = length
    return size


class FrameDecoder:
    """Turns a byte stream into the values of its frames, however the bytes were split."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        values: list[Any] = []
        offset, end = 0, len(buffer)
        while end - offset >= HEADER_BYTES:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self._max:
                raise FrameError(f"a frame of {length} bytes is larger than {self._max}")
            start = offset + HEADER_BYTES
            if end - start < length:
                break
            values.append(msgpack.unpackb(buffer[start : start + length]))
            offset = start + length
        if offset:
            del buffer[:offset]
        return values
