"""The Redis registry, in the seed's layout, so the seed's readers work unchanged.

Keys, with ``P`` the configured prefix (default empty, which is the seed's own layout)::

    P<id>                       string: the declaration JSON (seed snake_case)
    Ptool:<name>                set: ids of the workers whose all_tools() has <name>
                                (expired tools included, as the seed library indexes)
    Pcapsync:entry:<id lower>   hash: id (as written, its case) owner service source ref
                                digest address port meta tags (the entry's, as written)
                                sets (its tool sets)
    Pcapsync:owner:<owner>      set: the ids this owner wrote (any service)
    Pcapsync:entries            set: every id capsync wrote, any owner
    Pcapsync:node:<owner>       hash: the owner's node meta, as Consul's node carries it:
                                capsync-owner, capsync-writer-<service> = the writer,
                                capsync-guard-<service> = the deletion guard's marks

Ids never contain ``:``, so a worker key can never be a ``tool:`` set or a ``capsync:``
key (a tool name, kept as declared, may hold ``:``: its set key still begins ``tool:``).
Ids compare case-insensitively (the ``capsync:entry`` hash is keyed by the lower-cased
id): a case-only rename replaces the key in the same script. A key
capsync did not write (no ``capsync:entry`` hash, or one of another owner or service) is
never written or deleted: the entry is refused and reported. The writer claim
(daemon/registry/writer.py) is checked and recorded by each batch's script.

Every batch is one Lua script (one round trip, atomic): a reader never sees an entry
without its tool sets or a set member without its entry. Redis does not roll back a
script that fails half-way, so the script checks every key of the batch before its first
write. Reads are one read-only script each.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field

from config.errors import ConfigError, RegistryError
from config.events import emit
from config.secrets import read_secret
from config.settings import KindName
from daemon.plan import Changes
from daemon.query import Query
from daemon.registry import store
from daemon.registry.base import (
    ApplyResult,
    KeptRead,
    Listed,
    Operation,
    Refused,
    Snapshot,
)
from daemon.registry.ownership import Ownership
from daemon.registry.store import Claim, StoreConnection, StoreSettings
from discovery import seed_store
from discovery.codec import Entry
from discovery.health import Health, health_text
from discovery.kinds import BuildContext, Kind, field_arg

if TYPE_CHECKING:
    import redis

EXTRA_HINT = "the redis registry needs the 'redis' extra: pip install 'capsync[redis]'"
_ORIGIN_FIELDS = ("owner", "service", "source", "ref", "digest", "address", "meta", "port")

_APPLY = """#!lua
local b = cjson.decode(ARGV[1])
local p, owner, service = b.prefix, b.owner, b.service
local node = p .. 'capsync:node:' .. owner
local holder = redis.call('HGET', node, b.field) or ''
if holder ~= b.writer and (holder ~= b.seen or #b.claim == 0) then
  return cjson.encode({held = redis.call('HGETALL', node)})
end
if #b.claim > 0 then redis.call('HSET', node, unpack(b.claim)) end  -- the claim, the marks
local function book(id) return p .. 'capsync:entry:' .. string.lower(id) end
local function problem(op)
  local bk = book(op.id)
  local holder = redis.call('HGET', bk, 'owner')
  local id = redis.call('HGET', bk, 'id') or op.id
  local kind = redis.call('TYPE', p .. id).ok
  if holder == false then
    if kind ~= 'none' then
      return 'key ' .. p .. op.id .. ' (' .. kind .. ') was not written by capsync; ' ..
        'left as it is', true
    end
  else
    local svc = redis.call('HGET', bk, 'service') or ''
    if holder ~= owner or string.lower(svc) ~= service then
      return id .. ' belongs to another writer (capsync-owner ' .. holder .. ', service ' ..
        svc .. '); left as it is', true
    elseif kind ~= 'string' and kind ~= 'none' then
      return 'key ' .. p .. id .. ' now holds a ' .. kind .. '; left as it is', true
    end
  end
  for _, tool in ipairs(op.sets or {}) do
    local t = redis.call('TYPE', p .. 'tool:' .. tool).ok
    if t ~= 'none' and t ~= 'set' then
      return 'key ' .. p .. 'tool:' .. tool .. ' is a ' .. t .. ', not a set; left as it is'
    end
  end
  return nil
end
local refused, good = {}, {}
for _, op in ipairs(b.ops) do
  local reason, foreign = problem(op)
  if reason then
    refused[#refused + 1] = {op.id, reason, foreign or false}
  else
    good[#good + 1] = op
  end
end
for _, op in ipairs(good) do
  local bk = book(op.id)
  if op.health then  -- the health alone, in capsync's bookkeeping: the seed's keys stay
    if redis.call('HGET', bk, 'owner') then redis.call('HSET', bk, 'health', op.health) end
  else
  local id = redis.call('HGET', bk, 'id') or op.id  -- the key as written (its case)
  local old = redis.call('HGET', bk, 'sets')
  if old then
    for _, tool in ipairs(cjson.decode(old)) do redis.call('SREM', p .. 'tool:' .. tool, id) end
  end
  if op.value then
    if id ~= op.id then  -- a case-only rename: the old key goes in the same script
      redis.call('DEL', p .. id)
      redis.call('SREM', p .. 'capsync:owner:' .. owner, id)
      redis.call('SREM', p .. 'capsync:entries', id)
    end
    redis.call('SET', p .. op.id, op.value)
    for _, tool in ipairs(op.sets) do redis.call('SADD', p .. 'tool:' .. tool, op.id) end
    local fields = {}
    for name, value in pairs(op.origin) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    redis.call('HSET', bk, unpack(fields))
    redis.call('SADD', p .. 'capsync:owner:' .. owner, op.id)
    redis.call('SADD', p .. 'capsync:entries', op.id)
  elseif old then
    redis.call('DEL', p .. id, bk)
    redis.call('SREM', p .. 'capsync:owner:' .. owner, id)
    redis.call('SREM', p .. 'capsync:entries', id)
  end
  end
end
return cjson.encode({refused = refused})
"""

# The snapshot: ARGV[1] the prefix, ARGV[2] {"entries", "mine": the two sets, "node": the
# owner's node hash, "owner", "check": ids found squatted before}. Every id either set
# lists is classified by its own capsync:entry hash, not by the sets, so a lost set never
# turns capsync's entries into someone else's. When both sets are gone while the node
# hash remains (evicted), the entry hashes are found by SCAN. Answers {rows, the node
# hash (flat), squatted ids, ids of this owner missing from a set (to add back)}.
_SNAPSHOT = """#!lua flags=no-writes
local p, q = ARGV[1], cjson.decode(ARGV[2])
local ids = redis.call('SUNION', q.entries, q.mine)
if #ids == 0 and redis.call('EXISTS', q.node) == 1 then
  local cursor = '0'
  repeat
    local found = redis.call('SCAN', cursor, 'MATCH', p .. 'capsync:entry:*', 'COUNT', 1000)
    cursor = found[1]
    for _, book in ipairs(found[2]) do
      local id = redis.call('HGET', book, 'id')
      if id then ids[#ids + 1] = id end
    end
  until cursor == '0'
end
local rows, lost = {}, {}
for _, id in ipairs(ids) do
  local book = p .. 'capsync:entry:' .. string.lower(id)
  local value = redis.pcall('GET', p .. id)
  if type(value) == 'table' then value = false end
  rows[#rows + 1] = {id, redis.call('HGETALL', book), value}
  if redis.call('HGET', book, 'owner') == q.owner and (
    redis.call('SISMEMBER', q.mine, id) == 0 or redis.call('SISMEMBER', q.entries, id) == 0
  ) then
    lost[#lost + 1] = id
  end
end
local squatted = {}
for _, id in ipairs(q.check) do
  if redis.call('EXISTS', p .. id) == 1
    and redis.call('EXISTS', p .. 'capsync:entry:' .. string.lower(id)) == 0 then
    squatted[#squatted + 1] = id
  end
end
return {rows, redis.call('HGETALL', q.node), squatted, lost}
"""

# Puts ids back into the owner's set and the set of every id: KEYS none, ARGV[1] the
# owner's set, ARGV[2] the set of every id, ARGV[3...] the ids.
_REBUILD = """#!lua
for i = 3, #ARGV do
  redis.call('SADD', ARGV[1], ARGV[i])
  redis.call('SADD', ARGV[2], ARGV[i])
end
return #ARGV - 2
"""

# Reads: ARGV[1] the prefix, ARGV[2] {"all": sets to intersect, "any": sets of which an
# id must be in one}. Answers {rows}, a row being {id, its capsync:entry hash (flat,
# keyed by the lower-cased id), value or false}.
_READ = """#!lua flags=no-writes
local p, q = ARGV[1], cjson.decode(ARGV[2])
local rows = {}
for _, id in ipairs(redis.call('SINTER', unpack(q.all))) do
  local keep = #q.any == 0
  for _, set in ipairs(q.any) do
    if not keep and redis.call('SISMEMBER', set, id) == 1 then keep = true end
  end
  if keep then
    local value = redis.pcall('GET', p .. id)
    if type(value) == 'table' then value = false end
    local book = p .. 'capsync:entry:' .. string.lower(id)
    rows[#rows + 1] = {id, redis.call('HGETALL', book), value}
  end
end
return {rows}
"""


@dataclass(frozen=True)
class RedisEndpoint:
    """Where the server is; ``url`` is redis:// or rediss:// (TLS)."""

    url: str
    connection: StoreConnection = field(default_factory=StoreConnection)
    ssl_verify: bool = True


def connect(endpoint: RedisEndpoint) -> redis.Redis:
    try:
        import redis  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    conn = endpoint.connection
    options: dict[str, Any] = {
        "socket_timeout": conn.timeout,
        "socket_connect_timeout": conn.timeout,
        "decode_responses": True,
        # No CLIENT SETINFO on connect: a round trip per connection for nothing we use.
        "driver_info": None,
        "protocol": 2,  # RESP2: no HELLO round trip on connect
    }
    if conn.password_file is not None:
        if urlsplit(endpoint.url).password:
            # redis-py lets the URL's password win over the file's: say so, never guess.
            raise ConfigError(
                "redis registry: the url carries a password and "
                "registry.password_file is set; keep one of them"
            )
        options["password"] = read_secret(conn.password_file, "registry.password_file")
    if endpoint.url.startswith("rediss://"):
        options.update(
            ssl_ca_certs=str(conn.ca_file) if conn.ca_file else None,
            ssl_certfile=str(conn.cert_file) if conn.cert_file else None,
            ssl_keyfile=str(conn.key_file) if conn.key_file else None,
            ssl_cert_reqs="required" if endpoint.ssl_verify else "none",
        )
    try:
        return redis.Redis.from_url(endpoint.url, **options)
    except ValueError as exc:
        raise ConfigError(f"registry.url: {exc}") from None


class RedisRegistry:
    def __init__(
        self,
        client: redis.Redis,
        ownership: Ownership,
        *,
        prefix: str = "",
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._ownership = ownership
        self._prefix = prefix
        self.batch_size = batch_size
        self.claim = Claim("redis", ownership)
        self._decoder = seed_store.Decoder()
        self._clock = clock
        # Ids found held by a key capsync did not write: no set lists them, so the
        # snapshot checks them again and reports them as foreign (a conflict, no write).
        self._squatted: set[str] = set()
        self._policy_checked = False
        # The last full read, at the server's write count then.
        self._kept = KeptRead()

    def snapshot(self) -> Snapshot:
        """Every id capsync wrote, classified by what its own capsync:entry hash records:
        this owner's of this service are owned; others' (one key per id: never ours to
        write), ours that no longer decode, and keys capsync did not write are foreign
        (conflicts, left alone). Lost bookkeeping (a set evicted or deleted) is put back
        from the entry hashes."""
        self._warn_if_evictable()
        if self._kept.fresh() and (kept := self._kept.get(self._version())) is not None:
            return kept
        started = self._kept.start()
        snapshot, version = self._read_all()
        self._kept.keep(version, started, snapshot)
        return snapshot

    def _version(self) -> tuple[Any, ...] | None:
        """Redis's own count of writes since its last save, with that save's time: it
        moves with any write to the server (capsync's, anyone's) and with a restart;
        None when INFO is refused (the registry is then read in full every cycle)."""
        import redis  # noqa: PLC0415

        try:
            return _written(self._client.info("persistence"))
        except redis.RedisError:
            return None

    def _read_all(self) -> tuple[Snapshot, tuple[Any, ...] | None]:
        """Every row, and the server's write count when it stood still around the read
        (asked before and after it in the same round trip; else None)."""
        p = self._prefix
        mine, every = f"{p}capsync:owner:{self._ownership.owner}", f"{p}capsync:entries"
        query = {
            "entries": every,
            "mine": mine,
            "node": f"{p}capsync:node:{self._ownership.owner}",
            "owner": self._ownership.owner,
            "check": sorted(self._squatted),
        }
        before, (rows, meta, squatted, lost), after = self._around(
            "snapshot", _SNAPSHOT, p, json.dumps(query)
        )
        self.claim.update(_hash(meta))
        self._squatted = set(squatted)
        if lost:
            self._call("rebuild", _REBUILD, mine, every, *lost)
            emit(
                logging.WARNING,
                "registry_bookkeeping_rebuilt",
                registry=self._ownership.name,
                ids=len(lost),
                reason=f"{mine} or {every} had lost them (evicted or deleted)",
            )
        # Only this owner's rows of this service are decoded: the others are foreign.
        found = [
            (worker_id, self._decode(worker_id, origin, value) if self._ours(origin) else None)
            for worker_id, flat, value in rows
            if (origin := _hash(flat)) is not None
        ]
        snapshot = store.snapshot(found, self.claim, self._decoder, squatted)
        return snapshot, before if before is not None and before == after else None

    def _ours(self, origin: dict[str, str]) -> bool:
        return self._ownership.ours(origin.get("owner", ""), origin.get("service", ""))

    def _warn_if_evictable(self) -> None:
        """Once: a maxmemory-policy that may evict keys without a TTL (allkeys-*) can
        evict capsync's, its bookkeeping included. Servers that refuse CONFIG (managed
        Redis, an ACL) are not asked again."""
        import redis  # noqa: PLC0415

        if self._policy_checked:
            return
        self._policy_checked = True
        try:
            policy = self._client.config_get("maxmemory-policy").get("maxmemory-policy", "")
        except redis.RedisError:  # CONFIG is an operator's command, often denied
            return
        if str(policy).startswith("allkeys"):
            emit(
                logging.WARNING,
                "registry_may_evict",
                registry=self._ownership.name,
                maxmemory_policy=policy,
                action="use noeviction or a volatile-* policy: evicted entries are "
                "rebuilt from the sources, but an evicted entry is missing until then",
            )

    def apply(self, changes: Changes, stop: threading.Event | None = None) -> ApplyResult:
        result = store.apply_batches(self, changes, stop)
        self._squatted |= {item.id for item in result.conflicts}
        return result

    def send(self, batch: list[Operation]) -> list[Refused]:
        """One batch, one script: the writer claim, then every key checked, then written."""
        now = int(self._clock())
        stored = {
            op.entry.id: seed_store.stored(op.entry, now)
            for op in batch
            if op.action in ("create", "update")
        }
        ops: list[dict[str, Any]] = [
            {"id": op.entry.id, "sets": []}
            if op.removes
            else {"id": op.entry.id, "health": health_text(op.entry.health)}
            if op.action == "health"
            else _set_op(stored[op.entry.id], op.entry.health)
            for op in batch
        ]
        meta = self.claim.wanted()
        body = json.dumps(
            {
                "prefix": self._prefix,
                **self.claim.params(),
                "claim": [item for pair in (meta or {}).items() for item in pair],
                "ops": ops,
            }
        )
        try:
            answer = json.loads(self._call("apply", _APPLY, body))
        except RegistryError as exc:
            import redis  # noqa: PLC0415

            # An error answer (READONLY...): the script did not run, nothing was written.
            # Anything else (connection lost, time-out): no verdict.
            failed = (
                store.Rejected
                if isinstance(exc.__cause__, redis.ResponseError)
                else store.Interrupted
            )
            raise failed(str(exc)) from exc
        if "held" in answer:  # another writer took the node since it was read
            raise self.claim.lost(_hash(answer["held"]))
        if meta is not None:
            self.claim.update(meta)
        rejected = [
            Refused(worker_id, why, foreign=foreign)
            for worker_id, why, foreign in answer["refused"] or []
        ]
        skipped = {item.id for item in rejected}
        entries = {op.entry.id: op.entry for op in batch}
        for op in ops:
            if "value" in op and op["id"] not in skipped:
                self._decoder.written(entries[op["id"]], (op["value"],), stored[op["id"]])
        return rejected

    def entries(self, query: Query | None = None) -> list[Listed]:
        query = query or Query()
        tool = f"{self._prefix}tool:"
        every = [f"{self._prefix}capsync:entries", *(tool + name for name in query.has)]
        listed = [
            Listed(
                node=self._ownership.node_of(found.owner),
                entry=found,
            )
            for _, found in self._read(every, [tool + name for name in query.tools])
            if found is not None and found.service.lower() == self._ownership.service.lower()
        ]
        return sorted(listed, key=lambda item: item.entry.id)

    def close(self) -> None:
        self._client.close()

    def _read(self, every: list[str], some: list[str]) -> list[tuple[str, Entry | None]]:
        """Decode the ids in every set of ``every`` and in one of ``some`` (an entry that
        cannot be decoded is reported and comes back as None)."""
        selection = json.dumps({"all": every, "any": some})
        [rows] = self._call("read", _READ, self._prefix, selection)
        return [
            (worker_id, self._decode(worker_id, _hash(flat), value))
            for worker_id, flat, value in rows
        ]

    def _decode(self, worker_id: str, origin: dict[str, str], value: str | None) -> Entry | None:
        key = f"{self._prefix}{worker_id}"

        def decode() -> Entry:
            if not value or {*_ORIGIN_FIELDS, "tags"} - origin.keys():
                raise ValueError("missing, or not capsync's (no complete capsync:entry hash)")
            found = seed_store.Origin(
                **{name: origin[name] for name in _ORIGIN_FIELDS[:-1]}, port=int(origin["port"])
            )
            tags = tuple(json.loads(origin["tags"]))
            entry = self._decoder.entry(
                seed_store.Row(worker_id, (value,), found, tags),
                lambda: json.loads(value),
                where=f"redis key {key}",
                now=int(self._clock()),
            )
            return seed_store.with_health(entry, origin.get("health"))

        return store.decoded(decode, self._ownership.name, key=key)

    def _around(self, operation: str, script: str, *args: str) -> tuple[Any, Any, Any]:
        """``_call``, with the server's write count asked just before and just after it
        in the same round trip (None where INFO is refused)."""
        import redis  # noqa: PLC0415

        pipe = self._client.pipeline(transaction=False)
        pipe.info("persistence")
        pipe.eval(script, 0, *args)
        pipe.info("persistence")
        try:
            before, answer, after = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise RegistryError(f"redis registry: {operation} failed: {exc}") from exc
        if isinstance(answer, redis.RedisError):
            raise RegistryError(f"redis registry: {operation} failed: {answer}") from answer
        return _written(before), answer, _written(after)

    def _call(self, operation: str, script: str, *args: str) -> Any:
        import redis  # noqa: PLC0415

        try:
            return self._client.eval(script, 0, *args)
        except redis.RedisError as exc:
            raise RegistryError(f"redis registry: {operation} failed: {exc}") from exc


def _written(info: Any) -> tuple[Any, ...] | None:
    """The write count of an INFO persistence answer (None: refused)."""
    if not isinstance(info, dict):
        return None
    return info.get("rdb_changes_since_last_save"), info.get("rdb_last_save_time")


def _hash(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _set_op(stored: seed_store.Stored, health: Health) -> dict[str, Any]:
    """One write, as the apply script reads it: the tool sets are the seed's all_tools()
    (expired tools included, as the library indexes them); the hash keeps the entry's
    own tags, to give the entry back as written, and the sets, to leave them later."""
    sets = list(stored.all_tools)
    origin = {name: str(getattr(stored.origin, name)) for name in _ORIGIN_FIELDS}
    origin.update(id=stored.id, tags=json.dumps(list(stored.tags)), sets=json.dumps(sets))
    origin["health"] = health_text(health)
    return {"id": stored.id, "value": stored.text, "sets": sets, "origin": origin}


class RedisRegistrySettings(StoreSettings):
    """Redis in the seed's layout; ``url`` redis:// or rediss://, else REDIS_URL."""

    # REDIS_URL, handed over by the configuration loading; kept apart from ``url`` (which
    # ``config check`` shows) because it may carry a password.
    environment: ClassVar[Mapping[str, str]] = {"redis_url": "REDIS_URL"}

    backend: Literal["redis"]
    name: KindName = "redis"
    ssl_verify: bool = True
    prefix: Annotated[str, Field(max_length=64)] = ""
    redis_url: str | None = Field(None, exclude=True)


def build(settings: RedisRegistrySettings, ctx: BuildContext) -> RedisRegistry:
    url = settings.url or settings.redis_url or "redis://127.0.0.1:6379/0"
    endpoint = RedisEndpoint(
        url=url,
        connection=settings.connection(),
        ssl_verify=settings.ssl_verify,
    )
    return RedisRegistry(
        connect(endpoint),
        Ownership.of(settings, takeover=ctx.takeover),
        prefix=settings.prefix,
    )


KIND = Kind("redis", RedisRegistrySettings, "[URL]", field_arg("url", required=False), build)
