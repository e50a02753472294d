import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from confab.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthCheckRequest(_message.Message):
    __slots__ = ("service", "metadata")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    service: str
    metadata: _common_pb2.Metadata
    def __init__(self, service: _Optional[str] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ("status", "service", "timestamp", "details")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.HealthStatus
    service: str
    timestamp: _timestamp_pb2.Timestamp
    details: _struct_pb2.Struct
    def __init__(self, status: _Optional[_Union[_common_pb2.HealthStatus, str]] = ..., service: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DetailedHealthRequest(_message.Message):
    __slots__ = ("service", "include_dependencies", "include_metrics", "metadata")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METRICS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    service: str
    include_dependencies: bool
    include_metrics: bool
    metadata: _common_pb2.Metadata
    def __init__(self, service: _Optional[str] = ..., include_dependencies: _Optional[bool] = ..., include_metrics: _Optional[bool] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class DetailedHealthResponse(_message.Message):
    __slots__ = ("status", "service", "version", "timestamp", "uptime_since", "dependencies", "resource_usage", "metrics", "details")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SINCE_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_USAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.HealthStatus
    service: str
    version: str
    timestamp: _timestamp_pb2.Timestamp
    uptime_since: _timestamp_pb2.Timestamp
    dependencies: _containers.RepeatedCompositeFieldContainer[DependencyHealth]
    resource_usage: ResourceUsage
    metrics: _struct_pb2.Struct
    details: _struct_pb2.Struct
    def __init__(self, status: _Optional[_Union[_common_pb2.HealthStatus, str]] = ..., service: _Optional[str] = ..., version: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dependencies: _Optional[_Iterable[_Union[DependencyHealth, _Mapping]]] = ..., resource_usage: _Optional[_Union[ResourceUsage, _Mapping]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DependencyHealth(_message.Message):
    __slots__ = ("name", "type", "status", "response_time_ms", "error_message", "last_check")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    status: _common_pb2.HealthStatus
    response_time_ms: int
    error_message: str
    last_check: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.HealthStatus, str]] = ..., response_time_ms: _Optional[int] = ..., error_message: _Optional[str] = ..., last_check: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("cpu_percent", "memory_used_bytes", "memory_total_bytes", "memory_percent", "active_connections", "goroutines", "disk_usage")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    GOROUTINES_FIELD_NUMBER: _ClassVar[int]
    DISK_USAGE_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    memory_percent: float
    active_connections: int
    goroutines: int
    disk_usage: _struct_pb2.Struct
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_percent: _Optional[float] = ..., active_connections: _Optional[int] = ..., goroutines: _Optional[int] = ..., disk_usage: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
