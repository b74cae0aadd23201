"""The workspace on disk: its paths, the marker that proves modelcar made it, the lock, cleanup."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import ModelcarError, UsageError

MARKER_NAME = ".modelcar-workspace"
LOCK_NAME = ".modelcar.lock"
PUSH_LOCK_NAME = ".modelcar-push.lock"  # a build-and-push that follows a download running beside it
# A volume's root on ext4 holds lost+found; it is not ours to delete and does not make the
# workspace "someone else's".
FOREIGN_ENTRIES_TO_KEEP = frozenset({"lost+found"})


class WorkspaceBusy(ModelcarError):
    """Another modelcar process holds the workspace."""


class Workspace:
    """`<workspace>/model`, `model-original`, `image`, `run.json` and the bookkeeping files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model_dir = root / "model"
        self.original_dir = root / "model-original"
        self.run_json = root / "run.json"
        self.marker = root / MARKER_NAME

    def own_entries(self) -> list[Path]:
        """Everything in the workspace but the marker, the lock and foreign volume entries."""
        if not self.root.is_dir():
            return []
        keep = {MARKER_NAME, LOCK_NAME, PUSH_LOCK_NAME} | FOREIGN_ENTRIES_TO_KEEP
        return sorted(p for p in self.root.iterdir() if p.name not in keep)

    def is_marked(self) -> bool:
        return self.marker.is_file()

    def ensure(self) -> None:
        """Creates the workspace; marks it as modelcar's when it is new or empty."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.is_marked() and not self.own_entries():
            self.marker.write_text("This directory is a modelcar workspace; `modelcar cleanup` may empty it.\n")

    def check_cleanable(self) -> None:
        """Refuses a non-empty directory that modelcar did not create (raises UsageError)."""
        entries = self.own_entries()
        if entries and not self.is_marked():
            shown = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise UsageError(
                f"refusing to empty workspace {self.root}: it is not empty ({shown}) and has no "
                f"{MARKER_NAME} marker, so modelcar did not create it; choose an empty or new "
                "directory with --workspace / MODELCAR_WORKSPACE, or empty it yourself"
            )

    def cleanup(self) -> int:
        """Empties the workspace, dotfiles included; returns how many entries were removed."""
        self.check_cleanable()
        self.ensure()
        entries = self.own_entries()
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.ensure()
        return len(entries)

    @contextlib.contextmanager
    def locked(self, name: str = LOCK_NAME) -> Iterator[None]:
        """Holds the workspace lock (or another one by `name`); a second run is refused at once,
        naming the holder.

        flock is released by the kernel when its holder dies, so a lock left by a killed
        process is simply taken over.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise WorkspaceBusy(
                    f"workspace {self.root} is in use by {holder}; wait for it to finish or use another --workspace"
                ) from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"modelcar pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
