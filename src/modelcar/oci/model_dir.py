"""A model directory as the entries that go under /models: each file, directory and symbolic link,
sorted, with what the digest cache keys on; what cannot go into an image safely is refused
(names that do not stay under /models, links that leave the directory, devices and sockets)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ModelcarError
from ..files import UnsafeSymlink, check_symlink
from ..growing_file import GrowingFile

ROOT = "models"  # where the model directory goes in the image: /models


class ModelDirError(ModelcarError):
    """The model directory holds something that cannot go into the image."""


@dataclass(frozen=True)
class Entry:
    """One thing under /models: a file, a directory or a symbolic link."""

    name: str  # relative posix path inside the model directory
    kind: str  # "file" | "dir" | "symlink"
    size: int = 0
    path: Path | None = None  # on disk, for files
    target: str = ""  # for symlinks
    stat_key: tuple[int, ...] = ()  # (dev, inode, size, mtime_ns, ctime_ns): what the digest cache keys on
    # Where the file is found once `path` is gone: a download still running renames its directory
    # (model.partial -> model) when it ends; the file itself (inode) stays the same.
    alt_path: Path | None = field(default=None, compare=False)
    # A file still being downloaded: its bytes are read as they arrive (growing_file.py).
    growing: GrowingFile | None = field(default=None, compare=False)


def scan_model(model_dir: Path) -> list[Entry]:
    """Every entry under `model_dir`, sorted; refuses what would be unsafe or unreadable in the image."""
    if not model_dir.is_dir():
        raise ModelDirError(
            f"the model directory {model_dir} does not exist; run download-model first or put the model files there"
        )
    root = model_dir.resolve()
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(model_dir):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(model_dir).as_posix()
            _check_name(rel, full)
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries.append(Entry(rel, "symlink", target=_link_target(full, model_dir, root, rel)))
                if name in dirnames:
                    dirnames.remove(name)  # os.walk does not follow it; keep it a link
            elif stat.S_ISDIR(info.st_mode):
                entries.append(Entry(rel, "dir"))
            elif stat.S_ISREG(info.st_mode):
                key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                entries.append(Entry(rel, "file", info.st_size, full, stat_key=key))
            else:
                raise ModelDirError(
                    f"{full} is not a regular file, directory or symbolic link; remove it from the model"
                )
    entries.sort(key=lambda e: e.name)
    return entries


def _check_name(rel: str, full: Path) -> None:
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in rel or "\\" in rel:
        raise ModelDirError(f"{full}: the name cannot be stored under /{ROOT} safely; rename the file")


def _link_target(link: Path, model_dir: Path, root: Path, rel: str) -> str:
    """The link's target as a relative path that stays inside the model directory.

    The check is on the fully resolved target (every link on the way followed, as in the image),
    so `sub/up -> ..` does not let `esc -> sub/up/../x` out.
    """
    raw = os.readlink(link)
    try:
        check_symlink(link, model_dir, root)
    except UnsafeSymlink:
        raise ModelDirError(
            f"{link} is a symbolic link to {raw}, outside the model directory {root}; "
            "replace it with the file itself or remove it"
        ) from None
    except (OSError, RuntimeError):  # RuntimeError: a loop of links
        raise ModelDirError(
            f"{link} is a symbolic link to {raw} that cannot be resolved (a loop?); replace it or remove it"
        ) from None
    # `root / rel` has no links above it (os.walk does not enter linked directories).
    return os.path.relpath(link.resolve(), (root / rel).parent) if os.path.isabs(raw) else raw
