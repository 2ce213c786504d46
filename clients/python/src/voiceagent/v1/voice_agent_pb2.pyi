import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Backend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_UNSPECIFIED: _ClassVar[Backend]
    BACKEND_VOICE_LIVE: _ClassVar[Backend]
    BACKEND_GPT_REALTIME: _ClassVar[Backend]

class AudioMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_MODE_UNSPECIFIED: _ClassVar[AudioMode]
    AUDIO_MODE_TRANSCODE: _ClassVar[AudioMode]
    AUDIO_MODE_PASSTHROUGH: _ClassVar[AudioMode]

class CallStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_STATUS_UNSPECIFIED: _ClassVar[CallStatus]
    CALL_STATUS_QUEUED: _ClassVar[CallStatus]
    CALL_STATUS_INITIATED: _ClassVar[CallStatus]
    CALL_STATUS_RINGING: _ClassVar[CallStatus]
    CALL_STATUS_IN_PROGRESS: _ClassVar[CallStatus]
    CALL_STATUS_COMPLETED: _ClassVar[CallStatus]
    CALL_STATUS_BUSY: _ClassVar[CallStatus]
    CALL_STATUS_NO_ANSWER: _ClassVar[CallStatus]
    CALL_STATUS_CANCELED: _ClassVar[CallStatus]
    CALL_STATUS_FAILED: _ClassVar[CallStatus]

class Speaker(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEAKER_UNSPECIFIED: _ClassVar[Speaker]
    SPEAKER_CALLEE: _ClassVar[Speaker]
    SPEAKER_AGENT: _ClassVar[Speaker]

class TransferState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_STATE_UNSPECIFIED: _ClassVar[TransferState]
    TRANSFER_STATE_STARTED: _ClassVar[TransferState]
    TRANSFER_STATE_ANSWERED: _ClassVar[TransferState]
    TRANSFER_STATE_BUSY: _ClassVar[TransferState]
    TRANSFER_STATE_NO_ANSWER: _ClassVar[TransferState]
    TRANSFER_STATE_FAILED: _ClassVar[TransferState]
    TRANSFER_STATE_CANCELED: _ClassVar[TransferState]

class TransferBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_BY_UNSPECIFIED: _ClassVar[TransferBy]
    TRANSFER_BY_AGENT: _ClassVar[TransferBy]
    TRANSFER_BY_OPERATOR: _ClassVar[TransferBy]

class VoicemailMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOICEMAIL_MODE_UNSPECIFIED: _ClassVar[VoicemailMode]
    VOICEMAIL_MODE_OFF: _ClassVar[VoicemailMode]
    VOICEMAIL_MODE_HANG_UP: _ClassVar[VoicemailMode]
    VOICEMAIL_MODE_LEAVE_MESSAGE: _ClassVar[VoicemailMode]

class ToolOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_OUTCOME_UNSPECIFIED: _ClassVar[ToolOutcome]
    TOOL_OUTCOME_ANSWERED: _ClassVar[ToolOutcome]
    TOOL_OUTCOME_TIMED_OUT: _ClassVar[ToolOutcome]
    TOOL_OUTCOME_FAILED: _ClassVar[ToolOutcome]
    TOOL_OUTCOME_CANCELED: _ClassVar[ToolOutcome]

class ListCallsOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIST_CALLS_ORDER_UNSPECIFIED: _ClassVar[ListCallsOrder]
    LIST_CALLS_ORDER_NEWEST_FIRST: _ClassVar[ListCallsOrder]
    LIST_CALLS_ORDER_OLDEST_FIRST: _ClassVar[ListCallsOrder]

class WebhookDeliveryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_DELIVERY_STATE_UNSPECIFIED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_PENDING: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_DELIVERED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_DEAD: _ClassVar[WebhookDeliveryState]

class RecordingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORDING_STATE_UNSPECIFIED: _ClassVar[RecordingState]
    RECORDING_STATE_RECORDING: _ClassVar[RecordingState]
    RECORDING_STATE_COMPLETE: _ClassVar[RecordingState]
    RECORDING_STATE_FAILED: _ClassVar[RecordingState]
    RECORDING_STATE_DELETED: _ClassVar[RecordingState]
BACKEND_UNSPECIFIED: Backend
BACKEND_VOICE_LIVE: Backend
BACKEND_GPT_REALTIME: Backend
AUDIO_MODE_UNSPECIFIED: AudioMode
AUDIO_MODE_TRANSCODE: AudioMode
AUDIO_MODE_PASSTHROUGH: AudioMode
CALL_STATUS_UNSPECIFIED: CallStatus
CALL_STATUS_QUEUED: CallStatus
CALL_STATUS_INITIATED: CallStatus
CALL_STATUS_RINGING: CallStatus
CALL_STATUS_IN_PROGRESS: CallStatus
CALL_STATUS_COMPLETED: CallStatus
CALL_STATUS_BUSY: CallStatus
CALL_STATUS_NO_ANSWER: CallStatus
CALL_STATUS_CANCELED: CallStatus
CALL_STATUS_FAILED: CallStatus
SPEAKER_UNSPECIFIED: Speaker
SPEAKER_CALLEE: Speaker
SPEAKER_AGENT: Speaker
TRANSFER_STATE_UNSPECIFIED: TransferState
TRANSFER_STATE_STARTED: TransferState
TRANSFER_STATE_ANSWERED: TransferState
TRANSFER_STATE_BUSY: TransferState
TRANSFER_STATE_NO_ANSWER: TransferState
TRANSFER_STATE_FAILED: TransferState
TRANSFER_STATE_CANCELED: TransferState
TRANSFER_BY_UNSPECIFIED: TransferBy
TRANSFER_BY_AGENT: TransferBy
TRANSFER_BY_OPERATOR: TransferBy
VOICEMAIL_MODE_UNSPECIFIED: VoicemailMode
VOICEMAIL_MODE_OFF: VoicemailMode
VOICEMAIL_MODE_HANG_UP: VoicemailMode
VOICEMAIL_MODE_LEAVE_MESSAGE: VoicemailMode
TOOL_OUTCOME_UNSPECIFIED: ToolOutcome
TOOL_OUTCOME_ANSWERED: ToolOutcome
TOOL_OUTCOME_TIMED_OUT: ToolOutcome
TOOL_OUTCOME_FAILED: ToolOutcome
TOOL_OUTCOME_CANCELED: ToolOutcome
LIST_CALLS_ORDER_UNSPECIFIED: ListCallsOrder
LIST_CALLS_ORDER_NEWEST_FIRST: ListCallsOrder
LIST_CALLS_ORDER_OLDEST_FIRST: ListCallsOrder
WEBHOOK_DELIVERY_STATE_UNSPECIFIED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_PENDING: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_DELIVERED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_DEAD: WebhookDeliveryState
RECORDING_STATE_UNSPECIFIED: RecordingState
RECORDING_STATE_RECORDING: RecordingState
RECORDING_STATE_COMPLETE: RecordingState
RECORDING_STATE_FAILED: RecordingState
RECORDING_STATE_DELETED: RecordingState

class PlaceCallRequest(_message.Message):
    __slots__ = ("to", "backend", "instructions", "voice", "greeting", "metadata", "max_duration", "request_id", "record", "tools", "tool_timeout", "voicemail", "variables", "webhook_url", "transfer_targets")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TO_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    GREETING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    VOICEMAIL_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_TARGETS_FIELD_NUMBER: _ClassVar[int]
    to: str
    backend: Backend
    instructions: str
    voice: str
    greeting: str
    metadata: _containers.ScalarMap[str, str]
    max_duration: _duration_pb2.Duration
    request_id: str
    record: bool
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_timeout: _duration_pb2.Duration
    voicemail: VoicemailPolicy
    variables: _containers.ScalarMap[str, str]
    webhook_url: str
    transfer_targets: _containers.RepeatedCompositeFieldContainer[TransferTarget]
    def __init__(self, to: _Optional[str] = ..., backend: _Optional[_Union[Backend, str]] = ..., instructions: _Optional[str] = ..., voice: _Optional[str] = ..., greeting: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ..., record: _Optional[bool] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., voicemail: _Optional[_Union[VoicemailPolicy, _Mapping]] = ..., variables: _Optional[_Mapping[str, str]] = ..., webhook_url: _Optional[str] = ..., transfer_targets: _Optional[_Iterable[_Union[TransferTarget, _Mapping]]] = ...) -> None: ...

class TransferTarget(_message.Message):
    __slots__ = ("number", "description")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    number: str
    description: str
    def __init__(self, number: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("target", "state", "by", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: str
    state: TransferState
    by: TransferBy
    reason: str
    def __init__(self, target: _Optional[str] = ..., state: _Optional[_Union[TransferState, str]] = ..., by: _Optional[_Union[TransferBy, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class TransferCallRequest(_message.Message):
    __slots__ = ("call_id", "number")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    number: str
    def __init__(self, call_id: _Optional[str] = ..., number: _Optional[str] = ...) -> None: ...

class TransferCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters_json", "url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    url: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class VoicemailPolicy(_message.Message):
    __slots__ = ("mode", "message")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    mode: VoicemailMode
    message: str
    def __init__(self, mode: _Optional[_Union[VoicemailMode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class PlaceCallResponse(_message.Message):
    __slots__ = ("call_id", "provider_call_id", "status", "emulated")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    provider_call_id: str
    status: CallStatus
    emulated: bool
    def __init__(self, call_id: _Optional[str] = ..., provider_call_id: _Optional[str] = ..., status: _Optional[_Union[CallStatus, str]] = ..., emulated: _Optional[bool] = ...) -> None: ...

class WatchCallRequest(_message.Message):
    __slots__ = ("call_id", "after_sequence")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    after_sequence: int
    def __init__(self, call_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchCallResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: CallEvent
    def __init__(self, event: _Optional[_Union[CallEvent, _Mapping]] = ...) -> None: ...

class CallEvent(_message.Message):
    __slots__ = ("sequence", "time", "status", "transcript", "error", "dtmf", "turn", "notice", "recording", "tool_call", "tool_result", "answered_by", "transfer", "migrated")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DTMF_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    RECORDING_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    MIGRATED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    status: StatusChanged
    transcript: Transcript
    error: CallError
    dtmf: Dtmf
    turn: TurnMetrics
    notice: Notice
    recording: Recording
    tool_call: ToolCall
    tool_result: ToolResult
    answered_by: AnsweredBy
    transfer: Transfer
    migrated: Migrated
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[StatusChanged, _Mapping]] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ..., dtmf: _Optional[_Union[Dtmf, _Mapping]] = ..., turn: _Optional[_Union[TurnMetrics, _Mapping]] = ..., notice: _Optional[_Union[Notice, _Mapping]] = ..., recording: _Optional[_Union[Recording, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., answered_by: _Optional[_Union[AnsweredBy, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., migrated: _Optional[_Union[Migrated, _Mapping]] = ...) -> None: ...

class Migrated(_message.Message):
    __slots__ = ("from_replica", "to_replica", "gap_ms")
    FROM_REPLICA_FIELD_NUMBER: _ClassVar[int]
    TO_REPLICA_FIELD_NUMBER: _ClassVar[int]
    GAP_MS_FIELD_NUMBER: _ClassVar[int]
    from_replica: str
    to_replica: str
    gap_ms: int
    def __init__(self, from_replica: _Optional[str] = ..., to_replica: _Optional[str] = ..., gap_ms: _Optional[int] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("tool_call_id", "name", "arguments_json", "answered_by_url")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_URL_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    name: str
    arguments_json: str
    answered_by_url: bool
    def __init__(self, tool_call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., answered_by_url: _Optional[bool] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("tool_call_id", "name", "output", "outcome", "wait_ms")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    name: str
    output: str
    outcome: ToolOutcome
    wait_ms: int
    def __init__(self, tool_call_id: _Optional[str] = ..., name: _Optional[str] = ..., output: _Optional[str] = ..., outcome: _Optional[_Union[ToolOutcome, str]] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class SubmitToolResultRequest(_message.Message):
    __slots__ = ("call_id", "tool_call_id", "output")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool_call_id: str
    output: str
    def __init__(self, call_id: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., output: _Optional[str] = ...) -> None: ...

class SubmitToolResultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusChanged(_message.Message):
    __slots__ = ("status", "detail")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: CallStatus
    detail: str
    def __init__(self, status: _Optional[_Union[CallStatus, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("speaker", "text", "interrupted")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    speaker: Speaker
    text: str
    interrupted: bool
    def __init__(self, speaker: _Optional[_Union[Speaker, str]] = ..., text: _Optional[str] = ..., interrupted: _Optional[bool] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Dtmf(_message.Message):
    __slots__ = ("digit",)
    DIGIT_FIELD_NUMBER: _ClassVar[int]
    digit: str
    def __init__(self, digit: _Optional[str] = ...) -> None: ...

class TurnMetrics(_message.Message):
    __slots__ = ("turn_index", "first_audio_sent_ms", "first_audio_heard_ms")
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_AUDIO_SENT_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_AUDIO_HEARD_MS_FIELD_NUMBER: _ClassVar[int]
    turn_index: int
    first_audio_sent_ms: int
    first_audio_heard_ms: int
    def __init__(self, turn_index: _Optional[int] = ..., first_audio_sent_ms: _Optional[int] = ..., first_audio_heard_ms: _Optional[int] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AnsweredBy(_message.Message):
    __slots__ = ("answered_by", "detection_ms", "action")
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    DETECTION_MS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    answered_by: str
    detection_ms: int
    action: str
    def __init__(self, answered_by: _Optional[str] = ..., detection_ms: _Optional[int] = ..., action: _Optional[str] = ...) -> None: ...

class HangUpCallRequest(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class HangUpCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class GetCallRequest(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class GetCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class ListCallsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "statuses", "to", "created_after", "created_before", "order")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[CallStatus]
    to: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    order: ListCallsOrder
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[CallStatus, str]]] = ..., to: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order: _Optional[_Union[ListCallsOrder, str]] = ...) -> None: ...

class ListCallsResponse(_message.Message):
    __slots__ = ("calls", "next_page_token")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[Call]
    next_page_token: str
    def __init__(self, calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("call_id", "to", "backend", "status", "provider_call_id", "metadata", "created_at", "answered_at", "ended_at", "emulated", "end_reason", "instructions", "voice", "duration_seconds", "answered_by", "provider_error_code", "turn_latency_p50_ms", "turn_latency_p95_ms", "event_count", "voicemail", "tools", "tool_timeout", "recording_url", "recording", "transfer_targets", "transfer", "webhooks")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    TURN_LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TURN_LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    VOICEMAIL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RECORDING_URL_FIELD_NUMBER: _ClassVar[int]
    RECORDING_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_TARGETS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    WEBHOOKS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    to: str
    backend: Backend
    status: CallStatus
    provider_call_id: str
    metadata: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    answered_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    emulated: bool
    end_reason: str
    instructions: str
    voice: str
    duration_seconds: int
    answered_by: str
    provider_error_code: str
    turn_latency_p50_ms: int
    turn_latency_p95_ms: int
    event_count: int
    voicemail: VoicemailPolicy
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    tool_timeout: _duration_pb2.Duration
    recording_url: str
    recording: Recording
    transfer_targets: _containers.RepeatedCompositeFieldContainer[TransferTarget]
    transfer: Transfer
    webhooks: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    def __init__(self, call_id: _Optional[str] = ..., to: _Optional[str] = ..., backend: _Optional[_Union[Backend, str]] = ..., status: _Optional[_Union[CallStatus, str]] = ..., provider_call_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., answered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., emulated: _Optional[bool] = ..., end_reason: _Optional[str] = ..., instructions: _Optional[str] = ..., voice: _Optional[str] = ..., duration_seconds: _Optional[int] = ..., answered_by: _Optional[str] = ..., provider_error_code: _Optional[str] = ..., turn_latency_p50_ms: _Optional[int] = ..., turn_latency_p95_ms: _Optional[int] = ..., event_count: _Optional[int] = ..., voicemail: _Optional[_Union[VoicemailPolicy, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., tool_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., recording_url: _Optional[str] = ..., recording: _Optional[_Union[Recording, _Mapping]] = ..., transfer_targets: _Optional[_Iterable[_Union[TransferTarget, _Mapping]]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., webhooks: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ..., **kwargs) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("message_id", "type", "url", "state", "attempts", "last_http_status", "last_error", "next_attempt_at", "created_at")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    type: str
    url: str
    state: WebhookDeliveryState
    attempts: int
    last_http_status: int
    last_error: str
    next_attempt_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, message_id: _Optional[str] = ..., type: _Optional[str] = ..., url: _Optional[str] = ..., state: _Optional[_Union[WebhookDeliveryState, str]] = ..., attempts: _Optional[int] = ..., last_http_status: _Optional[int] = ..., last_error: _Optional[str] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Recording(_message.Message):
    __slots__ = ("state", "error", "duration_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    state: RecordingState
    error: str
    duration_ms: int
    def __init__(self, state: _Optional[_Union[RecordingState, str]] = ..., error: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("backends", "default_backend", "telephony_emulated", "default_greeting", "default_max_duration", "audio_mode", "server_version", "limits")
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TELEPHONY_EMULATED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_GREETING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MODE_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[BackendInfo]
    default_backend: Backend
    telephony_emulated: bool
    default_greeting: str
    default_max_duration: _duration_pb2.Duration
    audio_mode: AudioMode
    server_version: str
    limits: PlaceCallLimits
    def __init__(self, backends: _Optional[_Iterable[_Union[BackendInfo, _Mapping]]] = ..., default_backend: _Optional[_Union[Backend, str]] = ..., telephony_emulated: _Optional[bool] = ..., default_greeting: _Optional[str] = ..., default_max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., audio_mode: _Optional[_Union[AudioMode, str]] = ..., server_version: _Optional[str] = ..., limits: _Optional[_Union[PlaceCallLimits, _Mapping]] = ...) -> None: ...

class PlaceCallLimits(_message.Message):
    __slots__ = ("min_to_digits", "max_to_digits", "max_instructions_bytes", "max_voice_bytes", "max_greeting_bytes", "max_metadata_entries", "max_metadata_key_bytes", "max_metadata_value_bytes", "shortest_max_duration", "longest_max_duration")
    MIN_TO_DIGITS_FIELD_NUMBER: _ClassVar[int]
    MAX_TO_DIGITS_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTRUCTIONS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VOICE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_GREETING_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_KEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHORTEST_MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    LONGEST_MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    min_to_digits: int
    max_to_digits: int
    max_instructions_bytes: int
    max_voice_bytes: int
    max_greeting_bytes: int
    max_metadata_entries: int
    max_metadata_key_bytes: int
    max_metadata_value_bytes: int
    shortest_max_duration: _duration_pb2.Duration
    longest_max_duration: _duration_pb2.Duration
    def __init__(self, min_to_digits: _Optional[int] = ..., max_to_digits: _Optional[int] = ..., max_instructions_bytes: _Optional[int] = ..., max_voice_bytes: _Optional[int] = ..., max_greeting_bytes: _Optional[int] = ..., max_metadata_entries: _Optional[int] = ..., max_metadata_key_bytes: _Optional[int] = ..., max_metadata_value_bytes: _Optional[int] = ..., shortest_max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., longest_max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class BackendInfo(_message.Message):
    __slots__ = ("backend", "emulated", "default_voice", "display_name")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    emulated: bool
    default_voice: str
    display_name: str
    def __init__(self, backend: _Optional[_Union[Backend, str]] = ..., emulated: _Optional[bool] = ..., default_voice: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...
