"""Reads a ModelCar back, from a registry or an `oci:` layout: manifests, configs, layer streams.

The counterpart of build.py, shared by `modelcar inspect`, `verify` and `pull`. Opening an image
reads its manifest (every platform of an index) and configs, never a layer. The model layers are
told from the base's by olot's annotations (`olot.layer.content.*`) or by their history entry
(`modelcar: ...`, `olot ...`); each file layer names its file and the file's sha256.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..errors import ModelcarError
from .client import RegistryError
from .image import INDEX_TYPES, Descriptor, is_attestation
from .layers import CONTENT_DIGEST, CONTENT_PATH, CONTENT_TYPE, DIRECTORY_LAYER, FILE_LAYER, ROOT, SIZE_ANNOTATION
from .layout import REF_NAME
from .reference import ImageRef
from .store import ClientOptions, Clients, LayoutStore, RegistryStore, Store, open_store

MODEL_HISTORY = ("modelcar:", "olot ")
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
    a = layer.annotations
    kind = a.get(CONTENT_TYPE) or "other"
    path = a.get(CONTENT_PATH, "")
    rel = _strip_root(path) if path else a.get("org.opencontainers.image.title", "")
    size = a.get(SIZE_ANNOTATION)
    return ModelFile(
        rel,
        kind if kind in (FILE_LAYER, DIRECTORY_LAYER) else "other",
        layer,
        a.get(CONTENT_DIGEST),
        int(size) if size and size.isdigit() else None,
    )


def _strip_root(path: str) -> str:
    parts = PurePosixPath(path.lstrip("/")).parts
    return "/".join(parts[1:]) if parts and parts[0] == ROOT else "/".join(parts)


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
        data, media_type, digest = self.store.manifest(self.ref.reference)
        doc = _json(data, f"the image {self.ref}")
        if media_type in INDEX_TYPES:
            platforms = []
            for entry in doc.get("manifests", []):
                descriptor = Descriptor.from_json(entry)
                if is_attestation(descriptor):
                    continue
                child, _, child_digest = self.store.manifest(descriptor.digest)
                platforms.append(
                    self._platform(_json(child, f"manifest {descriptor.digest}"), child_digest, descriptor)
                )
            if not platforms:
                raise ImageReadError(f"the image {self.ref} is an index without any platform image")
        else:
            platforms = [self._platform(doc, digest, None)]
        return ImageView(str(self.ref), digest, media_type, dict(doc.get("annotations") or {}), platforms)

    def _platform(self, manifest: dict[str, Any], digest: str, descriptor: Descriptor | None) -> PlatformImage:
        try:
            config_digest = str(manifest["config"]["digest"])
            layers = [Descriptor.from_json(layer) for layer in manifest.get("layers", [])]
        except (KeyError, TypeError):
            raise ImageReadError(f"the image {self.ref} has a manifest without config or layers") from None
        config = self.store.json_blob(config_digest)
        plat = (descriptor.platform if descriptor else None) or config
        name = f"{plat.get('os', '?')}/{plat.get('architecture', '?')}"
        name += f"/{plat['variant']}" if plat.get("variant") else ""
        model = _model_layers(layers, config)
        return PlatformImage(name, digest, manifest, config_digest, config, layers, model)

    def layer_chunks(self, layer: Descriptor, offset: int = 0) -> Iterator[bytes]:
        """A layer's bytes, streamed (a registry's broken connections resume with Range)."""
        return self.store.blob(layer).chunks(offset)

    def signature(self, digest: str) -> Signature | None:
        """A signature attached to the manifest `digest`: by the referrers API, else by the tag
        `sha256-<hex>.sig` (model-signing's and cosign's convention)."""
        tag = digest.replace(":", "-") + ".sig"
        if isinstance(self.store, RegistryStore):
            found = self._referrer(self.store, digest)
            if found is not None:
                return found
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

    def _referrer(self, store: RegistryStore, digest: str) -> Signature | None:
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
            return None
        if response.status_code != 200:
            return None
        try:
            manifests = response.json().get("manifests", [])
        except (ValueError, AttributeError):
            return None
        for entry in manifests:
            kind = SIGNATURE_ARTIFACT_TYPES.get(str(entry.get("artifactType", "")))
            if kind:
                data, _, sig_digest = store.manifest(str(entry["digest"]))
                layers = [Descriptor.from_json(d) for d in _json(data, "a signature").get("layers", [])]
                return Signature(kind, "referrers", sig_digest, layers)
        return None

    def blob(self, descriptor: Descriptor) -> bytes:
        return b"".join(self.layer_chunks(descriptor))


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
    try:
        value = json.loads(data)
    except ValueError:
        raise ImageReadError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ImageReadError(f"{what} is not a JSON object")
    return value
