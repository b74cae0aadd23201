"""The whole `modelcar run` with a real OCI registry (docker-registry) and the fake Model Registry.

A local model directory is the source, busybox the base image; the run pushes the ModelCar and
registers it. Repeats change nothing, a new MODEL_VERSION adds a version, an older server that
only speaks v1alpha3 works, and a refused token fails the stage without showing the token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcar.modelregistry import metadata
from tests.helpers.common import clean_env, retry_env, run_cli
from tests.helpers.fake_model import write_model_dir
from tests.helpers.model_registry_server import FakeModelRegistry
from tests.helpers.oci_registry import Registry
from tests.helpers.secrets import MODEL_REGISTRY_TOKEN


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    files = {
        "config.json": '{"model_type": "llama"}',
        "model.safetensors": bytes(range(256)) * 16,
        "notes.txt": "trained for tests\n",
    }
    return write_model_dir(tmp_path / "tiny-model", files)


def modelcar_run(
    workspace: Path,
    model: Path,
    image: str,
    base: Path,
    registry_url: str,
    *extra: str,
    token: str = MODEL_REGISTRY_TOKEN,
):  # type: ignore[no-untyped-def]
    env = clean_env(MODEL_REGISTRY_TOKEN=token, **retry_env(attempts=2))
    args = ["run", "--model", str(model), "--workspace", str(workspace), "--image", image]
    args += ["--base-image", f"oci:{base}", "--no-tls-verify", "--registry-url", registry_url, "--model-name", "tiny"]
    return run_cli(*args, *extra, "--json", env=env, timeout=300)


def test_run_registers_once_however_often_repeated(
    tmp_path: Path,
    model_dir: Path,
    oci_registry: Registry,
    busybox_layout: Path,
    model_registry_factory,  # type: ignore[no-untyped-def]
) -> None:
    server: FakeModelRegistry = model_registry_factory(token=MODEL_REGISTRY_TOKEN)
    workspace = tmp_path / "ws"
    image = f"{oci_registry.host}/register-run/tiny:1.0.0"
    first = modelcar_run(workspace, model_dir, image, busybox_layout, server.url)
    assert first.returncode == 0, first.output
    record = json.loads(first.stdout)
    digest = record["image"]["digest"]
    uri = f"oci://{oci_registry.host}/register-run/tiny@{digest}"
    assert record["registry"]["model_uri"] == uri
    [artifact] = server.artifacts.values()
    assert artifact["uri"] == uri and artifact["state"] == "LIVE"
    [version] = server.model_versions.values()
    props = {key: metadata.decode(value) for key, value in version["customProperties"].items()}
    assert props["source"] == "local" and props["compressed"] is False
    assert props["image_digest"] == digest and props["image_tag"] == "1.0.0"

    before = server.snapshot()
    again = modelcar_run(workspace, model_dir, image, busybox_layout, server.url)
    assert again.returncode == 0, again.output
    assert server.snapshot() == before

    newer = modelcar_run(
        workspace, model_dir, f"{oci_registry.host}/register-run/tiny:2.0.0", busybox_layout, server.url,
        "--model-version", "2.0.0",
    )  # fmt: skip
    assert newer.returncode == 0, newer.output
    assert len(server.registered_models) == 1
    assert sorted(v["name"] for v in server.model_versions.values()) == ["1.0.0", "2.0.0"]
    assert len(server.artifacts) == 2


def test_run_with_a_v1alpha3_server(
    tmp_path: Path,
    model_dir: Path,
    oci_registry: Registry,
    busybox_layout: Path,
    model_registry_factory,  # type: ignore[no-untyped-def]
) -> None:
    server: FakeModelRegistry = model_registry_factory(apis=("v1alpha3",), token=MODEL_REGISTRY_TOKEN)
    image = f"{oci_registry.host}/register-run/alpha:1.0.0"
    result = modelcar_run(tmp_path / "ws", model_dir, image, busybox_layout, server.url)
    assert result.returncode == 0, result.output
    assert json.loads(result.stdout)["registry"]["api_version"] == "v1alpha3"
    assert len(server.artifacts) == 1


def test_run_with_a_refused_token(
    tmp_path: Path,
    model_dir: Path,
    oci_registry: Registry,
    busybox_layout: Path,
    model_registry_factory,  # type: ignore[no-untyped-def]
) -> None:
    server: FakeModelRegistry = model_registry_factory(token="the-servers-token")
    image = f"{oci_registry.host}/register-run/refused:1.0.0"
    result = modelcar_run(tmp_path / "ws", model_dir, image, busybox_layout, server.url)
    assert result.returncode == 1
    assert "stage register-model failed" in result.stderr and "refused the token" in result.stderr
    assert MODEL_REGISTRY_TOKEN not in result.output
    record = json.loads((tmp_path / "ws" / "run.json").read_text())
    assert record["stages"]["build-and-push"]["status"] == "succeeded"
    assert record["stages"]["register-model"]["status"] == "failed"
    assert "registry" not in record and server.registered_models == {}
