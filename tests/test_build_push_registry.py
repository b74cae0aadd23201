"""`modelcar build-push` against a real docker-registry on loopback, read back with skopeo and umoci:
a clean push and its annotations, a second push that sends no layer, an OCI layout destination,
a base mounted from the same registry, an index base, an olot-made base, scratch, and the refusals
(a link leaving the model, plain http without --no-tls-verify).

The other build-push tests: through faults injected by a proxy in test_faults_registry.py; kill -9
and rerun in test_crash_push.py; TLS and token auth in test_registry_tls_token.py; build_and_push
called in-process (abort, Ctrl-C, a slow base, cut connections) in test_oci_build.py; one module
each in test_oci_<module>.py (upload, client, store, layout, layers, model_dir, sendfile, auth,
reference, schemas), test_file_digests.py and test_base_check.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from modelcar.oci.image import OCI_INDEX, OCI_MANIFEST, Blob, Descriptor
from modelcar.oci.layout import Layout

from .helpers.common import REPO_ROOT, run_cli
from .helpers.fake_model import LLAMA_CONFIG, MIB, Content, write_model_dir
from .helpers.image_check import NEEDS_SKOPEO_UMOCI, assert_models_equal, build_push_args, unpack
from .helpers.oci_registry import Registry, push_layout
from .helpers.oci_schemas import validate_registry_image

pytestmark = NEEDS_SKOPEO_UMOCI


def make_workspace(tmp_path: Path, name: str = "ws") -> Path:
    workspace = tmp_path / name
    files: dict[str, Content] = {
        "config.json": LLAMA_CONFIG,
        "sub/config.json": '{"nested": true}',
        "README.md": "# card\n",
    }
    files |= {f"model-0000{i}-of-00002.safetensors": 17 * MIB + i for i in (1, 2)}
    write_model_dir(workspace / "model", files, links={"alias.json": "config.json"})
    return workspace


def build_push(workspace: Path, image: str, base: str, *extra: str) -> dict:
    result = run_cli(*build_push_args(workspace, image, base, *extra))
    assert result.returncode == 0, result.output
    assert "layers" in result.stderr and "MB/s" in result.stderr
    record = json.loads((workspace / "run.json").read_text())
    image_record = record["image"]
    assert (workspace / "results" / "IMAGE_DIGEST").read_text() == image_record["digest"]
    assert (workspace / "results" / "IMAGE_URL").read_text() == image_record["pinned"]
    return image_record


def test_push_reads_back_intact_on_the_busybox_base(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = make_workspace(tmp_path)
    (workspace / "run.json").write_text(
        json.dumps({"version": 1, "stages": {}, "source": {"repo": "org/tiny", "revision": "main", "sha": "abc123"}})
    )
    image = build_push(workspace, f"{oci_registry.host}/it/model:1.0.0", f"oci:{busybox_layout}")
    assert image["pinned"] == f"{oci_registry.host}/it/model@{image['digest']}"
    assert image["media_type"] == OCI_MANIFEST
    assert [layer["title"] for layer in image["layers"]] == [
        "links and empty directories",
        "config.json",
        "sub/config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "README.md",
    ]

    rootfs = unpack(tmp_path, f"docker://{image['pinned']}", "pushed")
    assert_models_equal(rootfs, workspace / "model")
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert subprocess.run([str(rootfs / "bin" / "busybox"), "true"]).returncode == 0

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image['pinned']}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    manifest = json.loads(raw)
    assert manifest["annotations"]["org.opencontainers.image.revision"] == "abc123"
    assert manifest["annotations"]["io.modelcar.source"] == "huggingface:org/tiny"
    assert all(layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar" for layer in manifest["layers"])
    # olot's per-file annotations, the file's own sha256 (what model signing and Konflux read).
    annotated = {
        a["olot.layer.content.inlayerpath"]: a
        for a in (layer.get("annotations", {}) for layer in manifest["layers"])
        if a.get("olot.layer.content.type") == "file"
    }
    model = workspace / "model"
    files = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file() and not p.is_symlink())
    assert sorted(annotated) == [f"/models/{name}" for name in files]
    for name in files:
        assert annotated[f"/models/{name}"]["olot.layer.content.digest"] == (
            "sha256:" + hashlib.sha256((model / name).read_bytes()).hexdigest()
        )
        assert annotated[f"/models/{name}"]["olot.layer.content.name"] == name.rsplit("/", 1)[-1]


def test_second_push_sends_no_layer_and_the_digest_is_stable(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = make_workspace(tmp_path)
    image_ref = f"{oci_registry.host}/it/again:1"
    first = build_push(workspace, image_ref, f"oci:{busybox_layout}")
    before = oci_registry.requests()
    second = build_push(workspace, image_ref, f"oci:{busybox_layout}")
    new = oci_registry.requests()[len(before) :]
    assert second["digest"] == first["digest"]
    assert not [r for r in new if r[0] in ("PATCH", "POST") and "/it/again/" in r[1]], new
    assert not any(layer["uploaded"] for layer in second["layers"])

    # Without the remembered digests, to another repository: the same image, read from the files.
    (workspace / ".modelcar-layer-digests.json").unlink()
    third = build_push(workspace, f"{oci_registry.host}/it/elsewhere:1", f"oci:{busybox_layout}")
    assert third["digest"] == first["digest"]


def test_layout_destination_matches_the_registry_image(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = make_workspace(tmp_path)
    pushed = build_push(workspace, f"{oci_registry.host}/it/same:1", f"oci:{busybox_layout}")
    layout = tmp_path / "out"
    written = build_push(workspace, f"oci:{layout}:v1", f"oci:{busybox_layout}")
    assert written["digest"] == pushed["digest"]
    assert written["pinned"] == f"oci:{layout}@{written['digest']}"
    again = build_push(workspace, f"oci:{layout}:v1", f"oci:{busybox_layout}")
    assert again["digest"] == written["digest"]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)], check=True)
    assert_models_equal(bundle / "rootfs", workspace / "model")
    assert not list((layout / "blobs" / "sha256").glob(".*.tmp"))


def test_base_in_the_same_registry_is_mounted(oci_registry: Registry, busybox_layout: Path, tmp_path: Path) -> None:
    base = f"{oci_registry.host}/base/busybox:1"
    push_layout(busybox_layout, base)
    workspace = make_workspace(tmp_path)
    image = build_push(workspace, f"{oci_registry.host}/it/mounted:1", base)
    assert any(m == "POST" and "mount=" in uri and "from=base" in uri for m, uri in oci_registry.requests())
    rootfs = unpack(tmp_path, f"docker://{image['pinned']}", "mounted")
    assert (rootfs / "bin" / "busybox").is_file()


def test_every_platform_of_an_index_base_gets_the_model(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    index_layout = tmp_path / "multi"
    shutil.copytree(busybox_layout, index_layout)
    layout = Layout(index_layout)
    amd64 = layout.resolve("latest")
    manifest = layout.read_json(amd64.digest)
    config = layout.read_json(manifest["config"]["digest"])
    config["architecture"] = "arm64"
    arm_config = Blob.of("application/vnd.oci.image.config.v1+json", config)
    layout.write_blob(arm_config.data)
    manifest["config"] = arm_config.descriptor.to_json()
    arm = Blob.of(OCI_MANIFEST, manifest)
    layout.write_blob(arm.data)
    index = Blob.of(
        OCI_INDEX,
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                Descriptor(
                    OCI_MANIFEST, amd64.digest, amd64.size, platform={"os": "linux", "architecture": "amd64"}
                ).to_json(),
                Descriptor(
                    OCI_MANIFEST,
                    arm.descriptor.digest,
                    arm.descriptor.size,
                    platform={"os": "linux", "architecture": "arm64"},
                ).to_json(),
            ],
        },
    )
    layout.write_blob(index.data)
    layout.tag(index.descriptor, "multi")

    workspace = make_workspace(tmp_path)
    image = build_push(workspace, f"{oci_registry.host}/it/multi:1", f"oci:{index_layout}:multi")
    assert image["media_type"] == OCI_INDEX
    assert image["platforms"] == ["linux/amd64", "linux/arm64"]
    # The index, both manifests and both configs.
    assert validate_registry_image(oci_registry.url(""), "it/multi", image["digest"]) == 5
    for arch in ("amd64", "arm64"):
        rootfs = unpack(tmp_path, f"docker://{oci_registry.host}/it/multi:1", arch, "--override-arch", arch)
        assert_models_equal(rootfs, workspace / "model")
        assert (rootfs / "bin" / "sh").is_symlink()


OLOT = REPO_ROOT / ".tools" / "olot-venv" / "bin" / "olot"


@pytest.mark.skipif(not OLOT.exists(), reason="olot is not installed in .tools/olot-venv (make install-test)")
def test_an_olot_made_layout_is_pushed_by_our_client(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    olot_layout = tmp_path / "olot"
    shutil.copytree(busybox_layout, olot_layout)
    olot_model = write_model_dir(tmp_path / "olot-model", {"weights.bin": MIB, "README.md": "olot card"})
    subprocess.run(
        [str(OLOT), str(olot_layout), str(olot_model / "weights.bin"), "-m", str(olot_model / "README.md")],
        check=True,
        capture_output=True,
    )
    workspace = make_workspace(tmp_path)
    shutil.rmtree(workspace / "model")
    (workspace / "model").mkdir()
    (workspace / "model" / "extra.json").write_text("{}")
    image = build_push(workspace, f"{oci_registry.host}/it/olot:1", f"oci:{olot_layout}:latest")
    rootfs = unpack(tmp_path, f"docker://{image['pinned']}", "olot")
    assert (rootfs / "models" / "weights.bin").read_bytes() == (olot_model / "weights.bin").read_bytes()
    assert (rootfs / "models" / "extra.json").read_text() == "{}"
    assert (rootfs / "bin" / "sh").is_symlink()


def test_scratch_base_and_unsafe_symlink(oci_registry: Registry, tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    image = build_push(workspace, f"{oci_registry.host}/it/scratch:1", "scratch")
    rootfs = unpack(tmp_path, f"docker://{image['pinned']}", "scratch")
    assert sorted(p.name for p in rootfs.iterdir()) == ["models"]

    os.symlink("/etc/passwd", workspace / "model" / "leak.txt")
    result = run_cli(
        "build-push",
        "--workspace",
        str(workspace),
        "--image",
        f"{oci_registry.host}/it/scratch:2",
        "--base-image",
        "scratch",
        "--no-tls-verify",
    )
    assert result.returncode == 1
    assert "leak.txt" in result.stderr and "outside the model directory" in result.stderr


def test_plain_http_needs_no_tls_verify(oci_registry: Registry, tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    result = run_cli(
        "build-push",
        "--workspace",
        str(workspace),
        "--image",
        f"{oci_registry.host}/it/tls:1",
        "--base-image",
        "scratch",
    )
    assert result.returncode == 1
    assert "--no-tls-verify" in result.stderr
