"""A ModelCar's model layers, streamed and checked entry by entry (shared by pull and verify).

As KServe's `oci+fetch://` does: layer by layer, streamed, never a whole layer in memory. Every
layer's bytes are checked against its descriptor (digest, and never more bytes than its size)
and its config diff_id; the file of a `file` layer against its `olot.layer.content.digest` and
size. A `file` layer holds its file and the directories above it, nothing else; no path is
given by two layers (but directories), nothing lies under a file or a link, a hard link names a
file before it; whiteouts, names ending in `.modelcar-partial` (pull's own), absolute names,
`..`, links leaving /models (alone, or through the others: `Tree.check_links`), devices and
fifos are refused, naming the entry.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from ..errors import ModelcarError
from .image import Descriptor
from .layer_stream import LayerStream, LayerStreamError
from .model_dir import ROOT
from .reader import ImageReader, ModelFile, PlatformImage, model_file
from .rootfs import MAX_SYMLINKS, WHITEOUT

PARTIAL = ".modelcar-partial"
READ_SIZE = 1 << 20
TAR_SLACK = 1 << 20  # a file layer's tar bytes beyond its file: headers, padding, end blocks
NAME_MAX = 255  # bytes of one path component (Linux, and most file systems)
TRAILING = 1 << 20  # bytes a layer may hold past the end of its tar archive (zero padding)


class HostileEntry(ModelcarError):
    """A layer entry that would write outside the target directory, or is not model content."""


class Mismatch(ModelcarError):
    """Bytes that do not match their digest: the image (or the local files) were changed."""


# ---- the final tree under /models, as the layers give it ----------------------------------------

FILE, DIR, LINK = "file", "dir", "symlink"


@dataclass
class _Node:
    kind: str
    where: str  # the entry (and layer) that made it, for messages
    target: str = ""  # a link's target
    digest: str | None = None  # a file's sha256, once read


class Tree:
    """What the model layers put under /models, checked entry by entry: no path given twice (but
    directories), nothing under a file or a link, hard links only to a file before them."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}

    def add(self, member: tarfile.TarInfo, rel: str, where: str) -> None:
        self._parents(rel, where)
        old = self.nodes.get(rel)
        if member.isdir():
            if old is not None and old.kind != DIR:
                raise HostileEntry(f"refusing {where}: a directory where {old.where} put a {old.kind}")
            self.nodes.setdefault(rel, _Node(DIR, where))
            return
        if old is not None:
            raise HostileEntry(f"refusing {where}: /{ROOT}/{rel} is given twice (first by {old.where})")
        if member.issym():
            self.nodes[rel] = _Node(LINK, where, member.linkname)
        elif member.islnk():
            source = hardlink_source(member)
            node = self.nodes.get(source)
            if node is None or node.kind != FILE:
                what = "nothing" if node is None else f"a {node.kind}"
                raise HostileEntry(
                    f"refusing {where}: a hard link to /{ROOT}/{source}, which is {what} before it in the image "
                    "(a hard link must name a file extracted before it)"
                )
            self.nodes[rel] = _Node(FILE, where, digest=node.digest)
        else:
            self.nodes[rel] = _Node(FILE, where)

    def add_file(self, rel: str, digest: str | None, where: str) -> None:
        """A file not read (already in DIR, or known by its annotation)."""
        self._parents(rel, where)
        old = self.nodes.get(rel)
        if old is not None:
            raise HostileEntry(f"refusing {where}: /{ROOT}/{rel} is given twice (first by {old.where})")
        self.nodes[rel] = _Node(FILE, where, digest=digest)

    def _parents(self, rel: str, where: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            node = self.nodes.setdefault(above, _Node(DIR, where))
            if node.kind != DIR:
                raise HostileEntry(
                    f"refusing {where}: it is under /{ROOT}/{above}, a {node.kind} ({node.where}); "
                    "nothing is extracted through a link or under a file"
                )

    def links(self) -> list[tuple[str, str]]:
        return [(rel, node.target) for rel, node in self.nodes.items() if node.kind == LINK]

    def digests(self) -> dict[str, str]:
        return {rel: node.digest for rel, node in self.nodes.items() if node.kind == FILE and node.digest}

    def check_links(self) -> None:
        """Every link resolved, through the others, in this tree: each must stay under /models."""
        for rel, node in self.nodes.items():
            if node.kind == LINK and not self._stays_inside(rel):
                raise HostileEntry(
                    f"refusing the link /{ROOT}/{rel} ({node.where}) to {node.target!r}: "
                    f"with the other links it leads outside /{ROOT} (or loops)"
                )

    def _stays_inside(self, rel: str) -> bool:
        stack: list[str] = []
        pending = list(reversed(rel.split("/")))
        hops = 0
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not stack:
                    return False
                stack.pop()
                continue
            node = self.nodes.get("/".join([*stack, name]))
            if node is not None and node.kind == LINK:
                hops += 1
                if hops > MAX_SYMLINKS or node.target.startswith("/"):
                    return False
                pending.extend(reversed(node.target.split("/")))
                continue
            stack.append(name)
        return True


def hardlink_source(member: tarfile.TarInfo) -> str:
    return "/".join(p for p in PurePosixPath(member.linkname).parts[1:] if p != ".")


# ---- one layer, streamed ---------------------------------------------------------------------

Visit = Callable[[tarfile.TarInfo, str, IO[bytes] | None], None]


def walk_layer(reader: ImageReader, image: PlatformImage, index: int, tree: Tree, visit: Visit) -> None:
    """Calls `visit(member, path under /models, file or None)` for each entry under /models, in
    order, once its name and its place in `tree` checked out; then checks the layer's size,
    digest and diff_id."""
    layer = image.layers[index]
    described = model_file(layer)
    entry = layer_label(described)
    limit = described.size + TAR_SLACK if described.kind == "file" and described.size is not None else None
    held = False
    try:
        source = LayerStream(reader.layer_chunks(layer), raw_limit=layer.size, plain_limit=limit)
        with tarfile.open(fileobj=io.BufferedReader(source, READ_SIZE), mode="r|") as tar:
            for member in tar:
                rel = safe_name(member, layer)
                if described.kind == "file":
                    held = _file_layer_entry(described, member, rel, layer) or held
                if rel is None:
                    continue
                tree.add(member, rel, f"entry {member.name!r} of layer {layer.digest}")
                visit(member, rel, tar.extractfile(member) if member.isreg() else None)
        source.drain(TRAILING)
    except LayerStreamError as exc:
        raise Mismatch(f"{entry}: layer {layer.digest}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise Mismatch(f"{entry}: layer {layer.digest} is not a readable tar ({exc})") from None
    if described.kind == "file" and not held:
        raise Mismatch(f"{entry}: the layer that names it ({layer.digest}) does not hold it")
    digest = source.digest()
    if digest != layer.digest or source.raw_size != layer.size:
        raise Mismatch(
            f"{entry}: layer {layer.digest} holds other bytes "
            f"(their digest is {digest}, {source.raw_size} bytes; the descriptor says {layer.size})"
        )
    diff_ids = image.diff_ids
    plain = source.diff_id()
    if index < len(diff_ids) and diff_ids[index] != plain:
        raise Mismatch(f"{entry}: layer {layer.digest} does not match the config's diff_id {diff_ids[index]}")


def _file_layer_entry(described: ModelFile, member: tarfile.TarInfo, rel: str | None, layer: Descriptor) -> bool:
    """A `file` layer's entry: its file (True), or a directory above it; anything else is refused."""
    where = f"entry {member.name!r} of layer {layer.digest}"
    if member.isreg() and rel == described.path:
        if described.size is not None and member.size != described.size:
            raise Mismatch(f"/{ROOT}/{rel}: the layer holds {member.size} bytes, its annotation says {described.size}")
        return True
    parts = [p for p in PurePosixPath(member.name).parts if p != "."]
    above = [ROOT, *described.path.split("/")[:-1]]
    if member.isdir() and parts == above[: len(parts)]:
        return False
    raise HostileEntry(
        f"refusing {where}: the layer of /{ROOT}/{described.path} (a `file` layer) may hold only that file "
        "and the directories above it"
    )


def layer_label(found: ModelFile) -> str:
    if found.kind == "file":
        return f"/{ROOT}/{found.path}"
    if found.kind == "directory":
        return f"/{ROOT}/{found.path} (directory layer)" if found.path else f"/{ROOT} (directory layer)"
    return f"the layer of {found.path or 'links'}"


def safe_name(member: tarfile.TarInfo, layer: Descriptor) -> str | None:
    """The entry's path under /models (None: the entry is outside /models, or /models itself);
    raises HostileEntry for what must not be extracted."""
    name = member.name
    where = f"entry {name!r} of layer {layer.digest}"
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise HostileEntry(f"refusing {where}: an absolute path; the image is not safe to extract")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise HostileEntry(f"refusing {where}: a path with '..'; the image is not safe to extract")
    if "\0" in name or "\\" in name:
        raise HostileEntry(f"refusing {where}: an unusual character in the name")
    if any(len(part.encode()) > NAME_MAX for part in parts):
        raise HostileEntry(f"refusing {where}: a name part longer than {NAME_MAX} bytes, which no file system takes")
    if parts and parts[-1].startswith(WHITEOUT):
        raise HostileEntry(f"refusing {where}: a whiteout, which would delete files of the layers below")
    if parts and parts[-1].endswith(PARTIAL):
        raise HostileEntry(f"refusing {where}: a name ending in {PARTIAL}, which pull uses for its own files")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise HostileEntry(f"refusing {where}: a device file or fifo; a ModelCar holds only files, directories, links")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise HostileEntry(f"refusing {where}: an entry of type {member.type!r}")
    if not parts or parts[0] != ROOT:
        return None
    rel = "/".join(parts[1:])
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if not target or target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise HostileEntry(f"refusing {where}: a symbolic link to {target!r}, outside /{ROOT}")
        if "\0" in target:
            raise HostileEntry(f"refusing {where}: an unusual character in its link target")
    if member.islnk():
        target_parts = [p for p in PurePosixPath(member.linkname).parts if p != "."]
        if member.linkname.startswith("/") or ".." in target_parts or len(target_parts) < 2 or target_parts[0] != ROOT:
            raise HostileEntry(f"refusing {where}: a hard link to {member.linkname!r}, outside /{ROOT}")
    return rel or None


def check_file(described: ModelFile, rel: str, digest: str) -> None:
    if described.kind == "file" and rel == described.path and described.digest not in (None, digest):
        raise Mismatch(
            f"/{ROOT}/{rel}: its content has digest {digest}, the layer's annotation says {described.digest}"
        )


# ---- verify (bytes against annotations and diff_ids) -------------------------------------------


def verify_layers(reader: ImageReader, image: PlatformImage, directories_only: bool = False) -> dict[str, str]:
    """Checks every model layer's bytes (or, with `directories_only`, all but the `file`
    layers', those taken by their annotations); returns {path: sha256:...} of every file."""
    problems = image.problems()
    if problems:
        raise Mismatch(f"{image.name}: {problems[0]}")
    tree = Tree()
    for index, described in zip(image.model, image.files(), strict=True):
        if directories_only and described.kind == "file":
            tree.add_file(described.path, described.digest, layer_label(described))
            continue

        def visit(member: tarfile.TarInfo, rel: str, data: IO[bytes] | None, described: ModelFile = described) -> None:
            if data is None:
                return
            hasher = hashlib.sha256()
            while chunk := data.read(READ_SIZE):
                hasher.update(chunk)
            digest = "sha256:" + hasher.hexdigest()
            tree.nodes[rel].digest = digest
            check_file(described, rel, digest)

        walk_layer(reader, image, index, tree, visit)
    tree.check_links()
    return tree.digests()
