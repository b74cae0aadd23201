"""The crash-safe swap: <workspace>/model becomes the compressed model, the original moves to
<workspace>/model-original, and a kill at any moment leaves a state the next run sorts out.

    compress.partial/model        being written; never trusted, removed on the next run
    compress.done/model           complete (the rename from .partial is the commit point)
    compress.done/result.json     the record section and the source's fingerprint
    model-original/.modelcar-compression.json
                                  written last: model/ is the compression of this directory

A finished compression is swapped in only when the directory it was made from is still the
one in the workspace (same files, sizes and mtimes); a model downloaded again meanwhile makes
it stale, and it is dropped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .. import atomic
from ..errors import UsageError
from ..files import walk_files
from ..workspace import Workspace
from .modelcheck import ModelNotFound, is_compressed

PARTIAL = "compress.partial"
DONE = "compress.done"
RESULT = "result.json"
STAMP = ".modelcar-compression.json"
REMOVING = ".removing"

Fingerprint = list[list[Any]]


def fingerprint(directory: Path) -> Fingerprint:
    """Relative path, size and mtime of every file: cheap, and changed by any rewrite."""
    entries = []
    for path in walk_files(directory):
        if path.name == STAMP or not path.is_file():
            continue
        stat = path.stat()
        entries.append([path.relative_to(directory).as_posix(), stat.st_size, stat.st_mtime_ns])
    return entries


def directory_bytes(directory: Path) -> int:
    return sum(size for _, size, _ in fingerprint(directory))


class Staging:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.partial = workspace.root / PARTIAL
        self.done = workspace.root / DONE

    @property
    def model(self) -> Path:
        return self.workspace.model_dir

    @property
    def original(self) -> Path:
        return self.workspace.original_dir

    def recover(self) -> list[str]:
        """Finishes or discards what an interrupted run left; returns what it did, for the log."""
        notes = []
        for leftover in sorted(self.workspace.root.glob(f"*{REMOVING}")):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.partial.exists():
            _remove(self.partial)
            notes.append(f"discarded the unfinished output of an interrupted compression ({PARTIAL})")
        if self.done.exists():
            if self._finish():
                notes.append("completed the swap of a compression interrupted after it had finished")
            else:
                _remove(self.done)
                notes.append("discarded a finished compression whose source model has changed since")
        return notes

    def choose_source(self) -> Path:
        """The full-precision model to compress: model/, or model-original/ after a compression."""
        if self.model.is_dir() and not is_compressed(self.model):
            return self.model  # a fresh download; a model-original beside it is stale
        if self.original.is_dir():
            return self.original
        if self.model.is_dir():
            raise UsageError(
                f"{self.model} holds a model already compressed (compressed-tensors) and there is no "
                f"{self.original.name} to start from; download the full-precision model again, or "
                "skip compress-model"
            )
        raise ModelNotFound(f"no model in {self.model}: run download-model first (or put the model files there)")

    def finished_stamp(self) -> dict[str, Any] | None:
        """The stamp of a completed compression, when model/ is still exactly its output."""
        stamp = _read_json(self.original / STAMP)
        if not stamp or not self.model.is_dir():
            return None
        if stamp.get("source_fingerprint") != fingerprint(self.original):
            return None
        if stamp.get("output_fingerprint") != fingerprint(self.model):
            return None
        return stamp

    def begin(self) -> Path:
        """An empty directory to save the compressed model into."""
        _remove(self.partial)
        target = self.partial / "model"
        target.mkdir(parents=True)
        return target

    def commit(self, source: Path, settings_key: dict[str, Any], record: dict[str, Any]) -> None:
        """Marks the output complete, then swaps it in (the steps _finish repeats after a crash)."""
        output = self.partial / "model"
        _make_durable(output)
        result = {
            "settings": settings_key,
            "record": record,
            "source": source.name,
            "source_fingerprint": fingerprint(source),
            "output_fingerprint": fingerprint(output),
        }
        atomic.write_json(self.partial / RESULT, result)
        _remove(self.done)
        self.partial.rename(self.done)
        _fsync_dir(self.workspace.root)
        if not self._finish():  # the source changed while we worked: not ours to replace
            _remove(self.done)
            raise UsageError(f"{source} changed while it was being compressed; run compress-model again")

    def discard(self) -> None:
        """Throws away the output being written (a compression the quality gate rejected)."""
        _remove(self.partial)

    def restore_original(self) -> bool:
        """Puts the full-precision model back as model/ when model/ holds a compression.

        The stamp goes first, so a kill half-way leaves either model/ compressed with no stamp
        (compressed again by the next run) or model-original/ alone (which choose_source takes).
        """
        if not (self.original.is_dir() and self.model.is_dir() and is_compressed(self.model)):
            return False
        stamp = self.original / STAMP
        if stamp.exists():
            stamp.unlink()
            _fsync_dir(self.original)
        _remove(self.model)
        self.original.rename(self.model)
        _fsync_dir(self.workspace.root)
        return True

    def _finish(self) -> bool:
        result = _read_json(self.done / RESULT)
        if result is None:
            return False
        expected = result.get("source_fingerprint")
        new = self.done / "model"
        if new.is_dir():
            if self.model.is_dir() and fingerprint(self.model) == expected:
                _remove(self.original)  # stale: from a model that was downloaded again since
                self.model.rename(self.original)
            elif self.original.is_dir() and fingerprint(self.original) == expected:
                _remove(self.model)  # an earlier compression of the same original
            else:
                return False
            new.rename(self.model)
        elif not (self.model.is_dir() and self.original.is_dir() and fingerprint(self.original) == expected):
            return False
        stamp = {key: result.get(key) for key in ("settings", "record", "source_fingerprint", "output_fingerprint")}
        atomic.write_json(self.original / STAMP, stamp)
        _fsync_dir(self.workspace.root)
        _remove(self.done)
        return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove(path: Path) -> None:
    """Removes a directory tree by renaming it aside first, so no half-deleted tree keeps its name."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    aside = path.with_name(path.name + REMOVING)
    shutil.rmtree(aside, ignore_errors=True)
    path.rename(aside)
    shutil.rmtree(aside)


def _make_durable(directory: Path) -> None:
    """Readable by anyone (0644/0755) and flushed to disk before the commit rename."""
    for path in walk_files(directory):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for root, dirs, _ in os.walk(directory):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        _fsync_dir(Path(root))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
