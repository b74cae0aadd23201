"""Base images built by hand as OCI layouts: chosen files, links and whiteouts in each layer, a
chosen config (Env, Entrypoint), layers plain or gzip. Only tar headers matter to the KServe check,
so files hold a few bytes, except busybox itself when a runnable base is wanted."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcar.oci.image import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, Descriptor, sha256_digest
from modelcar.oci.layout import Layout

from .oci_registry import BUSYBOX

GZIP_LAYER = OCI_LAYER + "+gzip"
# What KServe's ModelCar containers run, as busybox applets: all present.
APPLETS = ("sh", "ln", "sleep", "ls")


@dataclass(frozen=True)
class Member:
    """A tar entry: `kind` is "file", "dir", "symlink" or "hardlink" (`target` for the last two)."""

    name: str
    kind: str = "file"
    target: str = ""
    mode: int = 0o755
    data: bytes = b"#!"


def file(name: str, mode: int = 0o755, data: bytes = b"#!") -> Member:
    return Member(name, "file", mode=mode, data=data)


def directory(name: str) -> Member:
    return Member(name, "dir")


def symlink(name: str, target: str) -> Member:
    return Member(name, "symlink", target)


def whiteout(path: str) -> Member:
    """Deletes `path` (dir/name) of the layers below."""
    parent, _, name = path.rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", 0o644, b"")


def tar_of(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.mode, info.mtime = member.mode, 0
            data = None
            if member.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif member.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, member.target, 0o777
            elif member.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, member.target
            else:
                info.size, data = len(member.data), io.BytesIO(member.data)
            tar.addfile(info, data)
    return buffer.getvalue()


def make_base_layout(
    path: Path,
    layers: list[list[Member]],
    *,
    config: dict[str, Any] | None = None,
    compress: bool = False,
    tag: str = "latest",
) -> Path:
    """An OCI layout holding a one-platform (linux/amd64) image of `layers`, bottom first."""
    layout = Layout(path)
    layout.init()
    descriptors, diff_ids = [], []
    for members in layers:
        tar = tar_of(members)
        blob = gzip.compress(tar, mtime=0) if compress else tar
        digest = layout.write_blob(blob)
        descriptors.append(Descriptor(GZIP_LAYER if compress else OCI_LAYER, digest, len(blob)))
        diff_ids.append(sha256_digest(tar))
    config_blob = Blob.of(
        OCI_CONFIG,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config or {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
    )
    layout.write_blob(config_blob.data)
    manifest = Blob.of(
        OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_blob.descriptor.to_json(),
            "layers": [d.to_json() for d in descriptors],
        },
    )
    layout.write_blob(manifest.data)
    layout.tag(manifest.descriptor, tag)
    return path


def busybox_members(applets: tuple[str, ...] = APPLETS) -> list[Member]:
    """/bin/busybox (the real one when installed) and /bin/<applet> -> busybox."""
    data = BUSYBOX.read_bytes() if BUSYBOX.is_file() else b"\x7fELF busybox stand-in"
    return [directory("bin"), file("bin/busybox", data=data), *(symlink(f"bin/{a}", "busybox") for a in applets)]
