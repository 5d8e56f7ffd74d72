"""The file source: a directory of JSON/YAML declarations (bare-metal workers, quick start).

A file holds one declaration, a JSON array of them, or a multi-document YAML stream.
A single declaration without an ``id`` takes the file name's stem as its id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.errors import DeclarationError, SourceError
from discovery import documents
from discovery.sources.base import Declaration, Listing

POLL_SECONDS = 1.0
SUFFIXES: dict[str, documents.Format] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


@dataclass
class FileSource:
    path: Path
    name: str = "file"

    def list(self) -> Listing:
        if not self.path.is_dir():
            raise SourceError(f"source {self.name}: {self.path} is not a readable directory")
        try:
            files = sorted(
                p
                for p in self.path.rglob("*")
                if p.suffix in SUFFIXES and p.is_file() and not _hidden(p, self.path)
            )
        except OSError as exc:
            raise SourceError(f"source {self.name}: cannot list {self.path}: {exc}") from exc
        listing = Listing()
        for file in files:
            read_file(file, self.name, listing)
        return listing

    def watch(self, notify: Callable[[str], None], stop: threading.Event) -> None:
        """Poll the directory's file names, sizes and modification times: portable, and
        cheap next to a sync (inotify would need a dependency for little gain)."""
        seen = self._signature()
        while not stop.wait(POLL_SECONDS):
            current = self._signature()
            if current != seen:
                changed = sorted(set(current.items()) ^ set(seen.items()))
                notify(f"file {changed[0][0]} changed" + (
                    f" (+{len(changed) - 1} more)" if len(changed) > 1 else ""))
                seen = current

    def _signature(self) -> dict[str, tuple[int, int]]:
        try:
            return {
                str(p): (st.st_mtime_ns, st.st_size)
                for p in self.path.rglob("*")
                if p.suffix in SUFFIXES and not _hidden(p, self.path)
                and (st := p.stat())
            }
        except OSError:
            return {}


def read_file(path: Path, source: str, into: Listing) -> None:
    """Add the declarations of one file, or its one error, to ``into``."""
    ref = str(path)
    try:
        raw = path.read_bytes()
        items = documents.parse(raw, ref=ref, fmt=SUFFIXES.get(path.suffix, "auto"), many=True)
    except OSError as exc:
        into.invalid.append(DeclarationError(ref, [("", f"cannot read: {exc.strerror}")]))
        return
    except DeclarationError as exc:
        into.invalid.append(exc)
        return
    default_id = path.stem if len(items) == 1 else None
    into.declarations.extend(
        Declaration(source=source, ref=item_ref, data=data, default_id=default_id)
        for item_ref, data in items
    )


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
