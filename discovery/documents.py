"""Raw bytes -> parsed declaration objects, with the input limits applied first.

Everything a source reads from the outside world (a label, an annotation, a file) passes
through here, so hostile input fails in one place with one clear message: too large,
not UTF-8, malformed, nested too deep, or a number too long to convert.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml

from config.errors import DeclarationError
from config.files import read_bounded

MAX_DOCUMENT_BYTES = 64 * 1024
Format = Literal["json", "yaml", "auto"]


def parse(
    raw: bytes | str, *, ref: str, fmt: Format = "json", many: bool = False
) -> list[tuple[str, Any]]:
    """Parse one input into (ref, object) pairs.

    ``many`` admits a JSON array of objects or a multi-document YAML stream (file inputs);
    each element gets ``ref[i]``. A label or an annotation holds exactly one object.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _too_large(ref, f"{len(data)} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeclarationError(
            ref, [("", f"input is not valid UTF-8 (byte {exc.start}: {exc.reason})")]
        ) from None
    if fmt == "auto":
        fmt = "json" if text.lstrip()[:1] in ("{", "[") else "yaml"
    documents = _load_json(text, ref) if fmt == "json" else _load_yaml(text, ref)
    if many and len(documents) == 1 and isinstance(documents[0], list):
        items = documents[0]
    elif len(documents) == 1:
        return [(ref, documents[0])]
    elif many:
        items = documents
    else:
        raise DeclarationError(
            ref, [("", f"expected one declaration, found {len(documents)} YAML documents")]
        )
    return [(f"{ref}[{index}]", item) for index, item in enumerate(items)]


def read_document(path: Path | str, ref: str) -> bytes:
    """A declaration file's bytes, the size limit applied before it is read whole: a
    1 GiB file costs what a 64 KiB one does. OSError when it cannot be read (a FIFO or a
    device is refused without blocking); DeclarationError when it is too large."""
    data = read_bounded(path, MAX_DOCUMENT_BYTES)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _too_large(ref, f"more than {MAX_DOCUMENT_BYTES} bytes")
    return data


def _too_large(ref: str, size: str) -> DeclarationError:
    return DeclarationError(
        ref,
        [
            (
                "",
                f"input is {size}; a declaration may be at most "
                f"{MAX_DOCUMENT_BYTES} bytes (64 KiB)",
            )
        ],
    )


def _load_json(text: str, ref: str) -> list[Any]:
    try:
        return [json.loads(text, object_pairs_hook=_no_duplicate_keys)]
    except json.JSONDecodeError as exc:
        reason = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    except RecursionError:
        reason = "malformed JSON: nested too deeply"
    except ValueError as exc:
        # Duplicate keys, and integers longer than Python's int conversion limit.
        too_long = "digits" in str(exc)
        reason = "malformed JSON: a number is too long" if too_long else f"malformed JSON: {exc}"
    raise DeclarationError(ref, [("", reason)])


def _load_yaml(text: str, ref: str) -> list[Any]:
    """Every document of a YAML stream, each bounded (``_bounded``) before it is built:
    a few hundred bytes of nested aliases expand to billions of nodes once walked."""
    loader = yaml.SafeLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            _bounded(node)
            if (document := loader.construct_document(node)) is not None:
                documents.append(document)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeclarationError(ref, [("", f"malformed YAML{where}: {problem}")]) from None
    except _OverLimit as exc:
        raise DeclarationError(ref, [("", f"YAML over its limits: {exc}")]) from None
    except RecursionError:
        raise DeclarationError(ref, [("", "malformed YAML: nested too deeply")]) from None
    finally:
        loader.dispose()
    if not documents:
        raise DeclarationError(ref, [("", "empty document: no declaration found")])
    return documents


# What one YAML document may expand to, aliases followed: far beyond any declaration
# (64 KiB of plain YAML holds at most some 30 000 nodes), far below a hang.
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


class _OverLimit(Exception):
    pass


def _bounded(root: yaml.Node) -> None:
    """Measure the document as it would be built, each shared (aliased) node counted
    every time it is used, in time linear in the composed graph; _OverLimit past a limit
    or on an alias to a node that contains it."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    open_nodes: set[int] = set()
    aliases = 0

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        nonlocal aliases
        key = id(node)
        if key in sizes:  # a node met again: an alias
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise _OverLimit(f"more than {MAX_YAML_ALIASES} aliases")
            return sizes[key]
        if key in open_nodes:
            raise _OverLimit("an alias refers to a node that contains it")
        if depth > MAX_YAML_DEPTH:
            raise _OverLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size, height = 1, 0
        for child in children:
            count, below = measure(child, depth + 1)
            size, height = size + count, max(height, below + 1)
            if size > MAX_YAML_NODES:
                raise _OverLimit(f"expands to more than {MAX_YAML_NODES} nodes")
            if depth + height > MAX_YAML_DEPTH:
                raise _OverLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
        open_nodes.discard(key)
        sizes[key] = (size, height)
        return size, height

    measure(root, 0)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # the common case stays in C; only a short dict needs a look
    if len(out) != len(pairs):
        duplicate = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"duplicate key {duplicate!r}")
    return out
