"""What modelcar writes, to an OCI layout and to a registry, passes the OCI image-spec's own JSON
Schemas: the layout files, the index, the manifest and the image config. The validator is shown to
refuse what breaks the spec first, so a pass means something."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers.common import run_cli
from .helpers.fake_model import LLAMA_CONFIG, MIB, write_model_dir
from .helpers.image_check import NEEDS_SKOPEO_UMOCI, build_push_args, image_record
from .helpers.oci_registry import Registry
from .helpers.oci_schemas import validate, validate_layout, validate_registry_image

DIGEST = "sha256:" + "a" * 64
GOOD_MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 2},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": DIGEST, "size": 10}],
}


def _broken(path: list[str | int], value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(GOOD_MANIFEST))
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


def test_a_valid_manifest_passes() -> None:
    validate(GOOD_MANIFEST, "image-manifest-schema.json", "the good manifest")


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        (["layers", 0, "size"], "10", "is not of type 'integer'"),
        (["layers", 0, "digest"], "0123abcd", "does not match"),
        (["config", "mediaType"], "not a media type", "does not match"),
        (["schemaVersion"], 1, "less than the minimum"),
        (["layers"], [], "non-empty|too short"),
        (["config"], KeyError, "'config' is a required property"),
        (["annotations"], {"org.opencontainers.image.title": 3}, "is not of type 'string'"),
    ],
)
def test_the_validator_refuses_what_breaks_the_spec(path: list[str | int], value: Any, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        validate(_broken(path, value), "image-manifest-schema.json", "a broken manifest")


def test_the_validator_refuses_a_config_without_os_or_architecture() -> None:
    validate(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
        "config-schema.json",
        "ok",
    )
    with pytest.raises(AssertionError, match="'os' is a required property"):
        validate({"architecture": "amd64"}, "config-schema.json", "a config without os")


def _workspace(root: Path, files: int = 3) -> Path:
    parts = {f"sub/part-{number}.json": json.dumps({"n": number}) for number in range(files)}
    model_files = {"config.json": LLAMA_CONFIG, "model.safetensors": MIB, **parts}
    write_model_dir(root / "model", model_files, links={"alias.json": "config.json"})
    return root


@NEEDS_SKOPEO_UMOCI
@pytest.mark.parametrize("files", [3, 120], ids=["a-layer-per-file", "directory-layers"])
def test_an_image_built_into_a_layout_passes_the_schemas(busybox_layout: Path, tmp_path: Path, files: int) -> None:
    validate_layout(busybox_layout)  # the base the tests build by hand
    workspace = _workspace(tmp_path / "ws", files)
    layout = tmp_path / "out"
    result = run_cli(*build_push_args(workspace, f"oci:{layout}:v1", f"oci:{busybox_layout}"))
    assert result.returncode == 0, result.output
    assert validate_layout(layout) == 4  # oci-layout, index.json, the manifest, its config


@NEEDS_SKOPEO_UMOCI
def test_an_image_pushed_to_a_registry_passes_the_schemas(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path / "ws")
    result = run_cli(*build_push_args(workspace, f"{oci_registry.host}/schemas/model:1", f"oci:{busybox_layout}"))
    assert result.returncode == 0, result.output
    image = image_record(workspace)
    assert validate_registry_image(oci_registry.url(""), "schemas/model", image["digest"]) == 2
    assert validate_registry_image(oci_registry.url(""), "schemas/model", "1") == 2
