"""build-and-push with SIGN_KEY: /models/model.sig and the image signature, checked by Red Hat's
model signing tool (rh-model-signing 1.0.5 from PyPI) and by modelcar; tampering caught; a bad
key or password refused before any work; a refused signature upload leaves the image pushed and
reported, unsigned; keyless signing offline fails at once, naming the service.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .helpers import model_signing_tool
from .helpers.common import clean_env, run_cli
from .helpers.fake_model import LLAMA_CONFIG, MIB, write_model_dir
from .helpers.fault_proxy import HttpFaultProxy, ProxyRequest, Reply
from .helpers.image_check import NEEDS_SKOPEO_UMOCI, build_push_args
from .helpers.oci_registry import Registry
from .helpers.oci_schemas import validate_registry_image
from .helpers.secrets import SIGN_KEY_PASSWORD

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def signing_tool() -> None:
    model_signing_tool.require()


def _workspace(root: Path) -> Path:
    files = {
        "config.json": LLAMA_CONFIG,
        "sub/tokenizer.json": '{"version": "1.0"}',
        "model.safetensors": bytes(range(256)) * (2 * MIB // 256),
        "README.md": "# card\n",
    }
    write_model_dir(root / "ws" / "model", files)
    return root / "ws"


def _env(key: Path, **extra: str) -> dict[str, str]:
    return clean_env(SIGN_KEY=str(key), **extra)


def _verify_dir(model: Path, public: Path) -> tuple[int, str]:
    out = model_signing_tool.run(
        "verify", "key", str(model), "--signature", str(model / "model.sig"), "--public-key", str(public)
    )
    return out.returncode, out.stdout + out.stderr


# --- before any work -------------------------------------------------------------------------


def _validate(tmp_path: Path, **env: str) -> tuple[int, str]:
    result = run_cli("validate", "--model", "org/model", "--workspace", str(tmp_path / "ws"), env=clean_env(**env))
    return result.returncode, result.stderr


def test_a_missing_or_wrong_key_is_refused_before_any_work(tmp_path: Path) -> None:
    code, err = _validate(tmp_path, SIGN_KEY=str(tmp_path / "nope.pem"))
    assert code == 2 and "SIGN_KEY" in err and "an existing file" in err, err

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    code, err = _validate(tmp_path, SIGN_KEY=str(garbage))
    assert code == 2 and "invalid SIGN_KEY" in err and "PEM EC private key" in err, err

    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    code, err = _validate(tmp_path, SIGN_KEY=str(rsa_key))
    assert code == 2 and "P-256, P-384 or P-521" in err, err
    public = model_signing_tool.write_key_pair(tmp_path)[1]
    code, err = _validate(tmp_path, SIGN_KEY=str(public))
    assert code == 2 and "invalid SIGN_KEY" in err, err
    assert not (tmp_path / "ws").exists()


def test_an_encrypted_key_needs_its_password_and_a_wrong_one_is_named_not_shown(tmp_path: Path) -> None:
    private, _ = model_signing_tool.write_key_pair(tmp_path, ec.SECP384R1(), password=SIGN_KEY_PASSWORD)
    code, err = _validate(tmp_path, SIGN_KEY=str(private))
    assert code == 2 and "SIGN_KEY_PASSWORD" in err and "encrypted" in err, err
    code, err = _validate(tmp_path, SIGN_KEY=str(private), SIGN_KEY_PASSWORD="wrong-" + SIGN_KEY_PASSWORD)
    assert code == 2 and "invalid SIGN_KEY_PASSWORD='<redacted>'" in err and "does not decrypt" in err, err
    assert SIGN_KEY_PASSWORD not in err
    code, err = _validate(tmp_path, SIGN_KEY=str(private), SIGN_KEY_PASSWORD=SIGN_KEY_PASSWORD)
    assert code == 0, err
    code, err = _validate(tmp_path, SIGN_KEY_PASSWORD=SIGN_KEY_PASSWORD)
    assert code == 2 and "only with SIGN_KEY" in err, err
    code, err = _validate(tmp_path, SIGN_KEY=str(private), SIGN_KEYLESS="true")
    assert code == 2 and "SIGN_KEYLESS" in err, err


# --- signing a push --------------------------------------------------------------------------


@NEEDS_SKOPEO_UMOCI
@pytest.mark.usefixtures("signing_tool")
def test_build_push_signs_model_sig_and_the_image_and_model_signing_verifies_both(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path)
    model = workspace / "model"
    private, public = model_signing_tool.write_key_pair(tmp_path, ec.SECP384R1(), password=SIGN_KEY_PASSWORD)
    image_ref = f"{oci_registry.host}/signing/model:1"
    env = _env(private, SIGN_KEY_PASSWORD=SIGN_KEY_PASSWORD)
    result = run_cli(*build_push_args(workspace, image_ref, f"oci:{busybox_layout}"), env=env)
    assert result.returncode == 0, result.output
    image = json.loads((workspace / "run.json").read_text())["image"]
    signature = image["signature"]
    assert signature["signed"] is True and signature["mode"] == "tag" and signature["method"] == "key"
    tag = image["digest"].replace(":", "-") + ".sig"
    assert signature["ref"] == f"{oci_registry.host}/signing/model:{tag}"
    sig_bytes = (model / "model.sig").read_bytes()
    assert signature["model_sig"]["digest"] == "sha256:" + hashlib.sha256(sig_bytes).hexdigest()
    assert signature["model_sig"]["files"] == 4
    results = workspace / "results"
    assert (results / "SIGNATURE_REF").read_text() == signature["ref"]
    assert (results / "SIGNATURE_DIGEST").read_text() == signature["digest"]
    assert (results / "MODEL_SIG_DIGEST").read_text() == signature["model_sig"]["digest"]
    # The image and the signature's own manifest pass the OCI image-spec schemas.
    assert validate_registry_image(oci_registry.url(""), "signing/model", image["digest"]) == 2
    assert validate_registry_image(oci_registry.url(""), "signing/model", tag) == 2

    # /models/model.sig is in the image, with olot's annotations like every file.
    manifest = _manifest(oci_registry, "signing/model", image["digest"])
    layer = next(
        d
        for d in manifest["layers"]
        if d.get("annotations", {}).get("olot.layer.content.inlayerpath") == "/models/model.sig"
    )
    assert layer["annotations"]["olot.layer.content.digest"] == signature["model_sig"]["digest"]
    assert layer["annotations"]["olot.layer.content.type"] == "file"

    # model_signing checks model.sig against the files, and the image in the registry (tag mode).
    code, out = _verify_dir(model, public)
    assert code == 0 and "Verification succeeded" in out, out
    theirs = model_signing_tool.run(
        "verify", "key", image["pinned"], "--public-key", str(public), "--local-model", str(model)
    )
    assert theirs.returncode == 0 and "Verification succeeded" in theirs.stdout, theirs.stdout + theirs.stderr
    ours = run_cli(
        "verify", image["pinned"], "--no-tls-verify", "--public-key", str(public), "--local-model", str(model)
    )
    assert ours.returncode == 0, ours.output

    # What is pulled back verifies as a directory too (model.sig among its files).
    pulled = tmp_path / "pulled"
    assert run_cli("pull", image["pinned"], str(pulled), "--no-tls-verify").returncode == 0
    code, out = _verify_dir(pulled, public)
    assert code == 0, out

    # Deterministic signatures: the same files and key give the same image, signed the same.
    again = run_cli(*build_push_args(workspace, image_ref, f"oci:{busybox_layout}"), env=env)
    assert again.returncode == 0, again.output
    second = json.loads((workspace / "run.json").read_text())["image"]
    assert second["digest"] == image["digest"] and second["signature"]["digest"] == signature["digest"]

    # Tampering: a changed file, a signature from another key.
    tampered = tmp_path / "tampered"
    shutil.copytree(model, tampered)
    (tampered / "sub" / "tokenizer.json").write_text('{"version": "2.0"}')
    code, out = _verify_dir(tampered, public)
    assert code != 0 and "tokenizer.json" in out, out
    (tmp_path / "other").mkdir()
    other_public = model_signing_tool.write_key_pair(tmp_path / "other")[1]
    code, out = _verify_dir(model, other_public)
    assert code != 0, out
    wrong = run_cli("verify", image["pinned"], "--no-tls-verify", "--public-key", str(other_public))
    assert wrong.returncode == 1 and "another key" in wrong.stderr, wrong.output


@NEEDS_SKOPEO_UMOCI
@pytest.mark.usefixtures("signing_tool")
def test_a_layer_swapped_in_the_registry_is_caught(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path)
    private, public = model_signing_tool.write_key_pair(tmp_path)
    result = run_cli(
        *build_push_args(workspace, f"{oci_registry.host}/signing/swap:1", f"oci:{busybox_layout}"), env=_env(private)
    )
    assert result.returncode == 0, result.output
    image = json.loads((workspace / "run.json").read_text())["image"]
    repo = "signing/swap"
    manifest = _manifest(oci_registry, repo, image["digest"])
    sig_tag = image["digest"].replace(":", "-") + ".sig"

    # An attacker swaps config.json's layer and moves the signature onto the new manifest.
    evil_bytes = _tar_of("models/config.json", b'{"architectures": ["Evil"]}')
    evil_digest = _upload(oci_registry, repo, evil_bytes)
    for honest_annotations in (True, False):
        doc = json.loads(json.dumps(manifest))
        for layer in doc["layers"]:
            a = layer.get("annotations", {})
            if a.get("olot.layer.content.inlayerpath") == "/models/config.json":
                layer["digest"], layer["size"] = evil_digest, len(evil_bytes)
                if not honest_annotations:
                    a["olot.layer.content.digest"] = (
                        "sha256:" + hashlib.sha256(b'{"architectures": ["Evil"]}').hexdigest()
                    )
        digest = _put_manifest(oci_registry, repo, "swapped", json.dumps(doc).encode())
        sig_manifest = _get(oci_registry, f"/v2/{repo}/manifests/{sig_tag}", MANIFEST)
        _put_manifest(oci_registry, repo, digest.replace(":", "-") + ".sig", sig_manifest)
        pinned = f"{oci_registry.host}/{repo}@{digest}"
        if honest_annotations:
            # The annotations still say the signed digest: only the layer bytes tell; both
            # modelcar verify (every layer read) and pull refuse it, naming the file.
            checked = run_cli("verify", pinned, "--no-tls-verify")
            assert checked.returncode == 1 and "config.json" in checked.stderr, checked.output
            pulled = run_cli("pull", pinned, str(tmp_path / "pulled"), "--no-tls-verify")
            assert pulled.returncode == 1 and "config.json" in pulled.stderr, pulled.output
        else:
            theirs = model_signing_tool.run("verify", "key", pinned, "--public-key", str(public))
            assert theirs.returncode != 0, theirs.stdout + theirs.stderr
            ours = run_cli("verify", pinned, "--no-tls-verify", "--public-key", str(public))
            assert ours.returncode == 1 and "config.json" in ours.stderr, ours.output


@NEEDS_SKOPEO_UMOCI
def test_a_refused_signature_upload_leaves_the_image_pushed_and_reported_unsigned(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path)
    private, _ = model_signing_tool.write_key_pair(tmp_path)

    def refuse_signatures(request: ProxyRequest) -> Reply | None:
        if request.kind == "PUT manifest" and request.path.endswith(".sig"):
            return Reply(403, body=b'{"errors": [{"code": "DENIED", "message": "signatures not accepted here"}]}')
        return None

    with HttpFaultProxy(oci_registry.host, refuse_signatures) as proxy:
        host = proxy.url.removeprefix("http://")
        result = run_cli(
            *build_push_args(workspace, f"{host}/signing/refused:1", f"oci:{busybox_layout}"), env=_env(private)
        )
    assert result.returncode == 1, result.output
    assert "was pushed" in result.stderr and "NOT signed" in result.stderr, result.stderr
    record = json.loads((workspace / "run.json").read_text())
    image = record["image"]
    assert image["digest"].startswith("sha256:") and image["signature"]["signed"] is False
    assert "403" in image["signature"]["error"] or "denied" in image["signature"]["error"].lower()
    assert record["stages"]["build-and-push"]["status"] == "failed"
    assert (workspace / "results" / "IMAGE_DIGEST").read_text() == image["digest"]
    assert not (workspace / "results" / "SIGNATURE_REF").exists()
    # The image itself is in the registry.
    _manifest(oci_registry, "signing/refused", image["digest"])


@NEEDS_SKOPEO_UMOCI
@pytest.mark.usefixtures("signing_tool")
def test_where_the_registry_has_the_referrers_api_the_signature_is_a_referrer(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    """Distribution 2.8 has no referrers API: a proxy answers it (an index of what it is told)."""
    workspace = _workspace(tmp_path)
    private, public = model_signing_tool.write_key_pair(tmp_path)
    referrers: list[dict] = []

    def referrers_api(request: ProxyRequest) -> Reply | None:
        if request.method == "GET" and "/referrers/" in request.path:
            index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": referrers}
            return Reply(200, {"Content-Type": INDEX}, json.dumps(index).encode())
        return None

    with HttpFaultProxy(oci_registry.host, referrers_api) as proxy:
        host = proxy.url.removeprefix("http://")
        result = run_cli(
            *build_push_args(workspace, f"{host}/signing/referred:1", f"oci:{busybox_layout}"), env=_env(private)
        )
        assert result.returncode == 0, result.output
        image = json.loads((workspace / "run.json").read_text())["image"]
        signature = image["signature"]
        assert signature["mode"] == "referrer" and signature["ref"] == f"{host}/signing/referred@{signature['digest']}"
        pushed = json.loads(_get(oci_registry, f"/v2/signing/referred/manifests/{signature['digest']}", MANIFEST))
        assert pushed["subject"]["digest"] == image["digest"]
        assert pushed["artifactType"] == "application/vnd.model-signing.signature.v0.1"
        no_tag = httpx.get(oci_registry.url(f"/v2/signing/referred/manifests/{image['digest'].replace(':', '-')}.sig"))
        assert no_tag.status_code == 404
        # Listed by the (stand-in) referrers API, it is found and verified there.
        referrers.append(
            {
                "mediaType": MANIFEST,
                "digest": signature["digest"],
                "size": len(json.dumps(pushed, separators=(",", ":"))),
                "artifactType": pushed["artifactType"],
            }
        )
        checked = run_cli("verify", image["pinned"], "--no-tls-verify", "--public-key", str(public))
        assert checked.returncode == 0 and "referrers" in checked.stderr, checked.output


def test_a_layout_destination_is_signed_too(busybox_layout: Path, tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    private, public = model_signing_tool.write_key_pair(tmp_path)
    layout = tmp_path / "layout"
    result = run_cli(*build_push_args(workspace, f"oci:{layout}:1", f"oci:{busybox_layout}"), env=_env(private))
    assert result.returncode == 0, result.output
    signature = json.loads((workspace / "run.json").read_text())["image"]["signature"]
    assert signature["mode"] == "tag" and signature["ref"].startswith(f"oci:{layout}:sha256-")
    checked = run_cli(
        "verify", f"oci:{layout}:1", "--public-key", str(public), "--local-model", str(workspace / "model")
    )
    assert checked.returncode == 0, checked.output


# --- keyless ---------------------------------------------------------------------------------


def _closed_port_trust_config(tmp_path: Path) -> tuple[Path, str]:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fulcio = f"http://127.0.0.1:{port}"
    trust = tmp_path / "trust.json"
    trust.write_text(
        json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                "trustedRoot": {},
                "signingConfig": {
                    "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                    "caUrls": [{"url": fulcio, "majorApiVersion": 1}],
                    "rekorTlogUrls": [{"url": fulcio, "majorApiVersion": 1}],
                },
            }
        )
    )
    return trust, fulcio


def test_keyless_offline_fails_at_once_naming_the_unreachable_service(tmp_path: Path) -> None:
    from modelcar.signing import keyless

    trust, fulcio = _closed_port_trust_config(tmp_path)
    token = tmp_path / "token"
    token.write_text("header.payload.signature")
    started = time.monotonic()
    with pytest.raises(keyless.SigstoreUnreachable) as caught:
        keyless.signer(trust, token)  # reaches for every service before the Sigstore client runs
    assert time.monotonic() - started < keyless.CONNECT_TIMEOUT * 2 + 1
    assert "Fulcio" in str(caught.value) and fulcio in str(caught.value)
    # The public instance (no trust config) names its own services.
    assert [s.url for s in keyless.services(None)][1] == "https://fulcio.sigstore.dev"


def test_keyless_in_an_environment_without_the_extra_says_what_to_install(busybox_layout: Path, tmp_path: Path) -> None:
    try:
        import model_signing  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("model_signing is installed here")
    workspace = _workspace(tmp_path)
    trust, _ = _closed_port_trust_config(tmp_path)
    token = tmp_path / "token"
    token.write_text("header.payload.signature")
    env = clean_env(SIGN_KEYLESS="true", SIGSTORE_TRUST_CONFIG=str(trust), SIGSTORE_IDENTITY_TOKEN_PATH=str(token))
    layout = tmp_path / "layout"
    result = run_cli(*build_push_args(workspace, f"oci:{layout}:1", f"oci:{busybox_layout}"), env=env, timeout=60)
    assert result.returncode == 2 and "modelcar[keyless]" in result.stderr, result.output
    assert not layout.exists()


@pytest.mark.usefixtures("signing_tool")
def test_keyless_signs_the_statement_a_key_signature_signs(tmp_path: Path) -> None:
    """model-signing's payload, built from known digests, is our statement (same JSON)."""
    from modelcar.signing.sign import statement

    files = {"config.json": "sha256:" + "a" * 64, "sub/w.safetensors": "sha256:" + "b" * 64}
    code = (
        "import json, sys; from google.protobuf import json_format; "
        "from modelcar.signing.keyless import payload; "
        "p = payload(json.loads(sys.argv[1]), 'model', ('model.sig',)); "
        "print(json_format.MessageToJson(p.statement.pb))"
    )
    import subprocess

    from .helpers.common import REPO_ROOT

    out = subprocess.run(
        [str(model_signing_tool.SIGN_PYTHON), "-c", code, json.dumps(files)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT / "src")},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    theirs = json.loads(out.stdout)
    ours = json.loads(statement(files, "model", ("model.sig",)))
    assert theirs == ours


def test_keyless_without_a_token_is_refused(tmp_path: Path) -> None:
    code, err = _validate(tmp_path, SIGN_KEYLESS="true")
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file():
        pytest.skip("this machine has a service-account token")
    assert code == 2 and "SIGSTORE_IDENTITY_TOKEN_PATH" in err, err


# --- helpers ---------------------------------------------------------------------------------


def _get(registry: Registry, path: str, accept: str) -> bytes:
    response = httpx.get(registry.url(path), headers={"Accept": accept}, timeout=30)
    response.raise_for_status()
    return response.content


def _manifest(registry: Registry, repo: str, digest: str) -> dict:
    return json.loads(_get(registry, f"/v2/{repo}/manifests/{digest}", MANIFEST))


def _upload(registry: Registry, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = httpx.post(registry.url(f"/v2/{repo}/blobs/uploads/"), timeout=30)
    started.raise_for_status()
    location = started.headers["Location"]
    url = location if location.startswith("http") else registry.url(location)
    url += ("&" if "?" in url else "?") + f"digest={digest}"
    done = httpx.put(url, content=data, timeout=30)
    done.raise_for_status()
    return digest


def _put_manifest(registry: Registry, repo: str, tag: str, data: bytes) -> str:
    response = httpx.put(
        registry.url(f"/v2/{repo}/manifests/{tag}"), content=data, headers={"Content-Type": MANIFEST}, timeout=30
    )
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def _tar_of(name: str, data: bytes) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_without_the_sign_extra_build_and_push_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcar.errors import UsageError
    from modelcar.params import load_params
    from modelcar.signing import check, keys

    private, _ = model_signing_tool.write_key_pair(tmp_path)
    params = load_params({}, {"SIGN_KEY": str(private), "MODELCAR_WORKSPACE": str(tmp_path / "ws")})
    monkeypatch.setattr(keys, "available", lambda: False)
    check.check_signing(params)  # validate elsewhere: left to the process that signs
    with pytest.raises(UsageError, match=r"modelcar\[sign\]"):
        check.check_signing(params, installed=True)
