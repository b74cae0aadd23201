"""kill -9 during download-model at several moments, then a rerun completes without hand cleaning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.common import MODELCAR, clean_env, run_cli
from tests.helpers.fake_model import model_files
from tests.helpers.hub import Hub
from tests.helpers.secrets import captured_output

BIG = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def big_repo(hub: Hub) -> tuple[str, dict[str, bytes]]:
    files = model_files({"config.json": '{"a": 1}', "model.safetensors": BIG, "extra.safetensors": BIG // 3})
    hub.create_repo("acme/big-model", files)
    return "acme/big-model", files


def _partial_started(ws: Path) -> bool:
    return (ws / "model.partial").is_dir()


def _bytes_arriving(ws: Path) -> bool:
    cache = ws / "model.partial" / ".cache" / "huggingface" / "download"
    return any(_size(p) > 1024 * 1024 for p in cache.rglob("*.incomplete")) if cache.is_dir() else False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # complete, and renamed, between the listing and the stat
        return 0


def _one_file_done(ws: Path) -> bool:
    return (ws / "model.partial" / "extra.safetensors").is_file() or (
        ws / "model.partial" / "model.safetensors"
    ).is_file()


@pytest.mark.parametrize("moment", [_partial_started, _bytes_arriving, _one_file_done], ids=lambda f: f.__name__)
def test_kill_during_download_then_rerun(hub: Hub, big_repo, tmp_path: Path, moment: Callable[[Path], bool]) -> None:
    repo_id, files = big_repo
    ws = tmp_path / "ws"
    env = clean_env(HF_ENDPOINT=hub.endpoint, MODELCAR_WORKSPACE=str(ws), HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.Popen(
        [str(MODELCAR), "run", "--model", repo_id, "--skip", "build-and-push"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not moment(ws) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the download ended before the moment to kill it came"
    os.kill(proc.pid, signal.SIGKILL)
    captured_output.append(proc.communicate()[0].decode(errors="replace"))
    assert (
        not (ws / "model").exists()
        or json.loads((ws / "run.json").read_text())["stages"]["download-model"]["status"] != "succeeded"
    )
    rerun = run_cli("run", "--model", repo_id, "--skip", "build-and-push,cleanup-workspace", env=env)
    assert rerun.returncode == 0, rerun.output
    got = {p.name: p.read_bytes() for p in (ws / "model").iterdir()}
    assert got == files
    assert not (ws / "model.partial").exists()
    assert json.loads((ws / "run.json").read_text())["stages"]["download-model"]["status"] == "succeeded"
