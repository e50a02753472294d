"""The Admin API's answers as JSON for scripts (``--json``), every value of the type it has.

Protobuf's JSON mapping is not quite that: it writes 64-bit integers as strings (a
turn's ``seq`` is ``"1"``), and every number in a ``google.protobuf.Struct`` is a double
(a tail event's ``message_count`` is ``3.0``). Here integers are integers wherever the
schema says so or the number is whole inside a Struct, and the schema's doubles (timings,
rates) are rounded to :data:`DECIMALS` places: a turn's ``duration_ms`` does not carry 16
digits of noise. Other numbers inside a Struct (a slot's value) are left as they are.
Fields left at their defaults are written too: a script reading ``index`` or
``mailbox_depth`` must find them.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

DECIMALS = 3  # a thousandth of a millisecond, of a second, of a message per second
STRUCT_TYPES = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
INTEGER_64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
DOUBLE_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as JSON-ready data, with the types its schema gives each field."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _typed(data, message.DESCRIPTOR)


def to_json(message: Message, *, indent: int | None = 2, only: tuple[str, ...] = ()) -> str:
    """``message`` as JSON text: indented for a person, or on one line (``indent=None``);
    with ``only``, just those fields."""
    separators = None if indent is not None else (",", ":")
    data = to_dict(message)
    if only:
        data = {name: value for name, value in data.items() if name in only}
    return json.dumps(data, indent=indent, separators=separators, sort_keys=True, ensure_ascii=False)


def _typed(data: dict[str, Any], descriptor: Descriptor | Any) -> dict[str, Any]:
    # Any: the C implementation's descriptors are another class with the same interface.
    for field in descriptor.fields:
        if field.name in data:
            data[field.name] = _field_value(data[field.name], field)
    return data


def _field_value(item: Any, field: FieldDescriptor) -> Any:
    if field.is_repeated and isinstance(item, list):
        return [_one_value(i, field) for i in item]
    return _one_value(item, field)


def _one_value(item: Any, field: FieldDescriptor) -> Any:
    message_type = field.message_type
    if message_type is not None:
        if message_type.full_name in STRUCT_TYPES:
            return struct_numbers(item)
        if isinstance(item, dict) and not message_type.full_name.startswith("google.protobuf."):
            return _typed(item, message_type)
        return item  # a Timestamp or Duration keeps its RFC 3339 text
    if field.type in INTEGER_64_TYPES and isinstance(item, str):
        return int(item)
    if field.type in DOUBLE_TYPES and isinstance(item, float):
        return round(item, DECIMALS)
    return item


def struct_numbers(item: Any) -> Any:
    """Numbers inside a Struct: whole ones (counts, quantities) as the integers they are."""
    if isinstance(item, float) and item.is_integer():
        return int(item)
    if isinstance(item, list):
        return [struct_numbers(i) for i in item]
    if isinstance(item, dict):
        return {k: struct_numbers(v) for k, v in item.items()}
    return item
