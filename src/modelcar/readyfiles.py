"""Where the OCI builder takes the model's files from, as they become ready.

The builder plans its layers from `entries()` (every entry the model will hold, sizes known) and
pushes a layer once `arrivals()` has yielded all of its files. Two sources:

- CompleteDirectory: a model directory already complete (`modelcar build-push` as always): every
  file has arrived before the first layer is planned.
- FollowDownload: a download still running, followed through its progress record in the
  workspace (download_record.py), in this process or another pod on the same volume. A large
  file is given as soon as the record lists it arriving, its bytes read as they come
  (growing_file.py); the others once complete. The follow ends when every file is complete. A download
  that fails, or whose writer stops beating for `stale_s`, ends the follow with an error that
  names download-model; so does a record that does not appear within `appear_s`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from . import download_record as dr
from .errors import ModelcarError
from .growing_file import GrowingFile
from .oci.model_dir import Entry, scan_model

POLL_S = 0.05
DEFAULT_STALE_S = 60.0
DEFAULT_APPEAR_S = 600.0


class DownloadFailed(ModelcarError):
    """The download this build follows failed, vanished or never started."""


class ReadyFiles(Protocol):
    def entries(self) -> list[Entry]:
        """Every entry of the model (files with their final sizes), for planning the layers."""
        ...

    def arrivals(self, abort: threading.Event) -> Iterator[Entry]:
        """Each regular file once it is complete on disk (with its path), or while it still arrives
        (with `growing`: read it as it grows); ends when every file is complete."""
        ...

    def known_digests(self) -> dict[str, str]:
        """path -> sha256:... of files known to be current (saves hashing them again)."""
        ...

    def pushed(self, entries: list[Entry]) -> None:
        """The files' layer is in the destination."""
        ...

    def wait_done(self, abort: threading.Event) -> None:
        """Returns once the source is finished (no file will change place any more)."""
        ...


class CompleteDirectory:
    """A finished model directory: everything is ready at once, largest files first."""

    def __init__(self, model_dir: Path, known: dict[str, str] | None = None) -> None:
        self.model_dir = model_dir
        self._known = known or {}
        self._entries: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is None:
            self._entries = scan_model(self.model_dir)
        return self._entries

    def arrivals(self, abort: threading.Event) -> Iterator[Entry]:
        yield from sorted((e for e in self.entries() if e.kind == "file"), key=lambda e: -e.size)

    def known_digests(self) -> dict[str, str]:
        return self._known

    def pushed(self, entries: list[Entry]) -> None:
        pass

    def wait_done(self, abort: threading.Event) -> None:
        pass


class FollowDownload:
    """The files of a download still running, as its record lists them complete.

    While the download runs they are in `<workspace>/model.partial`; once it is done, in
    `<workspace>/model` (the directory is renamed, the files stay the same).
    With `delete_pushed`, a file is removed from the workspace once its layer is in the destination.
    """

    def __init__(
        self,
        workspace_root: Path,
        stale_s: float | None = None,
        appear_s: float | None = None,
        delete_pushed: bool = False,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.record_path = dr.record_path(workspace_root)
        self.model_dir = workspace_root / "model"
        self.partial_dir = workspace_root / "model.partial"
        self.stale_s = _env_seconds("MODELCAR_DOWNLOAD_STALE_S", DEFAULT_STALE_S) if stale_s is None else stale_s
        self.appear_s = _env_seconds("MODELCAR_DOWNLOAD_APPEAR_S", DEFAULT_APPEAR_S) if appear_s is None else appear_s
        self.delete_pushed = delete_pushed
        self.on_record = on_record  # sees every record read (progress)
        self._complete: CompleteDirectory | None = None  # a download that ended before planning
        self._entries: list[Entry] | None = None
        self._known: dict[str, str] = {}
        self._beat: Any = None
        self._beat_seen = 0.0
        self.source: dict[str, Any] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is not None:
            return self._entries
        started = time.monotonic()
        while True:
            data = self._read(started, abort=None)
            if data is not None and data.get("state") in (dr.RUNNING, dr.DONE) and data.get("expected") is not None:
                self.source = data.get("source")
                self._entries = _planned_entries(data["expected"])
                return self._entries
            if data is not None and data.get("state") == dr.DONE:
                # Done without a list of files up front (a local directory copied): a finished directory.
                self.source = data.get("source")
                self._complete = CompleteDirectory(self.model_dir)
                self._entries = self._complete.entries()
                return self._entries
            time.sleep(POLL_S)

    def arrivals(self, abort: threading.Event) -> Iterator[Entry]:
        if self._complete is not None:
            yield from self._complete.arrivals(abort)
            return
        expected = {e.name: e.size for e in self.entries() if e.kind == "file"}
        given: set[str] = set()
        growing: dict[str, GrowingFile] = {}  # given while still downloading, not yet complete
        started = time.monotonic()
        try:
            while True:
                if abort.is_set():
                    return
                data = self._read(started, abort)
                if data is None:
                    time.sleep(POLL_S)
                    continue
                for item in data.get("complete") or []:
                    name = str(item.get("path"))
                    if name not in expected or (name in given and name not in growing):
                        continue
                    if item.get("size") != expected[name]:
                        raise DownloadFailed(
                            f"download-model wrote {name} with {item.get('size')} bytes where the Hub listed "
                            f"{expected[name]}; run download-model again"
                        )
                    entry = self._ready_entry(name, item)
                    if entry is None:
                        continue
                    if item.get("sha256"):
                        self._known[name] = "sha256:" + str(item["sha256"])
                    if name in growing:
                        growing.pop(name).complete(entry, str(item.get("sha256") or ""))
                        continue
                    given.add(name)
                    yield entry
                if data.get("state") == dr.RUNNING:
                    for entry in self._growing_entries(data, expected, given, abort):
                        given.add(entry.name)
                        assert entry.growing is not None
                        growing[entry.name] = entry.growing
                        yield entry
                if len(given) == len(expected) and not growing:
                    return
                if data.get("state") == dr.DONE:
                    missing = sorted((set(expected) - given) | set(growing))
                    raise DownloadFailed(
                        f"download-model finished without {', '.join(missing[:5])}; run download-model again"
                    )
                time.sleep(POLL_S)
        except BaseException as exc:
            for file in growing.values():
                file.fail(exc)
            raise

    def _growing_entries(
        self, data: dict[str, Any], expected: dict[str, int], given: set[str], abort: threading.Event
    ) -> Iterator[Entry]:
        """The files the record lists as arriving (being written, from their first byte on), held open."""
        for item in data.get("arriving") or []:
            name = str(item.get("path"))
            if name in given or expected.get(name) != item.get("size") or not item.get("file"):
                continue
            path = self.record_path.parent / str(item["file"])
            file = GrowingFile.open(name, path, int(item.get("ino") or -1), expected[name], abort)
            if file is not None:  # else it was renamed or replaced meanwhile: the next read tells
                yield Entry(name, "file", expected[name], path, growing=file)

    def wait_done(self, abort: threading.Event) -> None:
        """Returns once the download is done (the files have their final place); raises if it failed."""
        started = time.monotonic()
        while not abort.is_set():
            data = self._read(started, abort)
            if data is not None and data.get("state") == dr.DONE:
                return
            time.sleep(POLL_S)

    def known_digests(self) -> dict[str, str]:
        return self._known

    def pushed(self, entries: list[Entry]) -> None:
        if not self.delete_pushed:
            return
        for entry in entries:
            for path in (entry.path, entry.alt_path):
                if path is not None:
                    try:
                        path.unlink()
                        break
                    except FileNotFoundError:
                        continue

    def _ready_entry(self, name: str, item: dict[str, Any]) -> Entry | None:
        """The file as the record lists it, found in model.partial or model (same inode, size)."""
        for path, alt in ((self.partial_dir / name, self.model_dir / name), (self.model_dir / name, None)):
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if (info.st_size, info.st_ino) != (item.get("size"), item.get("ino")):
                continue
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            return Entry(name, "file", info.st_size, path, stat_key=key, alt_path=alt)
        return None

    def _read(self, started: float, abort: threading.Event | None) -> dict[str, Any] | None:
        """The record; raises DownloadFailed when it failed, stopped beating or never came."""
        data = dr.read(self.record_path)
        now = time.monotonic()
        if data is None:
            if now - started > self.appear_s:
                raise DownloadFailed(
                    f"no download-model started within {self.appear_s:.0f} s ({self.record_path} did not "
                    "appear); check that download-model runs on the same workspace"
                )
            return None
        if self.on_record is not None:
            self.on_record(data)
        if data.get("state") == dr.FAILED:
            raise DownloadFailed(f"download-model failed: {data.get('error') or 'no reason given'}")
        if data.get("state") == dr.DONE:
            return data
        if data.get("beat") != self._beat:
            self._beat, self._beat_seen = data.get("beat"), now
        elif now - self._beat_seen > self.stale_s:
            raise DownloadFailed(
                f"download-model stopped without a word: {self.record_path} has not changed for "
                f"{self.stale_s:.0f} s (its process or pod is gone?); run download-model again, "
                "then build-and-push"
            )
        return data


def wait_finished(path: Path, stage: str, stale_s: float | None = None, appear_s: float | None = None) -> None:
    """Waits for the stage that keeps the record `path` (download_record.StageBeat) to finish;
    raises DownloadFailed (naming the stage) when it failed, stopped beating or never started."""
    stale_s = _env_seconds("MODELCAR_DOWNLOAD_STALE_S", DEFAULT_STALE_S) if stale_s is None else stale_s
    appear_s = _env_seconds("MODELCAR_DOWNLOAD_APPEAR_S", DEFAULT_APPEAR_S) if appear_s is None else appear_s
    started = time.monotonic()
    beat: Any = None
    seen = started
    while True:
        data = dr.read(path)
        now = time.monotonic()
        if data is None:
            if now - started > appear_s:
                raise DownloadFailed(f"no {stage} started within {appear_s:.0f} s ({path} did not appear)")
        elif data.get("state") == dr.DONE:
            return
        elif data.get("state") == dr.FAILED:
            raise DownloadFailed(f"{stage} failed: {data.get('error') or 'no reason given'}")
        elif data.get("beat") != beat:
            beat, seen = data.get("beat"), now
        elif now - seen > stale_s:
            raise DownloadFailed(
                f"{stage} stopped without a word: {path} has not changed for {stale_s:.0f} s "
                f"(its process or pod is gone?); run {stage} again, then build-and-push"
            )
        time.sleep(POLL_S * 4)


def _planned_entries(expected: list[dict[str, Any]]) -> list[Entry]:
    """Files (no path yet) and the directories above them, as scan_model would list them."""
    entries: dict[str, Entry] = {}
    for item in expected:
        name = str(item["path"])
        for parent in PurePosixPath(name).parents:
            if str(parent) != ".":
                entries.setdefault(str(parent), Entry(str(parent), "dir"))
        entries[name] = Entry(name, "file", int(item["size"]))
    return sorted(entries.values(), key=lambda e: e.name)


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default
