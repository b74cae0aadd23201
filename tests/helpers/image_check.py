"""What the fault and crash tests share: the CLI call, and the checks that the image which came out
is the model (fake_model.write_fault_model), byte for byte, and that an OCI layout holds nothing
half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelcar.files import sha256_file

from .common import MODELCAR, clean_env, retry_env
from .oci_schemas import validate_layout

MIB = 1 << 20
# The mark of test modules that read images back with skopeo and umoci (Debian packages).
NEEDS_SKOPEO_UMOCI = pytest.mark.skipif(
    not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo and umoci are needed (make install-test)"
)
# Fast retries, ten tries: the faults are many, the waits should not be (Retry-After is still honoured).
FAULT_RETRY = retry_env(attempts=10, backoff=0.02)


def unpack(tmp_path: Path, source: str, name: str, *skopeo_args: str) -> Path:
    """skopeo copy to a layout, then umoci unpack; returns the rootfs."""
    layout = tmp_path / f"{name}-layout"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", *skopeo_args, source, f"oci:{layout}:x"],
        check=True,
        capture_output=True,
    )
    bundle = tmp_path / f"{name}-bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:x", str(bundle)], check=True, capture_output=True
    )
    return bundle / "rootfs"


def assert_models_equal(rootfs: Path, model: Path) -> None:
    ours = sorted(p.relative_to(model).as_posix() for p in model.rglob("*"))
    theirs = sorted(p.relative_to(rootfs / "models").as_posix() for p in (rootfs / "models").rglob("*"))
    assert theirs == ours
    for rel in ours:
        src, dst = model / rel, rootfs / "models" / rel
        if src.is_symlink():
            assert os.readlink(dst) == os.readlink(src)
        elif src.is_file():
            assert dst.read_bytes() == src.read_bytes(), rel
            assert dst.stat().st_mode & 0o777 == 0o644
        else:
            assert dst.stat().st_mode & 0o777 == 0o755


def new_workspace(root: Path, model: Path) -> Path:
    """A workspace holding nothing but a copy of `model` (no run.json, no remembered digests)."""
    shutil.copytree(model, root / "model", symlinks=True)
    return root


def fault_env(**extra: str) -> dict[str, str]:
    return clean_env(**FAULT_RETRY, **extra)


def build_push_args(workspace: Path, image: str, base: str, *extra: str) -> list[str]:
    """`modelcar build-push` to `image` on `base`, plain http allowed, results next to the workspace."""
    return [
        "build-push",
        "--workspace",
        str(workspace),
        "--image",
        image,
        "--base-image",
        base,
        "--no-tls-verify",
        "--results-dir",
        str(workspace / "results"),
        *extra,
    ]


def build_push_command(workspace: Path, image: str, base: str, *extra: str) -> list[str]:
    return [str(MODELCAR), *build_push_args(workspace, image, base, *extra)]


def image_record(workspace: Path) -> dict[str, Any]:
    record = json.loads((workspace / "run.json").read_text())
    image = record["image"]
    assert (workspace / "results" / "IMAGE_DIGEST").read_text() == image["digest"]
    return image


def pull_and_compare(source: str, model: Path, tmp: Path, name: str) -> None:
    """skopeo copy `source` (docker://...) to a layout, umoci unpack, compare /models and the base."""
    rootfs = unpack(tmp, source, name)
    assert_models_equal(rootfs, model)
    assert (rootfs / "bin" / "busybox").is_file() and os.readlink(rootfs / "bin" / "sh") == "busybox"


def unpack_layout_and_compare(layout: Path, tag: str, model: Path, tmp: Path, name: str) -> None:
    bundle = tmp / f"{name}-bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True
    )
    assert_models_equal(bundle / "rootfs", model)
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()


def temp_files(layout: Path) -> list[Path]:
    """Anything in the layout that is not a finished file: temporary names are dotfiles."""
    return sorted(p for p in layout.rglob(".*") if p.is_file())


def assert_layout_intact(layout: Path, tag: str | None = None, digest: str | None = None) -> None:
    """index.json is valid JSON, every blob is whole (its content hashes to its name), no temp file
    is left, and what index.json reaches passes the OCI schemas; with `tag`, the tag points at `digest`."""
    index = json.loads((layout / "index.json").read_text())
    assert index.get("schemaVersion") == 2 and isinstance(index.get("manifests"), list)
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    for blob in (layout / "blobs" / "sha256").iterdir():
        if blob.name.startswith("."):
            continue
        assert sha256_file(blob) == blob.name, f"half-written or damaged blob {blob.name}"
    for entry in index["manifests"]:
        assert (layout / "blobs" / "sha256" / entry["digest"].split(":", 1)[1]).is_file()
    assert temp_files(layout) == []
    validate_layout(layout)
    if tag is not None:
        tagged = [
            m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
        ]
        assert [m["digest"] for m in tagged] == [digest]
