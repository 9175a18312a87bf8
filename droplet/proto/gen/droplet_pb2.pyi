from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NO_ERROR: _ClassVar[ErrorCode]
    FUNC_NOT_FOUND: _ClassVar[ErrorCode]
    EXECUTION_ERROR: _ClassVar[ErrorCode]
    NO_RESOURCES: _ClassVar[ErrorCode]
    DAG_ALREADY_EXISTS: _ClassVar[ErrorCode]
    NO_SUCH_DAG: _ClassVar[ErrorCode]
    TIMEOUT: _ClassVar[ErrorCode]
    INVALID_REQUEST: _ClassVar[ErrorCode]
    UNAUTHORIZED: _ClassVar[ErrorCode]
    WORKER_LOST: _ClassVar[ErrorCode]
    CONFLICT: _ClassVar[ErrorCode]
    CANCELLED: _ClassVar[ErrorCode]

class ConsistencyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMAL: _ClassVar[ConsistencyMode]
    MULTI: _ClassVar[ConsistencyMode]

class ValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PICKLE: _ClassVar[ValueType]
    CLOUDPICKLE: _ClassVar[ValueType]
    REFERENCE: _ClassVar[ValueType]
    ERROR: _ClassVar[ValueType]
    CHUNKED: _ClassVar[ValueType]
    RAW_REFERENCE: _ClassVar[ValueType]
NO_ERROR: ErrorCode
FUNC_NOT_FOUND: ErrorCode
EXECUTION_ERROR: ErrorCode
NO_RESOURCES: ErrorCode
DAG_ALREADY_EXISTS: ErrorCode
NO_SUCH_DAG: ErrorCode
TIMEOUT: ErrorCode
INVALID_REQUEST: ErrorCode
UNAUTHORIZED: ErrorCode
WORKER_LOST: ErrorCode
CONFLICT: ErrorCode
CANCELLED: ErrorCode
NORMAL: ConsistencyMode
MULTI: ConsistencyMode
PICKLE: ValueType
CLOUDPICKLE: ValueType
REFERENCE: ValueType
ERROR: ValueType
CHUNKED: ValueType
RAW_REFERENCE: ValueType

class Value(_message.Message):
    __slots__ = ("type", "body")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    type: ValueType
    body: bytes
    def __init__(self, type: _Optional[_Union[ValueType, str]] = ..., body: _Optional[bytes] = ...) -> None: ...

class Arguments(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("code", "message", "traceback", "exception_type")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    traceback: str
    exception_type: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., exception_type: _Optional[str] = ...) -> None: ...

class ChunkManifest(_message.Message):
    __slots__ = ("blob_id", "chunk_count", "size_bytes", "inner_type", "sha256")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INNER_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    chunk_count: int
    size_bytes: int
    inner_type: ValueType
    sha256: bytes
    def __init__(self, blob_id: _Optional[str] = ..., chunk_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., inner_type: _Optional[_Union[ValueType, str]] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("name", "body", "init_args", "is_class", "time_limit_s", "max_retries", "retry_on", "retry_backoff_s", "resources", "batching", "batch_size", "batch_linger_s")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    INIT_ARGS_FIELD_NUMBER: _ClassVar[int]
    IS_CLASS_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_S_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_LINGER_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    body: bytes
    init_args: Arguments
    is_class: bool
    time_limit_s: float
    max_retries: int
    retry_on: _containers.RepeatedScalarFieldContainer[str]
    retry_backoff_s: float
    resources: _containers.ScalarMap[str, float]
    batching: bool
    batch_size: int
    batch_linger_s: float
    def __init__(self, name: _Optional[str] = ..., body: _Optional[bytes] = ..., init_args: _Optional[_Union[Arguments, _Mapping]] = ..., is_class: _Optional[bool] = ..., time_limit_s: _Optional[float] = ..., max_retries: _Optional[int] = ..., retry_on: _Optional[_Iterable[str]] = ..., retry_backoff_s: _Optional[float] = ..., resources: _Optional[_Mapping[str, float]] = ..., batching: _Optional[bool] = ..., batch_size: _Optional[int] = ..., batch_linger_s: _Optional[float] = ...) -> None: ...

class FunctionCall(_message.Message):
    __slots__ = ("name", "request_id", "response_key", "arguments", "consistency", "client_id", "response_address", "call_id", "direct_response", "attempt", "maybe_done", "keep_result", "trace", "trace_context", "priority", "due_at_ms", "resources", "batching")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_KEY_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAYBE_DONE_FIELD_NUMBER: _ClassVar[int]
    KEEP_RESULT_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: int
    response_key: str
    arguments: Arguments
    consistency: ConsistencyMode
    client_id: str
    response_address: str
    call_id: str
    direct_response: bool
    attempt: int
    maybe_done: bool
    keep_result: bool
    trace: _containers.RepeatedCompositeFieldContainer[Stamp]
    trace_context: _containers.ScalarMap[str, str]
    priority: int
    due_at_ms: int
    resources: _containers.ScalarMap[str, float]
    batching: bool
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[int] = ..., response_key: _Optional[str] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencyMode, str]] = ..., client_id: _Optional[str] = ..., response_address: _Optional[str] = ..., call_id: _Optional[str] = ..., direct_response: _Optional[bool] = ..., attempt: _Optional[int] = ..., maybe_done: _Optional[bool] = ..., keep_result: _Optional[bool] = ..., trace: _Optional[_Iterable[_Union[Stamp, _Mapping]]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., due_at_ms: _Optional[int] = ..., resources: _Optional[_Mapping[str, float]] = ..., batching: _Optional[bool] = ...) -> None: ...

class Stamp(_message.Message):
    __slots__ = ("stage", "at_s")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    AT_S_FIELD_NUMBER: _ClassVar[int]
    stage: str
    at_s: float
    def __init__(self, stage: _Optional[str] = ..., at_s: _Optional[float] = ...) -> None: ...

class GenericResponse(_message.Message):
    __slots__ = ("success", "error", "response_id", "value", "stored", "message", "call_id", "revision", "trace")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: ErrorCode
    response_id: str
    value: Value
    stored: bool
    message: str
    call_id: str
    revision: int
    trace: _containers.RepeatedCompositeFieldContainer[Stamp]
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[_Union[ErrorCode, str]] = ..., response_id: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., stored: _Optional[bool] = ..., message: _Optional[str] = ..., call_id: _Optional[str] = ..., revision: _Optional[int] = ..., trace: _Optional[_Iterable[_Union[Stamp, _Mapping]]] = ...) -> None: ...

class Dag(_message.Message):
    __slots__ = ("name", "functions", "connections", "function_resources", "batching_functions", "colocated", "speculative")
    class Connection(_message.Message):
        __slots__ = ("source", "sink")
        SOURCE_FIELD_NUMBER: _ClassVar[int]
        SINK_FIELD_NUMBER: _ClassVar[int]
        source: str
        sink: str
        def __init__(self, source: _Optional[str] = ..., sink: _Optional[str] = ...) -> None: ...
    class FunctionResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ResourceNeeds
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ResourceNeeds, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    COLOCATED_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    functions: _containers.RepeatedScalarFieldContainer[str]
    connections: _containers.RepeatedCompositeFieldContainer[Dag.Connection]
    function_resources: _containers.MessageMap[str, ResourceNeeds]
    batching_functions: _containers.RepeatedScalarFieldContainer[str]
    colocated: _containers.RepeatedCompositeFieldContainer[ColocatedGroup]
    speculative: _containers.RepeatedCompositeFieldContainer[Speculative]
    def __init__(self, name: _Optional[str] = ..., functions: _Optional[_Iterable[str]] = ..., connections: _Optional[_Iterable[_Union[Dag.Connection, _Mapping]]] = ..., function_resources: _Optional[_Mapping[str, ResourceNeeds]] = ..., batching_functions: _Optional[_Iterable[str]] = ..., colocated: _Optional[_Iterable[_Union[ColocatedGroup, _Mapping]]] = ..., speculative: _Optional[_Iterable[_Union[Speculative, _Mapping]]] = ...) -> None: ...

class Speculative(_message.Message):
    __slots__ = ("function", "copies", "invalid_results")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    INVALID_RESULTS_FIELD_NUMBER: _ClassVar[int]
    function: str
    copies: int
    invalid_results: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, function: _Optional[str] = ..., copies: _Optional[int] = ..., invalid_results: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Continuation(_message.Message):
    __slots__ = ("dag", "function_args")
    class FunctionArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Arguments
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Arguments, _Mapping]] = ...) -> None: ...
    DAG_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ARGS_FIELD_NUMBER: _ClassVar[int]
    dag: str
    function_args: _containers.MessageMap[str, Arguments]
    def __init__(self, dag: _Optional[str] = ..., function_args: _Optional[_Mapping[str, Arguments]] = ...) -> None: ...

class CopyPlaces(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, workers: _Optional[_Iterable[str]] = ...) -> None: ...

class ResourceNeeds(_message.Message):
    __slots__ = ("amounts",)
    class AmountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    amounts: _containers.ScalarMap[str, float]
    def __init__(self, amounts: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ColocatedGroup(_message.Message):
    __slots__ = ("functions",)
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, functions: _Optional[_Iterable[str]] = ...) -> None: ...

class DagCall(_message.Message):
    __slots__ = ("name", "function_args", "consistency", "output_key", "client_id", "response_address", "call_id", "direct_response", "snapshot_revision", "min_revision", "attempt", "trace", "trace_context", "unplaced_since", "continuations", "chained_input")
    class FunctionArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Arguments
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Arguments, _Mapping]] = ...) -> None: ...
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ARGS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_REVISION_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_SINCE_FIELD_NUMBER: _ClassVar[int]
    CONTINUATIONS_FIELD_NUMBER: _ClassVar[int]
    CHAINED_INPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    function_args: _containers.MessageMap[str, Arguments]
    consistency: ConsistencyMode
    output_key: str
    client_id: str
    response_address: str
    call_id: str
    direct_response: bool
    snapshot_revision: int
    min_revision: int
    attempt: int
    trace: _containers.RepeatedCompositeFieldContainer[Stamp]
    trace_context: _containers.ScalarMap[str, str]
    unplaced_since: float
    continuations: _containers.RepeatedCompositeFieldContainer[Continuation]
    chained_input: Value
    def __init__(self, name: _Optional[str] = ..., function_args: _Optional[_Mapping[str, Arguments]] = ..., consistency: _Optional[_Union[ConsistencyMode, str]] = ..., output_key: _Optional[str] = ..., client_id: _Optional[str] = ..., response_address: _Optional[str] = ..., call_id: _Optional[str] = ..., direct_response: _Optional[bool] = ..., snapshot_revision: _Optional[int] = ..., min_revision: _Optional[int] = ..., attempt: _Optional[int] = ..., trace: _Optional[_Iterable[_Union[Stamp, _Mapping]]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., unplaced_since: _Optional[float] = ..., continuations: _Optional[_Iterable[_Union[Continuation, _Mapping]]] = ..., chained_input: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class DagSchedule(_message.Message):
    __slots__ = ("id", "dag", "locations", "arguments", "target_function", "triggers", "start_time", "output_key", "response_address", "consistency", "client_id", "direct_response", "snapshot_revision", "call_id", "min_revision", "attempt", "copy_places", "continuations")
    class LocationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ArgumentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Arguments
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Arguments, _Mapping]] = ...) -> None: ...
    class CopyPlacesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CopyPlaces
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CopyPlaces, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_REVISION_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    COPY_PLACES_FIELD_NUMBER: _ClassVar[int]
    CONTINUATIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    dag: Dag
    locations: _containers.ScalarMap[str, str]
    arguments: _containers.MessageMap[str, Arguments]
    target_function: str
    triggers: _containers.RepeatedScalarFieldContainer[str]
    start_time: float
    output_key: str
    response_address: str
    consistency: ConsistencyMode
    client_id: str
    direct_response: bool
    snapshot_revision: int
    call_id: str
    min_revision: int
    attempt: int
    copy_places: _containers.MessageMap[str, CopyPlaces]
    continuations: _containers.RepeatedCompositeFieldContainer[Continuation]
    def __init__(self, id: _Optional[str] = ..., dag: _Optional[_Union[Dag, _Mapping]] = ..., locations: _Optional[_Mapping[str, str]] = ..., arguments: _Optional[_Mapping[str, Arguments]] = ..., target_function: _Optional[str] = ..., triggers: _Optional[_Iterable[str]] = ..., start_time: _Optional[float] = ..., output_key: _Optional[str] = ..., response_address: _Optional[str] = ..., consistency: _Optional[_Union[ConsistencyMode, str]] = ..., client_id: _Optional[str] = ..., direct_response: _Optional[bool] = ..., snapshot_revision: _Optional[int] = ..., call_id: _Optional[str] = ..., min_revision: _Optional[int] = ..., attempt: _Optional[int] = ..., copy_places: _Optional[_Mapping[str, CopyPlaces]] = ..., continuations: _Optional[_Iterable[_Union[Continuation, _Mapping]]] = ...) -> None: ...

class DagTrigger(_message.Message):
    __slots__ = ("id", "source", "target_function", "result", "aborted", "call", "writes", "deletes", "observed_revision", "schedule", "reads", "rerouted_since", "trace", "trace_context", "copy", "copy_result")
    class WritesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    class ReadsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_REVISION_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    REROUTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    COPY_FIELD_NUMBER: _ClassVar[int]
    COPY_RESULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    target_function: str
    result: Value
    aborted: bool
    call: CallRef
    writes: _containers.MessageMap[str, Value]
    deletes: _containers.RepeatedScalarFieldContainer[str]
    observed_revision: int
    schedule: DagSchedule
    reads: _containers.ScalarMap[str, int]
    rerouted_since: float
    trace: _containers.RepeatedCompositeFieldContainer[Stamp]
    trace_context: _containers.ScalarMap[str, str]
    copy: int
    copy_result: Value
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., target_function: _Optional[str] = ..., result: _Optional[_Union[Value, _Mapping]] = ..., aborted: _Optional[bool] = ..., call: _Optional[_Union[CallRef, _Mapping]] = ..., writes: _Optional[_Mapping[str, Value]] = ..., deletes: _Optional[_Iterable[str]] = ..., observed_revision: _Optional[int] = ..., schedule: _Optional[_Union[DagSchedule, _Mapping]] = ..., reads: _Optional[_Mapping[str, int]] = ..., rerouted_since: _Optional[float] = ..., trace: _Optional[_Iterable[_Union[Stamp, _Mapping]]] = ..., trace_context: _Optional[_Mapping[str, str]] = ..., copy: _Optional[int] = ..., copy_result: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class CallRef(_message.Message):
    __slots__ = ("call_id", "response_address", "output_key", "direct_response", "once")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ONCE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    response_address: str
    output_key: str
    direct_response: bool
    once: bool
    def __init__(self, call_id: _Optional[str] = ..., response_address: _Optional[str] = ..., output_key: _Optional[str] = ..., direct_response: _Optional[bool] = ..., once: _Optional[bool] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ("dag_name", "function_name")
    DAG_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    dag_name: str
    function_name: str
    def __init__(self, dag_name: _Optional[str] = ..., function_name: _Optional[str] = ...) -> None: ...

class UnpinRequest(_message.Message):
    __slots__ = ("dag_name", "function_name")
    DAG_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    dag_name: str
    function_name: str
    def __init__(self, dag_name: _Optional[str] = ..., function_name: _Optional[str] = ...) -> None: ...

class UserMessage(_message.Message):
    __slots__ = ("sender", "destination", "body")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    sender: str
    destination: str
    body: Value
    def __init__(self, sender: _Optional[str] = ..., destination: _Optional[str] = ..., body: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class DeleteDag(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("call", "dag_call", "schedule", "trigger", "response", "function", "dag", "delete_dag", "pin", "unpin", "user_message")
    CALL_FIELD_NUMBER: _ClassVar[int]
    DAG_CALL_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    DELETE_DAG_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    call: FunctionCall
    dag_call: DagCall
    schedule: DagSchedule
    trigger: DagTrigger
    response: GenericResponse
    function: Function
    dag: Dag
    delete_dag: DeleteDag
    pin: PinRequest
    unpin: UnpinRequest
    user_message: UserMessage
    def __init__(self, call: _Optional[_Union[FunctionCall, _Mapping]] = ..., dag_call: _Optional[_Union[DagCall, _Mapping]] = ..., schedule: _Optional[_Union[DagSchedule, _Mapping]] = ..., trigger: _Optional[_Union[DagTrigger, _Mapping]] = ..., response: _Optional[_Union[GenericResponse, _Mapping]] = ..., function: _Optional[_Union[Function, _Mapping]] = ..., dag: _Optional[_Union[Dag, _Mapping]] = ..., delete_dag: _Optional[_Union[DeleteDag, _Mapping]] = ..., pin: _Optional[_Union[PinRequest, _Mapping]] = ..., unpin: _Optional[_Union[UnpinRequest, _Mapping]] = ..., user_message: _Optional[_Union[UserMessage, _Mapping]] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("messages", "issued_at_ms", "nonce")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    issued_at_ms: int
    nonce: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[str] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("id", "host", "pid", "pinned_dag", "pinned_function", "cached_keys", "utilisation", "queue_depth", "started_at", "updated_at", "calls_total", "metrics_port", "errors_total", "incarnation", "cpus", "quick_functions", "slow_functions", "resources")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PINNED_DAG_FIELD_NUMBER: _ClassVar[int]
    PINNED_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CACHED_KEYS_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CALLS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    METRICS_PORT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    QUICK_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    SLOW_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    id: str
    host: str
    pid: int
    pinned_dag: str
    pinned_function: str
    cached_keys: _containers.RepeatedScalarFieldContainer[str]
    utilisation: float
    queue_depth: int
    started_at: float
    updated_at: float
    calls_total: int
    metrics_port: int
    errors_total: int
    incarnation: str
    cpus: int
    quick_functions: _containers.RepeatedScalarFieldContainer[str]
    slow_functions: _containers.RepeatedScalarFieldContainer[str]
    resources: _containers.ScalarMap[str, float]
    def __init__(self, id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., pinned_dag: _Optional[str] = ..., pinned_function: _Optional[str] = ..., cached_keys: _Optional[_Iterable[str]] = ..., utilisation: _Optional[float] = ..., queue_depth: _Optional[int] = ..., started_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., calls_total: _Optional[int] = ..., metrics_port: _Optional[int] = ..., errors_total: _Optional[int] = ..., incarnation: _Optional[str] = ..., cpus: _Optional[int] = ..., quick_functions: _Optional[_Iterable[str]] = ..., slow_functions: _Optional[_Iterable[str]] = ..., resources: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SchedulerStatus(_message.Message):
    __slots__ = ("id", "host", "pid", "started_at", "metrics_port", "workers_seen")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_PORT_FIELD_NUMBER: _ClassVar[int]
    WORKERS_SEEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    host: str
    pid: int
    started_at: float
    metrics_port: int
    workers_seen: int
    def __init__(self, id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., started_at: _Optional[float] = ..., metrics_port: _Optional[int] = ..., workers_seen: _Optional[int] = ...) -> None: ...

class PinRecord(_message.Message):
    __slots__ = ("dag_name", "function_name", "worker_id")
    DAG_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    dag_name: str
    function_name: str
    worker_id: str
    def __init__(self, dag_name: _Optional[str] = ..., function_name: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("worker_id", "queue", "body", "reply_to", "correlation_id", "incarnation")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queue: str
    body: bytes
    reply_to: str
    correlation_id: str
    incarnation: str
    def __init__(self, worker_id: _Optional[str] = ..., queue: _Optional[str] = ..., body: _Optional[bytes] = ..., reply_to: _Optional[str] = ..., correlation_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class DagRecord(_message.Message):
    __slots__ = ("dag", "ready", "creator", "request_id")
    DAG_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dag: Dag
    ready: bool
    creator: str
    request_id: str
    def __init__(self, dag: _Optional[_Union[Dag, _Mapping]] = ..., ready: _Optional[bool] = ..., creator: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RecentCalls(_message.Message):
    __slots__ = ("worker_id", "incarnation", "started_at", "published_at", "calls", "totals", "bucket_bounds_s", "interval_s")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_BOUNDS_S_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    incarnation: str
    started_at: float
    published_at: float
    calls: _containers.RepeatedCompositeFieldContainer[CallRecord]
    totals: _containers.RepeatedCompositeFieldContainer[FunctionTotals]
    bucket_bounds_s: _containers.RepeatedScalarFieldContainer[float]
    interval_s: float
    def __init__(self, worker_id: _Optional[str] = ..., incarnation: _Optional[str] = ..., started_at: _Optional[float] = ..., published_at: _Optional[float] = ..., calls: _Optional[_Iterable[_Union[CallRecord, _Mapping]]] = ..., totals: _Optional[_Iterable[_Union[FunctionTotals, _Mapping]]] = ..., bucket_bounds_s: _Optional[_Iterable[float]] = ..., interval_s: _Optional[float] = ...) -> None: ...

class CallRecord(_message.Message):
    __slots__ = ("seq", "call_id", "function", "started_at", "status", "error", "traceback", "exception_type", "stages")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    call_id: str
    function: str
    started_at: float
    status: ErrorCode
    error: str
    traceback: str
    exception_type: str
    stages: CallStages
    def __init__(self, seq: _Optional[int] = ..., call_id: _Optional[str] = ..., function: _Optional[str] = ..., started_at: _Optional[float] = ..., status: _Optional[_Union[ErrorCode, str]] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., exception_type: _Optional[str] = ..., stages: _Optional[_Union[CallStages, _Mapping]] = ...) -> None: ...

class CallStages(_message.Message):
    __slots__ = ("queue_wait_s", "run_s", "store_s", "reply_s", "total_s")
    QUEUE_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    RUN_S_FIELD_NUMBER: _ClassVar[int]
    STORE_S_FIELD_NUMBER: _ClassVar[int]
    REPLY_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    queue_wait_s: float
    run_s: float
    store_s: float
    reply_s: float
    total_s: float
    def __init__(self, queue_wait_s: _Optional[float] = ..., run_s: _Optional[float] = ..., store_s: _Optional[float] = ..., reply_s: _Optional[float] = ..., total_s: _Optional[float] = ...) -> None: ...

class FunctionTotals(_message.Message):
    __slots__ = ("function", "calls", "errors", "run_s", "buckets")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    RUN_S_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    function: str
    calls: int
    errors: int
    run_s: float
    buckets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, function: _Optional[str] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., run_s: _Optional[float] = ..., buckets: _Optional[_Iterable[int]] = ...) -> None: ...
