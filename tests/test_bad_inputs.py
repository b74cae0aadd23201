"""Bad input of every kind, each with its exit status and message; nothing outside the workspace changes.

Exit 2: a parameter, or a workspace, that is wrong before any work starts (the workspace is left
as it was, too). Exit 1: a stage that fails on what it finds (files, server answers); the message
names the stage and what to do. No traceback in any case.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers.common import clean_env, free_port, retry_env, run_cli
from tests.helpers.fake_model import write_model_dir
from tests.helpers.hub import Hub
from tests.helpers.oci_registry import Registry
from tests.helpers.secrets import MODEL_REGISTRY_TOKEN, REGISTRY_PASSWORD

FAST_RETRIES = retry_env(attempts=2)


@dataclass
class Scene:
    """A temp dir with a workspace, a model source, and files that must not change."""

    root: Path
    servers: dict[str, str] = field(default_factory=dict)

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def model(self) -> Path:
        return self.root / "src-model"


@dataclass
class Case:
    id: str
    args: list[str]
    env: dict[str, str]
    code: int
    says: list[str]
    setup: Callable[[Scene], None] | None = None


def _fmt(value: str, scene: Scene) -> str:
    return value.format(ws=scene.ws, model=scene.model, root=scene.root, **scene.servers)


def _escaping_link(scene: Scene) -> None:
    (scene.root / "outside" / "secret.json").write_text("{}")
    os.symlink(scene.root / "outside" / "secret.json", scene.model / "escape.json")


def _model_inside_workspace(scene: Scene) -> None:
    write_model_dir(scene.ws / "mine")


def _foreign_workspace(scene: Scene) -> None:
    (scene.ws / ".modelcar-workspace").unlink()
    (scene.ws / "notes.txt").write_text("mine")


def _corrupt_record(scene: Scene) -> None:
    (scene.ws / "run.json").write_text("{truncated")


def _bad_authfile(scene: Scene) -> None:
    (scene.root / "outside" / "auth.json").write_text("{not json")


def _workspace_with_model(scene: Scene) -> None:
    write_model_dir(scene.ws / "model")


def _a_file(scene: Scene) -> None:
    (scene.root / "outside" / "plain-file").write_text("x")


M = ["--model", "{model}"]
CASES = [
    # -- parameters: exit 2, one line naming the parameter ---------------------------------------
    Case("bits", ["run", *M], {"BITS": "3"}, 2, ["invalid BITS='3'", "4 or 8"]),
    Case("bits-word", ["run", *M], {"BITS": "four"}, 2, ["invalid BITS='four'", "positive whole number"]),
    Case("group-size", ["run", *M], {"GROUP_SIZE": "100"}, 2, ["invalid GROUP_SIZE='100'", "power of two"]),
    Case("scheme", ["run", *M], {"SCHEME": "awq"}, 2, ["invalid SCHEME='awq'", "gptq, w8a8, fp8-dynamic"]),
    Case("scheme-bits", ["run", *M], {"SCHEME": "w8a8", "BITS": "4"}, 2, ["invalid BITS='4'", "8 for scheme w8a8"]),
    Case("scheme-dataset", ["run", *M], {"SCHEME": "fp8-dynamic", "DATASET": "c4"}, 2, ["invalid DATASET='c4'"]),
    Case("seq-len", ["run", *M], {"SEQUENCE_LENGTH": "0"}, 2, ["invalid SEQUENCE_LENGTH='0'", "positive"]),
    Case("samples", ["run", *M], {"NUM_CALIBRATION_SAMPLES": "-1"}, 2, ["invalid NUM_CALIBRATION_SAMPLES='-1'"]),
    Case("compress", ["run", *M], {"COMPRESS_MODEL": "maybe"}, 2, ["invalid COMPRESS_MODEL='maybe'", "true or false"]),
    Case("tls", ["run", *M], {"TLS_VERIFY": "perhaps"}, 2, ["invalid TLS_VERIFY='perhaps'", "true or false"]),
    Case("skip", ["run", *M], {"SKIP_TASKS": "download"}, 2, ["invalid SKIP_TASKS='download'", "download-model"]),
    Case("image-case", ["run", *M], {"OCI_IMAGE": "quay.io/Me/x"}, 2, ["invalid OCI_IMAGE='quay.io/Me/x'", "lower"]),
    Case("image-digest", ["run", *M], {"OCI_IMAGE": "quay.io/me/x@sha256:" + "a" * 64}, 2, ["not a @digest"]),
    Case("base-image", ["run", *M], {"BASE_IMAGE": "not an image"}, 2, ["invalid BASE_IMAGE='not an image'"]),
    Case("mr-url", ["run", *M], {"MODEL_REGISTRY_URL": "mr.example.com"}, 2, ["invalid MODEL_REGISTRY_URL", "http"]),
    Case(
        "mr-url-userinfo",
        ["run", *M],
        {"MODEL_REGISTRY_URL": f"https://u:{MODEL_REGISTRY_TOKEN}@mr.example.com"},
        2,
        ["invalid MODEL_REGISTRY_URL='<redacted>'", "MODEL_REGISTRY_TOKEN"],
    ),
    Case("mr-api", ["run", *M], {"MODEL_REGISTRY_API": "v9"}, 2, ["invalid MODEL_REGISTRY_API='v9'", "v1, v1alpha3"]),
    Case("model-path", ["run", "--model", "a/b/c"], {}, 2, ["invalid HUGGINGFACE_MODEL='a/b/c'", "Hub repo id"]),
    Case("model-dir", ["run", "--model", "./no/such/dir"], {}, 2, ["invalid HUGGINGFACE_MODEL", "local directory"]),
    Case("model-missing", ["run"], {}, 2, ["HUGGINGFACE_MODEL", "required"]),
    Case("revision", ["run", *M, "--revision", "a b"], {}, 2, ["invalid HUGGINGFACE_REVISION='a b'"]),
    Case("dataset-file", ["run", *M], {"DATASET": "{root}/none.jsonl"}, 2, ["invalid DATASET", "existing"]),
    Case("authfile", ["run", *M], {"REGISTRY_AUTH_FILE": "{root}/none.json"}, 2, ["invalid REGISTRY_AUTH_FILE"]),
    Case("ca-bundle", ["run", *M], {"CA_BUNDLE": "{root}/none.pem"}, 2, ["invalid CA_BUNDLE", "existing file"]),
    Case("token-path", ["run", *M], {"MODEL_REGISTRY_TOKEN_PATH": "{root}/none"}, 2, ["MODEL_REGISTRY_TOKEN_PATH"]),
    Case(
        "workspace-file",
        ["run", *M],
        {"MODELCAR_WORKSPACE": "{root}/outside/plain-file"},
        2,
        ["invalid MODELCAR_WORKSPACE", "a directory"],
        _a_file,
    ),
    Case(
        "register-layout",
        ["run", *M],
        {"MODEL_REGISTRY_URL": "http://127.0.0.1:9", "TLS_VERIFY": "false"},
        2,
        ["invalid OCI_IMAGE", "register-model"],
    ),
    Case(
        "mr-plain-http",
        ["run", *M, "--image", "quay.io/me/model:1"],
        {"MODEL_REGISTRY_URL": "http://mr.example.com"},
        2,
        ["invalid MODEL_REGISTRY_URL='http://mr.example.com'", "--no-tls-verify"],
    ),
    Case("foreign-ws", ["run", *M], {}, 2, ["refusing to empty workspace", "marker"], _foreign_workspace),
    Case(
        "model-in-ws",
        ["run", "--model", "{ws}/mine"],
        {},
        2,
        ["invalid HUGGINGFACE_MODEL", "outside the workspace"],
        _model_inside_workspace,
    ),
    Case(
        "bad-authfile",
        ["build-push", "--image", "{registry}/bad/auth:1", "--no-tls-verify", "--base-image", "scratch"],
        {"REGISTRY_AUTH_FILE": "{root}/outside/auth.json"},
        2,
        ["invalid REGISTRY_AUTH_FILE", "JSON credentials file"],
        lambda s: (_bad_authfile(s), _workspace_with_model(s)),
    ),
    Case("corrupt-record", ["download", *M], {}, 2, ["cannot read the run record", "run.json"], _corrupt_record),
    Case("unknown-option", ["run", "--bitz", "4"], {}, 2, ["No such option", "--bitz"]),
    # -- files: exit 1, the stage named ------------------------------------------------------------
    Case("escaping-link", ["download", *M], {}, 1, ["download-model", "escape.json is a symlink"], _escaping_link),
    Case("no-match", ["download", *M, "--allow-patterns", "*.gguf"], {}, 1, ["download-model", "no file of"]),
    Case("no-model-dir", ["build-push"], {}, 1, ["build-and-push", "model"]),
    # -- server answers: exit 1 ------------------------------------------------------------------
    Case("hub-missing-repo", ["download", "--model", "acme/absent"], {"HF_ENDPOINT": "{hub}"}, 1, ["not found"]),
    Case(
        "hub-unreachable",
        ["download", "--model", "acme/absent"],
        {"HF_ENDPOINT": "{closed}"},
        1,
        ["cannot reach the Hub"],
    ),
    Case(
        "registry-unreachable",
        ["build-push", "--image", "{closed_host}/a/b:1", "--no-tls-verify", "--base-image", "scratch"],
        {},
        1,
        ["build-and-push", "cannot reach registry"],
        _workspace_with_model,
    ),
    Case(
        "registry-denied",
        ["build-push", "--image", "{denying}/a/b:1", "--no-tls-verify", "--base-image", "scratch"],
        {},
        1,
        ["build-and-push", "denied"],
        _workspace_with_model,
    ),
    Case(
        "base-image-missing",
        ["build-push", "--image", "{registry}/a/b:1", "--no-tls-verify", "--base-image", "{registry}/no/base:1"],
        {},
        1,
        ["build-and-push", "no/base"],
        _workspace_with_model,
    ),
    Case(
        "tls-to-plain-http",
        ["build-push", "--image", "{registry}/a/b:1", "--base-image", "scratch"],
        {},
        1,
        ["build-and-push", "--no-tls-verify"],
        _workspace_with_model,
    ),
    Case(
        "not-a-model-registry",
        ["register", "--model-name", "m", "--registry-url", "{denying_url}", "--no-tls-verify"],
        {"MODEL_REGISTRY_TOKEN": MODEL_REGISTRY_TOKEN},
        1,
        ["register-model"],
        lambda s: _pushed_record(s),
    ),
    Case(
        "model-registry-unreachable",
        ["register", "--model-name", "m", "--registry-url", "{closed}", "--no-tls-verify"],
        {},
        1,
        ["register-model", "cannot reach the Model Registry"],
        lambda s: _pushed_record(s),
    ),
]


def _pushed_record(scene: Scene) -> None:
    digest = "sha256:" + "b" * 64
    record = {
        "version": 1,
        "stages": {},
        "image": {"reference": "127.0.0.1:5000/a/b:1", "digest": digest, "pinned": f"127.0.0.1:5000/a/b@{digest}"},
    }
    (scene.ws / "run.json").write_text(json.dumps(record))


class _Denying(BaseHTTPRequestHandler):
    """A server that refuses everything: a registry demanding credentials, a 404 for anything else."""

    def _answer(self) -> None:
        if self.path.startswith("/v2"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="denying"')
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def denying_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Denying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _snapshot(root: Path, skip: Path | None) -> dict[str, str]:
    """Every path under root with its content hash and mtime (the workspace lock file aside)."""
    state = {}
    for path in sorted(root.rglob("*")):
        if (skip is not None and (path == skip or skip in path.parents)) or path.name == ".modelcar.lock":
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + f":{path.stat().st_mtime_ns}"
        else:
            state[rel] = "dir"
    return state


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, hub: Hub, oci_registry: Registry, denying_server: str) -> None:
    closed = free_port()
    scene = Scene(
        tmp_path,
        {
            "hub": hub.endpoint,
            "closed": f"http://127.0.0.1:{closed}",
            "closed_host": f"127.0.0.1:{closed}",
            "registry": oci_registry.host,
            "denying": denying_server,
            "denying_url": f"http://{denying_server}",
        },
    )
    write_model_dir(scene.model)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("must not change")
    assert run_cli("cleanup", env=clean_env(MODELCAR_WORKSPACE=str(scene.ws))).returncode == 0
    if case.setup:
        case.setup(scene)
    env = clean_env(MODELCAR_WORKSPACE=str(scene.ws), HF_HOME=str(tmp_path / "outside" / "hf"), **FAST_RETRIES)
    env.update({k: _fmt(v, scene) for k, v in case.env.items()})
    args = [_fmt(a, scene) for a in case.args]
    hf_home = tmp_path / "outside" / "hf"
    before_outside = _snapshot(tmp_path, scene.ws)
    before_ws = _snapshot(scene.ws, None)

    result = run_cli(*args, env=env, timeout=120)

    assert result.returncode == case.code, result.output
    for fragment in case.says:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert "Traceback" not in result.output
    for secret in (MODEL_REGISTRY_TOKEN, REGISTRY_PASSWORD):
        assert secret not in result.output
    after_outside = {k: v for k, v in _snapshot(tmp_path, scene.ws).items() if not k.startswith("outside/hf")}
    assert after_outside == {k: v for k, v in before_outside.items() if not k.startswith("outside/hf")}
    assert not hf_home.exists() or case.code == 1
    if case.code == 2:
        assert _snapshot(scene.ws, None) == before_ws
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 or case.id == "unknown-option"
