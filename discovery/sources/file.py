"""The file source: a directory of JSON/YAML declarations (bare-metal workers, quick start).

A file holds one declaration, a JSON array of them, or a multi-document YAML stream.
A single declaration without an ``id`` takes the file name's stem as its id.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from config.errors import DeclarationError, SourceError
from config.settings import SourceName, SourceSettingsBase
from discovery import documents
from discovery.kinds import BuildContext, Kind, field_arg
from discovery.sources.base import Declaration, Listing, parse_one
from discovery.validations import Key, Validations

POLL_SECONDS = 1.0
SUFFIXES: dict[str, documents.Format] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


Stat = tuple[int, int, int]


@dataclass
class FileSource:
    path: Path
    name: str = "file"
    # path -> what it held (its declarations without their bodies, its errors): unchanged
    # files are not read or parsed again. Their stats are the last scan's, in _last.
    _cache: dict[str, tuple[tuple[Declaration, ...], tuple[DeclarationError, ...]]] = field(
        default_factory=dict, repr=False
    )
    # The last scan and its listing (bodies left out): handed back as the same object
    # while no file's stat changed, so the cycle knows nothing did.
    _last: tuple[dict[str, Stat], Listing] | None = field(default=None, repr=False)

    # What earlier processes validated (the state directory): a file they validated is
    # not parsed by a new process.
    validations: Validations | None = field(default=None, repr=False)

    def list(self) -> Listing:
        if not self.path.is_dir():
            raise SourceError(f"source {self.name}: {self.path} is not a readable directory")
        try:
            files = self._scan()
        except OSError as exc:
            raise SourceError(f"source {self.name}: cannot list {self.path}: {exc}") from exc
        if self._last is not None and self._last[0] == files:
            return self._last[1]
        before = self._last[0] if self._last is not None else {}
        listing, cache, kept = Listing(), {}, Listing()
        known = self._known()
        for path in sorted(files):
            held = self._cache.get(path)
            if held is None or before.get(path) != files[path]:
                fresh = read_file(path, self.name, known)
                listing.extend(fresh)
                # Kept without parsed bodies or bytes: a known file's declarations are
                # kept as they are (they hold neither), any other's re-read when needed.
                held = (
                    tuple(
                        d
                        if isinstance(d.reload, _Reread)
                        else d.without_body(_Reread(path, d.ref, d.fingerprint))
                        for d in fresh.declarations
                    ),
                    tuple(fresh.invalid),
                )
            else:
                listing.declarations.extend(held[0])
                listing.invalid.extend(held[1])
            kept.declarations.extend(held[0])
            kept.invalid.extend(held[1])
            cache[path] = held
        self._cache = cache
        # What is kept holds no parsed body (a re-read when needed), like the cache.
        self._last = (files, kept)
        return listing

    def _known(self) -> Callable[[Key], bool] | None:
        return None if self.validations is None else partial(self.validations.knows, self.name)

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """Poll the directory's file names, sizes and modification times: portable, and
        cheap next to a sync (inotify would need a dependency for little gain)."""
        seen = self._safe_scan()
        while not stop.wait(POLL_SECONDS):
            current = self._safe_scan()
            if current != seen:
                changed = sorted(set(current.items()) ^ set(seen.items()))
                notify(
                    f"file {changed[0][0]} changed"
                    + (f" (+{len(changed) - 1} more)" if len(changed) > 1 else "")
                )
                seen = current

    def close(self) -> None:
        """Nothing to release: no handle stays open, and ``watch`` polls its stop event."""

    def _scan(self) -> dict[str, Stat]:
        """Declaration files below the directory, hidden ones (and hidden folders) skipped.

        os.scandir, not Path.rglob: a steady cycle over 10,000 files spends most of its
        listing time here, and scandir's entries carry their stat.
        """
        found: dict[str, Stat] = {}
        folders = [str(self.path)]
        while folders:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.name.endswith(tuple(SUFFIXES)):
                        _add_file(found, entry)
        return found

    def _safe_scan(self) -> dict[str, Stat]:
        try:
            return self._scan()
        except OSError:
            return {}  # the directory went away; the next listing reports it


def _add_file(found: dict[str, Stat], entry: os.DirEntry[str]) -> None:
    """A declaration file and its stamp. One that cannot be looked at (a symlink loop, no
    permission) is still listed: reading it reports that file invalid, and only it."""
    try:
        if not entry.is_file():
            return  # a FIFO, a device, a socket, a dangling link: not a declaration
        st = entry.stat()
    except OSError as exc:
        found[entry.path] = (-1, -1, exc.errno or 0)
        return
    found[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino)


def _reread(path: str, ref: str, fingerprint: Hashable) -> Any:
    """One declaration of a file, read again (its validation was not remembered): the
    content it was listed with, or an error (what is validated is always what the
    fingerprint names, so a validation is never remembered under another's)."""
    listing = read_file(path, "file")
    if listing.invalid:
        raise listing.invalid[0]
    for declaration in listing.declarations:
        if declaration.ref == ref and declaration.fingerprint == fingerprint:
            return declaration.body()
    raise DeclarationError(ref, [("", "the file changed while it was being read")])


@dataclass(frozen=True, slots=True)
class _Reread:
    """``_reread`` of one declaration: what a remembered declaration keeps to read its
    body again (a third of a ``partial``'s size, once per file of a large fleet)."""

    path: str
    ref: str
    fingerprint: Hashable

    def __call__(self) -> Any:
        return _reread(self.path, self.ref, self.fingerprint)


def read_file(path: Path | str, source: str, known: Callable[[Key], bool] | None = None) -> Listing:
    """One file's declarations, or its one error. Each is fingerprinted by a digest of
    the file's bytes: the same digest at the same ref is the same declaration, in this
    process or (the Normaliser's memory on disk) a later one. A file that ``known`` says
    an earlier process validated is not parsed: those very bytes at this path were one
    valid declaration (its ref is the path's only then) for the same code, so they are
    again; it is parsed when it has to be validated after all."""
    ref = os.fspath(path)
    # os.path on the text, not pathlib: per file of a large fleet, pathlib's parsing was
    # a third of a new process's listing.
    stem, suffix = os.path.splitext(os.path.basename(ref))  # noqa: PTH119, PTH122
    try:
        raw = documents.read_document(path, ref)
        fingerprint = hashlib.blake2b(raw, digest_size=16).digest()
        if known is not None and known((ref, fingerprint, stem, "")):
            unparsed = Declaration(
                source,
                ref,
                None,
                default_id=stem,
                fingerprint=fingerprint,
                reload=_Reread(ref, ref, fingerprint),
            )
            return Listing([unparsed])
        fmt = SUFFIXES.get(suffix, "auto")
        if fmt == "json" and raw.lstrip()[:1] == b"{":
            # One JSON object (or an error): parsed when it is validated, so a listing of
            # 50,000 new files holds their bytes, not 50,000 parsed bodies at once.
            later = partial(parse_one, raw, ref)
            one = Declaration(
                source, ref, None, default_id=stem, fingerprint=fingerprint, reload=later
            )
            return Listing([one])
        items = documents.parse(raw, ref=ref, fmt=fmt, many=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Listing(invalid=[DeclarationError(ref, [("", f"cannot read: {reason}")])])
    except DeclarationError as exc:
        return Listing(invalid=[exc])
    default_id = stem if len(items) == 1 else None
    return Listing(
        declarations=[
            Declaration(
                source=source,
                ref=item_ref,
                data=data,
                default_id=default_id,
                fingerprint=fingerprint,
            )
            for item_ref, data in items
        ]
    )


class FileSourceSettings(SourceSettingsBase):
    """A directory of JSON/YAML declarations."""

    type: Literal["file"]
    name: SourceName = "file"
    path: Path


def build(settings: FileSourceSettings, ctx: BuildContext) -> FileSource:
    return FileSource(settings.path, name=settings.name, validations=ctx.validations)


KIND = Kind("file", FileSourceSettings, "DIR", field_arg("path", required=True), build)
