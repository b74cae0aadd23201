"""The model directory's inventory: every file's relative path, size and sha256, hashed in parallel."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import ModelcarError

READ_SIZE = 4 * 1024 * 1024


class UnsafeSymlink(ModelcarError):
    """A symlink in the model directory that points outside it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def walk_files(root: Path) -> list[Path]:
    """Regular files and symlinks under root, sorted by relative path; links leaving root refused."""
    found: list[Path] = []
    resolved_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            path = Path(dirpath) / name
            if path.is_symlink():
                check_symlink(path, root, resolved_root)
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def check_symlink(path: Path, root: Path, resolved_root: Path | None = None) -> None:
    resolved_root = resolved_root or root.resolve()
    target = path.resolve()
    if target != resolved_root and resolved_root not in target.parents:
        raise UnsafeSymlink(
            f"{path.relative_to(root)} is a symlink to {os.readlink(path)}, outside the model directory "
            f"{root}; replace it with the file itself or remove it"
        )


def inventory(root: Path, workers: int | None = None) -> list[dict[str, Any]]:
    """[{path, size, sha256}] for every file under root (symlinks: their target's content)."""
    paths = [p for p in walk_files(root) if not p.is_dir()]
    workers = workers or min(8, (os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(sha256_file, paths))
    return [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": d}
        for p, d in zip(paths, digests, strict=True)
    ]
