"""Our own transfer of file bodies from the Hub (sources/hub_transfer.py), against the fast Hub stand-in."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcar.retry import RetryPolicy
from modelcar.sources import hub, hub_transfer

from .helpers.common import retry_env
from .helpers.fast_hub import LFS_THRESHOLD, FastHub

BIG = os.urandom(LFS_THRESHOLD + 4_000_003)


@pytest.fixture
def fast_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FastHub]:
    server = FastHub(tmp_path / "hub").start()
    server.create_repo("acme/m", {"w.safetensors": BIG, "sub/config.json": b"{}"})
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.stop()


def _download(root: Path) -> dict[str, str | None]:
    resolved = hub.resolve("acme/m", "main", None)
    seen: dict[str, str | None] = {}
    hub.download_files(resolved, sorted(resolved.files), root, None, False, lambda n, p, d: seen.update({n: d}))
    return seen


def test_files_arrive_whole_and_hashed_on_the_way(fast_hub: FastHub, tmp_path: Path) -> None:
    seen = _download(tmp_path / "out")
    assert (tmp_path / "out" / "w.safetensors").read_bytes() == BIG
    assert (tmp_path / "out" / "sub" / "config.json").read_bytes() == b"{}"
    assert seen["w.safetensors"] == hashlib.sha256(BIG).hexdigest()
    assert not list((tmp_path / "out" / ".cache").rglob("*.incomplete"))


def test_what_a_killed_run_left_is_kept_and_the_rest_asked_for(fast_hub: FastHub, tmp_path: Path) -> None:
    root = tmp_path / "out"
    left = hub_transfer.incomplete_path(root, "w.safetensors")
    left.parent.mkdir(parents=True)
    left.write_bytes(BIG[:7_000_000])
    _download(root)
    assert (root / "w.safetensors").read_bytes() == BIG
    gets = [r for r in fast_hub.requests if r[0] == "GET" and r[1].endswith("w.safetensors")]
    assert [r[2] for r in gets] == ["bytes=7000000-"]
    assert fast_hub.served["w.safetensors"] == len(BIG) - 7_000_000


def test_a_connection_cut_mid_body_resumes(fast_hub: FastHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in retry_env().items():
        monkeypatch.setenv(name, value)
    fast_hub.cut("w.safetensors", 3_000_000)
    _download(tmp_path / "out")
    assert (tmp_path / "out" / "w.safetensors").read_bytes() == BIG
    gets = [r[2] for r in fast_hub.requests if r[0] == "GET" and r[1].endswith("w.safetensors")]
    assert gets == [None, "bytes=3000000-"]


def test_a_body_that_does_not_match_the_listed_sha256_is_refused(fast_hub: FastHub, tmp_path: Path) -> None:
    commit = fast_hub.repos["acme/m"].resolve("main")
    assert commit is not None
    commit.files["w.safetensors"].write_bytes(BIG[:-1] + b"\0")  # same size, other bytes
    with pytest.raises(hub_transfer.TransferError, match=r"not the .* it lists"):
        _download(tmp_path / "out")
    assert not (tmp_path / "out" / "w.safetensors").exists()


def test_an_error_answer_is_named(fast_hub: FastHub, tmp_path: Path) -> None:
    fast_hub.fail("w.safetensors", 403)
    with pytest.raises(hub_transfer.TransferError, match="403"):
        hub_transfer.fetch(
            f"{fast_hub.endpoint}/acme/m/resolve/main/w.safetensors",
            {},
            tmp_path,
            "w.safetensors",
            len(BIG),
            None,
            policy=RetryPolicy(attempts=1),
        )
