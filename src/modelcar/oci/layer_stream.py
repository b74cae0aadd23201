"""One layer blob as a readable stream of its tar bytes: decompressed, hashed, bounded.

Shared by the base check (rootfs.py: the base's file lists) and by pull / verify (pull.py: the
model layers). The compression is told from the first bytes (gzip, bzip2, xz, zstd, else plain
tar); every member of a multi-member gzip (and every stream of bzip2 / xz, every zstd frame) is
read. Both the raw bytes (the layer's digest) and the plain ones (the config's diff_id) are
hashed on the way; past `raw_limit` raw or `plain_limit` plain bytes, reading raises.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerStreamError(Exception):
    """A layer that cannot be decompressed, or holds more bytes than it may."""


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


def _factory(head: bytes) -> tuple[str, Callable[[], _Decompressor] | None]:
    if head.startswith(GZIP_MAGIC):
        return "gzip", lambda: zlib.decompressobj(wbits=31)
    if head.startswith(BZIP2_MAGIC):
        return "bzip2", bz2.BZ2Decompressor
    if head.startswith(XZ_MAGIC):
        return "xz", lzma.LZMADecompressor
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError:
            raise LayerStreamError("it is zstd-compressed and the zstandard module is not installed") from None
        return "zstd", lambda: zstandard.ZstdDecompressor().decompressobj()  # type: ignore[no-any-return]
    return "tar", None


class LayerStream(io.RawIOBase):
    """The plain (decompressed) bytes of a layer blob given as chunks; `raw` and `plain` hash
    what went by, `raw_size` and `plain_size` count it."""

    def __init__(self, chunks: Iterable[bytes], raw_limit: int | None = None, plain_limit: int | None = None) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self.raw, self.plain = hashlib.sha256(), hashlib.sha256()
        self.raw_size = self.plain_size = 0
        self.raw_limit, self.plain_limit = raw_limit, plain_limit
        self._pending = b""  # raw bytes read to tell the compression, not yet decompressed
        self._view = memoryview(b"")
        head = self._peek_raw(6)
        self.compression, self._new = _factory(head)
        self._current: _Decompressor | None = self._new() if self._new else None
        self._done = False

    def readable(self) -> bool:
        return True

    def _take(self) -> bytes | None:
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        self.raw.update(chunk)
        self.raw_size += len(chunk)
        if self.raw_limit is not None and self.raw_size > self.raw_limit:
            raise LayerStreamError(f"it holds more than the {self.raw_limit} bytes its descriptor gives")
        return bytes(chunk)

    def _peek_raw(self, size: int) -> bytes:
        while len(self._pending) < size:
            chunk = self._take()
            if chunk is None:
                break
            self._pending += chunk
        return self._pending[:size]

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._current is None or self._current.eof:
                assert self._new is not None
                self._current = self._new()
            try:
                out.append(self._current.decompress(data))
            except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
                raise LayerStreamError(f"its {self.compression} data is broken ({exc})") from None
            except Exception as exc:  # zstandard.ZstdError
                raise LayerStreamError(f"its {self.compression} data is broken ({exc})") from None
            data = self._current.unused_data if self._current.eof else b""
        return b"".join(out)

    def _next(self) -> bytes:
        while not self._done:
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                chunk = self._take()
                if chunk is None:
                    self._done = True
                    if self._current is not None and not self._current.eof:
                        raise LayerStreamError(f"its {self.compression} data ends early")
                    return b""
                data = chunk
            plain = self._decompress(data) if self._new is not None else data
            if plain:
                self.plain.update(plain)
                self.plain_size += len(plain)
                if self.plain_limit is not None and self.plain_size > self.plain_limit:
                    raise LayerStreamError(f"it unpacks to more than {self.plain_limit} bytes")
                return plain
        return b""

    def readinto(self, buffer: Any) -> int:
        while not self._view:
            data = self._next()
            if not data:
                return 0
            self._view = memoryview(data)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def drain(self, limit: int | None = None) -> None:
        """Reads (and hashes) the rest; more than `limit` plain bytes left raise."""
        left = len(self._view)
        self._view = memoryview(b"")
        while data := self._next():
            left += len(data)
            if limit is not None and left > limit:
                raise LayerStreamError(f"more than {limit} bytes follow the end of its tar archive")

    def digest(self) -> str:
        return "sha256:" + self.raw.hexdigest()

    def diff_id(self) -> str:
        return "sha256:" + self.plain.hexdigest()
