"""The Go request types Consul decodes bodies into, as decoding schemas.

Field lists follow agent/structs (catalog endpoints) and api/txn.go (the /v1/txn body is in
the api package's types). Fields Consul models with custom unmarshallers (proxy, connect,
check definitions) are accepted as raw JSON.
"""

from __future__ import annotations

from .gojson import ListOf, MapOf, Prim, Raw, Struct

STR = Prim("string")
BOOL = Prim("bool")
INT = Prim("int")
UINT = Prim("uint64")
STRINGS = ListOf(STR)
STR_MAP = MapOf(STR)

_RAFT = (("CreateIndex", UINT), ("ModifyIndex", UINT))
_LOCALITY = Struct("Locality", "structs", (("Region", STR), ("Zone", STR)))
_SERVICE_ADDRESS = Struct("ServiceAddress", "structs", (("Address", STR), ("Port", INT)))

WEIGHTS = Struct("Weights", "structs", (("Passing", INT), ("Warning", INT)))

NODE_SERVICE = Struct(
    "NodeService",
    "structs",
    (
        ("Kind", STR),
        ("ID", STR),
        ("Service", STR),
        ("Tags", STRINGS),
        ("Address", STR),
        ("TaggedAddresses", MapOf(_SERVICE_ADDRESS)),
        ("Meta", STR_MAP),
        ("Port", INT),
        ("SocketPath", STR),
        ("Weights", WEIGHTS),
        ("EnableTagOverride", BOOL),
        ("Locality", _LOCALITY),
        ("Proxy", Raw("structs.ConnectProxyConfig")),
        ("Connect", Raw("structs.ServiceConnect")),
        ("PeerName", STR),
        *_RAFT,
    ),
)

HEALTH_CHECK = Struct(
    "HealthCheck",
    "structs",
    (
        ("Node", STR),
        ("CheckID", STR),
        ("Name", STR),
        ("Status", STR),
        ("Notes", STR),
        ("Output", STR),
        ("ServiceID", STR),
        ("ServiceName", STR),
        ("ServiceTags", STRINGS),
        ("Type", STR),
        ("Interval", STR),
        ("Timeout", STR),
        ("ExposedPort", INT),
        ("Definition", Raw("structs.HealthCheckDefinition")),
        ("PeerName", STR),
        *_RAFT,
    ),
)

REGISTER_REQUEST = Struct(
    "RegisterRequest",
    "structs",
    (
        ("Datacenter", STR),
        ("ID", STR),
        ("Node", STR),
        ("Address", STR),
        ("TaggedAddresses", STR_MAP),
        ("NodeMeta", STR_MAP),
        ("Service", NODE_SERVICE),
        ("Check", HEALTH_CHECK),
        ("Checks", ListOf(HEALTH_CHECK)),
        ("Locality", _LOCALITY),
        ("SkipNodeUpdate", BOOL),
        ("PeerName", STR),
        ("Token", STR),
        *_RAFT,
    ),
)

# DeregisterRequest.UnmarshalJSON explicitly tolerates the obsolete Address field.
DEREGISTER_REQUEST = Struct(
    "DeregisterRequest",
    "structs",
    (
        ("Address", STR),
        ("Datacenter", STR),
        ("Node", STR),
        ("ServiceID", STR),
        ("CheckID", STR),
        ("PeerName", STR),
        ("Token", STR),
    ),
)

_KV_OP = Struct(
    "KVTxnOp",
    "api",
    (
        ("Verb", STR),
        ("Key", STR),
        ("Value", Prim("[]uint8")),
        ("Flags", UINT),
        ("Index", UINT),
        ("Session", STR),
        ("Namespace", STR),
        ("Partition", STR),
    ),
)
_API_NODE = Struct(
    "Node",
    "api",
    (
        ("ID", STR),
        ("Node", STR),
        ("Address", STR),
        ("Datacenter", STR),
        ("TaggedAddresses", STR_MAP),
        ("Meta", STR_MAP),
        *_RAFT,
        ("Partition", STR),
        ("PeerName", STR),
        ("Locality", _LOCALITY),
    ),
)
_AGENT_SERVICE = Struct(
    "AgentService",
    "api",
    (
        ("Kind", STR),
        ("ID", STR),
        ("Service", STR),
        ("Tags", STRINGS),
        ("Meta", STR_MAP),
        ("Port", INT),
        ("Address", STR),
        ("SocketPath", STR),
        ("TaggedAddresses", MapOf(_SERVICE_ADDRESS)),
        ("Weights", Struct("AgentWeights", "api", (("Passing", INT), ("Warning", INT)))),
        ("EnableTagOverride", BOOL),
        *_RAFT,
        ("ContentHash", STR),
        ("Proxy", Raw("api.AgentServiceConnectProxyConfig")),
        ("Connect", Raw("api.AgentServiceConnect")),
        ("PeerName", STR),
        ("Namespace", STR),
        ("Partition", STR),
        ("Datacenter", STR),
        ("Locality", _LOCALITY),
    ),
)
_API_CHECK = Struct(
    "HealthCheck",
    "api",
    (
        ("Node", STR),
        ("CheckID", STR),
        ("Name", STR),
        ("Status", STR),
        ("Notes", STR),
        ("Output", STR),
        ("ServiceID", STR),
        ("ServiceName", STR),
        ("ServiceTags", STRINGS),
        ("Type", STR),
        ("Namespace", STR),
        ("Partition", STR),
        ("ExposedPort", INT),
        ("PeerName", STR),
        ("Definition", Raw("api.HealthCheckDefinition")),
        *_RAFT,
    ),
)

TXN_OPS = ListOf(
    Struct(
        "TxnOp",
        "api",
        (
            ("KV", _KV_OP),
            ("Node", Struct("NodeTxnOp", "api", (("Verb", STR), ("Node", _API_NODE)))),
            (
                "Service",
                Struct(
                    "ServiceTxnOp",
                    "api",
                    (("Verb", STR), ("Node", STR), ("Service", _AGENT_SERVICE)),
                ),
            ),
            ("Check", Struct("CheckTxnOp", "api", (("Verb", STR), ("Check", _API_CHECK)))),
        ),
    ),
    go="api.TxnOps",
)

# structs.Session has its own UnmarshalJSON built on json.Unmarshal, so unknown keys pass.
SESSION = Struct(
    "Session",
    "structs",
    (
        ("ID", STR),
        ("Name", STR),
        ("Node", STR),
        ("LockDelay", Raw("time.Duration")),
        ("Behavior", STR),
        ("TTL", STR),
        ("NodeChecks", STRINGS),
        (
            "ServiceChecks",
            ListOf(Struct("ServiceCheck", "structs", (("ID", STR), ("Namespace", STR)))),
        ),
        ("Checks", STRINGS),
    ),
    strict=False,
)
