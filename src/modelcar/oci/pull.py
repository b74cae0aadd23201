"""Streams a ModelCar's model layers: `modelcar pull` extracts /models, `modelcar verify` checks.

As KServe's `oci+fetch://` does: layer by layer, streamed, never a whole layer in memory or on
disk. Every layer's bytes are checked against its digest and its config diff_id, and every file
of a file layer against its `olot.layer.content.digest`. A file lands under its name only once
its layer checked out; files already in DIR with the right digest are not fetched again, so an
interrupted pull resumes. Entries that could write outside DIR or are not plain content
(absolute names, `..`, links leaving DIR, devices, fifos) are refused, naming the entry.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import ModelcarError
from .image import Descriptor
from .layers import ROOT
from .reader import ImageReader, ModelFile, PlatformImage

PARTIAL = ".modelcar-partial"
READ_SIZE = 1 << 20


class HostileEntry(ModelcarError):
    """A layer entry that would write outside the target directory, or is not model content."""


class Mismatch(ModelcarError):
    """Bytes that do not match their digest: the image (or the local files) were changed."""


@dataclass
class PullResult:
    files: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    layers_read: int = 0


def preferred(platforms: list[PlatformImage]) -> PlatformImage:
    return next((p for p in platforms if p.name == "linux/amd64"), platforms[0])


# ---- one layer, streamed ---------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """The layer's bytes as a file for tarfile, hashed on the way (raw: the digest; after
    gunzip: the diff_id)."""

    def __init__(self, chunks: Iterable[bytes], gzipped: bool) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""
        self.raw = hashlib.sha256()
        self.plain = hashlib.sha256()
        self._gunzip = zlib.decompressobj(wbits=31) if gzipped else None

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes:
        for chunk in self._chunks:
            self.raw.update(chunk)
            data = self._gunzip.decompress(chunk) if self._gunzip is not None else chunk
            if data:
                self.plain.update(data)
                return data
        if self._gunzip is not None:
            tail = self._gunzip.flush()
            self._gunzip = None
            if tail:
                self.plain.update(tail)
                return tail
        return b""

    def readinto(self, buffer: Any) -> int:
        if not self._buffer:
            self._buffer = self._next()
            if not self._buffer:
                return 0
        count = min(len(buffer), len(self._buffer))
        buffer[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def drain(self) -> None:
        self._buffer = b""
        while self._next():
            pass


Visit = Callable[[tarfile.TarInfo, str, IO[bytes] | None], None]


def walk_layer(reader: ImageReader, image: PlatformImage, index: int, visit: Visit) -> None:
    """Calls `visit(member, path under /models, file or None)` for each entry under /models, in
    order, after checking its name; then checks the layer's digest and diff_id."""
    layer = image.layers[index]
    entry = _described(image, index)
    source = _HashingReader(reader.layer_chunks(layer), layer.media_type.endswith("gzip"))
    try:
        with tarfile.open(fileobj=io.BufferedReader(source, READ_SIZE), mode="r|") as tar:
            for member in tar:
                rel = safe_name(member, layer)
                if rel is None:
                    continue
                visit(member, rel, tar.extractfile(member) if member.isreg() else None)
    except tarfile.TarError as exc:
        raise Mismatch(f"{entry}: layer {layer.digest} is not a readable tar ({exc})") from None
    source.drain()
    digest = "sha256:" + source.raw.hexdigest()
    if digest != layer.digest:
        raise Mismatch(f"{entry}: layer {layer.digest} holds other bytes (their digest is {digest})")
    diff_ids = image.diff_ids
    plain = "sha256:" + source.plain.hexdigest()
    if index < len(diff_ids) and diff_ids[index] != plain:
        raise Mismatch(f"{entry}: layer {layer.digest} does not match the config's diff_id {diff_ids[index]}")


def _described(image: PlatformImage, index: int) -> str:
    from .reader import model_file

    found = model_file(image.layers[index])
    if found.kind == "file":
        return f"/{ROOT}/{found.path}"
    if found.kind == "directory":
        return f"/{ROOT}/{found.path} (directory layer)".replace("// ", "/ ")
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
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise HostileEntry(f"refusing {where}: a symbolic link to {target!r}, outside /{ROOT}")
    if member.islnk():
        target_parts = [p for p in PurePosixPath(member.linkname).parts if p != "."]
        if member.linkname.startswith("/") or ".." in target_parts or not target_parts or target_parts[0] != ROOT:
            raise HostileEntry(f"refusing {where}: a hard link to {member.linkname!r}, outside /{ROOT}")
    return rel or None


# ---- pull -------------------------------------------------------------------------------------


def pull(reader: ImageReader, image: PlatformImage, dest: Path) -> PullResult:
    """Extracts the model layers of `image` into `dest` (created if needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    result = PullResult()
    links: list[tuple[str, str]] = []
    for index, described in zip(image.model, image.files(), strict=True):
        if described.kind == "file" and _already_there(root, described):
            result.reused.append(described.path)
            continue
        layer = _Extraction(root, described, links)
        try:
            walk_layer(reader, image, index, layer.visit)
        except BaseException:
            layer.discard()
            raise
        result.layers_read += 1
        result.files.extend(layer.commit())
    for rel, target in links:
        path = _inside(root, rel, None)
        if path.is_symlink() or path.exists():
            if path.is_symlink() and os.readlink(path) == target:
                continue
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        result.links.append(rel)
    for rel in result.links:  # each link stays inside on its own; a chain of them must too
        path = root / rel
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            path.unlink()
            raise HostileEntry(f"refusing the link /{ROOT}/{rel}: with the other links it leads outside {root}")
    return result


class _Extraction:
    """One layer's files, written under temporary names until the layer's digest checked out."""

    def __init__(self, root: Path, described: ModelFile, links: list[tuple[str, str]]) -> None:
        self.root, self.described, self.links = root, described, links
        self.staged: list[tuple[Path, Path, str]] = []
        self.hardlinks: list[tuple[str, str]] = []

    def visit(self, member: tarfile.TarInfo, rel: str, data: IO[bytes] | None) -> None:
        target = _inside(self.root, rel, member)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.issym():
            self.links.append((rel, member.linkname))
        elif member.islnk():
            self.hardlinks.append((rel, "/".join(PurePosixPath(member.linkname).parts[1:])))
        else:
            assert data is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(target.name + PARTIAL)
            self.staged.append((temp, target, rel))
            _check_file(self.described, rel, _write(data, temp))

    def discard(self) -> None:
        for temp, _, _ in self.staged:
            temp.unlink(missing_ok=True)

    def commit(self) -> list[str]:
        done = []
        for temp, target, rel in self.staged:
            if target.is_symlink() or target.is_dir():
                self.discard()
                raise HostileEntry(f"refusing to write /{ROOT}/{rel}: {target} is a link or a directory")
            os.replace(temp, target)
            os.chmod(target, 0o644)
            done.append(rel)
        for rel, source in self.hardlinks:
            link = _inside(self.root, rel, None)
            link.unlink(missing_ok=True)
            os.link(_inside(self.root, source, None), link)
            done.append(rel)
        return done


def _check_file(described: ModelFile, rel: str, digest: str) -> None:
    if described.kind == "file" and rel == described.path and described.digest not in (None, digest):
        raise Mismatch(
            f"/{ROOT}/{rel}: its content has digest {digest}, the layer's annotation says {described.digest}"
        )


def _inside(root: Path, rel: str, member: tarfile.TarInfo | None) -> Path:
    """`root/rel`, refused when a directory on the way is a link leading outside root."""
    target = root / rel
    existing = target.parent
    while not existing.exists() and existing != root and root in existing.parents:
        existing = existing.parent
    resolved = existing.resolve()
    if resolved != root and root not in resolved.parents:
        name = member.name if member is not None else rel
        raise HostileEntry(f"refusing entry {name!r}: it would be written through a link, outside {root}")
    return target


def _already_there(root: Path, described: ModelFile) -> bool:
    path = root / described.path
    if path.is_symlink() or not path.is_file() or described.digest is None:
        return False
    if described.size is not None and path.stat().st_size != described.size:
        return False
    return "sha256:" + sha256_of(path) == described.digest


def _write(data: IO[bytes], temp: Path) -> str:
    hasher = hashlib.sha256()
    with open(temp, "wb") as out:
        while chunk := data.read(READ_SIZE):
            hasher.update(chunk)
            out.write(chunk)
    return "sha256:" + hasher.hexdigest()


def sha256_of(path: Path) -> str:
    from ..files import sha256_file

    return sha256_file(path)


# ---- verify (bytes against annotations and diff_ids) -------------------------------------------


def verify_layers(reader: ImageReader, image: PlatformImage, directories_only: bool = False) -> dict[str, str]:
    """Checks every model layer's bytes (or only the `directory` layers'); returns
    {path: sha256:...} of every file read."""
    found: dict[str, str] = {}
    for index, described in zip(image.model, image.files(), strict=True):
        if directories_only and described.kind != "directory":
            continue

        def visit(member: tarfile.TarInfo, rel: str, data: IO[bytes] | None, described: ModelFile = described) -> None:
            if data is None:
                return
            hasher = hashlib.sha256()
            while chunk := data.read(READ_SIZE):
                hasher.update(chunk)
            found[rel] = "sha256:" + hasher.hexdigest()
            _check_file(described, rel, found[rel])

        walk_layer(reader, image, index, visit)
        if described.kind == "file" and described.path not in found:
            raise Mismatch(f"/{ROOT}/{described.path}: the layer that names it does not hold it")
    return found
