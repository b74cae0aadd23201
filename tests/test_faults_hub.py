"""download-model under injected faults between the huggingface_hub client and the Hub (olah):
5xx bursts, 429 with Retry-After, reset connections. The files must arrive intact every time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.common import clean_env, retry_env, run_cli
from tests.helpers.fake_model import fake_model_files
from tests.helpers.fault_proxy import HttpFaultProxy, ProxyRequest, Reply, TcpFaultProxy
from tests.helpers.hub import Hub


@pytest.fixture(scope="module")
def repo(hub: Hub) -> tuple[str, dict[str, bytes]]:
    files = fake_model_files(seed=7)
    hub.create_repo("acme/faulty-hub", files)
    return "acme/faulty-hub", files


def download_through(endpoint: str, repo_id: str, tmp_path: Path) -> tuple[int, str, Path]:
    ws = tmp_path / "ws"
    env = clean_env(HF_ENDPOINT=endpoint, MODELCAR_WORKSPACE=str(ws), HF_HOME=str(tmp_path / "hf"), **retry_env())
    result = run_cli("download", "--model", repo_id, "--allow-patterns", "*", env=env, timeout=180)
    return result.returncode, result.output, ws


def assert_intact(ws: Path, files: dict[str, bytes]) -> None:
    got = {p.relative_to(ws / "model").as_posix(): p.read_bytes() for p in (ws / "model").rglob("*") if p.is_file()}
    assert got == files
    assert json.loads((ws / "run.json").read_text())["stages"]["download-model"]["status"] == "succeeded"


def test_5xx_bursts_on_the_hub_api_are_retried(hub: Hub, repo, tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    def decide(request: ProxyRequest) -> Reply | None:
        seen[request.path] = seen.get(request.path, 0) + 1
        if request.path.startswith("/api/") and seen[request.path] <= 2:
            return Reply((503, 500)[seen[request.path] - 1], body=b'{"error": "injected"}')
        return None

    with HttpFaultProxy(hub.endpoint.removeprefix("http://"), decide) as proxy:
        code, output, ws = download_through(f"http://{proxy.host}", repo[0], tmp_path)
    assert code == 0, output
    assert len(proxy.injected()) >= 2
    assert_intact(ws, repo[1])


def test_429_retry_after_from_the_hub_is_honoured(hub: Hub, repo, tmp_path: Path) -> None:
    def decide(request: ProxyRequest) -> Reply | None:
        if request.path.startswith("/api/") and request.number == 1:
            return Reply(429, {"Retry-After": "1"}, b'{"error": "slow down"}')
        return None

    with HttpFaultProxy(hub.endpoint.removeprefix("http://"), decide) as proxy:
        code, output, ws = download_through(f"http://{proxy.host}", repo[0], tmp_path)
    assert code == 0, output
    first = proxy.injected()[0]
    again = [r for r in proxy.requests() if r.path == first.path and r is not first]
    assert again and again[0].at - first.at >= 0.95
    assert_intact(ws, repo[1])


def test_reset_connections_to_the_hub_are_retried(hub: Hub, repo, tmp_path: Path) -> None:
    with TcpFaultProxy(hub.endpoint.removeprefix("http://"), reset_first=3) as proxy:
        code, output, ws = download_through(f"http://{proxy.host}", repo[0], tmp_path)
    assert code == 0, output
    assert proxy.reset_count == 3
    assert_intact(ws, repo[1])
