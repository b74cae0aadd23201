"""The fast Hub stand-in (tests/helpers/fast_hub.py) against the real huggingface_hub client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from tests.helpers.fake_model import model_files
from tests.helpers.fast_hub import LFS_THRESHOLD, FastHub

FILES = model_files(
    {
        "config.json": '{"model_type": "llama"}',
        "tokenizer/vocab.txt": "a\nb\nc\n",
        "model-00001-of-00002.safetensors": 2 * LFS_THRESHOLD + 12345,
        "model-00002-of-00002.safetensors": 3 << 20,
    }
)


@pytest.fixture
def fast_hub(tmp_path: Path) -> Iterator[FastHub]:
    hub = FastHub(tmp_path / "hub-storage").start()
    yield hub
    hub.stop()


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def test_snapshot_download_is_byte_identical(fast_hub: FastHub, tmp_path: Path) -> None:
    sha = fast_hub.create_repo("acme/tiny", FILES)
    out = snapshot_download("acme/tiny", local_dir=tmp_path / "out", endpoint=fast_hub.endpoint, token=False)
    assert _tree(Path(out)) == FILES
    info = HfApi(endpoint=fast_hub.endpoint, token=False).model_info("acme/tiny", files_metadata=True)
    assert info.sha == sha
    assert {s.rfilename: s.size for s in info.siblings or []} == {k: len(v) for k, v in FILES.items()}
    tree = HfApi(endpoint=fast_hub.endpoint, token=False).list_repo_tree("acme/tiny", recursive=True)
    assert sorted(t.path for t in tree if t.__class__.__name__ == "RepoFile") == sorted(FILES)


def test_a_download_broken_mid_body_resumes_with_a_range(fast_hub: FastHub, tmp_path: Path) -> None:
    fast_hub.create_repo("acme/tiny", FILES)
    name = "model-00001-of-00002.safetensors"
    data = FILES[name]
    fast_hub.cut(name, 15 << 20)
    path = hf_hub_download("acme/tiny", name, local_dir=tmp_path / "out", endpoint=fast_hub.endpoint, token=False)
    assert Path(path).read_bytes() == data
    gets = [r for r in fast_hub.requests if r[0] == "GET" and r[1].endswith(name)]
    assert len(gets) == 2 and gets[0][2] is None, gets
    resumed_at = int(str(gets[1][2]).removeprefix("bytes=").rstrip("-"))  # where the client's last whole chunk ended
    assert 0 < resumed_at <= 15 << 20
    assert fast_hub.served[name] == (15 << 20) + len(data) - resumed_at


def test_revisions_by_sha_branch_and_tag(fast_hub: FastHub, tmp_path: Path) -> None:
    first = fast_hub.create_repo("acme/tiny", {"config.json": b"1"})
    fast_hub.tag("acme/tiny", "v1")
    second = fast_hub.commit("acme/tiny", {"config.json": b"2", "extra.txt": b"x"})
    fast_hub.branch("acme/tiny", "dev", first)
    api = HfApi(endpoint=fast_hub.endpoint, token=False)
    assert api.model_info("acme/tiny").sha == second
    assert api.model_info("acme/tiny", revision="v1").sha == first
    for revision, want in ((first, b"1"), ("v1", b"1"), ("dev", b"1"), ("main", b"2"), (second, b"2")):
        out = snapshot_download(
            "acme/tiny", revision=revision, local_dir=tmp_path / revision, endpoint=fast_hub.endpoint, token=False
        )
        assert (Path(out) / "config.json").read_bytes() == want
    refs = api.list_repo_refs("acme/tiny")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second, "dev": first}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": first}


def test_missing_repo_revision_and_file_are_the_clients_errors(fast_hub: FastHub, tmp_path: Path) -> None:
    fast_hub.create_repo("acme/tiny", {"config.json": b"1"})
    api = HfApi(endpoint=fast_hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/none")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny", revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny", "missing.bin", local_dir=tmp_path, endpoint=fast_hub.endpoint, token=False)


def test_bandwidth_cap_and_hold(tmp_path: Path) -> None:
    import threading
    import time

    hub = FastHub(tmp_path / "s", bandwidth=20e6).start()
    try:
        hub.create_repo("acme/tiny", {"w.bin": os.urandom(4 << 20)})
        released = threading.Event()
        hub.hold("w.bin", released.is_set)
        threading.Timer(0.3, released.set).start()
        started = time.monotonic()
        hf_hub_download("acme/tiny", "w.bin", local_dir=tmp_path / "o", endpoint=hub.endpoint, token=False)
        took = time.monotonic() - started
        assert took >= 0.3 + (4 << 20) / 20e6 * 0.8
    finally:
        hub.stop()
