"""`modelcar build-push` against a real docker-registry on loopback, read back with skopeo and umoci."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from modelcar.oci import layers as layers_module
from modelcar.oci.build import build_and_push
from modelcar.oci.digest_cache import DigestCache
from modelcar.oci.image import OCI_INDEX, OCI_MANIFEST, Blob, Descriptor
from modelcar.oci.layers import FileRange
from modelcar.oci.layout import Layout
from modelcar.oci.model_dir import ModelDirError
from modelcar.oci.reference import parse_reference
from modelcar.oci.store import ClientOptions

from .helpers.common import REPO_ROOT, run_cli, wait_for
from .helpers.fake_model import LLAMA_CONFIG, MIB, Content, write_model_dir
from .helpers.fault_proxy import HttpFaultProxy, ProxyRequest, Stall
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


def _slow_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str | None) -> Path:
    """a.safetensors streams in 68 chunks of 0.1 s (about 7 s); `failing` cannot be read at all."""
    model = write_model_dir(tmp_path / "model", {"a.safetensors": 17 * MIB, "b.safetensors": 17 * MIB})
    monkeypatch.setattr(layers_module, "READ_SIZE", 256 * 1024)
    original = FileRange.read

    def read(part: FileRange, handle: BinaryIO | None = None) -> bytes:
        if part.name == failing:
            raise ModelDirError(f"cannot read {part.name}: gone")
        if part.name == "a.safetensors":
            time.sleep(0.1)
        return original(part, handle)

    monkeypatch.setattr(FileRange, "read", read)
    return model


def _build(model: Path, image: str) -> None:
    build_and_push(
        model, parse_reference(image), None, ClientOptions(tls_verify=False), {}, DigestCache(None), workers=4
    )


def test_a_failing_layer_stops_the_other_uploads_at_once(
    oci_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _slow_model(tmp_path, monkeypatch, failing="b.safetensors")
    started = time.monotonic()
    with pytest.raises(ModelDirError, match=r"cannot read b\.safetensors"):
        _build(model, f"{oci_registry.host}/it/abort:1")
    assert time.monotonic() - started < 2.5  # not the ~7 s the slow layer needs


def test_an_interrupt_stops_the_running_uploads(
    oci_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _slow_model(tmp_path, monkeypatch, failing=None)
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    # Ctrl-C as a terminal delivers it: a process started in the background by a shell without
    # job control inherits SIGINT ignored, and Python then leaves it so.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ctrl_c = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
    started = time.monotonic()
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _build(model, f"{oci_registry.host}/it/interrupt:1")
    finally:
        ctrl_c.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 2.5


def test_model_layers_upload_while_the_base_is_still_being_read(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    # A base on a slow registry (the default base is on registry.access.redhat.com) does not hold
    # the model back: the base's manifest is stalled until the model's first upload has started.
    push_layout(busybox_layout, f"{oci_registry.host}/base/slow:1")

    def uploads_started() -> bool:
        return any(m == "POST" and p.startswith("/v2/it/early/blobs/uploads") for m, p in oci_registry.requests())

    def decide(request: ProxyRequest) -> Stall | None:
        return Stall() if request.kind == "GET manifest" and request.number == 1 else None

    model = write_model_dir(tmp_path / "model", {"weights.safetensors": 17 * MIB})
    seen: dict[str, bool] = {}
    with HttpFaultProxy(oci_registry.host, decide) as proxy:

        def release_once_uploading() -> None:
            seen["uploading before the base was read"] = wait_for(uploads_started, 20)
            proxy.release()

        releaser = threading.Thread(target=release_once_uploading, daemon=True)
        releaser.start()
        build_and_push(
            model,
            parse_reference(f"{oci_registry.host}/it/early:1"),
            parse_reference(f"{proxy.host}/base/slow:1"),
            ClientOptions(tls_verify=False),
            {},
            DigestCache(None),
        )
        releaser.join(30)
    assert proxy.injected("GET manifest"), "the base's manifest was not stalled"
    assert seen == {"uploading before the base was read": True}
