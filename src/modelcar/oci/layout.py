"""The OCI image layout on disk (`oci:DIR[:TAG]`): read a base from it, write an image into it.

Blobs are written to a temporary name in blobs/sha256/, hashed on the way, and renamed to their
digest only when complete; index.json is replaced atomically. A temporary blob is locked (flock)
by its writer until it has its name, so a killed run leaves at most an unlocked temporary file,
which the next run that writes to the layout deletes (a live writer's file is left alone).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import atomic
from ..errors import ModelcarError
from ..jsonfile import read_object
from .image import OCI_INDEX, Descriptor, media_type_of

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
READ_SIZE = 1 << 20
TEMP_PREFIX = ".upload-"


class LayoutError(ModelcarError):
    """An OCI layout that is missing, damaged, or lacks the image asked for."""


class Layout:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._swept = False

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise LayoutError(f"unsupported or malformed digest {digest!r} in {self.path}")
        return self.path / "blobs" / "sha256" / hexdigest

    # ---- reading -------------------------------------------------------------------------

    def read_index(self) -> dict[str, Any]:
        index_path = self.path / "index.json"
        if not index_path.is_file():
            raise LayoutError(f"{self.path} is not an OCI image layout (no index.json); check the oci: path")
        return read_object(index_path, LayoutError)

    def resolve(self, tag: str | None, digest: str | None = None) -> Descriptor:
        """The descriptor of the image tagged `tag` (or with `digest`; or the only one)."""
        manifests = [Descriptor.from_json(m) for m in self.read_index().get("manifests", [])]
        if digest:
            found = [m for m in manifests if m.digest == digest]
            if found:
                return found[0]
            if self.blob_path(digest).is_file():
                data = self.read_blob(digest)
                return Descriptor(media_type_of(data, None), digest, len(data))
            raise LayoutError(f"{self.path} has no image {digest}")
        if tag is None:
            if len(manifests) == 1:
                return manifests[0]
            tag = "latest"
        for descriptor in manifests:
            if descriptor.annotations.get(REF_NAME) == tag:
                return descriptor
        names = sorted(m.annotations.get(REF_NAME, "?") for m in manifests)
        raise LayoutError(f"{self.path} has no image tagged {tag!r} (tags: {', '.join(names) or 'none'})")

    def read_blob(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LayoutError(f"blob {digest} is missing from {self.path} ({exc.strerror})") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise LayoutError(f"blob {digest} in {self.path} is damaged (its content has another digest)")
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        value = json.loads(self.read_blob(digest))
        if not isinstance(value, dict):
            raise LayoutError(f"blob {digest} in {self.path} is not a JSON object")
        return value

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: str, offset: int = 0) -> Iterator[bytes]:
        with open(self.blob_path(digest), "rb", buffering=0) as handle:
            handle.seek(offset)
            while chunk := handle.read(READ_SIZE):
                yield chunk

    # ---- writing -------------------------------------------------------------------------

    def init(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.path / LAYOUT_FILE).is_file():
            atomic.write_json(self.path / LAYOUT_FILE, LAYOUT_VERSION)
        if not (self.path / "index.json").is_file():
            atomic.write_json(self.path / "index.json", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        if not self._swept:
            self.remove_stale_temps()
            self._swept = True

    def remove_stale_temps(self) -> None:
        """Deletes the temporary blobs of writers that died: those nobody holds locked."""
        for path in (self.path / "blobs" / "sha256").glob(f"{TEMP_PREFIX}*.tmp"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, path):
                    path.unlink(missing_ok=True)
            except OSError:
                pass  # locked: a live writer's
            finally:
                os.close(fd)

    def write_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            self.write_stream(iter([data]))
        return digest

    def write_stream(self, chunks: Iterator[bytes], progress: Callable[[int], None] | None = None) -> tuple[str, int]:
        """Writes a blob from chunks, hashing on the way; renamed to its digest once complete."""
        fd, tmp = self._open_temp()
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    hasher.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
                digest = "sha256:" + hasher.hexdigest()
                os.fchmod(handle.fileno(), 0o644)
                os.replace(tmp, self.blob_path(digest))  # still locked: never taken for a dead writer's
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, size

    def _open_temp(self) -> tuple[int, str]:
        """A new temporary file in blobs/sha256/, locked; made again if swept away before the lock."""
        directory = self.path / "blobs" / "sha256"
        while True:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, Path(tmp)):
                return fd, tmp
            os.close(fd)

    def tag(self, descriptor: Descriptor, tag: str) -> None:
        """Points `tag` at `descriptor` in index.json (other tags stay)."""
        index = self.read_index()
        kept = [m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != tag]
        entry = Descriptor(
            descriptor.media_type, descriptor.digest, descriptor.size, {REF_NAME: tag}, descriptor.platform
        )
        index["manifests"] = [*kept, entry.to_json()]
        index.setdefault("schemaVersion", 2)
        atomic.write_json(self.path / "index.json", index)


def _same_file(fd: int, path: Path) -> bool:
    try:
        found = path.stat()
    except OSError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)
