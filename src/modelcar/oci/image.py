"""Manifests, configs and indexes: media types, descriptors, and appending layers to a base.

The ModelCar goes on top of every platform of the base: an index base gives an index whose
manifests each add the same model layers; a single manifest gives a single manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

# Docker media types of a base image and their OCI names (the blobs do not change).
_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
}

TITLE = "org.opencontainers.image.title"
FIXED_CREATED = "1970-01-01T00:00:00Z"


def oci_media_type(media_type: str) -> str:
    return _TO_OCI.get(media_type, media_type)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The bytes we write for a manifest, config or index: compact, keys in the order the dict
    was built (not sorted), so the same code writes the same bytes and the digest is stable."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Descriptor:
        return cls(
            value["mediaType"],
            value["digest"],
            int(value["size"]),
            dict(value.get("annotations") or {}),
            value.get("platform"),
        )


@dataclass(frozen=True)
class Blob:
    """Bytes with their descriptor (a manifest, config or index we wrote)."""

    descriptor: Descriptor
    data: bytes

    @classmethod
    def of(cls, media_type: str, value: Any, **kwargs: Any) -> Blob:
        data = canonical_json(value)
        return cls(Descriptor(media_type, sha256_digest(data), len(data), **kwargs), data)


@dataclass(frozen=True)
class ModelLayer:
    """A model layer as it goes into the config and manifest."""

    digest: str
    size: int
    title: str
    created_by: str
    annotations: dict[str, str] = field(default_factory=dict)  # olot's, per file (layers.py)


def scratch_config() -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def extend_config(base: dict[str, Any], layers: list[ModelLayer]) -> dict[str, Any]:
    """The base config with the model layers' diff_ids and history entries appended.

    Our layers are uncompressed, so each layer's diff_id is its digest.
    """
    config = copy.deepcopy(base)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("type", "layers")
    rootfs.setdefault("diff_ids", [])
    rootfs["diff_ids"] = list(rootfs["diff_ids"]) + [layer.digest for layer in layers]
    history = list(config.get("history") or [])
    history.extend({"created": FIXED_CREATED, "created_by": layer.created_by} for layer in layers)
    config["history"] = history
    return config


def extend_manifest(
    base_layers: list[Descriptor],
    config: Blob,
    layers: list[ModelLayer],
    annotations: dict[str, str],
) -> Blob:
    """An OCI manifest: the base's layers (OCI media types), then the model's."""
    layer_json = [
        Descriptor(oci_media_type(d.media_type), d.digest, d.size, d.annotations).to_json() for d in base_layers
    ]
    layer_json += [
        Descriptor(OCI_LAYER, layer.digest, layer.size, {TITLE: layer.title, **layer.annotations}).to_json()
        for layer in layers
    ]
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(OCI_CONFIG, config.descriptor.digest, config.descriptor.size).to_json(),
        "layers": layer_json,
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return Blob.of(OCI_MANIFEST, manifest)


def build_index(manifests: list[Descriptor], annotations: dict[str, str]) -> Blob:
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        index["annotations"] = dict(sorted(annotations.items()))
    return Blob.of(OCI_INDEX, index)


def is_attestation(descriptor: Descriptor) -> bool:
    """BuildKit attestation manifests (platform unknown/unknown) describe the base, not a platform."""
    platform = descriptor.platform or {}
    return platform.get("os") == "unknown" or "vnd.docker.reference.type" in descriptor.annotations


def media_type_of(data: bytes, declared: str | None) -> str:
    """A manifest's media type: the declared one, else the one in the document, else by shape."""
    if declared and declared.split(";")[0].strip() in MANIFEST_TYPES + INDEX_TYPES:
        return declared.split(";")[0].strip()
    doc = json.loads(data)
    if doc.get("mediaType"):
        return str(doc["mediaType"])
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST
