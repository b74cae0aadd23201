"""The download's progress record, `<workspace>/download.progress`: what another process may push.

download-model rewrites it atomically (temp file, rename) whenever a file is complete on disk or
a large file starts to arrive, and every HEARTBEAT_S seconds while it runs; build-and-push
follows it (readyfiles.py), in the same process (`modelcar run`) or in another pod on the same
volume (Tekton).

    {"version": 1, "source": {...}, "state": "pending" | "running" | "done" | "failed",
     "error": "...",                      # when failed
     "beat": 17,                          # raised by every write: a follower sees the writer live
     "expected": [{"path", "size"}] | null,  # every file the download will hold (null: not known yet)
     "complete": [{"path", "size", "sha256", "ino", "mtime_ns"}],
     "arriving": [{"path", "size", "file", "ino"}]}  # large files being written

A file is listed in `complete` only once it has its final name (`model.partial/<path>` while
the download runs, `model/<path>` once it is done) and its sha256 is known. A large file is
listed in `arriving` while its body is written into `file` (relative to the workspace), from the
first byte on and only ever appended to: a follower may read it as it grows (growing_file.py).
A file started again is a new file (new inode), listed again. A follower judges liveness by
`beat` changing, on its own clock, so the writer's clock does not matter.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from . import atomic
from .jsonfile import read_object

RECORD_NAME = "download.progress"
COMPRESS_RECORD_NAME = "compress.progress"  # a StageBeat while compress-model runs
HEARTBEAT_S = 2.0
VERSION = 1

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
# The Tekton PipelineRun's uid, given to download-model and build-and-push: a follower takes only
# a record of its own run, never one an earlier run left (with cleanup-workspace skipped).
RUN_ID_ENV = "MODELCAR_RUN_ID"


def record_path(workspace_root: Path) -> Path:
    return workspace_root / RECORD_NAME


def read(path: Path) -> dict[str, Any] | None:
    """The record, or None when there is none (or it cannot be read: a follower tries again)."""
    if not path.is_file():
        return None
    try:
        data = read_object(path, ValueError, "the download record")
    except (OSError, ValueError):
        return None
    run = os.environ.get(RUN_ID_ENV)
    if run and data.get("run") != run:
        return None  # another run's
    return data if data.get("version") == VERSION else None


def mark_pending(path: Path) -> None:
    """Before a download starts in this process: an old record's end (done, failed) no longer
    stands, but what it lists as complete may be kept by the download that follows."""
    data = read(path) or {"version": VERSION, "complete": [], "expected": None, "source": None}
    data.update(state=PENDING, error=None, arriving=[], beat=int(data.get("beat") or 0) + 1)
    atomic.write_json(path, data)


class DownloadRecorder:
    """The writer side: one per download, thread-safe, with a heartbeat thread while running."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self.data: dict[str, Any] = {
            "version": VERSION,
            "source": None,
            "state": RUNNING,
            "error": None,
            "beat": 0,
            "expected": None,
            "complete": [],
            "arriving": [],
            "run": os.environ.get(RUN_ID_ENV) or None,
        }
        self._old = read(path)  # an earlier run's, for what it has completed
        if self._old is not None:
            self.data["beat"] = int(self._old.get("beat") or 0)

    def reusable(self, directory: Path, source: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Files an earlier record of the same source lists as complete and that are unchanged in
        `directory` (same size, inode and mtime): their sha256 need not be computed again."""
        old = self._old
        if old is None or old.get("source") != source:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for item in old.get("complete") or []:
            try:
                info = (directory / str(item["path"])).lstat()
                if (info.st_size, info.st_ino, info.st_mtime_ns) == (item["size"], item["ino"], item["mtime_ns"]):
                    out[str(item["path"])] = dict(item)
            except (OSError, KeyError, TypeError):
                continue
        return out

    def expect(self, source: dict[str, Any], expected: dict[str, int] | None) -> None:
        """What is downloaded and the files it will hold, once known (None: sizes unknown, so a
        follower waits for the end)."""
        with self._lock:
            self.data["source"] = source
            self.data["expected"] = (
                [{"path": n, "size": s} for n, s in sorted(expected.items())] if expected is not None else None
            )
        self._write()

    def start(self) -> None:
        self._write()
        self._beat_thread = threading.Thread(target=self._beat, name="modelcar-download-beat", daemon=True)
        self._beat_thread.start()

    def arriving(self, name: str, path: Path, size: int) -> None:
        """The body of `name` (`size` bytes) is being written into `path`, from its first byte on."""
        item = {
            "path": name,
            "size": size,
            "file": os.path.relpath(path, self.path.parent),
            "ino": path.stat().st_ino,
        }
        with self._lock:
            self.data["arriving"] = [a for a in self.data["arriving"] if a["path"] != name] + [item]
        self._write()

    def complete(self, name: str, path: Path, sha256: str) -> None:
        info = path.lstat()
        item = {"path": name, "size": info.st_size, "sha256": sha256, "ino": info.st_ino, "mtime_ns": info.st_mtime_ns}
        with self._lock:
            self.data["complete"] = [c for c in self.data["complete"] if c["path"] != name] + [item]
            self.data["arriving"] = [a for a in self.data["arriving"] if a["path"] != name]
        self._write()

    def done(self) -> None:
        self._finish(DONE, None)

    def failed(self, message: str) -> None:
        self._finish(FAILED, message)

    def completed(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted((dict(c) for c in self.data["complete"]), key=lambda c: c["path"])

    def _finish(self, state: str, error: str | None) -> None:
        self._stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join()
        with self._lock:
            self.data.update(state=state, error=error)
        self._write()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def _write(self) -> None:
        with self._lock:
            self.data["beat"] += 1
            data = dict(self.data)
            data["complete"] = list(data["complete"])
            data["arriving"] = list(data["arriving"])
            try:
                atomic.write_json(self.path, data)
            except FileNotFoundError:  # the workspace was emptied under us: nothing to tell
                if not self.path.parent.exists():
                    return
                raise


class StageBeat:
    """A small record of a long stage (compress-model) that a process waiting for it reads:
    `{"version", "state": running | done | failed, "error", "beat"}`, rewritten every HEARTBEAT_S."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {
            "version": VERSION,
            "state": RUNNING,
            "error": None,
            "beat": 0,
            "run": os.environ.get(RUN_ID_ENV) or None,
        }

    def __enter__(self) -> StageBeat:
        self._write()
        self._thread = threading.Thread(target=self._run, name="modelcar-stage-beat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self.data.update(state=DONE if error is None else FAILED, error=None if error is None else str(error))
        self._write()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def _write(self) -> None:
        with self._lock:
            self.data["beat"] += 1
            atomic.write_json(self.path, dict(self.data))
