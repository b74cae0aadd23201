"""`modelcar pull`: a ModelCar's /models extracted into DIR, each layer checked (layer_walk.py).

Each file is written under a fresh temporary name (O_CREAT|O_EXCL|O_NOFOLLOW, mode set on the
descriptor) in its directory, renamed to its name once its layer checked out; every directory
on the way is opened without following links (O_NOFOLLOW, step by step from DIR), so nothing
is written through a link, whatever DIR held before. Files already in DIR with the right digest
are not fetched again, so an interrupted pull resumes. Symbolic links are made last, once every
link of the image resolved inside /models in the model of the final tree; then every link in
DIR (made now or there before) must stay inside DIR: those leading out, and the links this pull
made, are removed and the pull fails, naming the link.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import ModelcarError
from .layer_walk import (
    PARTIAL,
    READ_SIZE,
    HostileEntry,
    Mismatch,
    Tree,
    check_file,
    hardlink_source,
    safe_name,
    verify_layers,
    walk_layer,
)
from .model_dir import ROOT
from .reader import ImageReader, ModelFile, PlatformImage

__all__ = [
    "HostileEntry",
    "Mismatch",
    "PullError",
    "PullResult",
    "preferred",
    "pull",
    "safe_name",
    "verify_layers",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class PullError(ModelcarError):
    """DIR cannot take a file (no space left, no permission, ...)."""


@dataclass
class PullResult:
    files: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    layers_read: int = 0


def preferred(platforms: list[PlatformImage]) -> PlatformImage:
    return next((p for p in platforms if p.name == "linux/amd64"), platforms[0])


# ---- DIR, never through a link ------------------------------------------------------------------


def _open_dir(root_fd: int, parts: list[str], create: bool, what: str) -> int:
    """A descriptor of the directory root/parts, each step opened without following a link
    (created when `create`); a link or a file on the way is refused."""
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            try:
                step = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                step = _open_step(name, fd, parts[: i + 1], what)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                step = _open_step(name, fd, parts[: i + 1], what)
            os.close(fd)
            fd = step
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_step(name: str, fd: int, parts: list[str], what: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise HostileEntry(
            f"refusing {what}: /{ROOT}/{'/'.join(parts)} in the target directory is a link or a file, "
            "not a directory; nothing is written through it"
        ) from None


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _temp_name(name: str) -> str:
    short = name.encode()[:160].decode(errors="ignore")
    return f".{short}.{secrets.token_hex(8)}{PARTIAL}"


def _split(rel: str) -> tuple[list[str], str]:
    parts = rel.split("/")
    return parts[:-1], parts[-1]


# ---- pull -------------------------------------------------------------------------------------


def pull(reader: ImageReader, image: PlatformImage, dest: Path) -> PullResult:
    """Extracts the model layers of `image` into `dest` (created if needed)."""
    problems = image.problems()
    if problems:
        raise HostileEntry(f"refusing to pull {image.name}: {problems[0]}")
    image.files()  # every annotated path checked before DIR is made
    if not image.model:
        raise Mismatch(f"{image.name}: the image has no model layers (nothing under /{ROOT})")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        _remove_leftovers(root)
        return _pull(reader, image, root, root_fd)
    finally:
        os.close(root_fd)


def _remove_leftovers(root: Path) -> None:
    """Removes what an interrupted pull (or an older one) left under a `.modelcar-partial` name:
    no image may hold such a name, so none is anyone else's."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if name.endswith(PARTIAL) and not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)


def _pull(reader: ImageReader, image: PlatformImage, root: Path, root_fd: int) -> PullResult:
    result = PullResult()
    tree = Tree()
    for index, described in zip(image.model, image.files(), strict=True):
        if described.kind == "file" and _already_there(root_fd, described):
            tree.add_file(described.path, described.digest, f"/{ROOT}/{described.path} (already there)")
            result.reused.append(described.path)
            continue
        layer = _Extraction(root_fd, described)
        try:
            walk_layer(reader, image, index, tree, layer.visit)
        except BaseException:
            layer.discard()
            raise
        result.layers_read += 1
        result.files.extend(layer.commit())
    tree.check_links()
    result.links = _make_links(root_fd, root, tree.links())
    return result


class _Extraction:
    """One layer's files, written under temporary names until the layer's digest checked out."""

    def __init__(self, root_fd: int, described: ModelFile) -> None:
        self.root_fd, self.described = root_fd, described
        self.staged: list[tuple[list[str], str, str, str]] = []  # (parent, temp, name, rel)
        self.hardlinks: list[tuple[str, str]] = []

    def visit(self, member: tarfile.TarInfo, rel: str, data: IO[bytes] | None) -> None:
        try:
            self._visit(member, rel, data)
        except OSError as exc:
            raise PullError(f"cannot extract entry {member.name!r} ({self.described.layer.digest}): {exc}") from None

    def _visit(self, member: tarfile.TarInfo, rel: str, data: IO[bytes] | None) -> None:
        what = f"entry {member.name!r}"
        parent, name = _split(rel)
        if member.isdir():
            os.close(_open_dir(self.root_fd, rel.split("/"), True, what))
        elif member.islnk():
            self.hardlinks.append((rel, hardlink_source(member)))
        elif member.isreg():
            assert data is not None
            fd = _open_dir(self.root_fd, parent, True, what)
            try:
                temp = _temp_name(name)
                self.staged.append((parent, temp, name, rel))
                digest = _write(data, temp, fd, member.size, rel)
            finally:
                os.close(fd)
            check_file(self.described, rel, digest)
        # symbolic links: made once every layer is in (Tree.links)

    def discard(self) -> None:
        for parent, temp, _, _ in self.staged:
            try:
                fd = _open_dir(self.root_fd, parent, False, "a temporary file")
            except (OSError, HostileEntry):
                continue
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=fd)
            finally:
                os.close(fd)

    def commit(self) -> list[str]:
        done = []
        for parent, temp, name, rel in self.staged:
            fd = _open_dir(self.root_fd, parent, False, f"/{ROOT}/{rel}")
            try:
                there = _lstat(name, fd)
                if there is not None and stat.S_ISDIR(there.st_mode):
                    self.discard()
                    raise HostileEntry(f"refusing to write /{ROOT}/{rel}: a directory is there")
                os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
            finally:
                os.close(fd)
            done.append(rel)
        for rel, source in self.hardlinks:
            _hardlink(self.root_fd, rel, source)
            done.append(rel)
        return done


def _hardlink(root_fd: int, rel: str, source: str) -> None:
    what = f"the hard link /{ROOT}/{rel}"
    source_parent, source_name = _split(source)
    parent, name = _split(rel)
    src_fd = _open_dir(root_fd, source_parent, False, what)
    try:
        found = _lstat(source_name, src_fd)
        if found is None or not stat.S_ISREG(found.st_mode):
            raise HostileEntry(f"refusing {what}: /{ROOT}/{source} is not a file in the target directory")
        fd = _open_dir(root_fd, parent, True, what)
        try:
            there = _lstat(name, fd)
            if there is not None and stat.S_ISDIR(there.st_mode):
                raise HostileEntry(f"refusing {what}: a directory is there")
            if there is not None and (there.st_dev, there.st_ino) == (found.st_dev, found.st_ino):
                return  # already that link (and rename(2) would leave the temporary name)
            temp = _temp_name(name)
            os.link(source_name, temp, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            os.close(fd)
    finally:
        os.close(src_fd)


def _make_links(root_fd: int, root: Path, links: list[tuple[str, str]]) -> list[str]:
    """Makes the image's links (each already checked in the tree); then every link in DIR must
    stay inside it. On a failure the links made here are removed."""
    made: list[str] = []
    try:
        for rel, target in links:
            what = f"the link /{ROOT}/{rel}"
            parent, name = _split(rel)
            fd = _open_dir(root_fd, parent, True, what)
            try:
                there = _lstat(name, fd)
                if there is not None and stat.S_ISLNK(there.st_mode) and os.readlink(name, dir_fd=fd) == target:
                    continue
                if there is not None and stat.S_ISDIR(there.st_mode):
                    raise HostileEntry(f"refusing {what} to {target!r}: a directory is there")
                temp = _temp_name(name)
                os.symlink(target, temp, dir_fd=fd)
                os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
                made.append(rel)
            finally:
                os.close(fd)
        _check_links_on_disk(root)
    except BaseException:
        for rel in made:
            _remove_link(root_fd, rel)
        raise
    return made


def _check_links_on_disk(root: Path) -> None:
    """Every link in DIR (made by this pull or there before), resolved: each must stay inside;
    those that lead out are all removed, and the first is named."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            resolved = Path(os.path.realpath(path))
            if resolved != root and root not in resolved.parents:
                out.append((Path(path).relative_to(root).as_posix(), resolved))
    for rel, _ in out:
        (root / rel).unlink(missing_ok=True)
    if out:
        rel, resolved = out[0]
        more = f" (and {len(out) - 1} more: {', '.join(r for r, _ in out[1:])})" if out[1:] else ""
        raise HostileEntry(
            f"refusing the link /{ROOT}/{rel} in {root}{more}: with the other links there it leads outside "
            f"{root} (to {resolved}); removed, and so were the links this pull made"
        )


def _remove_link(root_fd: int, rel: str) -> None:
    parent, name = _split(rel)
    try:
        fd = _open_dir(root_fd, parent, False, "a link")
    except (OSError, HostileEntry):
        return
    try:
        there = _lstat(name, fd)
        if there is not None and stat.S_ISLNK(there.st_mode):
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _already_there(root_fd: int, described: ModelFile) -> bool:
    if described.digest is None:
        return False
    parent, name = _split(described.path)
    try:
        dir_fd = _open_dir(root_fd, parent, False, f"/{ROOT}/{described.path}")
    except (OSError, HostileEntry):
        return False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or (described.size is not None and info.st_size != described.size):
            return False
        hasher = hashlib.sha256()
        while chunk := handle.read(READ_SIZE):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest() == described.digest


def _write(data: IO[bytes], temp: str, dir_fd: int, size: int, rel: str) -> str:
    """Writes `data` to a new file `temp` (never an existing one, never through a link)."""
    hasher = hashlib.sha256()
    written = 0
    fd = os.open(temp, _NEW_FILE, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o644)
        while chunk := data.read(READ_SIZE):
            written += len(chunk)
            if written > size:
                raise Mismatch(f"/{ROOT}/{rel}: more than the {size} bytes its tar header gives")
            hasher.update(chunk)
            out.write(chunk)
    return "sha256:" + hasher.hexdigest()
