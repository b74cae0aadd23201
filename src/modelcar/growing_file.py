"""A file still being downloaded, read while it grows: what lets a layer go out before its file is whole.

The download writes each large file from its first byte to its last into one `.incomplete` file
and lists it in the download record as arriving (download_record.py); once complete the file is
renamed, and listed complete with its sha256 and inode. A follower opens the arriving file once,
keeps it open, and reads each range once the file has grown past it. The download only ever
appends to that file; when it must start a file again (a server that ignored the Range) it
writes a new file, with a new inode. So the bytes read are the final file's exactly when the file
listed complete is the one held open (same inode, still linked), which `settle` tells. Holding
the file open keeps its inode from being reused meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import Aborted, ModelcarError

if TYPE_CHECKING:
    from .oci.model_dir import Entry

POLL_S = 0.005


class FileReplaced(ModelcarError):
    """The download started the file again: what was read of it may differ from the final file."""


class GrowingFile:
    """One arriving file, held open. `abort` (the build's) stops a wait; so does `fail`."""

    def __init__(self, name: str, path: Path, fd: int, size: int, abort: threading.Event) -> None:
        self.name, self.path, self.fd, self.size = name, path, fd, size
        self._abort = abort
        self._done = threading.Condition()
        self._failure: BaseException | None = None
        self._final: tuple[Entry, str] | None = None  # (the complete file's Entry, its sha256)

    @classmethod
    def open(cls, name: str, path: Path, ino: int, size: int, abort: threading.Event) -> GrowingFile | None:
        """The file at `path` if it is still the one with inode `ino` (None: gone or replaced)."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        if os.fstat(fd).st_ino != ino:
            os.close(fd)
            return None
        return cls(name, path, fd, size, abort)

    def wait_for(self, end: int) -> None:
        """Returns once the file holds at least `end` bytes; raises when the download failed, the
        build stopped, or the file was started again shorter than that."""
        while os.fstat(self.fd).st_size < end:
            self._check()
            with self._done:
                if self._final is not None and os.fstat(self.fd).st_size < end:
                    raise FileReplaced(f"{self.name} was downloaded again while it was being pushed")
            time.sleep(POLL_S)

    def complete(self, entry: Entry, sha256: str) -> None:
        """The download lists the file complete: `entry` is where it now is."""
        with self._done:
            self._final = (entry, sha256)
            self._done.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._done:
            if self._final is None:
                self._failure = error
            self._done.notify_all()

    def settle(self) -> tuple[Entry, str, bool]:
        """Waits until the file is complete: (its Entry, its sha256, whether it is the file read)."""
        with self._done:
            while self._final is None:
                self._check()
                self._done.wait(0.1)
            entry, sha256 = self._final
        info = os.fstat(self.fd)
        stat_key = entry.stat_key
        same = bool(stat_key) and info.st_nlink > 0 and (info.st_dev, info.st_ino) == tuple(stat_key[:2])
        return entry, sha256, same and info.st_size == self.size

    def close(self) -> None:
        with self._done:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._abort.is_set():
            raise Aborted("stopped: another layer of the image failed")
