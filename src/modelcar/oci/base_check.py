"""Whether the base image can run KServe's ModelCar containers, decided from its layers' file lists.

KServe's `oci://` storage runs the ModelCar image as a sidecar whose args are
`sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"`, and an init container whose
args run `ls` on /models. So the base needs sh, ln, sleep and ls on its PATH, and no ENTRYPOINT:
with one, the args would go to it instead of to a shell. A base without a shell (scratch) can be
served only by `oci+native://` and `oci+fetch://` storage.

The layers' tar headers are read (whiteouts applied, symlinks followed: see rootfs.py), never
guessed from names. One platform is checked: linux/amd64 when the base has it, else the first.
The verdict is remembered in the user's cache directory (outside the workspace, which
cleanup-workspace empties on every run) per (layer digests, PATH), so a re-push reads no layer.
A base whose layers are over MAX_SCAN_BYTES is not read at all: the check runs beside the upload,
but the manifest waits for it, and a base that large would hold the push back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import atomic
from .image import Descriptor
from .rootfs import LayerFormatError, RootFS, read_layer
from .store import AbortableBlob, Store

REQUIRED = ("sh", "ln", "sleep", "ls")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHELL_FREE_STORAGE = ["oci+native://", "oci+fetch://"]
PREFERRED_PLATFORM = "linux/amd64"
CACHE_VERSION = 1
MAX_SCAN_BYTES = 512 * 1024 * 1024  # compressed layer bytes the check may read
SIDECAR = '`sh -c "ln -sf ... && sleep infinity"`'
KSERVE_READY = "io.modelcar.kserve.ready"  # manifest annotation: "true" / "false", the verdict
KSERVE_MISSING = "io.modelcar.kserve.missing"  # manifest annotation: what the base lacks, comma-separated


@dataclass
class Platform:
    """What the check needs of one platform of the base."""

    name: str
    layers: list[Descriptor]
    config: dict[str, Any]


@dataclass
class Fitness:
    """The verdict; `ready` is None when the base could not be checked (`reason` says why)."""

    ready: bool | None
    base: str
    platform: str | None = None
    platforms: int = 0
    missing: list[str] = field(default_factory=list)
    found: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    path: str | None = None
    cached: bool = False
    reason: str | None = None
    serve_with: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def messages(self) -> list[tuple[str, str]]:
        """("notice" or "warning", text) for the user; none when the base is fit."""
        if self.serve_with is not None:
            return [
                (
                    "notice",
                    "the image has no base (scratch), so no shell: KServe can serve it only with "
                    f"{' or '.join(self.serve_with)} storage, not with oci:// (whose sidecar runs {SIDECAR} "
                    "and needs sh, ln, sleep and ls)",
                )
            ]
        where = f"the base image {self.base} ({self._platform_phrase()})"
        if self.ready is None:
            return [
                (
                    "warning",
                    f"could not check {where} against KServe's ModelCar contract (sh, ln, sleep, ls on PATH, "
                    f"no ENTRYPOINT): {self.reason}",
                )
            ]
        out: list[tuple[str, str]] = []
        if self.missing:
            out.append(
                (
                    "warning",
                    f"{where} has no {', '.join(self.missing)} on its PATH ({self.path}): KServe's oci:// storage "
                    f"runs the ModelCar as a sidecar with {SIDECAR} and an init container that runs `ls`, so the "
                    "pod would not start; use a base with sh, ln, sleep and ls (the default ubi9-micro has them), "
                    f"or serve the image with {' or '.join(SHELL_FREE_STORAGE)} storage",
                )
            )
        if self.entrypoint:
            out.append(
                (
                    "warning",
                    f"{where} has ENTRYPOINT {json.dumps(self.entrypoint)}: KServe gives its sidecar's command "
                    f"({SIDECAR}) as args, which would go to that entrypoint instead of a shell; use a base "
                    "without an ENTRYPOINT",
                )
            )
        return out

    def annotations(self) -> dict[str, str]:
        """The verdict as build-push records it in each manifest (none when it could not be decided),
        so that `modelcar inspect` need not read the base layers."""
        if self.ready is None:
            return {}
        return {KSERVE_READY: "true" if self.ready else "false", KSERVE_MISSING: ",".join(self.missing)}

    def _platform_phrase(self) -> str:
        if self.platforms > 1:
            return f"{self.platform}, the one of its {self.platforms} platforms checked"
        return str(self.platform)


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/modelcar/base-check.json (~/.cache when unset): shared by build-push and inspect."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "modelcar" / "base-check.json"


class FitnessCache:
    """Verdicts by key, in a small JSON file (None: nothing is remembered)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                doc = json.loads(path.read_text())
                if doc.get("version") == CACHE_VERSION and isinstance(doc.get("bases"), dict):
                    self._entries = dict(doc["bases"])
            except (OSError, ValueError, AttributeError):
                self._entries = {}

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = value
            if self.path is not None:
                atomic.write_json(self.path, {"version": CACHE_VERSION, "bases": self._entries})


def scratch() -> Fitness:
    return Fitness(ready=False, base="scratch", missing=list(REQUIRED), serve_with=list(SHELL_FREE_STORAGE))


def check(
    origin: Store,
    base: str,
    platforms: list[Platform],
    cache: FitnessCache,
    abort: threading.Event | None = None,
    max_bytes: int | None = MAX_SCAN_BYTES,
) -> Fitness:
    """The verdict for one platform of the base; never raises (a failure is a verdict of None).

    Layers totalling over `max_bytes` (None: no limit) are not read: a verdict of None.
    """
    chosen = next((p for p in platforms if p.name == PREFERRED_PLATFORM), platforms[0])
    settings = chosen.config.get("config") or {}
    path = _path_of(settings.get("Env"))
    fitness = Fitness(
        ready=None,
        base=base,
        platform=chosen.name,
        platforms=len(platforms),
        entrypoint=_entrypoint(settings.get("Entrypoint")),
        path=path,
    )
    key = _key(chosen.layers, path)
    remembered = cache.get(key)
    if remembered is not None:
        fitness.found = dict(remembered.get("found") or {})
        fitness.cached = True
    else:
        size = sum(d.size for d in chosen.layers)
        if max_bytes is not None and size > max_bytes:
            fitness.reason = (
                f"its layers hold {size / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB the check "
                "reads during a push; check it once with `modelcar inspect --check-base` on the pushed image"
            )
            return fitness
        try:
            fitness.found = _find(origin, chosen.layers, path, abort)
        except Exception as exc:  # a check that cannot run is a warning, never a failed push
            fitness.reason = str(exc) or type(exc).__name__
            return fitness
        cache.put(key, {"found": fitness.found})
    fitness.missing = [name for name in REQUIRED if name not in fitness.found]
    fitness.ready = not fitness.missing and not fitness.entrypoint
    return fitness


def _find(origin: Store, layers: list[Descriptor], path: str, abort: threading.Event | None) -> dict[str, str]:
    tree = RootFS()
    for descriptor in layers:
        source = origin.blob(descriptor)
        chunks = (AbortableBlob(source, abort) if abort is not None else source).chunks(0)
        try:
            tree.apply(read_layer(chunks, descriptor.size))
        except LayerFormatError as exc:
            raise LayerFormatError(f"layer {descriptor.digest} ({descriptor.media_type}): {exc}") from None
    dirs = path.split(":")
    found = {name: tree.which(name, dirs) for name in REQUIRED}
    return {name: where for name, where in found.items() if where is not None}


def _entrypoint(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    return [str(arg) for arg in value] if isinstance(value, list) and value else None


def _path_of(env: Any) -> str:
    if isinstance(env, list):
        for item in env:
            if isinstance(item, str) and item.startswith("PATH="):
                return item[len("PATH=") :]
    return DEFAULT_PATH


def _key(layers: list[Descriptor], path: str) -> str:
    return hashlib.sha256(json.dumps([[d.digest for d in layers], path]).encode()).hexdigest()


def check_in_background(
    origin: Store,
    base: str,
    platforms: list[Platform],
    cache: FitnessCache,
    abort: threading.Event | None = None,
) -> Future[Fitness]:
    """check() in a thread of its own (a daemon: after a failed push it stops at `abort`, unawaited)."""
    future: Future[Fitness] = Future()

    def run() -> None:
        try:
            future.set_result(check(origin, base, platforms, cache, abort))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="modelcar-base-check", daemon=True).start()
    return future
