"""The run record, `<workspace>/run.json`: what each stage did, written atomically after each.

A later stage (or a later Tekton task in another pod) reads what it needs from here, never from
another stage's internals.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import __version__, atomic
from .errors import UsageError
from .jsonfile import read_object

RECORD_VERSION = 1

# Tekton results and where in the record each one comes from (section, key[, key]).
RESULT_PATHS: dict[str, tuple[str, ...]] = {
    "IMAGE_DIGEST": ("image", "digest"),
    "IMAGE_URL": ("image", "pinned"),
    "MODEL_URI": ("registry", "model_uri"),
    "REGISTERED_MODEL_ID": ("registry", "registered_model_id"),
    "MODEL_VERSION_ID": ("registry", "model_version_id"),
    "SIGNATURE_REF": ("image", "signature", "ref"),
    "SIGNATURE_DIGEST": ("image", "signature", "digest"),
    "MODEL_SIG_DIGEST": ("image", "signature", "model_sig", "digest"),
}


class RunRecord:
    """The record of one process. Saving merges: a section (or a stage's entry) this process left
    as it found it takes what another process wrote meanwhile, so download-model and a
    build-and-push that follows it (two Tekton pods, one volume) each keep the other's sections.
    Saves are serialised between processes by a lock on the workspace directory, and between threads."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self._base = _copy(data) if path.exists() else {}  # what run.json held when last read or written
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        """Reads run.json, or starts a new record when it is missing."""
        if not path.exists():
            return cls(path, {"version": RECORD_VERSION, "modelcar": __version__, "stages": {}})
        data = read_object(path, lambda message: UsageError(f"{message}; delete it or run cleanup"), "the run record")
        data.setdefault("stages", {})
        return cls(path, data)

    def get(self, section: str) -> Any:
        return self.data.get(section)

    def set(self, section: str, value: Any) -> None:
        with self._lock:
            self.data[section] = value

    def drop(self, *sections: str) -> None:
        with self._lock:
            for section in sections:
                self.data.pop(section, None)

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name, {})

    def mark_stage(self, name: str, status: str, **details: Any) -> None:
        now = time.time_ns()
        entry = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1e9)), "time_ns": now}
        entry.update(details)
        with self._lock:
            self.data["stages"][name] = entry

    def results(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for result, path in RESULT_PATHS.items():
            value: Any = self.data
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value and not isinstance(value, dict | list):
                found[result] = str(value)
        return found

    def refresh(self) -> None:
        """Takes in what other processes saved since this one last read or wrote run.json."""
        with self._lock:
            disk = _read_quietly(self.path)
            if disk is not None:
                _merge(self.data, self._base, disk)
                self._base = _copy(disk)

    def save(self) -> None:
        with self._lock, _directory_lock(self.path.parent):
            self.data["modelcar"] = __version__
            disk = _read_quietly(self.path)
            if disk is not None:
                _merge(self.data, self._base, disk)
            atomic.write_json(self.path, self.data)
            self._base = _copy(self.data)


def _merge(ours: dict[str, Any], base: dict[str, Any], disk: dict[str, Any]) -> None:
    """Takes into `ours` what another process changed on disk where this one changed nothing."""
    for key in set(base) | set(disk):
        if key == "stages":
            continue
        if ours.get(key, _ABSENT) == base.get(key, _ABSENT) and disk.get(key, _ABSENT) != base.get(key, _ABSENT):
            if key in disk:
                ours[key] = disk[key]
            else:
                ours.pop(key, None)
    stages, base_stages, disk_stages = ours.setdefault("stages", {}), base.get("stages") or {}, disk.get("stages") or {}
    if isinstance(disk_stages, dict) and isinstance(base_stages, dict):
        for name in set(base_stages) | set(disk_stages):
            mine, was, theirs = stages.get(name), base_stages.get(name), disk_stages.get(name)
            if mine == was and theirs != was:
                if theirs is None:
                    stages.pop(name, None)
                else:
                    stages[name] = theirs


_ABSENT = object()


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def _read_quietly(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def _directory_lock(path: Path) -> Iterator[None]:
    """flock on the workspace directory itself: no file of its own, released when the process dies."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
