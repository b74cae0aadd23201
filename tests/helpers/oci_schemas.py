"""Validation against the OCI image-spec JSON Schemas (tests/schemas/opencontainers, copies of the
published ones): an OCI layout's oci-layout and index.json, and every index, manifest and image
config they reach, each checked against its own schema."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT4

from .common import REPO_ROOT

SCHEMAS = REPO_ROOT / "tests" / "schemas" / "opencontainers"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
SCHEMA_OF_MEDIA_TYPE = {INDEX: "image-index-schema.json", MANIFEST: "image-manifest-schema.json"}
ACCEPT = ", ".join(SCHEMA_OF_MEDIA_TYPE)


def _retrieve(uri: str) -> Resource:
    # The specs' $refs are relative file names ("defs-descriptor.json#/...") resolved against
    # whichever `id` is in scope, so the base varies; image-spec's own validator loads by file name too.
    path = SCHEMAS / uri.rsplit("/", 1)[-1]
    if not path.is_file():
        raise NoSuchResource(ref=uri)
    return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT4)


@functools.cache
def validator(schema_file: str) -> jsonschema.Draft4Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    return jsonschema.Draft4Validator(schema, registry=Registry(retrieve=_retrieve))


def validate(document: Any, schema_file: str, where: str) -> None:
    errors = sorted(validator(schema_file).iter_errors(document), key=lambda e: list(e.absolute_path))
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
    assert not problems, f"{where} breaks {schema_file}:\n" + "\n".join(problems)


ReadBlob = Callable[[str, bool], bytes]  # (digest, is_manifest) -> its bytes


def validate_manifest_tree(document: dict[str, Any], media_type: str, read_blob: ReadBlob, where: str) -> int:
    """Validates an index or manifest and, through `read_blob`, everything it points at that has a
    schema. Returns how many documents were checked."""
    validate(document, SCHEMA_OF_MEDIA_TYPE[media_type], where)
    checked = 1
    if media_type == INDEX:
        for entry in document["manifests"]:
            if entry["mediaType"] in SCHEMA_OF_MEDIA_TYPE:
                child = json.loads(read_blob(entry["digest"], True))
                checked += validate_manifest_tree(child, entry["mediaType"], read_blob, f"{where} -> {entry['digest']}")
        return checked
    config = document["config"]
    if config["mediaType"] == IMAGE_CONFIG:
        validate(
            json.loads(read_blob(config["digest"], False)), "config-schema.json", f"{where} config {config['digest']}"
        )
        checked += 1
    return checked


def validate_layout(layout: Path) -> int:
    """Validates an OCI image layout and everything its index.json reaches; returns the count."""
    validate(json.loads((layout / "oci-layout").read_text()), "image-layout-schema.json", f"{layout}/oci-layout")

    def read_blob(digest: str, is_manifest: bool) -> bytes:
        algorithm, hex_digest = digest.split(":", 1)
        return (layout / "blobs" / algorithm / hex_digest).read_bytes()

    index = json.loads((layout / "index.json").read_text())
    return 1 + validate_manifest_tree(index, INDEX, read_blob, f"{layout}/index.json")


def validate_registry_image(base_url: str, repo: str, reference: str, **httpx_options: Any) -> int:
    """Validates what a registry serves for `repo`@`reference` (an index or a manifest) and what
    it reaches; `base_url` is scheme://host. Returns how many documents were checked."""

    def get(path: str, accept: str) -> httpx.Response:
        response = httpx.get(f"{base_url}/v2/{repo}/{path}", headers={"Accept": accept}, timeout=30, **httpx_options)
        response.raise_for_status()
        return response

    def read_blob(digest: str, is_manifest: bool) -> bytes:
        return (get(f"manifests/{digest}", ACCEPT) if is_manifest else get(f"blobs/{digest}", "*/*")).content

    top = get(f"manifests/{reference}", ACCEPT)
    media_type = top.headers["Content-Type"].split(";", 1)[0].strip()
    return validate_manifest_tree(top.json(), media_type, read_blob, f"{repo}@{reference}")
