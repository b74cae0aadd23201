"""The command line as users and the pipeline call it: env vars, exit codes, nothing touched on bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelcar import __version__
from modelcar.param_table import ENV_NAMES
from tests.helpers.common import REPO_ROOT, clean_env, run_cli
from tests.helpers.fake_model import write_model_dir


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.strip() == f"modelcar, version {__version__}"
    top = run_cli("--help").stdout
    for command in ("run", "cleanup", "download", "compress", "build-push", "register", "validate"):
        assert command in top
    run_help = run_cli("run", "--help").stdout
    for env in ENV_NAMES.values():
        assert env in run_help, env


@pytest.fixture
def busy_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    run_cli("cleanup", env=clean_env(MODELCAR_WORKSPACE=str(ws)))
    (ws / "model").mkdir()
    (ws / "model" / "keep.json").write_text("{}")
    return ws


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SKIP_TASKS": "download"}, "SKIP_TASKS"),
        ({"OCI_IMAGE": "Quay.io/UPPER/x:tag:tag"}, "OCI_IMAGE"),
        ({"BITS": "5"}, "BITS"),
        ({"MODEL_REGISTRY_URL": "no-scheme.example.com"}, "MODEL_REGISTRY_URL"),
        ({"SEQUENCE_LENGTH": "0"}, "SEQUENCE_LENGTH"),
        ({"COMPRESS_MODEL": "sometimes"}, "COMPRESS_MODEL"),
    ],
)
def test_bad_parameter_exits_2_before_touching_anything(busy_workspace: Path, env: dict, name: str) -> None:
    before = sorted(p.relative_to(busy_workspace) for p in busy_workspace.rglob("*"))
    result = run_cli("run", "--model", "acme/m", env=clean_env(MODELCAR_WORKSPACE=str(busy_workspace), **env))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid {name}="), result.stderr
    assert sorted(p.relative_to(busy_workspace) for p in busy_workspace.rglob("*")) == before


def test_missing_model_is_bad_input(tmp_path: Path) -> None:
    result = run_cli("run", env=clean_env(MODELCAR_WORKSPACE=str(tmp_path / "ws")))
    assert result.returncode == 2 and "HUGGINGFACE_MODEL" in result.stderr
    assert not (tmp_path / "ws").exists()


def test_foreign_workspace_is_refused_before_anything(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("x")
    model = write_model_dir(tmp_path.parent / f"{tmp_path.name}-model")
    result = run_cli("run", "--model", str(model), env=clean_env(MODELCAR_WORKSPACE=str(tmp_path)))
    assert result.returncode == 2 and "refusing to empty workspace" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_run_skips_and_records_each_stage(tmp_path: Path) -> None:
    model = write_model_dir(tmp_path / "model-src")
    ws = tmp_path / "ws"
    env = clean_env(MODELCAR_WORKSPACE=str(ws), SKIP_TASKS="build-and-push", COMPRESS_MODEL="FALSE")
    result = run_cli("run", "--model", str(model), "--json", env=env)
    assert result.returncode == 0, result.output
    record = json.loads(result.stdout)
    assert record == json.loads((ws / "run.json").read_text())
    statuses = {name: stage["status"] for name, stage in record["stages"].items()}
    assert statuses == {
        "cleanup-workspace": "succeeded",
        "download-model": "succeeded",
        "compress-model": "skipped",
        "build-and-push": "skipped",
        "register-model": "skipped",
    }
    assert record["stages"]["register-model"]["reason"] == "MODEL_REGISTRY_URL is not set"
    assert "register-model: skipped (MODEL_REGISTRY_URL is not set)" in result.stderr


def test_validate_writes_one_result_per_stage(tmp_path: Path) -> None:
    env = clean_env(
        SKIP_TASKS="cleanup-workspace,register-model", COMPRESS_MODEL="true", MODELCAR_WORKSPACE=str(tmp_path / "ws")
    )
    result = run_cli("validate", "--model", "acme/m", "--results-dir", str(tmp_path / "r"), env=env)
    assert result.returncode == 0, result.output
    got = {p.name: p.read_text() for p in (tmp_path / "r").iterdir()}
    assert got == {
        "cleanup-workspace": "false",
        "download-model": "true",
        "compress-model": "true",
        "build-and-push": "true",
        "register-model": "false",
    }
    assert not (tmp_path / "ws").exists()


def test_make_run_with_a_local_model(tmp_path: Path) -> None:
    """The README's first command, as written (the venv already exists, so it is quick)."""
    model = write_model_dir(tmp_path / "model-src")
    ws = tmp_path / "ws"
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "run",
            f"MODEL={model}",
            "SKIP_TASKS=build-and-push",
            f"MODELCAR_WORKSPACE={ws}",
        ],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((ws / "run.json").read_text())["stages"]["download-model"]["status"] == "succeeded"
    assert (ws / "model" / "config.json").is_file()


def test_a_failing_stage_still_prints_the_record_with_json(tmp_path: Path) -> None:
    source = write_model_dir(tmp_path / "src")
    ws = tmp_path / "ws"
    env = clean_env(MODELCAR_WORKSPACE=str(ws))
    result = run_cli("run", "--model", str(source), "--allow-patterns", "*.gguf", "--json", env=env)
    assert result.returncode == 1
    assert "error: stage download-model failed: no file of" in result.stderr
    record = json.loads(result.stdout)
    assert record["stages"]["cleanup-workspace"]["status"] == "succeeded"
    assert record["stages"]["download-model"]["status"] == "failed"
    assert "no file of" in record["stages"]["download-model"]["error"]
    assert "build-and-push" not in record["stages"]


def test_results_never_come_from_an_earlier_run(tmp_path: Path) -> None:
    """A rerun whose build-and-push fails must not report the previous image or registration."""
    ws = tmp_path / "ws"
    write_model_dir(ws / "model")
    digest = "sha256:" + "c" * 64
    old = {
        "stages": {},
        "image": {"digest": digest, "pinned": f"quay.io/a/b@{digest}"},
        "registry": {"model_uri": f"oci://quay.io/a/b@{digest}", "registered_model_id": "7", "model_version_id": "8"},
    }
    (ws / "run.json").write_text(json.dumps(old))
    env = clean_env(MODELCAR_WORKSPACE=str(ws), RESULTS_DIR=str(tmp_path / "results"))
    result = run_cli(
        "build-push", "--image", "127.0.0.1:9/a/b:1", "--no-tls-verify", "--base-image", "scratch", env=env
    )
    assert result.returncode == 1
    record = json.loads((ws / "run.json").read_text())
    assert "image" not in record and "registry" not in record
    assert not (tmp_path / "results").exists()
