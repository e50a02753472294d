import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNKNOWN: _ClassVar[HealthStatus]
    HEALTH_SERVING: _ClassVar[HealthStatus]
    HEALTH_NOT_SERVING: _ClassVar[HealthStatus]
    HEALTH_SERVICE_UNKNOWN: _ClassVar[HealthStatus]

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNKNOWN: _ClassVar[MessageType]
    MESSAGE_TYPE_TEXT: _ClassVar[MessageType]
    MESSAGE_TYPE_IMAGE: _ClassVar[MessageType]
    MESSAGE_TYPE_FILE: _ClassVar[MessageType]
    MESSAGE_TYPE_AUDIO: _ClassVar[MessageType]
    MESSAGE_TYPE_VIDEO: _ClassVar[MessageType]
    MESSAGE_TYPE_LOCATION: _ClassVar[MessageType]
    MESSAGE_TYPE_QUICK_REPLY: _ClassVar[MessageType]
    MESSAGE_TYPE_CAROUSEL: _ClassVar[MessageType]
    MESSAGE_TYPE_FORM: _ClassVar[MessageType]
    MESSAGE_TYPE_SYSTEM: _ClassVar[MessageType]

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNKNOWN: _ClassVar[Channel]
    CHANNEL_WEB: _ClassVar[Channel]
    CHANNEL_WHATSAPP: _ClassVar[Channel]
    CHANNEL_MESSENGER: _ClassVar[Channel]
    CHANNEL_SLACK: _ClassVar[Channel]
    CHANNEL_TEAMS: _ClassVar[Channel]
    CHANNEL_VOICE: _ClassVar[Channel]
    CHANNEL_SMS: _ClassVar[Channel]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNKNOWN: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_URGENT: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]
HEALTH_UNKNOWN: HealthStatus
HEALTH_SERVING: HealthStatus
HEALTH_NOT_SERVING: HealthStatus
HEALTH_SERVICE_UNKNOWN: HealthStatus
MESSAGE_TYPE_UNKNOWN: MessageType
MESSAGE_TYPE_TEXT: MessageType
MESSAGE_TYPE_IMAGE: MessageType
MESSAGE_TYPE_FILE: MessageType
MESSAGE_TYPE_AUDIO: MessageType
MESSAGE_TYPE_VIDEO: MessageType
MESSAGE_TYPE_LOCATION: MessageType
MESSAGE_TYPE_QUICK_REPLY: MessageType
MESSAGE_TYPE_CAROUSEL: MessageType
MESSAGE_TYPE_FORM: MessageType
MESSAGE_TYPE_SYSTEM: MessageType
CHANNEL_UNKNOWN: Channel
CHANNEL_WEB: Channel
CHANNEL_WHATSAPP: Channel
CHANNEL_MESSENGER: Channel
CHANNEL_SLACK: Channel
CHANNEL_TEAMS: Channel
CHANNEL_VOICE: Channel
CHANNEL_SMS: Channel
PRIORITY_UNKNOWN: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_URGENT: Priority
PRIORITY_CRITICAL: Priority

class Status(_message.Message):
    __slots__ = ("success", "message", "error_code", "details")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error_code: str
    details: _struct_pb2.Struct
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error_code: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("request_id", "timestamp", "version", "processing_time_ms", "trace_id", "custom_metadata")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_METADATA_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    timestamp: _timestamp_pb2.Timestamp
    version: str
    processing_time_ms: int
    trace_id: str
    custom_metadata: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., processing_time_ms: _Optional[int] = ..., trace_id: _Optional[str] = ..., custom_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TenantContext(_message.Message):
    __slots__ = ("tenant_id", "user_id", "session_id", "organization_id", "roles", "permissions")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    session_id: str
    organization_id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., permissions: _Optional[_Iterable[str]] = ...) -> None: ...

class Pagination(_message.Message):
    __slots__ = ("page", "page_size", "total_count", "has_next", "has_previous")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    HAS_NEXT_FIELD_NUMBER: _ClassVar[int]
    HAS_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    page: int
    page_size: int
    total_count: int
    has_next: bool
    has_previous: bool
    def __init__(self, page: _Optional[int] = ..., page_size: _Optional[int] = ..., total_count: _Optional[int] = ..., has_next: _Optional[bool] = ..., has_previous: _Optional[bool] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message", "field", "context")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    context: _struct_pb2.Struct
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PerformanceMetrics(_message.Message):
    __slots__ = ("execution_time_ms", "queue_time_ms", "memory_used_bytes", "cpu_time_ms", "cache_status", "custom_metrics")
    EXECUTION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATUS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_METRICS_FIELD_NUMBER: _ClassVar[int]
    execution_time_ms: int
    queue_time_ms: int
    memory_used_bytes: int
    cpu_time_ms: int
    cache_status: str
    custom_metrics: _struct_pb2.Struct
    def __init__(self, execution_time_ms: _Optional[int] = ..., queue_time_ms: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., cpu_time_ms: _Optional[int] = ..., cache_status: _Optional[str] = ..., custom_metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
