"""An image's file tree from its layers' tar headers alone (no file is extracted or kept).

Layers apply in order: a layer's whiteouts (`.wh.NAME`, and `.wh..wh..opq` for a whole
directory) delete what the layers below it hold, then its entries are added; symlinks are
resolved as the container's root would resolve them (absolute targets from the image's root).
Layers may be plain tar, gzip, bzip2 or xz; zstd needs the `zstandard` module (layer_stream.py).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from .layer_stream import LayerStream, LayerStreamError

DIR, FILE, SYMLINK, HARDLINK, OTHER = "dir", "file", "symlink", "hardlink", "other"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINKS = 40  # as Linux's path lookup


class LayerFormatError(Exception):
    """A layer that is not a tar archive this module can read."""


@dataclass(frozen=True)
class Entry:
    parts: tuple[str, ...]
    kind: str
    mode: int
    target: str = ""  # a symlink's target


@dataclass
class LayerFiles:
    """One layer's headers: entries in archive order, and what it deletes from the layers below."""

    entries: list[Entry] = field(default_factory=list)
    whiteouts: list[tuple[str, ...]] = field(default_factory=list)
    opaque: list[tuple[str, ...]] = field(default_factory=list)


@dataclass
class Node:
    kind: str
    mode: int = 0o755
    target: str = ""
    children: dict[str, Node] = field(default_factory=dict)


class RootFS:
    def __init__(self) -> None:
        self.root = Node(DIR)

    def apply(self, layer: LayerFiles) -> None:
        for parts in layer.opaque:
            node = self._walk(parts)
            if node is not None and node.kind == DIR:
                node.children.clear()
        for parts in layer.whiteouts:
            parent = self._walk(parts[:-1])
            if parent is not None and parent.kind == DIR:
                parent.children.pop(parts[-1], None)
        for entry in layer.entries:
            parent = self._walk(entry.parts[:-1], create=True)
            if parent is None or parent.kind != DIR:
                continue  # under a file: no runtime could extract it either
            name = entry.parts[-1]
            old = parent.children.get(name)
            if entry.kind == DIR and old is not None and old.kind == DIR:
                old.mode = entry.mode  # a directory again: what the layers below put in it stays
                continue
            if entry.kind == HARDLINK:  # the file it names, again (its mode, should the header's be off)
                target = self._walk(tuple(entry.target.split("/")))
                mode = target.mode if target is not None and target.kind == FILE else entry.mode
                parent.children[name] = Node(FILE, mode)
                continue
            parent.children[name] = Node(entry.kind, entry.mode, entry.target)

    def lookup(self, path: str) -> Node | None:
        """The node at `path`, every symlink on the way (the last one included) followed."""
        return self._walk(tuple(path.split("/")))

    def which(self, name: str, path_dirs: Iterable[str]) -> str | None:
        """Where a shell finds the command `name` on PATH: an executable file (via links), else None."""
        for directory in path_dirs:
            if not directory.startswith("/"):
                continue  # a relative PATH entry depends on the working directory
            candidate = posixpath.join(directory, name)
            node = self.lookup(candidate)
            if node is not None and node.kind == FILE and node.mode & 0o111:
                return candidate
        return None

    def _walk(self, parts: tuple[str, ...], create: bool = False) -> Node | None:
        stack = [self.root]
        pending = list(reversed(parts))
        hops = 0
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            current = stack[-1]
            if current.kind != DIR:
                return None
            child = current.children.get(name)
            if child is None:
                if not create:
                    return None
                child = current.children[name] = Node(DIR)
            if child.kind == SYMLINK:
                hops += 1
                if hops > MAX_SYMLINKS:
                    return None
                if child.target.startswith("/"):
                    stack = [self.root]
                pending.extend(reversed(child.target.split("/")))
                continue
            stack.append(child)
        return stack[-1]


def read_layer(chunks: Iterable[bytes], size: int | None = None) -> LayerFiles:
    """The headers of one layer blob, streamed (file contents are skipped over, never kept);
    more than `size` bytes (the descriptor's) are refused."""
    files = LayerFiles()
    try:
        stream = io.BufferedReader(LayerStream(chunks, raw_limit=size), 1 << 16)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                _add(files, info)
    except LayerStreamError as exc:
        raise LayerFormatError(str(exc)) from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise LayerFormatError(f"it is not a readable tar archive ({type(exc).__name__}: {exc})") from None
    return files


def _add(files: LayerFiles, info: tarfile.TarInfo) -> None:
    path = posixpath.normpath("/" + info.name).lstrip("/")
    if not path or path == ".":
        return
    parts = tuple(path.split("/"))
    base = parts[-1]
    if base == OPAQUE:
        files.opaque.append(parts[:-1])
    elif base.startswith(WHITEOUT):
        files.whiteouts.append((*parts[:-1], base[len(WHITEOUT) :]))
    elif info.isdir():
        files.entries.append(Entry(parts, DIR, info.mode))
    elif info.issym():
        files.entries.append(Entry(parts, SYMLINK, info.mode, info.linkname))
    elif info.islnk():
        files.entries.append(Entry(parts, HARDLINK, info.mode, posixpath.normpath("/" + info.linkname).lstrip("/")))
    elif info.isfile():
        files.entries.append(Entry(parts, FILE, info.mode))
    else:
        files.entries.append(Entry(parts, OTHER, info.mode))
