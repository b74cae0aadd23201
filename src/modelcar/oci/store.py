"""Where images come from and go to, behind one interface: a registry repository or an OCI layout."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import Aborted, ModelcarError
from ..jsonfile import parse_object
from ..retry import Resumes, RetryPolicy, describe_error, is_transient_error
from .auth import AuthFiles
from .client import RegistryClient
from .errors import RegistryError
from .image import INDEX_TYPES, Descriptor, is_attestation, media_type_of, sha256_digest
from .layers import Part
from .layout import Layout
from .reference import ImageRef, LayoutRef, RegistryRef
from .upload import BlobSource, mount_blob, upload_blob, upload_bytes

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class ClientOptions:
    tls_verify: bool = True
    ca_bundle: Path | None = None
    authfile: Path | None = None
    retry: RetryPolicy | None = None


class Clients:
    """One RegistryClient per registry host, shared by the base and the destination."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def get(self, registry: str) -> RegistryClient:
        with self._lock:
            if registry not in self._clients:
                self._clients[registry] = RegistryClient(
                    registry,
                    tls_verify=self.options.tls_verify,
                    ca_bundle=self.options.ca_bundle,
                    keychain=AuthFiles(self.options.authfile),
                    retry=self.options.retry,
                )
            return self._clients[registry]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


class RemoteBlob:
    """A registry blob as a BlobSource (ranged GETs to start anywhere)."""

    def __init__(self, client: RegistryClient, repository: str, digest: str, size: int) -> None:
        self.client, self.repository, self.digest, self.size = client, repository, digest, size

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The bytes from `offset`; a connection broken mid-body resumes where it stopped (Range).

        Tries without progress are bounded by the client's RetryPolicy; then a RegistryError.
        """
        position = offset
        tries = Resumes(self.client.retry)
        while True:
            try:
                with self.client.open_blob(self.repository, self.digest, position) as chunks:
                    for chunk in chunks:
                        position += len(chunk)
                        yield chunk
                return
            except httpx.TransportError as exc:
                if not is_transient_error(exc) or not tries.failed(position):
                    raise RegistryError(
                        f"reading blob {self.digest} from {self.client.registry}/{self.repository} broke off "
                        f"at byte {position} of {self.size} ({describe_error(exc)}), {tries.failures} times in a "
                        "row; check the network and run again"
                    ) from None


class AbortableBlob:
    """A BlobSource that stops (raises Aborted) at its next chunk once `abort` is set."""

    def __init__(self, source: BlobSource, abort: threading.Event) -> None:
        self.source, self.abort, self.size = source, abort, source.size
        if hasattr(source, "parts"):  # a LayerStream: the plain-http sender uses its file ranges
            self.parts = self._parts

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        for chunk in self.source.chunks(offset):
            self._check()
            yield chunk

    def _parts(self, offset: int = 0) -> Iterator[Part]:
        for part in self.source.parts(offset):  # type: ignore[attr-defined]
            self._check()
            yield part

    def _check(self) -> None:
        if self.abort.is_set():
            raise Aborted("stopped: another layer of the image failed")


class LayoutBlob:
    def __init__(self, layout: Layout, digest: str, size: int) -> None:
        self.layout, self.digest, self.size = layout, digest, size

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        return self.layout.open_blob(self.digest, offset)


class Store(ABC):
    """Reads and writes of one image location (a registry repository or an OCI layout)."""

    ref: ImageRef

    @abstractmethod
    def manifest(self, reference: str) -> tuple[bytes, str, str]: ...

    @abstractmethod
    def json_blob(self, digest: str) -> dict[str, Any]: ...

    @abstractmethod
    def blob(self, descriptor: Descriptor) -> BlobSource: ...

    @abstractmethod
    def has_blob(self, digest: str) -> bool: ...

    def try_reuse(self, digest: str | None, mount_from: Store | None = None) -> bool:
        """Whether blob `digest` is here without sending its bytes; the one place that decides a
        blob need not be sent. `digest` is None when it is not known before reading the content
        (nothing remembered it). A registry also mounts it from `mount_from` where it can."""
        return digest is not None and self.has_blob(digest)

    @abstractmethod
    def put_stream(
        self, source: BlobSource, progress: Progress = None, before_finish: Callable[[str], None] | None = None
    ) -> str: ...

    def copy_blob(self, origin: Store, descriptor: Descriptor, abort: threading.Event | None = None) -> None:
        _check_copy(origin, descriptor, self.put_stream(_abortable(origin.blob(descriptor), abort)))

    @abstractmethod
    def put_bytes(self, data: bytes) -> str: ...

    @abstractmethod
    def put_manifest(self, data: bytes, media_type: str, tag: str | None) -> str: ...

    @abstractmethod
    def pinned(self, digest: str) -> str: ...


class RegistryStore(Store):
    def __init__(self, ref: RegistryRef, client: RegistryClient) -> None:
        self.ref = ref
        self.client = client
        self.repository = ref.repository

    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        return self.client.get_manifest(self.repository, reference)

    def json_blob(self, digest: str) -> dict[str, Any]:
        return self.client.get_json(self.repository, digest)

    def blob(self, descriptor: Descriptor) -> BlobSource:
        return RemoteBlob(self.client, self.repository, descriptor.digest, descriptor.size)

    def has_blob(self, digest: str) -> bool:
        return self.client.has_blob(self.repository, digest)

    def put_stream(
        self, source: BlobSource, progress: Progress = None, before_finish: Callable[[str], None] | None = None
    ) -> str:
        return upload_blob(self.client, self.repository, source, progress, before_finish=before_finish)

    def try_reuse(self, digest: str | None, mount_from: Store | None = None) -> bool:
        """HEAD, then a cross-repository mount from `mount_from` on this same registry. A mount
        the registry declines opens an upload session instead, which is cancelled here: the
        caller sends the blob in a session of its own."""
        if digest is None:
            return False
        if self.has_blob(digest):
            return True
        if not (isinstance(mount_from, RegistryStore) and mount_from.client is self.client):
            return False
        self.client.want(mount_from.repository, "pull")
        return mount_blob(self.client, self.repository, digest, mount_from.repository)

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.try_reuse(digest):
            upload_bytes(self.client, self.repository, data, digest)
        return digest

    def put_manifest(self, data: bytes, media_type: str, tag: str | None) -> str:
        digest = sha256_digest(data)
        return self.client.put_manifest(self.repository, tag or digest, data, media_type)

    def pinned(self, digest: str) -> str:
        return str(self.ref.with_digest(digest))


class LayoutStore(Store):
    def __init__(self, ref: LayoutRef) -> None:
        self.ref = ref
        self.layout = Layout(ref.path)

    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        if reference.startswith("sha256:"):
            descriptor = self.layout.resolve(None, reference)
        else:
            descriptor = self.layout.resolve(self.ref.tag if reference == self.ref.reference else reference)
        data = self.layout.read_blob(descriptor.digest)
        return data, media_type_of(data, descriptor.media_type), descriptor.digest

    def json_blob(self, digest: str) -> dict[str, Any]:
        return self.layout.read_json(digest)

    def blob(self, descriptor: Descriptor) -> BlobSource:
        return LayoutBlob(self.layout, descriptor.digest, descriptor.size)

    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def put_stream(
        self, source: BlobSource, progress: Progress = None, before_finish: Callable[[str], None] | None = None
    ) -> str:
        self.layout.init()
        digest, _ = self.layout.write_stream(source.chunks(0), progress)
        return digest

    def put_bytes(self, data: bytes) -> str:
        self.layout.init()
        return self.layout.write_blob(data)

    def put_manifest(self, data: bytes, media_type: str, tag: str | None) -> str:
        self.layout.init()
        digest = self.layout.write_blob(data)
        if tag:
            self.layout.tag(Descriptor(media_type, digest, len(data)), tag)
        return digest

    def pinned(self, digest: str) -> str:
        return str(LayoutRef(self.ref.path, None, digest))


def _abortable(source: BlobSource, abort: threading.Event | None) -> BlobSource:
    return source if abort is None else AbortableBlob(source, abort)


def _check_copy(origin: Store, descriptor: Descriptor, digest: str) -> None:
    if digest != descriptor.digest:
        raise ModelcarError(
            f"the base image {origin.ref} has a layer {descriptor.digest} whose content has digest {digest}; "
            "the base is damaged: pull it again or pick another base"
        )


def open_store(ref: ImageRef, clients: Clients) -> Store:
    if isinstance(ref, LayoutRef):
        return LayoutStore(ref)
    return RegistryStore(ref, clients.get(ref.registry))


@dataclass(frozen=True)
class PlatformManifest:
    """One platform's manifest: its entry in the index (None for a lone manifest), its digest,
    the manifest, its config's digest and its layers."""

    descriptor: Descriptor | None
    digest: str
    manifest: dict[str, Any]
    config_digest: str
    layers: list[Descriptor]


@dataclass(frozen=True)
class ImageManifests:
    """What `reference` names in a store: the top document (an index or a manifest), its media type
    and digest, and the manifest of every platform (attestations left out)."""

    doc: dict[str, Any]
    media_type: str
    digest: str
    platforms: list[PlatformManifest]


def read_manifests(store: Store, reference: str, what: str, error: type[ModelcarError]) -> ImageManifests:
    """The index or manifest `reference` and each platform's manifest; what is not a JSON object,
    a manifest without config or layers, or an index of no platform raises `error`, whose message
    names `what` ("the base image X")."""
    data, media_type, digest = store.manifest(reference)
    doc = parse_object(data, error, what)
    if media_type not in INDEX_TYPES:
        return ImageManifests(doc, media_type, digest, [_platform_manifest(doc, digest, None, what, error)])
    platforms = []
    for entry in doc.get("manifests", []):
        descriptor = Descriptor.from_json(entry)
        if is_attestation(descriptor):
            continue
        child, _, child_digest = store.manifest(descriptor.digest)
        manifest = parse_object(child, error, f"manifest {descriptor.digest}")
        platforms.append(_platform_manifest(manifest, child_digest, descriptor, what, error))
    if not platforms:
        raise error(f"{what} is an index without any platform image")
    return ImageManifests(doc, media_type, digest, platforms)


def _platform_manifest(
    manifest: dict[str, Any], digest: str, descriptor: Descriptor | None, what: str, error: type[ModelcarError]
) -> PlatformManifest:
    try:
        config_digest = str(manifest["config"]["digest"])
        layers = [Descriptor.from_json(layer) for layer in manifest.get("layers", [])]
    except (KeyError, TypeError):
        raise error(f"{what} has a manifest without config or layers") from None
    return PlatformManifest(descriptor, digest, manifest, config_digest, layers)
