"""The OCI image layout (oci/layout.py) in-process: a second writer's init() sweeps a dead writer's
temporary blob, never one whose writer is alive. The kill -9 tests whose reruns rely on that sweep
are in test_crash_push.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from modelcar.oci.layout import Layout

from .helpers.image_check import temp_files


def test_only_a_dead_writers_temporary_blob_is_swept(tmp_path: Path) -> None:
    """A temporary blob whose writer is alive (it holds the lock) stays; an unlocked one goes."""
    Layout(tmp_path).init()
    dead = tmp_path / "blobs" / "sha256" / ".upload-dead.tmp"
    dead.write_bytes(b"half a blob")
    halfway, finish = threading.Event(), threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b"first half, "
        halfway.set()
        finish.wait(30)
        yield b"second half"

    written: list[str] = []
    writer = threading.Thread(target=lambda: written.append(Layout(tmp_path).write_stream(chunks())[0]))
    writer.start()
    assert halfway.wait(30)
    Layout(tmp_path).init()  # what a second run writing to the layout does first
    assert not dead.exists()
    live = list((tmp_path / "blobs" / "sha256").glob(".upload-*.tmp"))
    assert len(live) == 1
    finish.set()
    writer.join(30)
    assert Layout(tmp_path).read_blob(written[0]) == b"first half, second half"
    assert temp_files(tmp_path) == []
