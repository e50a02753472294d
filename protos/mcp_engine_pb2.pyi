import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from confab.protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageContent(_message.Message):
    __slots__ = ("type", "text", "payload", "language", "media", "location", "quick_replies", "buttons", "carousel", "form", "metadata")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    QUICK_REPLIES_FIELD_NUMBER: _ClassVar[int]
    BUTTONS_FIELD_NUMBER: _ClassVar[int]
    CAROUSEL_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    type: _common_pb2.MessageType
    text: str
    payload: str
    language: str
    media: MediaContent
    location: LocationContent
    quick_replies: _containers.RepeatedCompositeFieldContainer[QuickReply]
    buttons: _containers.RepeatedCompositeFieldContainer[Button]
    carousel: _containers.RepeatedCompositeFieldContainer[CarouselCard]
    form: FormContent
    metadata: _struct_pb2.Struct
    def __init__(self, type: _Optional[_Union[_common_pb2.MessageType, str]] = ..., text: _Optional[str] = ..., payload: _Optional[str] = ..., language: _Optional[str] = ..., media: _Optional[_Union[MediaContent, _Mapping]] = ..., location: _Optional[_Union[LocationContent, _Mapping]] = ..., quick_replies: _Optional[_Iterable[_Union[QuickReply, _Mapping]]] = ..., buttons: _Optional[_Iterable[_Union[Button, _Mapping]]] = ..., carousel: _Optional[_Iterable[_Union[CarouselCard, _Mapping]]] = ..., form: _Optional[_Union[FormContent, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class MediaContent(_message.Message):
    __slots__ = ("url", "secure_url", "mime_type", "size_bytes", "duration_ms", "dimensions", "thumbnail_url", "alt_text", "caption", "transcript", "transcript_confidence", "ocr_text", "ocr_confidence", "detected_objects")
    class Dimensions(_message.Message):
        __slots__ = ("width", "height")
        WIDTH_FIELD_NUMBER: _ClassVar[int]
        HEIGHT_FIELD_NUMBER: _ClassVar[int]
        width: int
        height: int
        def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    SECURE_URL_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_URL_FIELD_NUMBER: _ClassVar[int]
    ALT_TEXT_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    OCR_TEXT_FIELD_NUMBER: _ClassVar[int]
    OCR_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    url: str
    secure_url: str
    mime_type: str
    size_bytes: int
    duration_ms: int
    dimensions: MediaContent.Dimensions
    thumbnail_url: str
    alt_text: str
    caption: str
    transcript: str
    transcript_confidence: float
    ocr_text: str
    ocr_confidence: float
    detected_objects: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, url: _Optional[str] = ..., secure_url: _Optional[str] = ..., mime_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., duration_ms: _Optional[int] = ..., dimensions: _Optional[_Union[MediaContent.Dimensions, _Mapping]] = ..., thumbnail_url: _Optional[str] = ..., alt_text: _Optional[str] = ..., caption: _Optional[str] = ..., transcript: _Optional[str] = ..., transcript_confidence: _Optional[float] = ..., ocr_text: _Optional[str] = ..., ocr_confidence: _Optional[float] = ..., detected_objects: _Optional[_Iterable[str]] = ...) -> None: ...

class LocationContent(_message.Message):
    __slots__ = ("latitude", "longitude", "accuracy_meters", "address", "place_name", "place_id")
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_METERS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PLACE_NAME_FIELD_NUMBER: _ClassVar[int]
    PLACE_ID_FIELD_NUMBER: _ClassVar[int]
    latitude: float
    longitude: float
    accuracy_meters: int
    address: str
    place_name: str
    place_id: str
    def __init__(self, latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., accuracy_meters: _Optional[int] = ..., address: _Optional[str] = ..., place_name: _Optional[str] = ..., place_id: _Optional[str] = ...) -> None: ...

class QuickReply(_message.Message):
    __slots__ = ("title", "payload", "content_type", "clicked", "click_timestamp")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLICKED_FIELD_NUMBER: _ClassVar[int]
    CLICK_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    title: str
    payload: str
    content_type: str
    clicked: bool
    click_timestamp: _timestamp_pb2.Timestamp
    def __init__(self, title: _Optional[str] = ..., payload: _Optional[str] = ..., content_type: _Optional[str] = ..., clicked: _Optional[bool] = ..., click_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Button(_message.Message):
    __slots__ = ("type", "title", "payload", "url", "clicked", "click_timestamp")
    class ButtonType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BUTTON_TYPE_UNKNOWN: _ClassVar[Button.ButtonType]
        BUTTON_TYPE_POSTBACK: _ClassVar[Button.ButtonType]
        BUTTON_TYPE_URL: _ClassVar[Button.ButtonType]
        BUTTON_TYPE_PHONE: _ClassVar[Button.ButtonType]
        BUTTON_TYPE_SHARE: _ClassVar[Button.ButtonType]
        BUTTON_TYPE_LOGIN: _ClassVar[Button.ButtonType]
    BUTTON_TYPE_UNKNOWN: Button.ButtonType
    BUTTON_TYPE_POSTBACK: Button.ButtonType
    BUTTON_TYPE_URL: Button.ButtonType
    BUTTON_TYPE_PHONE: Button.ButtonType
    BUTTON_TYPE_SHARE: Button.ButtonType
    BUTTON_TYPE_LOGIN: Button.ButtonType
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CLICKED_FIELD_NUMBER: _ClassVar[int]
    CLICK_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    type: Button.ButtonType
    title: str
    payload: str
    url: str
    clicked: bool
    click_timestamp: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[_Union[Button.ButtonType, str]] = ..., title: _Optional[str] = ..., payload: _Optional[str] = ..., url: _Optional[str] = ..., clicked: _Optional[bool] = ..., click_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CarouselCard(_message.Message):
    __slots__ = ("title", "subtitle", "image_url", "buttons")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUBTITLE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    BUTTONS_FIELD_NUMBER: _ClassVar[int]
    title: str
    subtitle: str
    image_url: str
    buttons: _containers.RepeatedCompositeFieldContainer[Button]
    def __init__(self, title: _Optional[str] = ..., subtitle: _Optional[str] = ..., image_url: _Optional[str] = ..., buttons: _Optional[_Iterable[_Union[Button, _Mapping]]] = ...) -> None: ...

class FormContent(_message.Message):
    __slots__ = ("form_id", "form_data", "validation_status", "submitted_at")
    FORM_ID_FIELD_NUMBER: _ClassVar[int]
    FORM_DATA_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    form_id: str
    form_data: _struct_pb2.Struct
    validation_status: str
    submitted_at: _timestamp_pb2.Timestamp
    def __init__(self, form_id: _Optional[str] = ..., form_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., validation_status: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProcessingHints(_message.Message):
    __slots__ = ("priority", "expected_response_type", "bypass_automation", "require_human_review", "bypass_cache", "force_flow", "custom_hints")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_RESPONSE_TYPE_FIELD_NUMBER: _ClassVar[int]
    BYPASS_AUTOMATION_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_HUMAN_REVIEW_FIELD_NUMBER: _ClassVar[int]
    BYPASS_CACHE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FLOW_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_HINTS_FIELD_NUMBER: _ClassVar[int]
    priority: _common_pb2.Priority
    expected_response_type: str
    bypass_automation: bool
    require_human_review: bool
    bypass_cache: bool
    force_flow: str
    custom_hints: _struct_pb2.Struct
    def __init__(self, priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., expected_response_type: _Optional[str] = ..., bypass_automation: _Optional[bool] = ..., require_human_review: _Optional[bool] = ..., bypass_cache: _Optional[bool] = ..., force_flow: _Optional[str] = ..., custom_hints: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ConversationState(_message.Message):
    __slots__ = ("current_state", "flow_id", "flow_version", "previous_states", "slots", "variables", "user_profile", "intent_history", "current_intent", "intent_confidence", "created_at", "last_activity", "message_count", "error_count")
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    USER_PROFILE_FIELD_NUMBER: _ClassVar[int]
    INTENT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    INTENT_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    current_state: str
    flow_id: str
    flow_version: str
    previous_states: _containers.RepeatedScalarFieldContainer[str]
    slots: _struct_pb2.Struct
    variables: _struct_pb2.Struct
    user_profile: _struct_pb2.Struct
    intent_history: _containers.RepeatedScalarFieldContainer[str]
    current_intent: str
    intent_confidence: float
    created_at: _timestamp_pb2.Timestamp
    last_activity: _timestamp_pb2.Timestamp
    message_count: int
    error_count: int
    def __init__(self, current_state: _Optional[str] = ..., flow_id: _Optional[str] = ..., flow_version: _Optional[str] = ..., previous_states: _Optional[_Iterable[str]] = ..., slots: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., variables: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., user_profile: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., intent_history: _Optional[_Iterable[str]] = ..., current_intent: _Optional[str] = ..., intent_confidence: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message_count: _Optional[int] = ..., error_count: _Optional[int] = ...) -> None: ...

class ProcessMessageRequest(_message.Message):
    __slots__ = ("tenant_context", "conversation_id", "user_id", "channel", "content", "session_id", "processing_hints", "metadata")
    TENANT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_HINTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_context: _common_pb2.TenantContext
    conversation_id: str
    user_id: str
    channel: _common_pb2.Channel
    content: MessageContent
    session_id: str
    processing_hints: ProcessingHints
    metadata: _common_pb2.Metadata
    def __init__(self, tenant_context: _Optional[_Union[_common_pb2.TenantContext, _Mapping]] = ..., conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., content: _Optional[_Union[MessageContent, _Mapping]] = ..., session_id: _Optional[str] = ..., processing_hints: _Optional[_Union[ProcessingHints, _Mapping]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class GetConversationStateRequest(_message.Message):
    __slots__ = ("tenant_context", "conversation_id", "metadata")
    TENANT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_context: _common_pb2.TenantContext
    conversation_id: str
    metadata: _common_pb2.Metadata
    def __init__(self, tenant_context: _Optional[_Union[_common_pb2.TenantContext, _Mapping]] = ..., conversation_id: _Optional[str] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class ResetConversationRequest(_message.Message):
    __slots__ = ("tenant_context", "conversation_id", "reason", "metadata")
    TENANT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_context: _common_pb2.TenantContext
    conversation_id: str
    reason: str
    metadata: _common_pb2.Metadata
    def __init__(self, tenant_context: _Optional[_Union[_common_pb2.TenantContext, _Mapping]] = ..., conversation_id: _Optional[str] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class BatchProcessMessagesRequest(_message.Message):
    __slots__ = ("tenant_context", "messages", "parallel_processing", "max_concurrency", "metadata")
    TENANT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_PROCESSING_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_context: _common_pb2.TenantContext
    messages: _containers.RepeatedCompositeFieldContainer[ProcessMessageRequest]
    parallel_processing: bool
    max_concurrency: int
    metadata: _common_pb2.Metadata
    def __init__(self, tenant_context: _Optional[_Union[_common_pb2.TenantContext, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[ProcessMessageRequest, _Mapping]]] = ..., parallel_processing: _Optional[bool] = ..., max_concurrency: _Optional[int] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("tenant_context", "metric_names", "start_time", "end_time", "granularity", "metadata")
    TENANT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_context: _common_pb2.TenantContext
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    granularity: str
    metadata: _common_pb2.Metadata
    def __init__(self, tenant_context: _Optional[_Union[_common_pb2.TenantContext, _Mapping]] = ..., metric_names: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granularity: _Optional[str] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class ProcessMessageResponse(_message.Message):
    __slots__ = ("status", "conversation_id", "current_state", "response", "context_updates", "actions_performed", "conversation_state", "performance_metrics", "ab_variant", "metadata", "turn")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_PERFORMED_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_STATE_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRICS_FIELD_NUMBER: _ClassVar[int]
    AB_VARIANT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.Status
    conversation_id: str
    current_state: str
    response: MessageContent
    context_updates: _struct_pb2.Struct
    actions_performed: _containers.RepeatedScalarFieldContainer[str]
    conversation_state: ConversationState
    performance_metrics: _common_pb2.PerformanceMetrics
    ab_variant: str
    metadata: _common_pb2.Metadata
    turn: int
    def __init__(self, status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., conversation_id: _Optional[str] = ..., current_state: _Optional[str] = ..., response: _Optional[_Union[MessageContent, _Mapping]] = ..., context_updates: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actions_performed: _Optional[_Iterable[str]] = ..., conversation_state: _Optional[_Union[ConversationState, _Mapping]] = ..., performance_metrics: _Optional[_Union[_common_pb2.PerformanceMetrics, _Mapping]] = ..., ab_variant: _Optional[str] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ..., turn: _Optional[int] = ...) -> None: ...

class GetConversationStateResponse(_message.Message):
    __slots__ = ("status", "conversation_state", "performance_metrics", "metadata")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_STATE_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRICS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.Status
    conversation_state: ConversationState
    performance_metrics: _common_pb2.PerformanceMetrics
    metadata: _common_pb2.Metadata
    def __init__(self, status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., conversation_state: _Optional[_Union[ConversationState, _Mapping]] = ..., performance_metrics: _Optional[_Union[_common_pb2.PerformanceMetrics, _Mapping]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class ResetConversationResponse(_message.Message):
    __slots__ = ("status", "conversation_id", "previous_state", "performance_metrics", "metadata")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRICS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.Status
    conversation_id: str
    previous_state: str
    performance_metrics: _common_pb2.PerformanceMetrics
    metadata: _common_pb2.Metadata
    def __init__(self, status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., conversation_id: _Optional[str] = ..., previous_state: _Optional[str] = ..., performance_metrics: _Optional[_Union[_common_pb2.PerformanceMetrics, _Mapping]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class BatchProcessMessagesResponse(_message.Message):
    __slots__ = ("status", "responses", "successful_count", "failed_count", "performance_metrics", "metadata")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRICS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.Status
    responses: _containers.RepeatedCompositeFieldContainer[ProcessMessageResponse]
    successful_count: int
    failed_count: int
    performance_metrics: _common_pb2.PerformanceMetrics
    metadata: _common_pb2.Metadata
    def __init__(self, status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., responses: _Optional[_Iterable[_Union[ProcessMessageResponse, _Mapping]]] = ..., successful_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., performance_metrics: _Optional[_Union[_common_pb2.PerformanceMetrics, _Mapping]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ("status", "service_name", "version", "timestamp", "details")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.HealthStatus
    service_name: str
    version: str
    timestamp: _timestamp_pb2.Timestamp
    details: _struct_pb2.Struct
    def __init__(self, status: _Optional[_Union[_common_pb2.HealthStatus, str]] = ..., service_name: _Optional[str] = ..., version: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("status", "metrics", "performance_metrics", "metadata")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRICS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.Status
    metrics: _containers.RepeatedCompositeFieldContainer[MetricData]
    performance_metrics: _common_pb2.PerformanceMetrics
    metadata: _common_pb2.Metadata
    def __init__(self, status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., metrics: _Optional[_Iterable[_Union[MetricData, _Mapping]]] = ..., performance_metrics: _Optional[_Union[_common_pb2.PerformanceMetrics, _Mapping]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class MetricData(_message.Message):
    __slots__ = ("name", "type", "points", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    points: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    labels: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., points: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ..., labels: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("timestamp", "value", "attributes")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    value: float
    attributes: _struct_pb2.Struct
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ConversationStreamRequest(_message.Message):
    __slots__ = ("init", "message", "heartbeat", "close")
    INIT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    init: StreamInit
    message: ProcessMessageRequest
    heartbeat: StreamHeartbeat
    close: StreamClose
    def __init__(self, init: _Optional[_Union[StreamInit, _Mapping]] = ..., message: _Optional[_Union[ProcessMessageRequest, _Mapping]] = ..., heartbeat: _Optional[_Union[StreamHeartbeat, _Mapping]] = ..., close: _Optional[_Union[StreamClose, _Mapping]] = ...) -> None: ...

class ConversationStreamResponse(_message.Message):
    __slots__ = ("ack", "message_response", "event", "error")
    ACK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ack: StreamAck
    message_response: ProcessMessageResponse
    event: StreamEvent
    error: StreamError
    def __init__(self, ack: _Optional[_Union[StreamAck, _Mapping]] = ..., message_response: _Optional[_Union[ProcessMessageResponse, _Mapping]] = ..., event: _Optional[_Union[StreamEvent, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class StreamInit(_message.Message):
    __slots__ = ("tenant_context", "conversation_id", "event_types", "metadata")
    TENANT_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    tenant_context: _common_pb2.TenantContext
    conversation_id: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    metadata: _common_pb2.Metadata
    def __init__(self, tenant_context: _Optional[_Union[_common_pb2.TenantContext, _Mapping]] = ..., conversation_id: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("stream_id", "status", "metadata")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    status: _common_pb2.Status
    metadata: _common_pb2.Metadata
    def __init__(self, stream_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class StreamHeartbeat(_message.Message):
    __slots__ = ("timestamp",)
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamClose(_message.Message):
    __slots__ = ("reason", "metadata")
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    reason: str
    metadata: _common_pb2.Metadata
    def __init__(self, reason: _Optional[str] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("event_type", "conversation_id", "event_data", "timestamp")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    conversation_id: str
    event_data: _struct_pb2.Struct
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, event_type: _Optional[str] = ..., conversation_id: _Optional[str] = ..., event_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("error_code", "message", "recoverable", "metadata")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    error_code: str
    message: str
    recoverable: bool
    metadata: _common_pb2.Metadata
    def __init__(self, error_code: _Optional[str] = ..., message: _Optional[str] = ..., recoverable: _Optional[bool] = ..., metadata: _Optional[_Union[_common_pb2.Metadata, _Mapping]] = ...) -> None: ...
