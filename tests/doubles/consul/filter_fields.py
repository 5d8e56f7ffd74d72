"""Which selectors and operators go-bexpr allows on the types Consul filters.

Consul calls bexpr.CreateFilter(expr, nil, <result type>), and go-bexpr (v0.1.x, the
version Consul pins) derives a field configuration from the Go type by reflection
(field_config.go): strings allow ==, !=, in, not in, matches, not matches; other scalars
== and !=; slices of scalars in, not in, is empty, is not empty; string-keyed maps is empty,
is not empty, in, not in plus any key as a sub-selector; structs only their fields. Fields
tagged `bexpr:"-"` (raft indexes, locality, enterprise meta) are not selectable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ANY_KEY = ""


@dataclass(frozen=True)
class Field:
    ops: frozenset[str] = frozenset()
    coerce: str | None = None  # "string", "int" or "bool": how the expression value parses
    sub: dict[str, Field] = field(default_factory=dict)
    kind: str = "struct"  # "scalar", "list", "map" or "struct": how data is walked


def _scalar(coerce: str) -> Field:
    ops = {"==", "!="} | (
        {"in", "not in", "matches", "not matches"} if coerce == "string" else set()
    )
    return Field(frozenset(ops), coerce, kind="scalar")


STRING = _scalar("string")
INT = _scalar("int")
BOOL = _scalar("bool")
STRINGS = Field(frozenset({"in", "not in", "is empty", "is not empty"}), "string", kind="list")


def _map(value: Field) -> Field:
    return Field(
        frozenset({"is empty", "is not empty", "in", "not in"}),
        "string",
        {ANY_KEY: value},
        kind="map",
    )


def _struct(**fields: Field) -> Field:
    return Field(sub=fields)


def _struct_list(**fields: Field) -> Field:
    return Field(frozenset({"is empty", "is not empty"}), sub=fields, kind="list")


STRING_MAP = _map(STRING)
_SERVICE_ADDRESSES = _map(_struct(Address=STRING, Port=INT))
_WEIGHTS = _struct(Passing=INT, Warning=INT)
_PROXY = _struct(
    DestinationServiceName=STRING,
    DestinationServiceID=STRING,
    LocalServiceAddress=STRING,
    LocalServicePort=INT,
    LocalServiceSocketPath=STRING,
    Mode=STRING,
    Upstreams=_struct_list(
        DestinationType=STRING,
        DestinationNamespace=STRING,
        DestinationName=STRING,
        Datacenter=STRING,
        LocalBindAddress=STRING,
        LocalBindPort=INT,
    ),
    MeshGateway=_struct(Mode=STRING),
    Expose=_struct(Checks=BOOL),
    TransparentProxy=_struct(OutboundListenerPort=INT, DialedDirectly=BOOL),
)
_CONNECT = _struct(Native=BOOL)

# structs.ServiceNode: /v1/catalog/service/:name and /v1/catalog/services.
SERVICE_NODE = _struct(
    ID=STRING,
    Node=STRING,
    Address=STRING,
    Datacenter=STRING,
    TaggedAddresses=STRING_MAP,
    NodeMeta=STRING_MAP,
    ServiceKind=STRING,
    ServiceID=STRING,
    ServiceName=STRING,
    ServiceTags=STRINGS,
    ServiceAddress=STRING,
    ServiceTaggedAddresses=_SERVICE_ADDRESSES,
    ServiceWeights=_WEIGHTS,
    ServiceMeta=STRING_MAP,
    ServicePort=INT,
    ServiceSocketPath=STRING,
    ServiceEnableTagOverride=BOOL,
    ServiceProxy=_PROXY,
    ServiceConnect=_CONNECT,
    PeerName=STRING,
)

# structs.NodeService: /v1/catalog/node/:node and /v1/catalog/node-services/:node.
NODE_SERVICE = _struct(
    Kind=STRING,
    ID=STRING,
    Service=STRING,
    Tags=STRINGS,
    Address=STRING,
    TaggedAddresses=_SERVICE_ADDRESSES,
    Meta=STRING_MAP,
    Port=INT,
    SocketPath=STRING,
    Weights=_WEIGHTS,
    EnableTagOverride=BOOL,
    Proxy=_PROXY,
    Connect=_CONNECT,
    PeerName=STRING,
)

# structs.Node: /v1/catalog/nodes.
NODE = _struct(
    ID=STRING,
    Node=STRING,
    Address=STRING,
    Datacenter=STRING,
    Partition=STRING,
    PeerName=STRING,
    TaggedAddresses=STRING_MAP,
    Meta=STRING_MAP,
)

# structs.HealthCheck: alone (/v1/health/node/:node), and as a list inside
# structs.CheckServiceNode.
_CHECK_FIELDS = {
    "Node": STRING,
    "CheckID": STRING,
    "Name": STRING,
    "Status": STRING,
    "Notes": STRING,
    "Output": STRING,
    "ServiceID": STRING,
    "ServiceName": STRING,
    "ServiceTags": STRINGS,
    "Type": STRING,
    "ExposedPort": INT,
    "PeerName": STRING,
}
HEALTH_CHECK = _struct(**_CHECK_FIELDS)
_HEALTH_CHECKS = _struct_list(**_CHECK_FIELDS)

# structs.CheckServiceNode: /v1/health/service/:name.
CHECK_SERVICE_NODE = _struct(Node=NODE, Service=NODE_SERVICE, Checks=_HEALTH_CHECKS)
