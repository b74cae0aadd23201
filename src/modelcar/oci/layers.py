"""Reproducible tar layers of a model directory, generated in memory, file bytes streamed.

A layer is a list of segments: tar headers (built here, a few hundred bytes each), the bytes of
a file (read from disk when sent), and zero padding. Its size is known before a byte is read,
and it can be produced again from any offset, which is what lets an interrupted upload resume
without an intermediate tar file on disk.

Every entry is `models/<path relative to the model directory>`: files 0644, directories 0755,
owner 0:0, no user names, a fixed mtime, entries sorted. Sizes over 8 GiB and long or non-ASCII
names get PAX records.

Each regular file has a layer of its own, annotated as olot does (`olot.layer.content.*`: the
file's own sha256, `file`, its path in the image, its name), which is what Red Hat's model signing
tool and Konflux read to sign and verify a ModelCar without pulling it. Only a model of more than
MAX_FILE_LAYERS files puts its small files into olot's `directory` layers (one per top-level
directory, and one for the small files at the top), which those tools unpack and hash themselves.
Symbolic links and empty directories share a layer without these annotations.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..growing_file import GrowingFile
from .model_dir import ROOT, Entry, ModelDirError

FILE_MODE = 0o644
DIR_MODE = 0o755
MTIME = 0
BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
READ_SIZE = 4 << 20
# Files at least this large get a layer of their own; smaller ones share one.
LARGE_FILE = 16 << 20
MODEL_CARD = "README.md"
# Up to this many files, one layer each; beyond it, small files go into `directory` layers.
MAX_FILE_LAYERS = 100

# olot's layer annotations (containers/olot constants.py), read by model signing and Konflux.
CONTENT_DIGEST = "olot.layer.content.digest"
CONTENT_TYPE = "olot.layer.content.type"
CONTENT_PATH = "olot.layer.content.inlayerpath"
CONTENT_NAME = "olot.layer.content.name"
FILE_LAYER = "file"
DIRECTORY_LAYER = "directory"
# Ours, beside olot's: the file's size, so `modelcar inspect` lists sizes without reading a layer.
SIZE_ANNOTATION = "io.modelcar.layer.content.size"


class FileHasher:
    """The sha256 of one file, fed with the ranges a layer stream reads, in whatever order.

    A range that continues where the hash stands is hashed; one read again (a retry) or ahead (a
    resume) is not. The digest exists only once every byte was hashed in order; else the caller
    hashes the file itself.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self._hasher = hashlib.sha256()
        self._lock = threading.Lock()

    def feed(self, start: int, data: bytes) -> None:
        with self._lock:
            if start <= self.position < start + len(data):
                self._hasher.update(memoryview(data)[self.position - start :])
                self.position = start + len(data)

    def digest(self) -> str | None:
        with self._lock:
            return "sha256:" + self._hasher.hexdigest() if self.position == self.size else None


@dataclass
class LayerPlan:
    """The entries of one layer and its exact byte size.

    `content` says what the olot annotations describe: `file` (one regular file), `directory`
    (the files under `content_path`, "" for /models itself) or "" (links, empty directories).
    """

    entries: list[Entry]
    title: str
    content: str = ""
    content_path: str = ""
    headers: dict[str, bytes] = field(default_factory=dict)
    file_digests: dict[str, str] = field(default_factory=dict)  # name -> sha256:..., known or hashed
    hashers: dict[str, FileHasher] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self.headers[entry.name] = tar_header(entry)

    @property
    def size(self) -> int:
        total = len(END_OF_ARCHIVE)
        for entry in self.entries:
            total += len(self.headers[entry.name]) + _padded(entry.size if entry.kind == "file" else 0)
        return total

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.kind != "dir"]

    @property
    def regular_files(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "file"]

    def stream(self) -> LayerStream:
        """The layer's bytes; the files whose digest is not known yet are hashed as they are read
        (not those still downloading: the download hashes them, see growing_file.py)."""
        for entry in self.regular_files:
            if entry.growing is None and entry.name not in self.file_digests and entry.name not in self.hashers:
                self.hashers[entry.name] = FileHasher(entry.size)
        return LayerStream(self)

    def missing_digests(self) -> list[Entry]:
        """Regular files whose sha256 is neither known nor fully hashed while streaming."""
        for name, hasher in self.hashers.items():
            digest = hasher.digest()
            if digest is not None:
                self.file_digests.setdefault(name, digest)
        return [e for e in self.regular_files if e.name not in self.file_digests]

    def annotations(self) -> dict[str, str]:
        """olot's annotations of this layer (the file digest must be known for a `file` layer)."""
        if not self.content:
            return {}
        path = f"/{ROOT}/{self.content_path}" if self.content_path else f"/{ROOT}"
        out = {
            CONTENT_TYPE: self.content,
            CONTENT_PATH: path,
            CONTENT_NAME: PurePosixPath(path).name,
        }
        if self.content == FILE_LAYER:
            out[CONTENT_DIGEST] = self.file_digests[self.content_path]
            out[SIZE_ANNOTATION] = str(self.regular_files[0].size)
        return out


def plan_layers(
    entries: list[Entry], large_file: int = LARGE_FILE, max_file_layers: int = MAX_FILE_LAYERS
) -> list[LayerPlan]:
    """One layer per regular file (small, then large, the model card last), then the links and
    empty directories; a model of more than `max_file_layers` files puts its small files into
    one `directory` layer per top-level directory (and one for those at the top), first.

    Each layer carries the directories above its files, so every layer unpacks on its own.
    """
    dirs = {e.name: e for e in entries if e.kind == "dir"}
    regular = [e for e in entries if e.kind == "file"]
    card = [e for e in regular if e.name == MODEL_CARD]
    large = [e for e in regular if e.size >= large_file and e.name != MODEL_CARD]
    small = [e for e in regular if e.size < large_file and e.name != MODEL_CARD]
    links = [e for e in entries if e.kind == "symlink"]
    # Directories with nothing in them still belong to the model.
    used = {str(p) for e in regular + links for p in PurePosixPath(e.name).parents if str(p) != "."}
    empty = [d for name, d in dirs.items() if name not in used]
    plans: list[LayerPlan] = []
    if len(regular) > max_file_layers:
        groups: dict[str, list[Entry]] = {}
        for entry in small + links + empty:
            top = entry.name.split("/", 1)[0] if "/" in entry.name else ""
            groups.setdefault(top, []).append(entry)
        for top in sorted(groups):
            members = groups[top]
            if not any(e.kind == "file" for e in members):
                continue  # links and empty directories only: with the others below
            title = f"{top}/" if top else "small files"
            plans.append(LayerPlan(_with_parents(members, dirs), title, DIRECTORY_LAYER, top))
        grouped = {e.name for p in plans for e in p.entries}
        small = []
        links = [e for e in links if e.name not in grouped]
        empty = [e for e in empty if e.name not in grouped]
    for entry in small + large + card:
        plans.append(LayerPlan(_with_parents([entry], dirs), entry.name, FILE_LAYER, entry.name))
    if links or empty:
        plans.insert(0, LayerPlan(_with_parents(links + empty, dirs), "links and empty directories"))
    return plans


def _with_parents(members: list[Entry], dirs: dict[str, Entry]) -> list[Entry]:
    names = {"": Entry("", "dir")}
    for entry in members:
        for parent in PurePosixPath(entry.name).parents:
            key = str(parent)
            key = "" if key == "." else key
            names.setdefault(key, dirs.get(key, Entry(key, "dir")))
        names[entry.name] = entry
    return [names[k] for k in sorted(names, key=_sort_key)]


def _sort_key(name: str) -> tuple[str, ...]:
    return tuple(PurePosixPath(name).parts)


def tar_header(entry: Entry) -> bytes:
    """The PAX tar header of an entry: fixed owner, times and modes; no user names."""
    info = tarfile.TarInfo(f"{ROOT}/{entry.name}" if entry.name else ROOT)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = DIR_MODE
        info.name += "/"
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = entry.target
    else:
        info.type = tarfile.REGTYPE
        info.mode = FILE_MODE
        info.size = entry.size
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


@dataclass(frozen=True)
class FileRange:
    """`length` bytes of a file from `start`: what a sender may pass on without reading (sendfile)."""

    path: Path
    start: int
    length: int
    name: str  # inside the model directory, for messages
    hasher: FileHasher | None = field(default=None, compare=False, repr=False)  # fed what is read
    alt_path: Path | None = field(default=None, compare=False, repr=False)  # see Entry.alt_path
    growing: GrowingFile | None = field(default=None, compare=False, repr=False)  # see Entry.growing

    def open(self) -> BinaryIO:
        if self.growing is not None:  # one descriptor, held open while the file grows
            return os.fdopen(os.dup(self.growing.fd), "rb", buffering=0)
        try:
            try:
                return open(self.path, "rb", buffering=0)  # the caller closes it
            except FileNotFoundError:
                if self.alt_path is None:
                    raise
                return open(self.alt_path, "rb", buffering=0)
        except OSError as exc:
            raise ModelDirError(f"cannot read {self.path}: {exc.strerror}") from None

    def read(self, handle: BinaryIO | None = None) -> bytes:
        """The range's bytes, from `handle` when given (an open file of `path`)."""
        if handle is None:
            with self.open() as own:
                return self.read(own)
        if self.growing is not None:
            self.growing.wait_for(self.start + self.length)
        try:
            data = os.pread(handle.fileno(), self.length, self.start)
            while len(data) < self.length:  # a short read (NFS, FUSE, a signal): read on
                more = os.pread(handle.fileno(), self.length - len(data), self.start + len(data))
                if not more:
                    raise self.changed()
                data += more
        except OSError as exc:
            raise ModelDirError(f"cannot read {self.path}: {exc.strerror}") from None
        if self.hasher is not None:
            self.hasher.feed(self.start, data)
        return data

    def changed(self) -> ModelDirError:
        return ModelDirError(f"{self.path} changed while it was being packaged; run build-and-push again")


Part = bytes | FileRange


@dataclass(frozen=True)
class _Segment:
    start: int
    length: int
    data: bytes | None = None  # header or padding bytes
    path: Path | None = None  # file bytes
    name: str = ""
    hasher: FileHasher | None = None
    alt_path: Path | None = None
    growing: GrowingFile | None = None


class LayerStream:
    """The bytes of a layer, produced from any offset: as chunks, or as parts (bytes and file ranges)."""

    def __init__(self, plan: LayerPlan) -> None:
        self.size = plan.size
        self._segments: list[_Segment] = []
        pos = 0
        for entry in plan.entries:
            header = plan.headers[entry.name]
            self._segments.append(_Segment(pos, len(header), data=header))
            pos += len(header)
            if entry.kind == "file" and entry.size:
                hasher = plan.hashers.get(entry.name)
                self._segments.append(
                    _Segment(
                        pos,
                        entry.size,
                        path=entry.path,
                        name=entry.name,
                        hasher=hasher,
                        alt_path=entry.alt_path,
                        growing=entry.growing,
                    )
                )
                pos += entry.size
                pad = _padded(entry.size) - entry.size
                if pad:
                    self._segments.append(_Segment(pos, pad, data=b"\0" * pad))
                    pos += pad
        self._segments.append(_Segment(pos, len(END_OF_ARCHIVE), data=END_OF_ARCHIVE))
        assert pos + len(END_OF_ARCHIVE) == self.size

    def parts(self, offset: int = 0) -> Iterator[Part]:
        """The layer from `offset` on: header and padding bytes, and file ranges of at most READ_SIZE."""
        for seg in self._segments:
            end = seg.start + seg.length
            if end <= offset:
                continue
            skip = max(0, offset - seg.start)
            if seg.data is not None:
                yield seg.data[skip:]
                continue
            assert seg.path is not None
            for start in range(skip, seg.length, READ_SIZE):
                length = min(READ_SIZE, seg.length - start)
                yield FileRange(seg.path, start, length, seg.name, seg.hasher, seg.alt_path, seg.growing)

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The layer's bytes from `offset` to the end; headers are joined to the data that follows."""
        pending = bytearray()
        for part in self.parts(offset):
            if isinstance(part, bytes):
                pending += part
                if len(pending) >= READ_SIZE:
                    yield bytes(pending)
                    pending.clear()
                continue
            data = part.read()
            if pending:
                data = bytes(pending) + data
                pending.clear()
            yield data
        if pending:
            yield bytes(pending)
