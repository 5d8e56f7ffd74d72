from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerCapabilitiesProto(_message.Message):
    __slots__ = ("id", "static_analysis_tools", "security_scanning_tools", "flags", "metadata", "dynamic_analysis_tools", "fuzzing_tools", "test_framework_tools")
    class FlagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATIC_ANALYSIS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SECURITY_SCANNING_TOOLS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_ANALYSIS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    FUZZING_TOOLS_FIELD_NUMBER: _ClassVar[int]
    TEST_FRAMEWORK_TOOLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    static_analysis_tools: _containers.RepeatedCompositeFieldContainer[ToolCapability]
    security_scanning_tools: _containers.RepeatedCompositeFieldContainer[ToolCapability]
    flags: _containers.ScalarMap[str, bool]
    metadata: _containers.ScalarMap[str, str]
    dynamic_analysis_tools: _containers.RepeatedCompositeFieldContainer[ToolCapability]
    fuzzing_tools: _containers.RepeatedCompositeFieldContainer[ToolCapability]
    test_framework_tools: _containers.RepeatedCompositeFieldContainer[ToolCapability]
    def __init__(self, id: _Optional[str] = ..., static_analysis_tools: _Optional[_Iterable[_Union[ToolCapability, _Mapping]]] = ..., security_scanning_tools: _Optional[_Iterable[_Union[ToolCapability, _Mapping]]] = ..., flags: _Optional[_Mapping[str, bool]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., dynamic_analysis_tools: _Optional[_Iterable[_Union[ToolCapability, _Mapping]]] = ..., fuzzing_tools: _Optional[_Iterable[_Union[ToolCapability, _Mapping]]] = ..., test_framework_tools: _Optional[_Iterable[_Union[ToolCapability, _Mapping]]] = ...) -> None: ...

class ToolCapability(_message.Message):
    __slots__ = ("tool_name", "required", "alternatives", "permissions", "expiration", "attestation", "verified")
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    tool_name: str
    required: bool
    alternatives: _containers.RepeatedScalarFieldContainer[str]
    permissions: Permissions
    expiration: Expiration
    attestation: Attestation
    verified: bool
    def __init__(self, tool_name: _Optional[str] = ..., required: _Optional[bool] = ..., alternatives: _Optional[_Iterable[str]] = ..., permissions: _Optional[_Union[Permissions, _Mapping]] = ..., expiration: _Optional[_Union[Expiration, _Mapping]] = ..., attestation: _Optional[_Union[Attestation, _Mapping]] = ..., verified: _Optional[bool] = ...) -> None: ...

class Permissions(_message.Message):
    __slots__ = ("filesystem_access", "network_access", "process_spawn", "env_access", "system_access", "memory_limit_mb", "cpu_limit_percent", "timeout_seconds")
    FILESYSTEM_ACCESS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ACCESS_FIELD_NUMBER: _ClassVar[int]
    PROCESS_SPAWN_FIELD_NUMBER: _ClassVar[int]
    ENV_ACCESS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_ACCESS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_MB_FIELD_NUMBER: _ClassVar[int]
    CPU_LIMIT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    filesystem_access: bool
    network_access: bool
    process_spawn: bool
    env_access: bool
    system_access: bool
    memory_limit_mb: int
    cpu_limit_percent: int
    timeout_seconds: int
    def __init__(self, filesystem_access: _Optional[bool] = ..., network_access: _Optional[bool] = ..., process_spawn: _Optional[bool] = ..., env_access: _Optional[bool] = ..., system_access: _Optional[bool] = ..., memory_limit_mb: _Optional[int] = ..., cpu_limit_percent: _Optional[int] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class Expiration(_message.Message):
    __slots__ = ("expires_at", "revoked", "revocation_reason", "revoked_at", "revoked_by")
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_REASON_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    expires_at: int
    revoked: bool
    revocation_reason: str
    revoked_at: int
    revoked_by: str
    def __init__(self, expires_at: _Optional[int] = ..., revoked: _Optional[bool] = ..., revocation_reason: _Optional[str] = ..., revoked_at: _Optional[int] = ..., revoked_by: _Optional[str] = ...) -> None: ...

class Attestation(_message.Message):
    __slots__ = ("capability_hash", "signature", "public_key", "timestamp", "algorithm", "attester")
    CAPABILITY_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ATTESTER_FIELD_NUMBER: _ClassVar[int]
    capability_hash: str
    signature: str
    public_key: str
    timestamp: int
    algorithm: str
    attester: str
    def __init__(self, capability_hash: _Optional[str] = ..., signature: _Optional[str] = ..., public_key: _Optional[str] = ..., timestamp: _Optional[int] = ..., algorithm: _Optional[str] = ..., attester: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("capabilities", "ttl")
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    capabilities: WorkerCapabilitiesProto
    ttl: float
    def __init__(self, capabilities: _Optional[_Union[WorkerCapabilitiesProto, _Mapping]] = ..., ttl: _Optional[float] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class UnregisterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("capabilities", "node", "owner", "source", "ref", "address", "health")
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    capabilities: WorkerCapabilitiesProto
    node: str
    owner: str
    source: str
    ref: str
    address: str
    health: Health
    def __init__(self, capabilities: _Optional[_Union[WorkerCapabilitiesProto, _Mapping]] = ..., node: _Optional[str] = ..., owner: _Optional[str] = ..., source: _Optional[str] = ..., ref: _Optional[str] = ..., address: _Optional[str] = ..., health: _Optional[_Union[Health, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("category", "tools", "has", "flags", "meta", "all_required", "verified", "permissions", "ignore_case", "healthy")
    class MetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    HAS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    ALL_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_CASE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    category: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    has: _containers.RepeatedScalarFieldContainer[str]
    flags: _containers.RepeatedScalarFieldContainer[str]
    meta: _containers.ScalarMap[str, str]
    all_required: bool
    verified: bool
    permissions: _containers.RepeatedScalarFieldContainer[str]
    ignore_case: bool
    healthy: bool
    def __init__(self, category: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., has: _Optional[_Iterable[str]] = ..., flags: _Optional[_Iterable[str]] = ..., meta: _Optional[_Mapping[str, str]] = ..., all_required: _Optional[bool] = ..., verified: _Optional[bool] = ..., permissions: _Optional[_Iterable[str]] = ..., ignore_case: _Optional[bool] = ..., healthy: _Optional[bool] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class FindRequest(_message.Message):
    __slots__ = ("capability_type", "required_tools")
    CAPABILITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TOOLS_FIELD_NUMBER: _ClassVar[int]
    capability_type: str
    required_tools: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, capability_type: _Optional[str] = ..., required_tools: _Optional[_Iterable[str]] = ...) -> None: ...

class FindResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerCapabilitiesProto]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerCapabilitiesProto, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("since", "stream")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    since: int
    stream: str
    def __init__(self, since: _Optional[int] = ..., stream: _Optional[str] = ...) -> None: ...

class WatchMessage(_message.Message):
    __slots__ = ("snapshot", "entry", "resumed", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    entry: Entry
    resumed: Resumed
    event: Event
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("stream", "sequence", "entries")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    stream: str
    sequence: int
    entries: int
    def __init__(self, stream: _Optional[str] = ..., sequence: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ("stream", "sequence")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    stream: str
    sequence: int
    def __init__(self, stream: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("registry", "id", "source", "ref", "owner", "declaration", "health")
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DECLARATION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    registry: str
    id: str
    source: str
    ref: str
    owner: str
    declaration: WorkerCapabilitiesProto
    health: Health
    def __init__(self, registry: _Optional[str] = ..., id: _Optional[str] = ..., source: _Optional[str] = ..., ref: _Optional[str] = ..., owner: _Optional[str] = ..., declaration: _Optional[_Union[WorkerCapabilitiesProto, _Mapping]] = ..., health: _Optional[_Union[Health, _Mapping]] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("status", "output")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    status: str
    output: str
    def __init__(self, status: _Optional[str] = ..., output: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "action", "entry")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[Event.Action]
        CREATED: _ClassVar[Event.Action]
        UPDATED: _ClassVar[Event.Action]
        DELETED: _ClassVar[Event.Action]
        HEALTH: _ClassVar[Event.Action]
        WITHDRAWN: _ClassVar[Event.Action]
    ACTION_UNSPECIFIED: Event.Action
    CREATED: Event.Action
    UPDATED: Event.Action
    DELETED: Event.Action
    HEALTH: Event.Action
    WITHDRAWN: Event.Action
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    action: Event.Action
    entry: Entry
    def __init__(self, sequence: _Optional[int] = ..., action: _Optional[_Union[Event.Action, str]] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ...) -> None: ...

class CapabilityUpdate(_message.Message):
    __slots__ = ("action", "capabilities", "ttl")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[CapabilityUpdate.Action]
        REGISTER: _ClassVar[CapabilityUpdate.Action]
        UPDATE: _ClassVar[CapabilityUpdate.Action]
        UNREGISTER: _ClassVar[CapabilityUpdate.Action]
    ACTION_UNSPECIFIED: CapabilityUpdate.Action
    REGISTER: CapabilityUpdate.Action
    UPDATE: CapabilityUpdate.Action
    UNREGISTER: CapabilityUpdate.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    action: CapabilityUpdate.Action
    capabilities: WorkerCapabilitiesProto
    ttl: float
    def __init__(self, action: _Optional[_Union[CapabilityUpdate.Action, str]] = ..., capabilities: _Optional[_Union[WorkerCapabilitiesProto, _Mapping]] = ..., ttl: _Optional[float] = ...) -> None: ...

class UpdateAnswer(_message.Message):
    __slots__ = ("ok", "action", "id", "message", "errors")
    OK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    action: CapabilityUpdate.Action
    id: str
    message: str
    errors: _containers.RepeatedCompositeFieldContainer[FieldError]
    def __init__(self, ok: _Optional[bool] = ..., action: _Optional[_Union[CapabilityUpdate.Action, str]] = ..., id: _Optional[str] = ..., message: _Optional[str] = ..., errors: _Optional[_Iterable[_Union[FieldError, _Mapping]]] = ...) -> None: ...

class FieldError(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
