"""GrowingFile: a file read while the download still writes it (growing_file.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from modelcar.errors import Aborted
from modelcar.growing_file import FileReplaced, GrowingFile
from modelcar.oci.model_dir import Entry


def _entry(path: Path) -> Entry:
    info = path.stat()
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return Entry(path.name, "file", info.st_size, path, stat_key=key)


def _later(delay: float, action: object) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()  # type: ignore[operator]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_read_waits_for_the_bytes_then_settles_as_the_file_read(tmp_path: Path) -> None:
    path = tmp_path / "shard.incomplete"
    out = path.open("wb", buffering=0)
    out.write(b"a" * 100)
    file = GrowingFile.open("shard", path, path.stat().st_ino, 300, threading.Event())
    assert file is not None
    try:
        _later(0.2, lambda: out.write(b"b" * 200))
        started = time.monotonic()
        file.wait_for(300)
        assert time.monotonic() - started >= 0.15
        assert os.pread(file.fd, 300, 0) == b"a" * 100 + b"b" * 200
        out.close()
        final = tmp_path / "shard"
        os.replace(path, final)
        file.complete(_entry(final), "f" * 64)
        entry, sha256, same = file.settle()
        assert (entry.path, sha256, same) == (final, "f" * 64, True)
    finally:
        file.close()


def test_a_file_started_again_is_not_the_file_read(tmp_path: Path) -> None:
    path = tmp_path / "shard.incomplete"
    path.write_bytes(b"wrong")
    file = GrowingFile.open("shard", path, path.stat().st_ino, 10, threading.Event())
    assert file is not None
    try:
        path.unlink()  # what hub_transfer does when the server ignored the Range
        path.write_bytes(b"0123456789")
        assert GrowingFile.open("shard", path, path.stat().st_ino + 1, 10, threading.Event()) is None
        _later(0.1, lambda: file.complete(_entry(path), "e" * 64))
        with pytest.raises(FileReplaced):
            file.wait_for(10)  # the file held open will never have those bytes
        assert file.settle()[2] is False
    finally:
        file.close()


def test_a_wait_ends_when_the_build_stops_or_the_download_fails(tmp_path: Path) -> None:
    path = tmp_path / "shard.incomplete"
    path.write_bytes(b"x")
    abort = threading.Event()
    stopped = GrowingFile.open("shard", path, path.stat().st_ino, 10, abort)
    failing = GrowingFile.open("shard", path, path.stat().st_ino, 10, threading.Event())
    assert stopped is not None and failing is not None
    try:
        _later(0.1, abort.set)
        with pytest.raises(Aborted):
            stopped.wait_for(10)
        _later(0.1, lambda: failing.fail(RuntimeError("download-model failed: 403")))
        with pytest.raises(RuntimeError, match="403"):
            failing.settle()
    finally:
        stopped.close()
        failing.close()
