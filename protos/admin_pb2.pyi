import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("index", "generation", "pid", "uptime_s", "resident_conversations", "mailbox_depth", "waiting_on_webhooks", "commands", "rss_bytes", "healthy", "error", "address", "messages_per_s", "last_heard_s", "host", "shard_id", "vshards", "held")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WAITING_ON_WEBHOOKS_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_PER_S_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_S_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    VSHARDS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    index: int
    generation: int
    pid: int
    uptime_s: float
    resident_conversations: int
    mailbox_depth: int
    waiting_on_webhooks: int
    commands: int
    rss_bytes: int
    healthy: bool
    error: str
    address: str
    messages_per_s: float
    last_heard_s: float
    host: str
    shard_id: str
    vshards: int
    held: _containers.RepeatedCompositeFieldContainer[VshardHolding]
    def __init__(self, index: _Optional[int] = ..., generation: _Optional[int] = ..., pid: _Optional[int] = ..., uptime_s: _Optional[float] = ..., resident_conversations: _Optional[int] = ..., mailbox_depth: _Optional[int] = ..., waiting_on_webhooks: _Optional[int] = ..., commands: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., healthy: _Optional[bool] = ..., error: _Optional[str] = ..., address: _Optional[str] = ..., messages_per_s: _Optional[float] = ..., last_heard_s: _Optional[float] = ..., host: _Optional[str] = ..., shard_id: _Optional[str] = ..., vshards: _Optional[int] = ..., held: _Optional[_Iterable[_Union[VshardHolding, _Mapping]]] = ...) -> None: ...

class VshardHolding(_message.Message):
    __slots__ = ("vshard", "epoch")
    VSHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    vshard: int
    epoch: int
    def __init__(self, vshard: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class HostInfo(_message.Message):
    __slots__ = ("host", "state", "heartbeat_age_s", "edge", "leader", "pid", "shards", "incarnation", "vshards")
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    VSHARDS_FIELD_NUMBER: _ClassVar[int]
    host: str
    state: str
    heartbeat_age_s: float
    edge: str
    leader: bool
    pid: int
    shards: int
    incarnation: int
    vshards: int
    def __init__(self, host: _Optional[str] = ..., state: _Optional[str] = ..., heartbeat_age_s: _Optional[float] = ..., edge: _Optional[str] = ..., leader: _Optional[bool] = ..., pid: _Optional[int] = ..., shards: _Optional[int] = ..., incarnation: _Optional[int] = ..., vshards: _Optional[int] = ...) -> None: ...

class VshardOwner(_message.Message):
    __slots__ = ("vshard", "shard_id", "epoch")
    VSHARD_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    vshard: int
    shard_id: str
    epoch: int
    def __init__(self, vshard: _Optional[int] = ..., shard_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class StoreInfo(_message.Message):
    __slots__ = ("path", "ok", "latency_ms")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    path: str
    ok: bool
    latency_ms: float
    def __init__(self, path: _Optional[str] = ..., ok: _Optional[bool] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("version", "started_at", "shards", "store", "shard_restarts", "hosts", "vshards", "complete", "this_host", "held_commands")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    SHARD_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    VSHARDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    THIS_HOST_FIELD_NUMBER: _ClassVar[int]
    HELD_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    started_at: _timestamp_pb2.Timestamp
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    store: StoreInfo
    shard_restarts: int
    hosts: _containers.RepeatedCompositeFieldContainer[HostInfo]
    vshards: _containers.RepeatedCompositeFieldContainer[VshardOwner]
    complete: bool
    this_host: str
    held_commands: int
    def __init__(self, version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., store: _Optional[_Union[StoreInfo, _Mapping]] = ..., shard_restarts: _Optional[int] = ..., hosts: _Optional[_Iterable[_Union[HostInfo, _Mapping]]] = ..., vshards: _Optional[_Iterable[_Union[VshardOwner, _Mapping]]] = ..., complete: _Optional[bool] = ..., this_host: _Optional[str] = ..., held_commands: _Optional[int] = ...) -> None: ...

class InspectConversationRequest(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "last_turns")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_TURNS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    last_turns: int
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., last_turns: _Optional[int] = ...) -> None: ...

class QueuedItem(_message.Message):
    __slots__ = ("message_id", "kind", "text")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    kind: str
    text: str
    def __init__(self, message_id: _Optional[str] = ..., kind: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class TurnSummary(_message.Message):
    __slots__ = ("seq", "message_id", "kind", "intent", "state_before", "state_after", "response", "duration_ms", "at", "actions", "input")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    STATE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    STATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    message_id: str
    kind: str
    intent: str
    state_before: str
    state_after: str
    response: str
    duration_ms: float
    at: _timestamp_pb2.Timestamp
    actions: _containers.RepeatedScalarFieldContainer[str]
    input: str
    def __init__(self, seq: _Optional[int] = ..., message_id: _Optional[str] = ..., kind: _Optional[str] = ..., intent: _Optional[str] = ..., state_before: _Optional[str] = ..., state_after: _Optional[str] = ..., response: _Optional[str] = ..., duration_ms: _Optional[float] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actions: _Optional[_Iterable[str]] = ..., input: _Optional[str] = ...) -> None: ...

class ConversationDetail(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "shard", "resident", "state", "mailbox_depth", "queued", "webhook_in_flight", "last_turns")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_TURNS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    shard: int
    resident: bool
    state: _struct_pb2.Struct
    mailbox_depth: int
    queued: _containers.RepeatedCompositeFieldContainer[QueuedItem]
    webhook_in_flight: str
    last_turns: _containers.RepeatedCompositeFieldContainer[TurnSummary]
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., shard: _Optional[int] = ..., resident: _Optional[bool] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mailbox_depth: _Optional[int] = ..., queued: _Optional[_Iterable[_Union[QueuedItem, _Mapping]]] = ..., webhook_in_flight: _Optional[str] = ..., last_turns: _Optional[_Iterable[_Union[TurnSummary, _Mapping]]] = ...) -> None: ...

class ConversationAction(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ForceStateRequest(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "state", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    state: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReloadFlowsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardAction(_message.Message):
    __slots__ = ("shard", "reason", "host")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    shard: int
    reason: str
    host: str
    def __init__(self, shard: _Optional[int] = ..., reason: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...

class ActionResult(_message.Message):
    __slots__ = ("ok", "message", "details")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    details: _struct_pb2.Struct
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("tenant_id", "state", "flow_id", "idle_longer_than_s", "in_handoff", "resident_only", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_LONGER_THAN_S_FIELD_NUMBER: _ClassVar[int]
    IN_HANDOFF_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    state: str
    flow_id: str
    idle_longer_than_s: float
    in_handoff: bool
    resident_only: bool
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., state: _Optional[str] = ..., flow_id: _Optional[str] = ..., idle_longer_than_s: _Optional[float] = ..., in_handoff: _Optional[bool] = ..., resident_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ConversationSummary(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "current_state", "flow_id", "flow_version", "message_count", "last_activity", "resident", "in_handoff", "shard")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    IN_HANDOFF_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    current_state: str
    flow_id: str
    flow_version: str
    message_count: int
    last_activity: _timestamp_pb2.Timestamp
    resident: bool
    in_handoff: bool
    shard: int
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., current_state: _Optional[str] = ..., flow_id: _Optional[str] = ..., flow_version: _Optional[str] = ..., message_count: _Optional[int] = ..., last_activity: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resident: _Optional[bool] = ..., in_handoff: _Optional[bool] = ..., shard: _Optional[int] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationSummary]
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[ConversationSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TailEventsRequest(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "event_types")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "tenant_id", "conversation_id", "shard", "at", "data")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    type: str
    tenant_id: str
    conversation_id: str
    shard: int
    at: _timestamp_pb2.Timestamp
    data: _struct_pb2.Struct
    def __init__(self, type: _Optional[str] = ..., tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., shard: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
