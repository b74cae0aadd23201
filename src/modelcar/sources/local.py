"""A local directory as the model source: its files, hard-linked when possible."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..files import walk_files

# Bookkeeping of git and of huggingface_hub's local_dir downloads, never part of the model.
IGNORED_TOP_LEVEL = frozenset({".git", ".cache"})


def model_files(source: Path) -> tuple[str, ...]:
    """Relative posix paths of the model's files under source (what the allow patterns filter)."""
    return tuple(
        p.relative_to(source).as_posix()
        for p in walk_files(source)
        if not p.is_dir() and p.relative_to(source).parts[0] not in IGNORED_TOP_LEVEL
    )


def copy_files(source: Path, names: list[str], target: Path) -> None:
    """Hard-links (or copies across file systems) each file; symlinks inside stay symlinks."""
    for name in names:
        src, dst = source / name, target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            continue
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(src, dst)
