"""download-model through the real huggingface_hub client against olah on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers.common import clean_env, free_port, run_cli
from tests.helpers.fake_model import fake_model_files, write_model_dir
from tests.helpers.hub import Hub
from tests.helpers.secrets import HUB_TOKEN

DEFAULT_MATCHES = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "vocab.txt",
    "sub/config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
}
PLANTED_TOKEN = HUB_TOKEN


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def hub_env(hub: Hub, workspace: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        HF_ENDPOINT=hub.endpoint, MODELCAR_WORKSPACE=str(workspace), HF_HOME=str(workspace.parent / "hf-home"), **extra
    )


@pytest.fixture(scope="module")
def repo(hub: Hub) -> tuple[str, dict[str, bytes], str]:
    files = fake_model_files(seed=1)
    sha = hub.create_repo("acme/tiny-model", files)
    return "acme/tiny-model", files, sha


def test_default_patterns_subfolders_and_record(hub: Hub, repo, tmp_path: Path) -> None:
    repo_id, files, sha = repo
    ws = tmp_path / "ws"
    result = run_cli("download", "--model", repo_id, env=hub_env(hub, ws))
    assert result.returncode == 0, result.output
    got = files_under(ws / "model")
    assert set(got) == DEFAULT_MATCHES
    assert all(got[name] == files[name] for name in got)
    assert not (ws / "model" / ".cache").exists()
    assert not list(ws.glob("model.*"))
    record = json.loads((ws / "run.json").read_text())
    assert record["source"] == {
        "kind": "huggingface",
        "repo": repo_id,
        "revision": "main",
        "sha": sha,
        "allow_patterns": ["*.safetensors", "*.json", "*.txt"],
    }
    assert {f["path"]: (f["size"], f["sha256"]) for f in record["files"]} == {
        name: (len(files[name]), hashlib.sha256(files[name]).hexdigest()) for name in DEFAULT_MATCHES
    }
    assert record["stages"]["download-model"]["status"] == "succeeded"


def test_custom_patterns_comma_separated_and_repeated(hub: Hub, repo, tmp_path: Path) -> None:
    repo_id = repo[0]
    ws = tmp_path / "ws"
    env = hub_env(hub, ws, HUGGINGFACE_ALLOW_PATTERNS="README.md, sub/*")
    result = run_cli("download", "--model", repo_id, env=env)
    assert result.returncode == 0, result.output
    assert set(files_under(ws / "model")) == {"README.md", "sub/config.json"}
    result = run_cli(
        "download",
        "--model",
        repo_id,
        "--allow-patterns",
        "*.bin",
        "--allow-patterns",
        "vocab.txt,README.md",
        env=hub_env(hub, ws),
    )
    assert result.returncode == 0, result.output
    assert set(files_under(ws / "model")) == {"pytorch_model.bin", "vocab.txt", "README.md"}


def test_pinned_revision_by_sha_and_by_tag(hub: Hub, tmp_path: Path) -> None:
    first = hub.create_repo("acme/versioned", {"config.json": b'{"v": 1}', "old.txt": b"old"})
    hub.tag("acme/versioned", "v1")
    second = hub.commit("acme/versioned", {"config.json": b'{"v": 2}'})
    for revision in (first, "v1"):
        ws = tmp_path / revision
        result = run_cli("download", "--model", "acme/versioned", "--revision", revision, env=hub_env(hub, ws))
        assert result.returncode == 0, result.output
        assert (ws / "model" / "config.json").read_bytes() == b'{"v": 1}'
        source = json.loads((ws / "run.json").read_text())["source"]
        assert source["revision"] == revision and source["sha"] == first
    ws = tmp_path / "main"
    assert run_cli("download", "--model", "acme/versioned", env=hub_env(hub, ws)).returncode == 0
    assert (ws / "model" / "config.json").read_bytes() == b'{"v": 2}'
    assert json.loads((ws / "run.json").read_text())["source"]["sha"] == second


def test_missing_repository(hub: Hub, tmp_path: Path) -> None:
    result = run_cli("download", "--model", "acme/no-such-model", env=hub_env(hub, tmp_path / "ws"))
    assert result.returncode == 1
    assert "stage download-model failed: repository acme/no-such-model not found" in result.stderr
    assert "HUGGINGFACE_TOKEN" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "ws" / "model").exists()


def test_missing_revision_lists_what_exists(hub: Hub, repo, tmp_path: Path) -> None:
    result = run_cli("download", "--model", repo[0], "--revision", "v9.9", env=hub_env(hub, tmp_path / "ws"))
    assert result.returncode == 1
    assert "revision 'v9.9' not found in acme/tiny-model (branches and tags: main)" in result.stderr


def test_nothing_matches(hub: Hub, repo, tmp_path: Path) -> None:
    result = run_cli("download", "--model", repo[0], "--allow-patterns", "*.gguf", env=hub_env(hub, tmp_path / "ws"))
    assert result.returncode == 1
    assert "no file of acme/tiny-model matches HUGGINGFACE_ALLOW_PATTERNS *.gguf" in result.stderr
    assert "config.json" in result.stderr


def test_token_never_shows_up_in_output_or_files(hub: Hub, repo, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    env = hub_env(hub, ws, HUGGINGFACE_TOKEN=PLANTED_TOKEN, RESULTS_DIR=str(tmp_path / "results"))
    result = run_cli("run", "--model", repo[0], "--skip", "build-and-push", "--json", env=env)
    assert result.returncode == 0, result.output
    failing = run_cli("download", "--model", "acme/absent", env=env)
    assert failing.returncode == 1
    for text in (result.output, failing.output):
        assert PLANTED_TOKEN not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PLANTED_TOKEN.encode() not in path.read_bytes(), path
    record = json.loads(result.stdout)
    assert record["params"]["hf_token_set"] is True


def test_unreachable_hub(tmp_path: Path) -> None:
    env = clean_env(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", MODELCAR_WORKSPACE=str(tmp_path / "ws"))
    result = run_cli("download", "--model", "acme/tiny-model", env=env)
    assert result.returncode == 1
    assert "cannot reach the Hub at http://127.0.0.1:" in result.stderr and "Traceback" not in result.output


class _RefusingHub(BaseHTTPRequestHandler):
    """Answers every request as the Hub does for a gated repo, or for a refused token."""

    def do_GET(self) -> None:
        gated = "gated" in self.path
        self.send_response(403 if gated else 401)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "")
        self.send_header("X-Error-Message", "Access to this model is restricted" if gated else "Invalid credentials")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "refused"}')

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_gated_and_refused_token(refusing_hub: str, tmp_path: Path) -> None:
    env = clean_env(HF_ENDPOINT=refusing_hub, MODELCAR_WORKSPACE=str(tmp_path / "ws"), HUGGINGFACE_TOKEN=PLANTED_TOKEN)
    gated = run_cli("download", "--model", "acme/gated-model", env=env)
    assert gated.returncode == 1
    assert "repository acme/gated-model is gated" in gated.stderr
    refused = run_cli("download", "--model", "acme/private-model", env=env)
    assert refused.returncode == 1
    assert "acme/private-model" in refused.stderr
    for result in (gated, refused):
        assert PLANTED_TOKEN not in result.output and "Traceback" not in result.output


def test_local_directory_source(tmp_path: Path) -> None:
    source = write_model_dir(tmp_path / "src")
    (source / ".git").mkdir()
    (source / ".git" / "HEAD.json").write_text("{}")
    (source / ".cache" / "huggingface").mkdir(parents=True)
    (source / ".cache" / "huggingface" / "tree.json").write_text("{}")
    os.symlink("config.json", source / "alias.json")
    ws = tmp_path / "ws"
    result = run_cli("download", "--model", str(source), env=clean_env(MODELCAR_WORKSPACE=str(ws)))
    assert result.returncode == 0, result.output
    got = files_under(ws / "model")
    assert set(got) == DEFAULT_MATCHES | {"alias.json"}
    assert (ws / "model" / "alias.json").is_symlink()
    assert os.stat(ws / "model" / "config.json").st_ino == os.stat(source / "config.json").st_ino
    assert json.loads((ws / "run.json").read_text())["source"]["kind"] == "local"


def test_local_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    source = write_model_dir(tmp_path / "src")
    (tmp_path / "outside.json").write_text("{}")
    os.symlink(tmp_path / "outside.json", source / "escape.json")
    result = run_cli("download", "--model", str(source), env=clean_env(MODELCAR_WORKSPACE=str(tmp_path / "ws")))
    assert result.returncode == 1
    assert "escape.json is a symlink to" in result.stderr and "outside the model directory" in result.stderr


def test_a_partial_download_of_another_source_is_discarded(hub: Hub, repo, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    stale = ws / "model.partial"
    stale.mkdir(parents=True)
    (stale / "stale.json").write_text("{}")
    (stale / ".modelcar-source.json").write_text('{"repo": "other/model"}')
    result = run_cli("download", "--model", repo[0], env=hub_env(hub, ws))
    assert result.returncode == 0, result.output
    assert "stale.json" not in files_under(ws / "model")


def test_a_new_download_is_recorded_as_uncompressed(tmp_path: Path) -> None:
    """A workspace compressed by an earlier run must not make the fresh model look compressed."""
    source = write_model_dir(tmp_path / "src")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "run.json").write_text(json.dumps({"stages": {}, "compression": {"enabled": True, "scheme": "gptq"}}))
    result = run_cli("download", "--model", str(source), env=clean_env(MODELCAR_WORKSPACE=str(ws)))
    assert result.returncode == 0, result.output
    assert json.loads((ws / "run.json").read_text())["compression"] == {"enabled": False}


class _HugeRepoHub(BaseHTTPRequestHandler):
    """Answers model_info for a repo whose one file is larger than any disk."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "id": "acme/huge",
                "sha": "a" * 40,
                "siblings": [
                    {"rfilename": "model.safetensors", "size": 10**16},
                    {"rfilename": "config.json", "size": 2},
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_not_enough_disk_space_is_refused_before_downloading(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HugeRepoHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = clean_env(
            HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", MODELCAR_WORKSPACE=str(tmp_path / "ws")
        )
        result = run_cli("download", "--model", "acme/huge", env=env)
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert re.search(
        r"not enough disk space for downloading acme/huge: needs 9094\.9 TiB .*, [\d.]+ [KMGT]?i?B free in ",
        result.stderr,
    ), result.stderr
    assert not (tmp_path / "ws" / "model.partial").exists()
