"""Fixtures every test area uses: free loopback ports, the modelcar CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcar.retry import ATTEMPTS_ENV, BACKOFF_ENV

from .fake_registry import FAST
from .secrets import captured_output

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELCAR = Path(sys.executable).with_name("modelcar")
SESSION_CACHE = Path(tempfile.gettempdir()) / f"modelcar-test-cache-{os.getpid()}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any pipeline parameter the developer may have set."""
    from modelcar.param_table import ENV_NAMES, SECRET_ENV_NAMES

    env = {k: v for k, v in os.environ.items() if k not in set(ENV_NAMES.values()) | set(SECRET_ENV_NAMES)}
    env.pop("HF_ENDPOINT", None)
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    # A cache of this test session's own (base-image verdicts, the Hub client's): none left over
    # from an earlier session, and none written into the developer's home.
    env["XDG_CACHE_HOME"] = str(SESSION_CACHE)
    env.update(extra)
    return env


def retry_env(attempts: int = FAST.attempts, backoff: float = FAST.base_delay) -> dict[str, str]:
    """The tests' fast retry setting (fake_registry.FAST) as a modelcar process reads it
    (MODELCAR_HTTP_RETRIES, MODELCAR_HTTP_BACKOFF); a test that needs its own number of tries or
    longer waits gives them."""
    return {ATTEMPTS_ENV: str(attempts), BACKOFF_ENV: str(backoff)}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600) -> CliResult:
    """Runs the installed `modelcar` console script, as a user would."""
    proc = subprocess.run(
        [str(MODELCAR), *args],
        env=env if env is not None else clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    captured_output.append(proc.stdout + proc.stderr)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    yield clean_env()


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Polls `condition` every 10 ms; False when it did not hold within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="session", autouse=True)
def session_cache() -> Iterator[Path]:
    """The session's cache directory (clean_env's XDG_CACHE_HOME), removed at the end."""
    yield SESSION_CACHE
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)
