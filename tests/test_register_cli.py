"""`modelcar register` end to end through the CLI, against the spec-following fake Model Registry.

The workspace is prepared as the earlier stages leave it: model/ plus run.json with the source,
files and image sections (the contract between stages); the image digest is made up, since
register-model only records it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelcar.modelregistry import metadata
from tests.helpers.common import clean_env, free_port, retry_env, run_cli
from tests.helpers.fake_model import write_model_dir
from tests.helpers.model_registry_server import FakeModelRegistry
from tests.helpers.secrets import MODEL_REGISTRY_TOKEN

DIGEST_A = "sha256:" + hashlib.sha256(b"image a").hexdigest()
DIGEST_B = "sha256:" + hashlib.sha256(b"image b").hexdigest()
REPO = "127.0.0.1:5000/models/tiny"
CARD = "---\nlicense: mit\n---\n# Tiny\n\nA tiny model for tests.\n"


def make_workspace(root: Path, digest: str = DIGEST_A, image: dict | None = None, **sections: object) -> Path:
    files = {"README.md": CARD.encode(), "config.json": b'{"model_type": "llama"}', "model.safetensors": b"\0" * 64}
    write_model_dir(root / "model", files)
    record: dict[str, object] = {
        "version": 1,
        "stages": {},
        "source": {"kind": "huggingface", "repo": "org/tiny", "revision": "main", "sha": "e" * 40},
        "files": [
            {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        ],
        "image": image
        if image is not None
        else {"reference": f"{REPO}:1.0.0", "digest": digest, "pinned": f"{REPO}@{digest}"},
    }
    record.update(sections)
    (root / "run.json").write_text(json.dumps(record))
    return root


def register(workspace: Path, server_url: str, *extra: str, token: str | None = MODEL_REGISTRY_TOKEN, **env: str):  # type: ignore[no-untyped-def]
    environment = clean_env(**retry_env(attempts=3), **env)
    if token is not None:
        environment["MODEL_REGISTRY_TOKEN"] = token
    args = ["register", "--workspace", str(workspace), "--registry-url", server_url, "--no-tls-verify"]
    args += ["--model-name", "tiny", "--results-dir", str(workspace / "results"), *extra]
    return run_cli(*args, env=environment, timeout=120)


@pytest.fixture
def registry(model_registry_factory) -> FakeModelRegistry:  # type: ignore[no-untyped-def]
    return model_registry_factory(token=MODEL_REGISTRY_TOKEN)


def test_first_registration(tmp_path: Path, registry: FakeModelRegistry) -> None:
    workspace = make_workspace(tmp_path / "ws")
    result = register(workspace, registry.url)
    assert result.returncode == 0, result.output
    [model] = registry.registered_models.values()
    [version] = registry.model_versions.values()
    [artifact] = registry.artifacts.values()
    assert (model["name"], model["license"], model["description"]) == ("tiny", "mit", "A tiny model for tests.")
    assert version["name"] == "1.0.0" and version["registeredModelId"] == model["id"]
    props = {key: metadata.decode(value) for key, value in version["customProperties"].items()}
    assert props == {
        "source": "huggingface",
        "framework": "pytorch",
        "compressed": False,
        "hf_repo": "org/tiny",
        "hf_revision": "e" * 40,
        "image_digest": DIGEST_A,
        "image_tag": "1.0.0",
    }
    assert artifact["uri"] == f"oci://{REPO}@{DIGEST_A}" and artifact["state"] == "LIVE"
    assert artifact["modelFormatName"] == "safetensors"
    assert all(e.headers.get("authorization") == f"Bearer {MODEL_REGISTRY_TOKEN}" for e in registry.exchanges)
    record = json.loads((workspace / "run.json").read_text())
    assert record["registry"]["registered_model_id"] == model["id"]
    assert record["registry"]["model_version_id"] == version["id"]
    assert record["registry"]["model_artifact_id"] == artifact["id"]
    assert record["registry"]["model_uri"] == artifact["uri"]
    assert record["registry"]["api_version"] == "v1"
    assert record["stages"]["register-model"]["status"] == "succeeded"
    results = workspace / "results"
    assert (results / "REGISTERED_MODEL_ID").read_text() == model["id"]
    assert (results / "MODEL_VERSION_ID").read_text() == version["id"]
    assert (results / "MODEL_URI").read_text() == artifact["uri"]


def test_repeat_changes_nothing_and_a_new_version_adds_one(tmp_path: Path, registry: FakeModelRegistry) -> None:
    workspace = make_workspace(tmp_path / "ws")
    assert register(workspace, registry.url).returncode == 0
    before = registry.snapshot()
    again = register(workspace, registry.url)
    assert again.returncode == 0, again.output
    assert registry.snapshot() == before
    assert "unchanged" in again.stderr
    newer = register(make_workspace(tmp_path / "ws2", DIGEST_B), registry.url, "--model-version", "2.0.0")
    assert newer.returncode == 0, newer.output
    assert len(registry.registered_models) == 1
    assert sorted(v["name"] for v in registry.model_versions.values()) == ["1.0.0", "2.0.0"]


def test_v1alpha3_only_server(tmp_path: Path, model_registry_factory) -> None:  # type: ignore[no-untyped-def]
    server = model_registry_factory(apis=("v1alpha3",), token=MODEL_REGISTRY_TOKEN)
    workspace = make_workspace(tmp_path / "ws")
    result = register(workspace, server.url)
    assert result.returncode == 0, result.output
    assert json.loads((workspace / "run.json").read_text())["registry"]["api_version"] == "v1alpha3"
    assert len(server.artifacts) == 1


def test_refused_token(tmp_path: Path, model_registry_factory) -> None:  # type: ignore[no-untyped-def]
    server = model_registry_factory(token="another-token")
    workspace = make_workspace(tmp_path / "ws")
    result = register(workspace, server.url)
    assert result.returncode == 1
    assert "refused the token" in result.stderr and "register-model" in result.stderr
    assert MODEL_REGISTRY_TOKEN not in result.output
    assert MODEL_REGISTRY_TOKEN not in (workspace / "run.json").read_text()
    assert "Traceback" not in result.output


def test_not_a_model_registry(tmp_path: Path, model_registry_factory) -> None:  # type: ignore[no-untyped-def]
    server = model_registry_factory(apis=())
    result = register(make_workspace(tmp_path / "ws"), server.url)
    assert result.returncode == 1
    assert "is not a Model Registry" in result.stderr and "404" in result.stderr


def test_unreachable_server(tmp_path: Path) -> None:
    result = register(make_workspace(tmp_path / "ws"), f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach the Model Registry" in result.stderr and "tried 3 times" in result.stderr
    assert "Traceback" not in result.output


def test_5xx_is_retried(tmp_path: Path, registry: FakeModelRegistry) -> None:
    registry.inject(503, times=2, method="POST")
    result = register(make_workspace(tmp_path / "ws"), registry.url)
    assert result.returncode == 0, result.output
    assert "HTTP 503" in result.stderr and "retrying" in result.stderr
    assert len(registry.model_versions) == 1


def test_another_digest_needs_overwrite(tmp_path: Path, registry: FakeModelRegistry) -> None:
    assert register(make_workspace(tmp_path / "ws"), registry.url).returncode == 0
    before = registry.snapshot()
    workspace = make_workspace(tmp_path / "ws2", DIGEST_B)
    refused = register(workspace, registry.url)
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "--overwrite" in refused.stderr and DIGEST_B in refused.stderr
    assert registry.snapshot() == before
    allowed = register(workspace, registry.url, "--overwrite")
    assert allowed.returncode == 0, allowed.output
    [artifact] = registry.artifacts.values()
    assert artifact["uri"] == f"oci://{REPO}@{DIGEST_B}"
    [version] = registry.model_versions.values()
    assert metadata.decode(version["customProperties"]["image_digest"]) == DIGEST_B


def test_compressed_model_properties(tmp_path: Path, registry: FakeModelRegistry) -> None:
    compression = {
        "enabled": True,
        "scheme": "gptq",
        "bits": 4,
        "group_size": 128,
        "dataset": "c4",
        "sequence_length": 2048,
        "num_calibration_samples": 512,
        "bytes_before": 2_000_000_000,
        "bytes_after": 600_000_000,
    }
    workspace = make_workspace(tmp_path / "ws", compression=compression)
    quantized = {
        "model_type": "llama",
        "quantization_config": {"quant_method": "compressed-tensors", "version": "0.10.2"},
    }
    (workspace / "model" / "config.json").write_text(json.dumps(quantized))
    assert register(workspace, registry.url).returncode == 0
    [version] = registry.model_versions.values()
    props = version["customProperties"]
    assert props["compressed"] == {"metadataType": "MetadataBoolValue", "bool_value": True}
    assert props["bits"] == {"metadataType": "MetadataIntValue", "int_value": "4"}
    assert props["bytes_before"] == {"metadataType": "MetadataDoubleValue", "double_value": 2e9}
    assert metadata.decode(props["scheme"]) == "gptq"
    [artifact] = registry.artifacts.values()
    assert (artifact["modelFormatName"], artifact["modelFormatVersion"]) == ("compressed-tensors", "0.10.2")


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ({}, "no pushed image"),
        ({"reference": "oci:/tmp/layout:latest", "digest": DIGEST_A}, "needs an image in a registry"),
    ],
)
def test_no_image_in_a_registry(tmp_path: Path, registry: FakeModelRegistry, image: dict, says: str) -> None:
    result = register(make_workspace(tmp_path / "ws", image=image), registry.url)
    assert result.returncode == 1
    assert says in result.stderr and "register-model" in result.stderr
    assert registry.exchanges == []


def test_plain_http_needs_no_tls_verify(tmp_path: Path, registry: FakeModelRegistry) -> None:
    """A plain http:// Model Registry only with --no-tls-verify (the token would travel in the clear)."""
    workspace = make_workspace(tmp_path / "ws")
    env = clean_env(MODEL_REGISTRY_TOKEN=MODEL_REGISTRY_TOKEN)
    result = run_cli(
        "register", "--workspace", str(workspace), "--registry-url", registry.url, "--model-name", "x", env=env
    )
    assert result.returncode == 2
    assert "MODEL_REGISTRY_URL" in result.stderr and "--no-tls-verify" in result.stderr
    assert registry.exchanges == []


def test_credentials_in_the_url_are_refused_without_echoing_them(tmp_path: Path, registry: FakeModelRegistry) -> None:
    workspace = make_workspace(tmp_path / "ws")
    url = registry.url.replace("http://", f"http://admin:{MODEL_REGISTRY_TOKEN}@")
    result = run_cli("register", "--workspace", str(workspace), "--registry-url", url, "--model-name", "x")
    assert result.returncode == 2
    assert "MODEL_REGISTRY_URL" in result.stderr and MODEL_REGISTRY_TOKEN not in result.output
    assert registry.exchanges == []


def test_run_refuses_registering_an_oci_layout_before_any_work(tmp_path: Path, registry: FakeModelRegistry) -> None:
    workspace = tmp_path / "ws"
    env = clean_env(MODEL_REGISTRY_TOKEN=MODEL_REGISTRY_TOKEN)
    args = ["run", "--model", "org/tiny", "--workspace", str(workspace), "--registry-url", registry.url]
    result = run_cli(*args, "--no-tls-verify", env=env)
    assert result.returncode == 2
    assert "OCI_IMAGE" in result.stderr and "register-model" in result.stderr
    assert not workspace.exists()
    assert registry.exchanges == []
