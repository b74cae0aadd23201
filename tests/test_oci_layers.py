"""Tar layers (oci/layers.py): headers, reproducibility, layering, annotations, offsets, short reads,
files over 8 GiB.

The scan of the model directory they are planned from (unsafe links, special files) is tested in
test_oci_model_dir.py; a layer as parts (what the sendfile path sends) in test_oci_sendfile.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from modelcar.oci.layers import LARGE_FILE, FileRange, plan_layers
from modelcar.oci.model_dir import ModelDirError, scan_model

from .helpers.fake_model import write_model_dir


def _stream_bytes(plan) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(plan.stream().chunks())


def _model(tmp_path: Path) -> Path:
    files = {
        "config.json": '{"a": 1}',
        "README.md": "# card\n",
        "sub/config.json": '{"sub": true}',
        "sub/deep/t.txt": "deep",
        "shard-1.safetensors": LARGE_FILE + 1000,
        "shard-2.safetensors": LARGE_FILE,
        "ünïcode-" + "n" * 120 + ".json": "{}",
    }
    model = write_model_dir(tmp_path / "model", files, links={"alias.json": "config.json"})
    (model / "empty").mkdir()
    os.chmod(model / "config.json", 0o600)
    return model


def test_layering_one_layer_per_file_links_first_card_last(tmp_path: Path) -> None:
    plans = plan_layers(scan_model(_model(tmp_path)))
    titles = [p.title for p in plans]
    unicode_name = "ünïcode-" + "n" * 120 + ".json"
    assert titles == [
        "links and empty directories",
        "config.json",
        "sub/config.json",
        "sub/deep/t.txt",
        unicode_name,
        "shard-1.safetensors",
        "shard-2.safetensors",
        "README.md",
    ]
    assert {e.name for e in plans[0].files} == {"alias.json"}
    assert "empty" in {e.name for e in plans[0].entries}
    assert [e.name for e in plans[-1].files] == ["README.md"]
    assert all(p.content == "file" and [e.name for e in p.files] == [p.content_path] for p in plans[1:])


def test_many_files_share_directory_layers_by_top_level_directory(tmp_path: Path) -> None:
    plans = plan_layers(scan_model(_model(tmp_path)), max_file_layers=3)
    titles = [p.title for p in plans]
    assert titles == ["small files", "sub/", "shard-1.safetensors", "shard-2.safetensors", "README.md"]
    top, sub = plans[0], plans[1]
    assert (top.content, top.content_path) == ("directory", "")
    assert {e.name for e in top.files} >= {"config.json", "alias.json"}
    assert "empty" in {e.name for e in top.entries}
    assert (sub.content, sub.content_path) == ("directory", "sub")
    assert {e.name for e in sub.files} == {"sub/config.json", "sub/deep/t.txt"}
    assert sub.annotations() == {
        "olot.layer.content.type": "directory",
        "olot.layer.content.inlayerpath": "/models/sub",
        "olot.layer.content.name": "sub",
    }
    assert top.annotations()["olot.layer.content.inlayerpath"] == "/models"


def test_file_annotations_carry_the_files_own_sha256_hashed_while_streaming(tmp_path: Path) -> None:
    model = _model(tmp_path)
    for plan in plan_layers(scan_model(model)):
        data = _stream_bytes(plan)
        assert len(data) == plan.size
        assert plan.missing_digests() == []
        if not plan.content:
            assert plan.annotations() == {}
            continue
        name = plan.content_path
        assert plan.annotations() == {
            "olot.layer.content.digest": "sha256:" + hashlib.sha256((model / name).read_bytes()).hexdigest(),
            "olot.layer.content.type": "file",
            "olot.layer.content.inlayerpath": f"/models/{name}",
            "olot.layer.content.name": name.rsplit("/", 1)[-1],
            "io.modelcar.layer.content.size": str((model / name).stat().st_size),
        }


def test_a_file_read_out_of_order_is_not_taken_for_hashed(tmp_path: Path) -> None:
    plan = next(p for p in plan_layers(scan_model(_model(tmp_path))) if p.title == "shard-1.safetensors")
    stream = plan.stream()
    b"".join(stream.chunks(plan.size // 2))  # a resumed upload: only the second half is read
    assert [e.name for e in plan.missing_digests()] == ["shard-1.safetensors"]
    b"".join(stream.chunks(0))  # then from the start, and parts again (a retry)
    b"".join(stream.chunks(1000))
    assert plan.missing_digests() == []
    expected = hashlib.sha256((tmp_path / "model" / "shard-1.safetensors").read_bytes()).hexdigest()
    assert plan.annotations()["olot.layer.content.digest"] == "sha256:" + expected


def test_headers_are_fixed_and_tar_reads_every_layer(tmp_path: Path) -> None:
    model = _model(tmp_path)
    for plan in plan_layers(scan_model(model)):
        data = _stream_bytes(plan)
        assert len(data) == plan.size
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert names == sorted(names, key=lambda n: n.split("/"))
            for member in members:
                assert member.name == "models" or member.name.startswith("models/")
                assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (0, 0, "", "", 0)
                if member.isdir():
                    assert member.mode == 0o755
                elif member.isfile():
                    assert member.mode == 0o644
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    assert extracted.read() == (model / member.name[len("models/") :]).read_bytes()
                else:
                    assert member.issym() and member.linkname == "config.json"


def test_same_files_same_bytes_whatever_the_times_and_owners(tmp_path: Path) -> None:
    model = _model(tmp_path)
    first = [hashlib.sha256(_stream_bytes(p)).hexdigest() for p in plan_layers(scan_model(model))]
    for path in model.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_700_000_000, 1_700_000_000))
    os.chmod(model / "sub" / "config.json", 0o600)
    second = [hashlib.sha256(_stream_bytes(p)).hexdigest() for p in plan_layers(scan_model(model))]
    assert first == second


def test_stream_from_any_offset_is_the_tail(tmp_path: Path) -> None:
    plans = plan_layers(scan_model(_model(tmp_path)))
    plan = plans[0]
    whole = _stream_bytes(plan)
    for offset in (0, 1, 511, 512, 513, 1536, len(whole) - 1025, len(whole) - 1):
        assert b"".join(plan.stream().chunks(offset)) == whole[offset:]
    big = plans[1]
    whole = _stream_bytes(big)
    for offset in (700, LARGE_FILE // 2, len(whole) - 3):
        assert b"".join(big.stream().chunks(offset)) == whole[offset:]


def test_a_short_read_is_read_on_not_taken_for_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(100_000))
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: real_pread(fd, min(n, 7_000), offset))
    assert FileRange(path, 10, 90_000, "f").read() == path.read_bytes()[10:90_010]
    with pytest.raises(ModelDirError, match="changed while"):
        FileRange(path, 50_000, 60_000, "f").read()  # past the end


def test_sparse_file_over_8_gib_gets_a_valid_header(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    size = 9 * (1 << 30) + 123
    with open(model / "huge.safetensors", "wb") as handle:
        handle.truncate(size)
    (plan,) = plan_layers(scan_model(model))
    assert plan.size == 512 + 1536 + size + (512 - size % 512) + 1024
    # The headers up to the file's bytes: the directory entry, then PAX + ustar for the file.
    head = next(plan.stream().chunks())
    header_end = len(plan.headers[""]) + len(plan.headers["huge.safetensors"])
    with tarfile.open(fileobj=io.BytesIO(head[:header_end] + b"\0" * 1024), mode="r:") as tar:
        first = tar.next()
        second = tar.next()
    assert first is not None and first.isdir()
    assert second is not None and second.name == "models/huge.safetensors" and second.size == size
    assert b"size=" + str(size).encode() in plan.headers["huge.safetensors"]
