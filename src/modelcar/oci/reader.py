"""Reads a ModelCar back, from a registry or an `oci:` layout: manifests, configs, layer streams.

The counterpart of build.py, shared by `modelcar inspect`, `verify` and `pull`. Opening an image
reads its manifest (every platform of an index) and configs, never a layer. The model layers are
told from the base's by olot's annotations (`olot.layer.content.*`) or by their history entry
(`modelcar: ...`, `olot ...`); each file layer names its file and the file's sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..errors import ModelcarError
from ..jsonfile import parse_object
from .errors import RegistryError
from .image import Descriptor
from .layers import CONTENT_DIGEST, CONTENT_PATH, CONTENT_TYPE, DIRECTORY_LAYER, FILE_LAYER, SIZE_ANNOTATION
from .layout import REF_NAME
from .model_dir import ROOT
from .reference import ImageRef
from .store import (
    ClientOptions,
    Clients,
    LayoutStore,
    PlatformManifest,
    RegistryStore,
    Store,
    open_store,
    read_manifests,
)

MODEL_HISTORY = ("modelcar:", "olot ")
BLOB_LIMIT = 16 << 20  # a signature bundle is a few KiB
SIGNATURE_ARTIFACT_TYPES = {
    "application/vnd.model-signing.signature.v0.1": "model-signing",
    "application/vnd.dev.cosign.artifact.sig.v1+json": "cosign",
    "application/vnd.dev.sigstore.bundle.v0.3+json": "sigstore bundle",
}
SIGNATURE_LAYER_TYPES = {
    "application/vnd.dev.sigstore.bundle.v0.3+json": "model-signing",
    "application/vnd.dev.cosign.simplesigning.v1+json": "cosign",
}


class ImageReadError(ModelcarError):
    """The image cannot be read as a ModelCar."""


@dataclass(frozen=True)
class ModelFile:
    """One entry under /models as the manifest tells it."""

    path: str  # relative to /models ("" for a directory layer of /models itself)
    kind: str  # "file" | "directory" | "other" (links, empty directories: no olot annotation)
    layer: Descriptor
    digest: str | None = None  # the file's own sha256 (file layers)
    size: int | None = None  # the file's size, when the layer says it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "type": self.kind, "layer": self.layer.digest}
        if self.size is not None:
            out["size"] = self.size
        if self.digest is not None:
            out["digest"] = self.digest
        if self.kind != "file":
            out["layer_size"] = self.layer.size
        return out


@dataclass
class PlatformImage:
    name: str
    manifest_digest: str
    manifest: dict[str, Any]
    config_digest: str
    config: dict[str, Any]
    layers: list[Descriptor]
    model: list[int]  # indexes of the model layers in `layers`

    @property
    def base_layers(self) -> list[Descriptor]:
        return [d for i, d in enumerate(self.layers) if i not in self.model]

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    def files(self) -> list[ModelFile]:
        return [model_file(self.layers[i]) for i in self.model]

    def problems(self) -> list[str]:
        """What makes the image's /models other than its model layers say: a layer that is not a
        model layer above the first model layer (its files would be invisible to inspect, verify
        and pull, yet KServe would see them)."""
        if not self.model:
            return []
        first = self.model[0]
        return [
            f"layer {i} ({d.digest}) is not a model layer but comes after the model layers; "
            f"what it holds under /{ROOT} would not be checked"
            for i, d in enumerate(self.layers)
            if i > first and i not in self.model
        ]


@dataclass
class Signature:
    kind: str  # model-signing, cosign, ...
    where: str  # "referrers" or the tag
    manifest_digest: str
    layers: list[Descriptor] = field(default_factory=list)


@dataclass
class ImageView:
    reference: str
    digest: str
    media_type: str
    annotations: dict[str, str]
    platforms: list[PlatformImage]


def model_file(layer: Descriptor) -> ModelFile:
    """The layer as its annotations describe it; a `file` or `directory` layer whose annotated
    path is not under /models (absolute once /models is taken off, `..`, odd characters) is refused."""
    a = layer.annotations
    kind = a.get(CONTENT_TYPE) or "other"
    kind = kind if kind in (FILE_LAYER, DIRECTORY_LAYER) else "other"
    path = a.get(CONTENT_PATH, "")
    title = a.get("org.opencontainers.image.title", "")
    rel = _annotated_path(path, layer, root_given=True) if path else title
    if kind != "other" and not path:
        rel = _annotated_path(title, layer, root_given=False)
    if kind == FILE_LAYER and not rel:
        raise ImageReadError(f"layer {layer.digest} is a `file` layer that names no file under /{ROOT}")
    size = a.get(SIZE_ANNOTATION)
    return ModelFile(rel, kind, layer, a.get(CONTENT_DIGEST), int(size) if size and size.isdigit() else None)


def _annotated_path(path: str, layer: Descriptor, root_given: bool) -> str:
    """The path relative to /models of an annotation: `/models/...` (or `models/...`) for the
    in-layer path, relative for a title."""
    bad = f"layer {layer.digest} has the annotated path {path!r}"
    if "\0" in path or "\\" in path:
        raise ImageReadError(f"{bad}: an unusual character in it")
    parts = [p for p in PurePosixPath(path).parts if p not in (".", "/")]
    if root_given:
        if not parts or parts[0] != ROOT:
            raise ImageReadError(f"{bad}: not under /{ROOT}")
        parts = parts[1:]
    elif path.startswith("/"):
        raise ImageReadError(f"{bad}: an absolute path, not one under /{ROOT}")
    if ".." in parts:
        raise ImageReadError(f"{bad}: a path with '..'")
    rel = "/".join(parts)
    if rel.startswith("/"):
        raise ImageReadError(f"{bad}: an absolute path once /{ROOT} is taken off")
    return rel


class ImageReader:
    """One image location, opened with build-push's client options (auth, TLS)."""

    def __init__(self, ref: ImageRef, options: ClientOptions) -> None:
        self.ref = ref
        self._clients = Clients(options)
        self.store: Store = open_store(ref, self._clients)

    def close(self) -> None:
        self._clients.close()

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> ImageView:
        """The manifest (every platform of an index) and configs; no layer is read."""
        found = read_manifests(self.store, self.ref.reference, f"the image {self.ref}", ImageReadError)
        platforms = [self._platform(p) for p in found.platforms]
        annotations = dict(found.doc.get("annotations") or {})
        return ImageView(str(self.ref), found.digest, found.media_type, annotations, platforms)

    def _platform(self, found: PlatformManifest) -> PlatformImage:
        config = self.store.json_blob(found.config_digest)
        plat = (found.descriptor.platform if found.descriptor else None) or config
        name = f"{plat.get('os', '?')}/{plat.get('architecture', '?')}"
        name += f"/{plat['variant']}" if plat.get("variant") else ""
        model = _model_layers(found.layers, config)
        return PlatformImage(name, found.digest, found.manifest, found.config_digest, config, found.layers, model)

    def layer_chunks(self, layer: Descriptor, offset: int = 0) -> Iterator[bytes]:
        """A layer's bytes, streamed (a registry's broken connections resume with Range); more
        than its descriptor's size raise ImageReadError."""
        return _bounded(self.store.blob(layer).chunks(offset), layer, layer.size - offset)

    def signature(self, digest: str) -> Signature | None:
        """The first signature attached to the manifest `digest` (see `signatures`)."""
        found = self._referrers(self.store, digest) if isinstance(self.store, RegistryStore) else []
        return found[0] if found else self._tagged(digest)

    def signatures(self, digest: str) -> list[Signature]:
        """Every signature attached to the manifest `digest`: by the referrers API, then by the
        tag `sha256-<hex>.sig` (model-signing's and cosign's convention)."""
        found = self._referrers(self.store, digest) if isinstance(self.store, RegistryStore) else []
        tagged = self._tagged(digest)
        return found + ([tagged] if tagged is not None else [])

    def _tagged(self, digest: str) -> Signature | None:
        tag = digest.replace(":", "-") + ".sig"
        if isinstance(self.store, RegistryStore):
            try:
                data, _, sig_digest = self.store.manifest(tag)
            except RegistryError as exc:
                if exc.status == 404:
                    return None
                raise
        elif isinstance(self.store, LayoutStore):
            index = self.store.layout.read_index()
            if not any((m.get("annotations") or {}).get(REF_NAME) == tag for m in index.get("manifests", [])):
                return None
            data, _, sig_digest = self.store.manifest(tag)
        else:  # pragma: no cover - no other stores
            return None
        doc = _json(data, f"the signature {tag}")
        layers = [Descriptor.from_json(layer) for layer in doc.get("layers", [])]
        kind = next((SIGNATURE_LAYER_TYPES[d.media_type] for d in layers if d.media_type in SIGNATURE_LAYER_TYPES), "")
        return Signature(kind or "unknown", f"tag {tag}", sig_digest, layers)

    def _referrers(self, store: RegistryStore, digest: str) -> list[Signature]:
        client = store.client
        client.want(store.repository, "pull")
        try:
            response = client.request(
                "GET",
                f"/v2/{store.repository}/referrers/{digest}",
                headers={"Accept": "application/vnd.oci.image.index.v1+json"},
                ok=(200, 404, 400, 405),
            )
        except RegistryError:
            return []
        if response.status_code != 200:
            return []
        try:
            manifests = response.json().get("manifests", [])
        except (ValueError, AttributeError):
            return []
        found = []
        for entry in manifests if isinstance(manifests, list) else []:
            kind = SIGNATURE_ARTIFACT_TYPES.get(str(entry.get("artifactType", ""))) if isinstance(entry, dict) else None
            if not kind or "digest" not in entry:
                continue
            try:
                data, _, sig_digest = store.manifest(str(entry["digest"]))
                layers = [Descriptor.from_json(d) for d in _json(data, "a signature").get("layers", [])]
            except (RegistryError, ImageReadError, KeyError, TypeError, ValueError):
                continue  # one unreadable referrer: the others may still be checked
            found.append(Signature(kind, "referrers", sig_digest, layers))
        return found

    def blob(self, descriptor: Descriptor, limit: int = BLOB_LIMIT) -> bytes:
        """A small blob (a signature bundle), whole: at most `limit` bytes, its digest checked."""
        if descriptor.size > limit:
            raise ImageReadError(f"blob {descriptor.digest} is {descriptor.size} bytes, more than {limit} allowed here")
        data = b"".join(self.layer_chunks(descriptor))
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != descriptor.digest or len(data) != descriptor.size:
            raise ImageReadError(
                f"blob {descriptor.digest} holds other bytes (digest {actual}, {len(data)} bytes; "
                f"the descriptor says {descriptor.size})"
            )
        return data


def _bounded(chunks: Iterator[bytes], descriptor: Descriptor, size: int) -> Iterator[bytes]:
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise ImageReadError(
                f"blob {descriptor.digest} holds more than the {descriptor.size} bytes its descriptor gives"
            )
        yield chunk


def _model_layers(layers: list[Descriptor], config: dict[str, Any]) -> list[int]:
    history = [h for h in (config.get("history") or []) if isinstance(h, dict) and not h.get("empty_layer")]
    aligned = len(history) == len(layers)
    model = []
    for i, layer in enumerate(layers):
        by_history = aligned and str(history[i].get("created_by", "")).startswith(MODEL_HISTORY)
        if CONTENT_TYPE in layer.annotations or by_history:
            model.append(i)
    return model


def _json(data: bytes, what: str) -> dict[str, Any]:
    return parse_object(data, ImageReadError, what)
