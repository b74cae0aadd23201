"""`modelcar inspect`, `verify` and `pull` against a real registry and OCI layouts: images made by
modelcar, by olot + skopeo, and hostile or tampered ones built by hand."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from modelcar.oci.image import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, Descriptor
from modelcar.oci.layout import Layout

from .helpers.common import REPO_ROOT, clean_env, run_cli
from .helpers.fake_model import LLAMA_CONFIG, MIB, write_model_dir
from .helpers.image_check import NEEDS_SKOPEO_UMOCI, build_push_args
from .helpers.oci_registry import Registry, push_layout

pytestmark = NEEDS_SKOPEO_UMOCI
OLOT = REPO_ROOT / ".tools" / "olot-venv" / "bin" / "olot"


def _workspace(root: Path) -> Path:
    files = {
        "config.json": LLAMA_CONFIG,
        "sub/tokenizer.json": '{"version": "1.0"}',
        "model.safetensors": 17 * MIB,
        "README.md": "# card\n",
    }
    write_model_dir(root / "model", files, links={"alias.json": "config.json"})
    return root


def _build(workspace: Path, image: str, base: str) -> dict:
    result = run_cli(*build_push_args(workspace, image, base))
    assert result.returncode == 0, result.output
    return json.loads((workspace / "run.json").read_text())["image"]


def _files(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_inspect_verify_pull_a_pushed_modelcar(oci_registry: Registry, busybox_layout: Path, tmp_path: Path) -> None:
    workspace = _workspace(tmp_path / "ws")
    (workspace / "run.json").write_text(
        json.dumps({"version": 1, "stages": {}, "source": {"repo": "org/tiny", "revision": "main", "sha": "abc123"}})
    )
    image = _build(workspace, f"{oci_registry.host}/rb/model:1", f"oci:{busybox_layout}")
    ref = image["pinned"]

    shown = run_cli("inspect", ref, "--no-tls-verify", "--json")
    assert shown.returncode == 0, shown.output
    report = json.loads(shown.stdout)
    assert report["platforms"] == ["linux/amd64"]
    assert report["base"]["layers"] == 1
    assert report["source"]["sha"] == "abc123" and report["source"]["source"] == "huggingface:org/tiny"
    assert report["signature"] is None
    files = {f["path"]: f for f in report["files"] if f["type"] == "file"}
    model = workspace / "model"
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "sub/tokenizer.json"]
    for name, item in files.items():
        assert item["size"] == (model / name).stat().st_size
        assert item["digest"] == "sha256:" + hashlib.sha256((model / name).read_bytes()).hexdigest()
    assert report["kserve"]["models_non_empty"] is True
    human = run_cli("inspect", ref, "--no-tls-verify")
    assert human.returncode == 0 and "/models/sub/tokenizer.json" in human.stdout and "kserve" in human.stdout

    checked = run_cli("verify", ref, "--no-tls-verify", "--local-model", str(model))
    assert checked.returncode == 0, checked.output

    target = tmp_path / "pulled"
    pulled = run_cli("pull", ref, str(target), "--no-tls-verify")
    assert pulled.returncode == 0, pulled.output
    assert _files(target) == _files(model)
    assert (target / "config.json").stat().st_mode & 0o777 == 0o644

    # Resumable: what is there and right is not fetched again; a missing file is.
    (target / "sub" / "tokenizer.json").unlink()
    before = len(oci_registry.requests())
    again = run_cli("pull", ref, str(target), "--no-tls-verify")
    assert again.returncode == 0, again.output
    blob_gets = [r for r in oci_registry.requests()[before:] if r[0] == "GET" and "/blobs/" in r[1]]
    layer = next(x for x in image["layers"] if x["title"] == "sub/tokenizer.json")
    assert any(layer["digest"] in uri for _, uri in blob_gets)
    big = next(x for x in image["layers"] if x["title"] == "model.safetensors")
    assert not any(big["digest"] in uri for _, uri in blob_gets)
    assert _files(target) == _files(model)


def test_inspect_of_a_1_gib_model_reads_no_layer(oci_registry: Registry, busybox_layout: Path, tmp_path: Path) -> None:
    """Neither a model layer nor a base layer: the KServe verdict is the one build-push recorded
    in the manifest (the user's cache is empty here)."""
    workspace = tmp_path / "ws"
    (workspace / "model").mkdir(parents=True)
    (workspace / "model" / "config.json").write_text("{}")
    with open(workspace / "model" / "model.safetensors", "wb") as handle:
        handle.truncate(1 << 30)  # sparse: quick to make
    image = _build(workspace, f"{oci_registry.host}/rb/big:1", f"oci:{busybox_layout}")
    before = len(oci_registry.requests())
    env = {**clean_env(), "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    shown = run_cli("inspect", image["pinned"], "--no-tls-verify", "--json", env=env)
    assert shown.returncode == 0, shown.output
    report = json.loads(shown.stdout)
    assert {f["path"]: f["size"] for f in report["files"]} == {"config.json": 2, "model.safetensors": 1 << 30}
    assert report["kserve"]["ready"] is True, report["kserve"]
    requested = oci_registry.requests()[before:]
    model_layers = {layer["digest"] for layer in image["layers"]}
    assert not [r for r in requested if any(d in r[1] for d in model_layers)], requested
    every_layer = _layer_digests(oci_registry, image["pinned"])
    assert len(every_layer) > len(model_layers)
    assert not [r for r in requested if any(d in r[1] for d in every_layer)], requested  # no base layer either


def _layer_digests(registry: Registry, pinned: str) -> set[str]:
    """Every layer digest of every platform of the image `pinned`."""
    repository, digest = pinned.split("/", 1)[1].split("@")
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    with httpx.Client() as http:
        doc = http.get(registry.url(f"/v2/{repository}/manifests/{digest}"), headers={"Accept": accept}).json()
        children = [m["digest"] for m in doc.get("manifests", [])]
        docs = [
            http.get(registry.url(f"/v2/{repository}/manifests/{c}"), headers={"Accept": accept}).json()
            for c in children
        ]
    return {layer["digest"] for d in (docs or [doc]) for layer in d["layers"]}


def _layer(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _hand_made(layout_dir: Path, layers: list[tuple[bytes, dict[str, str]]]) -> Path:
    """A layout holding one image whose layers are `layers` (bytes, annotations), no base."""
    layout = Layout(layout_dir)
    layout.init()
    descriptors = []
    for data, layer_annotations in layers:
        digest = layout.write_blob(data)
        descriptors.append(Descriptor(OCI_LAYER, digest, len(data), layer_annotations))
    config = Blob.of(
        OCI_CONFIG,
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d.digest for d in descriptors]},
            "history": [{"created_by": "hand-made"} for _ in descriptors],
        },
    )
    layout.write_blob(config.data)
    manifest = Blob.of(
        OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor.to_json(),
            "layers": [d.to_json() for d in descriptors],
        },
    )
    layout.write_blob(manifest.data)
    layout.tag(manifest.descriptor, "latest")
    return layout_dir


def _push_raw(layout_dir: Path, registry: Registry, repository: str) -> str:
    """Pushes the layout's image as it is (skopeo would compress the layers and drop their
    annotations): every blob by a monolithic upload, then the manifest. Returns host/repo:1."""
    index = json.loads((layout_dir / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    blobs = layout_dir / "blobs" / "sha256"
    manifest = (blobs / manifest_digest.removeprefix("sha256:")).read_bytes()
    doc = json.loads(manifest)
    with httpx.Client() as http:
        for descriptor in [doc["config"], *doc["layers"]]:
            data = (blobs / descriptor["digest"].removeprefix("sha256:")).read_bytes()
            started = http.post(registry.url(f"/v2/{repository}/blobs/uploads/"))
            assert started.status_code == 202, started.text
            location = httpx.URL(registry.url("/")).join(started.headers["Location"])
            done = http.put(location.copy_merge_params({"digest": descriptor["digest"]}), content=data)
            assert done.status_code == 201, done.text
        put = http.put(
            registry.url(f"/v2/{repository}/manifests/1"), content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert put.status_code == 201, put.text
    return f"{registry.host}/{repository}:1"


DIRECTORY = {"olot.layer.content.type": "directory", "olot.layer.content.inlayerpath": "/models"}

HOSTILE = {
    "absolute": (_entry("/etc/evil", data=b"x"), "/etc/evil"),
    "dotdot": (_entry("models/../../evil", data=b"x"), "models/../../evil"),
    "symlink-out": (_entry("models/escape", tarfile.SYMTYPE, link="../../etc/passwd"), "models/escape"),
    "absolute-symlink": (_entry("models/abs", tarfile.SYMTYPE, link="/etc/passwd"), "models/abs"),
    "hardlink-out": (_entry("models/hard", tarfile.LNKTYPE, link="etc/passwd"), "models/hard"),
    "device": (_entry("models/dev", tarfile.CHRTYPE), "models/dev"),
    "fifo": (_entry("models/fifo", tarfile.FIFOTYPE), "models/fifo"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_pull_refuses_hostile_entries_naming_them(oci_registry: Registry, tmp_path: Path, case: str) -> None:
    member, name = HOSTILE[case]
    data = _layer([_entry("models/", tarfile.DIRTYPE), _entry("models/ok.json", data=b"{}"), member])
    layout = _hand_made(tmp_path / "layout", [(data, DIRECTORY)])
    ref = _push_raw(layout, oci_registry, f"rb/hostile-{case}")
    target = tmp_path / "out" / "models"
    result = run_cli("pull", ref, str(target), "--no-tls-verify")
    assert result.returncode == 1, result.output
    assert "refusing" in result.stderr and repr(name) in result.stderr, result.stderr
    assert not (target / "ok.json").exists()  # nothing of a refused layer lands
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


def test_pull_refuses_a_chain_of_links_that_leads_out(oci_registry: Registry, tmp_path: Path) -> None:
    data = _layer(
        [
            _entry("models/", tarfile.DIRTYPE),
            _entry("models/here", tarfile.SYMTYPE, link="."),  # each link alone stays inside
            _entry("models/up", tarfile.SYMTYPE, link="here/.."),
        ]
    )
    layout = _hand_made(tmp_path / "layout", [(data, DIRECTORY)])
    result = run_cli("pull", f"oci:{layout}", str(tmp_path / "out"))
    assert result.returncode == 1 and "/models/up" in result.stderr, result.output
    assert not (tmp_path / "out" / "up").is_symlink()


def test_tampering_is_caught_naming_the_file(oci_registry: Registry, busybox_layout: Path, tmp_path: Path) -> None:
    workspace = _workspace(tmp_path / "ws")
    layout_dir = tmp_path / "image"
    image = _build(workspace, f"oci:{layout_dir}:1", f"oci:{busybox_layout}")
    ref = f"oci:{layout_dir}:1"
    assert run_cli("verify", ref).returncode == 0

    # A layer's bytes swapped in the layout: its digest no longer holds.
    layer = next(x for x in image["layers"] if x["title"] == "sub/tokenizer.json")
    blob = layout_dir / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    original = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(original.replace(b'"1.0"', b'"6.6"'))
    result = run_cli("verify", ref)
    assert result.returncode == 1 and "/models/sub/tokenizer.json" in result.stderr, result.output
    pulled = run_cli("pull", ref, str(tmp_path / "pulled"))
    assert pulled.returncode == 1 and "/models/sub/tokenizer.json" in pulled.stderr, pulled.output
    assert not (tmp_path / "pulled" / "sub" / "tokenizer.json").exists()
    blob.write_bytes(original)

    # Pushed, then a blob swapped in the registry's storage.
    push = run_cli(*build_push_args(workspace, f"{oci_registry.host}/rb/tamper:1", f"oci:{busybox_layout}"))
    assert push.returncode == 0, push.output
    pinned = json.loads((workspace / "run.json").read_text())["image"]["pinned"]
    hexdigest = layer["digest"].removeprefix("sha256:")
    data = oci_registry.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    if not data.exists():
        data = next(oci_registry.root.rglob(f"blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"))
    data.write_bytes(original.replace(b'"1.0"', b'"6.6"'))
    result = run_cli("verify", pinned, "--no-tls-verify")
    assert result.returncode == 1 and "/models/sub/tokenizer.json" in result.stderr, result.output
    data.write_bytes(original)

    # Local files against the image: the changed one is named.
    local = tmp_path / "local"
    shutil.copytree(workspace / "model", local, symlinks=True)
    (local / "config.json").write_text('{"architectures": ["Other"]}')
    result = run_cli("verify", ref, "--local-model", str(local))
    assert result.returncode == 1 and "config.json" in result.stderr, result.output


def test_verify_catches_an_annotation_that_lies(tmp_path: Path) -> None:
    data = _layer([_entry("models/", tarfile.DIRTYPE), _entry("models/config.json", data=b"{}")])
    lie = {
        "olot.layer.content.type": "file",
        "olot.layer.content.inlayerpath": "/models/config.json",
        "olot.layer.content.name": "config.json",
        "olot.layer.content.digest": "sha256:" + "0" * 64,
    }
    layout = _hand_made(tmp_path / "layout", [(data, lie)])
    result = run_cli("verify", f"oci:{layout}")
    assert result.returncode == 1 and "/models/config.json" in result.stderr, result.output


@pytest.mark.skipif(not OLOT.exists(), reason="olot is not installed in .tools/olot-venv (make install-test)")
def test_pull_of_an_olot_and_skopeo_image_gives_the_same_files(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    model = _workspace(tmp_path / "ws") / "model"
    (model / "alias.json").unlink()  # olot takes files only
    olot_layout = tmp_path / "olot"
    shutil.copytree(busybox_layout, olot_layout)
    files = [p for p in sorted(model.rglob("*")) if p.is_file() and p.name != "README.md"]
    subprocess.run(
        [str(OLOT), str(olot_layout), *map(str, files), "-m", str(model / "README.md"), "--root-dir", str(model)],
        check=True,
        capture_output=True,
    )
    push_layout(olot_layout, f"{oci_registry.host}/rb/olot:1")
    for ref, name in (
        (f"{oci_registry.host}/rb/olot:1", "from-registry"),
        (f"oci:{olot_layout}:latest", "from-layout"),
    ):
        target = tmp_path / name
        result = run_cli("pull", ref, str(target), "--no-tls-verify")
        assert result.returncode == 0, result.output
        assert _files(target) == _files(model)
        checked = run_cli("verify", ref, "--no-tls-verify", "--local-model", str(model))
        assert checked.returncode == 0, checked.output


def test_bad_input_exits_2(tmp_path: Path) -> None:
    bad = run_cli("inspect", "Not A Reference!")
    assert bad.returncode == 2 and "REF" in bad.stderr, bad.output
    (tmp_path / "file").write_text("x")
    layout = _hand_made(tmp_path / "layout", [(_layer([_entry("models/a", data=b"a")]), DIRECTORY)])
    not_dir = run_cli("pull", f"oci:{layout}", str(tmp_path / "file"))
    assert not_dir.returncode == 2 and "DIR" in not_dir.stderr, not_dir.output
    missing = run_cli("inspect", f"oci:{tmp_path / 'nowhere'}")
    assert missing.returncode == 1 and "index.json" in missing.stderr, missing.output
