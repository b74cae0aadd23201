"""A Hugging Face Hub on loopback: olah serving local git repositories offline.

olah runs from its own virtual environment (.tools/olah-venv, made by `make test`), started on a
free 127.0.0.1 port and stopped by its pid. Tests create repositories with `hub.create_repo`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .common import REPO_ROOT, free_port

OLAH = REPO_ROOT / ".tools" / "olah-venv" / "bin" / "olah-cli"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "modelcar tests",
    "GIT_AUTHOR_EMAIL": "tests@modelcar.invalid",
    "GIT_COMMITTER_NAME": "modelcar tests",
    "GIT_COMMITTER_EMAIL": "tests@modelcar.invalid",
}


@dataclass
class Hub:
    endpoint: str
    mirrors: Path
    pid: int
    repos: dict[str, Path] = field(default_factory=dict)

    def create_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Makes repo_id a git repository on branch main with the files; returns the commit sha."""
        path = self.mirrors / "models" / repo_id
        path.mkdir(parents=True)
        self._git(path, "init", "-q", "-b", "main")
        self.repos[repo_id] = path
        return self.commit(repo_id, files, "initial files")

    def commit(self, repo_id: str, files: dict[str, bytes], message: str = "update") -> str:
        path = self.repos[repo_id]
        for name, data in files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self._git(path, "add", "-A")
        self._git(path, "commit", "-q", "-m", message)
        return self._git(path, "rev-parse", "HEAD").strip()

    def tag(self, repo_id: str, name: str) -> None:
        self._git(self.repos[repo_id], "tag", name)

    @staticmethod
    def _git(path: Path, *args: str) -> str:
        env = {**os.environ, **GIT_ENV}
        return subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not OLAH.exists():
        pytest.fail(f"{OLAH} is missing: run `make test`, which installs olah")
    root = tmp_path_factory.mktemp("olah")
    mirrors = root / "mirrors"
    mirrors.mkdir()
    port = free_port()
    config = root / "olah.toml"
    config.write_text(
        f"""[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{root / "repos"}"
mirrors-path = ["{mirrors}"]
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"

[accessibility]
offline = true
"""
    )
    log = (root / "olah.log").open("wb")
    proc = subprocess.Popen([str(OLAH), "-c", str(config)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(endpoint, proc, root / "olah.log")
        yield Hub(endpoint, mirrors, proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"olah exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{endpoint}/api/models/none/none/revision/main", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"olah did not start within {timeout} s: {log.read_text()[-2000:]}")
