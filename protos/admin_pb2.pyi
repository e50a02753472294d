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
    __slots__ = ("tenant_id", "conversation_id", "shard", "resident", "state", "mailbox_depth", "queued", "webhook_in_flight", "last_turns", "webhook_waiting_s", "first_turn_pending")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_TURNS_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_WAITING_S_FIELD_NUMBER: _ClassVar[int]
    FIRST_TURN_PENDING_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    shard: int
    resident: bool
    state: _struct_pb2.Struct
    mailbox_depth: int
    queued: _containers.RepeatedCompositeFieldContainer[QueuedItem]
    webhook_in_flight: str
    last_turns: _containers.RepeatedCompositeFieldContainer[TurnSummary]
    webhook_waiting_s: float
    first_turn_pending: bool
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., shard: _Optional[int] = ..., resident: _Optional[bool] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mailbox_depth: _Optional[int] = ..., queued: _Optional[_Iterable[_Union[QueuedItem, _Mapping]]] = ..., webhook_in_flight: _Optional[str] = ..., last_turns: _Optional[_Iterable[_Union[TurnSummary, _Mapping]]] = ..., webhook_waiting_s: _Optional[float] = ..., first_turn_pending: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("tenant_id", "state", "flow_id", "idle_longer_than_s", "in_handoff", "resident_only", "page_size", "page_token", "waiting_on_webhook")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_LONGER_THAN_S_FIELD_NUMBER: _ClassVar[int]
    IN_HANDOFF_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WAITING_ON_WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    state: str
    flow_id: str
    idle_longer_than_s: float
    in_handoff: bool
    resident_only: bool
    page_size: int
    page_token: str
    waiting_on_webhook: bool
    def __init__(self, tenant_id: _Optional[str] = ..., state: _Optional[str] = ..., flow_id: _Optional[str] = ..., idle_longer_than_s: _Optional[float] = ..., in_handoff: _Optional[bool] = ..., resident_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., waiting_on_webhook: _Optional[bool] = ...) -> None: ...

class ConversationSummary(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "current_state", "flow_id", "flow_version", "message_count", "last_activity", "resident", "in_handoff", "shard", "webhook_waiting_s", "webhook", "mailbox")
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
    WEBHOOK_WAITING_S_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
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
    webhook_waiting_s: float
    webhook: str
    mailbox: int
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., current_state: _Optional[str] = ..., flow_id: _Optional[str] = ..., flow_version: _Optional[str] = ..., message_count: _Optional[int] = ..., last_activity: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resident: _Optional[bool] = ..., in_handoff: _Optional[bool] = ..., shard: _Optional[int] = ..., webhook_waiting_s: _Optional[float] = ..., webhook: _Optional[str] = ..., mailbox: _Optional[int] = ...) -> None: ...

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

class GetAnalyticsRequest(_message.Message):
    __slots__ = ("tenant_id", "flow_id", "since", "until", "bucket_s", "by_version")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    BY_VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    flow_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    bucket_s: int
    by_version: bool
    def __init__(self, tenant_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_s: _Optional[int] = ..., by_version: _Optional[bool] = ...) -> None: ...

class AnalyticsCounts(_message.Message):
    __slots__ = ("sessions_started", "turns", "completed", "abandoned", "handoffs", "fallbacks", "slot_reprompts", "slots_given_up", "webhook_calls", "webhook_failures", "generative_fallbacks", "generations", "generation_failures")
    SESSIONS_STARTED_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    HANDOFFS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    SLOT_REPROMPTS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_GIVEN_UP_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_CALLS_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FAILURES_FIELD_NUMBER: _ClassVar[int]
    GENERATIVE_FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FAILURES_FIELD_NUMBER: _ClassVar[int]
    sessions_started: int
    turns: int
    completed: int
    abandoned: int
    handoffs: int
    fallbacks: int
    slot_reprompts: int
    slots_given_up: int
    webhook_calls: int
    webhook_failures: int
    generative_fallbacks: int
    generations: int
    generation_failures: int
    def __init__(self, sessions_started: _Optional[int] = ..., turns: _Optional[int] = ..., completed: _Optional[int] = ..., abandoned: _Optional[int] = ..., handoffs: _Optional[int] = ..., fallbacks: _Optional[int] = ..., slot_reprompts: _Optional[int] = ..., slots_given_up: _Optional[int] = ..., webhook_calls: _Optional[int] = ..., webhook_failures: _Optional[int] = ..., generative_fallbacks: _Optional[int] = ..., generations: _Optional[int] = ..., generation_failures: _Optional[int] = ...) -> None: ...

class StateAnalytics(_message.Message):
    __slots__ = ("state", "entered", "turns", "fallbacks", "sessions_ended", "abandoned", "handoffs")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENTERED_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_ENDED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    HANDOFFS_FIELD_NUMBER: _ClassVar[int]
    state: str
    entered: int
    turns: int
    fallbacks: int
    sessions_ended: int
    abandoned: int
    handoffs: int
    def __init__(self, state: _Optional[str] = ..., entered: _Optional[int] = ..., turns: _Optional[int] = ..., fallbacks: _Optional[int] = ..., sessions_ended: _Optional[int] = ..., abandoned: _Optional[int] = ..., handoffs: _Optional[int] = ...) -> None: ...

class TransitionCount(_message.Message):
    __slots__ = ("from_state", "to_state", "count")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    from_state: str
    to_state: str
    count: int
    def __init__(self, from_state: _Optional[str] = ..., to_state: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CountByName(_message.Message):
    __slots__ = ("name", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MissedUtterance(_message.Message):
    __slots__ = ("text", "count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    count: int
    def __init__(self, text: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class WebhookAnalytics(_message.Message):
    __slots__ = ("name", "calls", "failures", "timeouts", "abandoned", "p50_ms", "p95_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    calls: int
    failures: int
    timeouts: int
    abandoned: int
    p50_ms: float
    p95_ms: float
    def __init__(self, name: _Optional[str] = ..., calls: _Optional[int] = ..., failures: _Optional[int] = ..., timeouts: _Optional[int] = ..., abandoned: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ...) -> None: ...

class VariantOutcome(_message.Message):
    __slots__ = ("experiment", "variant", "sessions", "completed", "handoffs")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    HANDOFFS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    variant: str
    sessions: int
    completed: int
    handoffs: int
    def __init__(self, experiment: _Optional[str] = ..., variant: _Optional[str] = ..., sessions: _Optional[int] = ..., completed: _Optional[int] = ..., handoffs: _Optional[int] = ...) -> None: ...

class AnalyticsBucket(_message.Message):
    __slots__ = ("start", "counts")
    START_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    counts: AnalyticsCounts
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., counts: _Optional[_Union[AnalyticsCounts, _Mapping]] = ...) -> None: ...

class FlowAnalytics(_message.Message):
    __slots__ = ("flow_id", "flow_version", "totals", "states", "transitions", "handoff_reasons", "missed_utterances", "webhooks", "variants", "series", "slots_reprompted", "slots_given_up")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_REASONS_FIELD_NUMBER: _ClassVar[int]
    MISSED_UTTERANCES_FIELD_NUMBER: _ClassVar[int]
    WEBHOOKS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_REPROMPTED_FIELD_NUMBER: _ClassVar[int]
    SLOTS_GIVEN_UP_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    flow_version: str
    totals: AnalyticsCounts
    states: _containers.RepeatedCompositeFieldContainer[StateAnalytics]
    transitions: _containers.RepeatedCompositeFieldContainer[TransitionCount]
    handoff_reasons: _containers.RepeatedCompositeFieldContainer[CountByName]
    missed_utterances: _containers.RepeatedCompositeFieldContainer[MissedUtterance]
    webhooks: _containers.RepeatedCompositeFieldContainer[WebhookAnalytics]
    variants: _containers.RepeatedCompositeFieldContainer[VariantOutcome]
    series: _containers.RepeatedCompositeFieldContainer[AnalyticsBucket]
    slots_reprompted: _containers.RepeatedCompositeFieldContainer[CountByName]
    slots_given_up: _containers.RepeatedCompositeFieldContainer[CountByName]
    def __init__(self, flow_id: _Optional[str] = ..., flow_version: _Optional[str] = ..., totals: _Optional[_Union[AnalyticsCounts, _Mapping]] = ..., states: _Optional[_Iterable[_Union[StateAnalytics, _Mapping]]] = ..., transitions: _Optional[_Iterable[_Union[TransitionCount, _Mapping]]] = ..., handoff_reasons: _Optional[_Iterable[_Union[CountByName, _Mapping]]] = ..., missed_utterances: _Optional[_Iterable[_Union[MissedUtterance, _Mapping]]] = ..., webhooks: _Optional[_Iterable[_Union[WebhookAnalytics, _Mapping]]] = ..., variants: _Optional[_Iterable[_Union[VariantOutcome, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[AnalyticsBucket, _Mapping]]] = ..., slots_reprompted: _Optional[_Iterable[_Union[CountByName, _Mapping]]] = ..., slots_given_up: _Optional[_Iterable[_Union[CountByName, _Mapping]]] = ...) -> None: ...

class AnalyticsReport(_message.Message):
    __slots__ = ("tenant_id", "since", "until", "bucket_s", "flows")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    bucket_s: int
    flows: _containers.RepeatedCompositeFieldContainer[FlowAnalytics]
    def __init__(self, tenant_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_s: _Optional[int] = ..., flows: _Optional[_Iterable[_Union[FlowAnalytics, _Mapping]]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("tenant_id", "conversation_id", "text", "agent", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    conversation_id: str
    text: str
    agent: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., text: _Optional[str] = ..., agent: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
