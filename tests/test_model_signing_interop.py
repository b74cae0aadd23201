"""Our olot layer annotations against the field's tools: Red Hat's model signing tool signs a
pushed ModelCar from its manifest alone and verifies it, and local files, against the signature;
and olot itself annotates the same files as we do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import model_signing_tool
from .helpers.common import REPO_ROOT, run_cli
from .helpers.fake_model import LLAMA_CONFIG, MIB, write_model_dir
from .helpers.image_check import NEEDS_SKOPEO_UMOCI, build_push_args
from .helpers.oci_registry import Registry

OLOT = REPO_ROOT / ".tools" / "olot-venv" / "bin" / "olot"
OLOT_KEYS = (
    "olot.layer.content.digest",
    "olot.layer.content.type",
    "olot.layer.content.inlayerpath",
    "olot.layer.content.name",
)

pytestmark = NEEDS_SKOPEO_UMOCI


def _model(root: Path, extra_small: int = 0) -> Path:
    files = {
        "config.json": LLAMA_CONFIG,
        "sub/tokenizer.json": '{"version": "1.0"}',
        "model.safetensors": bytes(range(256)) * (4 * MIB // 256),
        "README.md": "# card\n",
        **{f"sub/piece-{i:03d}.txt": f"piece {i}\n" for i in range(extra_small)},
    }
    write_model_dir(root / "model", files)
    return root


def _push(workspace: Path, image: str, base: str) -> dict:
    result = run_cli(*build_push_args(workspace, image, base))
    assert result.returncode == 0, result.output
    return json.loads((workspace / "run.json").read_text())["image"]


def _manifest(pinned: str) -> dict:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{pinned}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(raw)


@pytest.fixture
def signing_tool() -> None:
    model_signing_tool.require()


needs_tool = pytest.mark.usefixtures("signing_tool")


@needs_tool
@pytest.mark.parametrize("extra_small", [0, 101], ids=["file-layers", "directory-layers"])
def test_model_signing_signs_and_verifies_a_modelcar_from_its_annotations(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path, extra_small: int
) -> None:
    workspace = _model(tmp_path / "ws", extra_small)
    image = _push(workspace, f"{oci_registry.host}/interop/signed-{extra_small}:1", f"oci:{busybox_layout}")
    kinds = {
        layer.get("annotations", {}).get("olot.layer.content.type") for layer in _manifest(image["pinned"])["layers"]
    }
    assert kinds == ({None, "file"} if not extra_small else {None, "file", "directory"})

    private, public = model_signing_tool.write_key_pair(tmp_path)
    # Distribution 2.8 has no referrers API: the signature goes under the tag sha256-<digest>.sig.
    signed = model_signing_tool.run(
        "sign", "key", image["pinned"], "--private-key", str(private), "--attachment-mode", "tag"
    )
    assert signed.returncode == 0, signed.stdout + signed.stderr
    verified = model_signing_tool.run(
        "verify", "key", image["pinned"], "--public-key", str(public), "--local-model", str(workspace / "model")
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification succeeded" in verified.stdout

    # modelcar reads the same signature: inspect sees it, verify checks it with the key.
    shown = run_cli("inspect", image["pinned"], "--no-tls-verify", "--json")
    assert shown.returncode == 0, shown.output
    assert json.loads(shown.stdout)["signature"]["kind"] == "model-signing"
    ours = run_cli(
        "verify",
        image["pinned"],
        "--no-tls-verify",
        "--public-key",
        str(public),
        "--local-model",
        str(workspace / "model"),
    )
    assert ours.returncode == 0, ours.output
    (tmp_path / "other").mkdir()
    other_key = model_signing_tool.write_key_pair(tmp_path / "other")[1]
    wrong = run_cli("verify", image["pinned"], "--no-tls-verify", "--public-key", str(other_key))
    assert wrong.returncode == 1 and "another key" in wrong.stderr, wrong.output

    # A local file that is not what was signed is caught, by name.
    tampered = tmp_path / "tampered"
    shutil.copytree(workspace / "model", tampered)
    (tampered / "sub" / "tokenizer.json").write_text('{"version": "2.0"}')
    refused = model_signing_tool.run(
        "verify", "key", image["pinned"], "--public-key", str(public), "--local-model", str(tampered)
    )
    assert refused.returncode != 0
    assert "tokenizer.json" in refused.stdout + refused.stderr
    ours = run_cli(
        "verify", image["pinned"], "--no-tls-verify", "--public-key", str(public), "--local-model", str(tampered)
    )
    assert ours.returncode == 1 and "sub/tokenizer.json" in ours.stderr, ours.output


@pytest.mark.skipif(not OLOT.exists(), reason="olot is not installed in .tools/olot-venv (make install-test)")
def test_our_file_annotations_are_olots_for_the_same_files(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = _model(tmp_path / "ws")
    model = workspace / "model"
    ours = _manifest(_push(workspace, f"{oci_registry.host}/interop/olot-compare:1", f"oci:{busybox_layout}")["pinned"])

    olot_layout = tmp_path / "olot"
    shutil.copytree(busybox_layout, olot_layout)
    files = [p for p in sorted(model.rglob("*")) if p.is_file() and p.name != "README.md"]
    subprocess.run(
        [str(OLOT), str(olot_layout), *map(str, files), "-m", str(model / "README.md"), "--root-dir", str(model)],
        check=True,
        capture_output=True,
    )
    index = json.loads((olot_layout / "index.json").read_text())
    theirs = json.loads((olot_layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())

    def annotations(manifest: dict) -> dict[str, dict[str, str]]:
        found = {}
        for layer in manifest["layers"]:
            a = layer.get("annotations", {})
            if a.get("olot.layer.content.type"):
                found[a["olot.layer.content.inlayerpath"]] = {k: a[k] for k in OLOT_KEYS if k in a}
        return found

    assert annotations(ours) == annotations(theirs)
    assert len(annotations(ours)) == 4


@needs_tool
@pytest.mark.parametrize("extra_small", [0, 101], ids=["file-layers", "directory-layers"])
def test_our_signature_verifies_with_model_signing(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path, extra_small: int
) -> None:
    workspace = _model(tmp_path / "ws", extra_small)
    image = _push(workspace, f"{oci_registry.host}/interop/ours-{extra_small}:1", f"oci:{busybox_layout}")
    private, public = model_signing_tool.write_key_pair(tmp_path)
    signed = run_cli("sign", image["pinned"], "--no-tls-verify", "--sign-key", str(private))
    assert signed.returncode == 0, signed.output

    theirs = model_signing_tool.run(
        "verify", "key", image["pinned"], "--public-key", str(public), "--local-model", str(workspace / "model")
    )
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    assert "Verification succeeded" in theirs.stdout
    ours = run_cli("verify", image["pinned"], "--no-tls-verify", "--public-key", str(public))
    assert ours.returncode == 0, ours.output

    # The same signature in a layout (oci:), found by its tag there.
    layout = tmp_path / "layout"
    result = run_cli(*build_push_args(workspace, f"oci:{layout}:1", f"oci:{busybox_layout}"))
    assert result.returncode == 0, result.output
    assert run_cli("sign", f"oci:{layout}:1", "--sign-key", str(private)).returncode == 0
    checked = run_cli(
        "verify", f"oci:{layout}:1", "--public-key", str(public), "--local-model", str(workspace / "model")
    )
    assert checked.returncode == 0, checked.output
