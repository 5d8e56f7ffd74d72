"""The Normaliser's memory kept on disk, so that a new process (``capsync run --once``, a
restart) does not validate again what an earlier one validated.

Safe by construction:
- an entry is found only by what the declaration *is*: its source, ref, default id,
  address and a fingerprint that is its raw text or a digest of its bytes (a ``str`` or
  ``bytes`` fingerprint; a stat, which says nothing of the content, is never kept);
- the file starts with a header naming its format, a digest of the code that validates
  (every module of ``discovery`` and ``config``) and a checksum of the rest: a file
  written by other code, or damaged anywhere, is ignored, never read as today's answer;
- anything unreadable (absent, truncated, corrupt, foreign, too large, not ours) is
  ignored with one log line: the declarations are validated, as without the file;
- it is written to a temporary file renamed over the old one (a crash leaves the old
  file or the new one, never half of one), and never larger than ``MAX_BYTES``.

Pickle, with the header checked before it is unpickled and the file in capsync's own
state directory, owned by this user and writable by no one else (whoever can write there
can already change capsync's state): a Capabilities is a graph of frozen dataclasses,
which marshal and JSON cannot hold without a hand-written codec to keep in step with the
model. Each dataclass is pickled as its constructor's arguments, which loads in half the
time of pickle's default (``__setstate__`` field by field).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import operator
import os
import pickle
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

from config.events import emit
from discovery.model import Capabilities

MAGIC = b"capsync-validations 1\n"
MAX_BYTES = 512 * 2**20
# A running daemon writes its memory at most this often (and after its first cycle):
# what changed since costs a restart one validation each, never a wrong entry.
SAVE_SECONDS = 300.0
CODE = ("discovery", "config")  # the packages whose code a validation depends on
K = TypeVar("K")
V = TypeVar("V")

# (ref, fingerprint, default id, address): a declaration's key in the Normaliser's memory.
Key = tuple[str, Hashable, str | None, str]


def persistable(fingerprint: Hashable) -> bool:
    """A fingerprint that is the declaration's content (its raw text, or a digest of its
    bytes), so the same fingerprint in another process means the same declaration."""
    return isinstance(fingerprint, str | bytes)


@dataclass(frozen=True)
class Format:
    """What a kept file is: its first line, the name of its log lines
    (``<name>_ignored``...), what is done without it, the test of each value, and the
    packages whose code its values depend on (their digest is its second line)."""

    magic: bytes
    name: str
    redo: str
    valid: Callable[[Any], bool]
    packages: tuple[str, ...] = CODE


class Kept(Generic[K, V]):
    """A memory of part -> key -> value kept in the file at ``path`` (None: nothing is
    kept on disk): read once, by whoever asks first; written when ``due``."""

    def __init__(self, path: Path | None, form: Format, clock: Any = time.monotonic) -> None:
        self.path = path
        self._header = form.magic + code_version(form.packages)
        self._name, self._redo, self._valid = form.name, form.redo, form.valid
        self._clock = clock
        self._saved_at: float | None = None
        self._loaded: dict[str, dict[K, V]] | None = None
        self._lock = threading.Lock()  # a source's listing runs in a thread of its own

    def kept(self, part: str) -> dict[K, V]:
        """What an earlier process kept of ``part``."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded.get(part, {})

    def parts(self) -> list[str]:
        """Every part an earlier process kept."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return list(self._loaded)

    def release(self, part: str) -> None:
        """Forget what was kept of ``part`` (whoever needed it has taken it)."""
        with self._lock:
            if self._loaded is not None:
                self._loaded.pop(part, None)

    def _load(self) -> dict[str, dict[K, V]]:
        """What an earlier process kept; empty (and one log line) when the file cannot
        be trusted."""
        if self.path is None:
            return {}
        try:
            memory = self._read(self.path)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # whatever is wrong with it, it only costs the work
            emit(
                logging.WARNING,
                f"{self._name}_ignored",
                path=str(self.path),
                reason=_reason(exc),
                action=self._redo,
            )
            return {}
        emit(
            logging.INFO,
            f"{self._name}_loaded",
            path=str(self.path),
            count=sum(len(keys) for keys in memory.values()),
        )
        return memory

    def due(self) -> bool:
        """Whether a changed memory is written now: the first time, then at most every
        ``SAVE_SECONDS``."""
        return self.path is not None and (
            self._saved_at is None or self._clock() - self._saved_at >= SAVE_SECONDS
        )

    def save(self, memory: Mapping[str, Mapping[K, V]]) -> None:
        """Write ``memory``; a failure (no state directory, a full disk) is one log line."""
        if self.path is None:
            return
        self._saved_at = self._clock()
        try:
            body = _dumps(memory)
            data = self._header + _checksum(body) + body
            if len(data) > MAX_BYTES:
                raise ValueError(f"{len(data)} bytes, more than the limit of {MAX_BYTES}")
            _replace(self.path, data)
        except Exception as exc:  # the cycle is done; only a later start pays for this
            if isinstance(exc, FileNotFoundError) and not self.path.parent.exists():
                return  # no state directory (a user's `run --once`): nothing to keep it in
            emit(
                logging.WARNING,
                f"{self._name}_not_saved",
                path=str(self.path),
                reason=_reason(exc),
            )

    def _read(self, path: Path) -> dict[str, dict[K, V]]:
        # Non-blocking: a FIFO put in its place fails the check below instead of hanging.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ValueError("not owned by this user, or writable by others")
            if info.st_size > MAX_BYTES:
                raise ValueError(f"{info.st_size} bytes, more than the limit of {MAX_BYTES}")
            magic, version = self._header.split(b"\n", 1)
            if handle.readline() != magic + b"\n":
                raise ValueError(f"not a file of {self._name} in this format")
            if handle.readline() != version:
                raise ValueError("written by another version of capsync")
            checksum, body = handle.readline(), handle.read()
        if checksum != _checksum(body):
            raise ValueError("truncated or corrupt (its checksum does not match)")
        memory = pickle.loads(body)  # noqa: S301 (checked: our file, our code, intact)
        if not isinstance(memory, dict) or not all(
            isinstance(keys, dict) and all(self._valid(value) for value in keys.values())
            for keys in memory.values()
        ):
            raise ValueError(f"not a memory of {self._name}")
        return memory


FORMAT = Format(
    MAGIC,
    "validations",
    "validating every declaration",
    lambda value: isinstance(value, Capabilities),
)


class Validations(Kept[Key, Capabilities]):
    """The Normaliser's memory (source -> key -> validation) in the file at ``path``."""

    def __init__(self, path: Path | None, clock: Any = time.monotonic) -> None:
        super().__init__(path, FORMAT, clock)

    def knows(self, source: str, key: Key) -> bool:
        """Whether an earlier process validated this very declaration: a source may then
        leave it unparsed (its Normaliser reuses the validation)."""
        return key in self.kept(source)


@cache
def code_version(packages: tuple[str, ...] = CODE) -> bytes:
    """A digest of the source of every module of ``packages`` (by default those that
    read, validate or model a declaration): another capsync (an upgrade, a local
    change) never reuses this one's."""
    digest = hashlib.blake2b(digest_size=16)
    for package in packages:
        root = Path(__file__).resolve().parents[1] / package
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest().encode() + b"\n"


def _checksum(body: bytes) -> bytes:
    """The header's last line: a flipped byte in a name never loads as another name."""
    return hashlib.blake2b(body, digest_size=32).hexdigest().encode() + b"\n"


def _dumps(memory: Mapping[str, Mapping[Any, Any]]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(memory)
    return buffer.getvalue()


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        """A dataclass as its class and its fields in order: loaded by its constructor."""
        kind = type(obj)
        fields = _FIELDS[kind] if kind in _FIELDS else _fields(kind)
        if fields is None:
            return NotImplemented
        return kind, fields(obj)


# A dataclass -> its fields' values in order, read in C (one attrgetter), or None.
_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]] | None] = {}


def _fields(kind: type) -> Callable[[Any], tuple[Any, ...]] | None:
    """A dataclass's fields, when its constructor takes every one of them."""
    fields = dataclasses.fields(kind) if dataclasses.is_dataclass(kind) else None
    names = [f.name for f in fields] if fields and all(f.init for f in fields) else []
    getter: Callable[[Any], tuple[Any, ...]] | None = None
    if len(names) > 1:
        getter = operator.attrgetter(*names)
    elif names:
        one = operator.attrgetter(names[0])  # of one name: the value, not a 1-tuple

        def getter(obj: Any) -> tuple[Any, ...]:
            return (one(obj),)

    _FIELDS[kind] = getter
    return getter


def _replace(path: Path, data: bytes) -> None:
    """``data`` at ``path``, atomically: written beside it, flushed, renamed over it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
