"""Resumable blob uploads: one streamed PATCH with the digest computed on the way, then PUT ?digest=.

After a broken connection the registry is asked how much it has (GET on the upload URL, `Range`)
and the upload goes on from there; the sha256 state is taken back to a checkpoint at or before
that offset and the gap re-hashed from the source, so the digest is the same as in one pass.
When the registry has lost the upload session, the blob starts again. Registries that refuse a
streamed PATCH (413, 416) get the chunked form: PATCH with Content-Range, chunk by chunk.

This module only decides what to send; every request goes through the client's one request path
(client.py). A model layer's PATCH body is an UploadBody, which the transport beneath the client
sends by sendfile on plain http (sendfile.py) and httpx sends otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import queue
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import httpx

from ..retry import Resumes, is_transient_status
from .client import RegistryClient
from .errors import InsecureLocation, RegistryError
from .layers import Part
from .sendfile import UploadBody

P = TypeVar("P", bytes, Part)
CHECKPOINT = 64 << 20
CHUNK = 32 << 20
MAX_RESTARTS = 5
MAX_RESUMES = 50  # failed tries in a row at the same offset (retry.Resumes)
QUEUE_CHUNKS = 4


class BlobSource(Protocol):
    """Bytes that can be produced again from any offset."""

    size: int

    def chunks(self, offset: int = 0) -> Iterator[bytes]: ...


class UploadInterrupted(Exception):
    """The connection broke mid-upload, or the registry answered with a transient error."""

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionLost(Exception):
    """The registry no longer knows the upload; start the blob again."""


class _Hash:
    """The running sha256 of the bytes sent, with checkpoints to go back to.

    Chunks are hashed on a thread of their own (hashlib releases the GIL), so hashing overlaps
    sending; the queue is bounded, so memory stays flat.
    """

    def __init__(self, source: BlobSource) -> None:
        self.source = source
        self.hasher: Any = hashlib.sha256()
        self.position = 0  # bytes handed to feed()
        self.hashed = 0  # bytes in self.hasher
        self.checkpoints: dict[int, Any] = {0: self.hasher.copy()}
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="modelcar-sha256", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            chunk = self._queue.get()
            try:
                if chunk is None:
                    return
                self.hasher.update(chunk)
                self.hashed += len(chunk)
                if self.hashed - max(self.checkpoints) >= CHECKPOINT:
                    self.checkpoints[self.hashed] = self.hasher.copy()
            except BaseException as exc:  # pragma: no cover - hashlib does not fail
                self._error = exc
            finally:
                self._queue.task_done()

    def update(self, chunk: bytes) -> None:
        self.position += len(chunk)
        self._queue.put(chunk)

    def sync(self) -> None:
        self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def rewind(self, offset: int) -> None:
        """Makes the state that of the first `offset` bytes."""
        self.sync()
        if offset == self.hashed:
            self.position = offset
            return
        start = max(p for p in self.checkpoints if p <= offset)
        self.hasher = self.checkpoints[start].copy()
        self.hashed = self.position = start
        for p in [p for p in self.checkpoints if p > offset]:
            del self.checkpoints[p]
        for chunk in _limited(self.source.chunks(start), offset - start):
            self.update(chunk)
        self.sync()

    def digest(self) -> str:
        self.sync()
        return "sha256:" + self.hasher.hexdigest()


def upload_blob(
    client: RegistryClient,
    repository: str,
    source: BlobSource,
    progress: Callable[[int], None] | None = None,
    before_finish: Callable[[str], None] | None = None,
) -> str:
    """Uploads `source`; returns its digest. `before_finish(digest)` runs once every byte is sent,
    before the PUT that completes the blob (to remember the digest: a kill right after that PUT
    then finds the blob by it). Whether to send it at all is Store.try_reuse's decision."""
    client.want(repository, "pull,push")
    reported = 0

    def advance(position: int) -> None:
        nonlocal reported
        if progress is not None and position > reported:
            progress(position - reported)
            reported = position

    restarts = 0
    while True:
        location = _start(client, repository)
        try:
            return _send_all(client, repository, source, location, advance, before_finish)
        except SessionLost as exc:
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise RegistryError(
                    f"registry {client.registry} kept losing the upload of a blob to {repository}: {exc}"
                ) from None
            client.retry.sleep(restarts)


def _start(client: RegistryClient, repository: str) -> str:
    """Opens an upload session; returns its URL (202 by the spec; 201 taken too, as before)."""
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", ok=(201, 202))
    return _location(client, response)


def mount_blob(client: RegistryClient, repository: str, digest: str, from_repository: str) -> bool:
    """Asks the registry to mount `digest` from another of its repositories: True when it did
    (201). A registry that declines opens an upload session instead (202), cancelled here."""
    params = {"mount": digest, "from": from_repository}
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", params=params, ok=(201, 202))
    if response.status_code == 201:
        return True
    if response.headers.get("Location"):
        with contextlib.suppress(RegistryError):  # an abandoned session expires on the registry's side
            client.request("DELETE", _location(client, response), ok=(200, 202, 204, 404))
    return False


def _location(client: RegistryClient, response: httpx.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"the registry answered {response.status_code} to an upload without a Location")
    url = response.url.join(location)
    client.check_url(url)  # before any byte goes there: a plain-http Location fails now, not after retries
    return str(url)


def _send_all(
    client: RegistryClient,
    repository: str,
    source: BlobSource,
    location: str,
    advance: Callable[[int], None],
    before_finish: Callable[[str], None] | None = None,
) -> str:
    state = _Hash(source)
    try:
        return _send_from(client, repository, source, location, advance, state, before_finish)
    finally:
        state.close()


def _send_from(
    client: RegistryClient,
    repository: str,
    source: BlobSource,
    location: str,
    advance: Callable[[int], None],
    state: _Hash,
    before_finish: Callable[[str], None] | None = None,
) -> str:
    offset = 0
    chunk_size: int | None = None  # None: the whole rest in one streamed PATCH
    mismatches = 0
    tries = Resumes(client.retry, limit=MAX_RESUMES)
    while offset < source.size:
        length = source.size - offset if chunk_size is None else min(chunk_size, source.size - offset)
        try:
            location = _patch(client, location, source, state, offset, length, chunk_size is not None, advance)
            offset += length
            mismatches = 0
            continue
        except RegistryError as exc:
            if exc.status == 404:
                raise SessionLost(str(exc)) from None
            if exc.status not in (413, 416):
                raise
            if chunk_size is None and offset == 0:
                chunk_size = CHUNK  # a registry that wants chunks
            else:
                mismatches += 1  # the registry has another offset than we thought: ask again
                if mismatches > 3:
                    raise SessionLost(str(exc)) from None
        except UploadInterrupted as exc:
            if not tries.failed(offset, exc.retry_after):
                raise RegistryError(
                    f"the upload to {client.registry}/{repository} kept failing at byte {offset}; "
                    "check the network and run again"
                ) from None
        location, offset = _status(client, location)
    state.rewind(source.size)
    digest = state.digest()
    if before_finish is not None:
        before_finish(digest)
    _finish(client, repository, location, digest)
    return digest


def _patch(
    client: RegistryClient,
    location: str,
    source: BlobSource,
    state: _Hash,
    offset: int,
    length: int,
    chunked: bool,
    advance: Callable[[int], None],
) -> str:
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    if chunked or offset:
        headers["Content-Range"] = f"{offset}-{offset + length - 1}"
    parts = getattr(source, "parts", None)

    def feed(chunk: bytes) -> None:
        state.update(chunk)
        advance(state.position)

    def body() -> UploadBody:
        return UploadBody(
            chunks=lambda: _limited(source.chunks(offset), length),
            parts=(lambda: _limited(parts(offset), length)) if parts is not None else None,
            feed=feed,
            start=lambda: state.rewind(offset),
        )

    try:
        response = client.request("PATCH", location, headers=headers, content=body, ok=(202, 204), retries=False)
    except InsecureLocation:
        raise
    except RegistryError as exc:
        raise _interrupted(exc) from None
    return _location(client, response)


def _interrupted(exc: RegistryError) -> Exception:
    """A PATCH failure: one without an answer (the connection broke, the token server failed) or with
    a transient one resumes the upload; the rest are final."""
    if exc.status is None or is_transient_status(exc.status):
        return UploadInterrupted(str(exc), exc.retry_after)
    return exc


def _status(client: RegistryClient, location: str) -> tuple[str, int]:
    """Where the registry's copy of the upload ends: (upload URL, bytes it has)."""
    try:
        response = client.request("GET", location, ok=(204, 200))
    except RegistryError as exc:
        if exc.status in (404, 400):
            raise SessionLost(str(exc)) from None
        raise
    ranged = response.headers.get("Range", "")
    new_location = _location(client, response) if response.headers.get("Location") else location
    if not ranged:
        return new_location, 0
    match = re.fullmatch(r"(?:bytes=)?0-(-?\d+)", ranged.strip())
    if not match:
        raise RegistryError(f"registry {client.registry} sent an unreadable upload Range {ranged!r}")
    end = int(match.group(1))
    # Distribution says 0-0 for an empty upload as well as for one byte; 0 is the safe reading.
    return new_location, end + 1 if end > 0 else 0


def _finish(client: RegistryClient, repository: str, location: str, digest: str) -> None:
    url = httpx.URL(location)
    url = url.copy_merge_params({"digest": digest})
    try:
        client.request("PUT", str(url), headers={"Content-Length": "0"}, content=b"", ok=(201, 204))
    except RegistryError as exc:
        # A PUT that went through but whose answer was lost leaves no session behind.
        if exc.status == 404 and client.has_blob(repository, digest):
            return
        raise RegistryError(f"completing the upload of {digest} to {repository} failed: {exc}") from None


def upload_bytes(client: RegistryClient, repository: str, data: bytes, digest: str) -> None:
    """A small blob (a config) in one monolithic PUT."""
    location = _start(client, repository)
    url = httpx.URL(location).copy_merge_params({"digest": digest})
    client.request(
        "PUT",
        str(url),
        headers={"Content-Type": "application/octet-stream"},
        content=data,
        ok=(201, 204),
    )


def _limited(parts: Iterator[P], length: int) -> Iterator[P]:
    """The first `length` bytes of a stream of chunks or parts; nothing is pulled past them."""
    if length <= 0:
        return
    for part in parts:
        size = len(part) if isinstance(part, bytes) else part.length
        if size >= length:
            yield part[:length] if isinstance(part, bytes) else dataclasses.replace(part, length=length)
            return
        length -= size
        yield part
