"""Builds a ModelCar on a base image and writes it to a registry or a layout, in one pass.

1. Model layers stream from the model directory to the destination, several at once, each hashed
   on the way; a layer whose digest is remembered and that the destination has is not read.
   The first failure (or Ctrl-C) is reported at once and stops the other transfers at their next chunk.
2. Meanwhile the base's manifest (or index: every platform) and configs are read.
3. Base layers the destination lacks are mounted (same registry) or copied.
4. Configs, manifests (and the index) are written; the tag goes last.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelcarError
from ..files import sha256_file
from .digest_cache import DigestCache
from .image import (
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Descriptor,
    ModelLayer,
    build_index,
    extend_config,
    extend_manifest,
    is_attestation,
    scratch_config,
)
from .layers import LayerPlan, plan_layers, scan_model
from .reference import ImageRef, LayoutRef
from .store import AbortableBlob, ClientOptions, Clients, Store, open_store

WORKERS = 4


class ImageError(ModelcarError):
    """The base image cannot be used."""


@dataclass
class BasePlatform:
    """One platform of the base: its manifest's descriptor (in an index), layers and config."""

    descriptor: Descriptor | None
    layers: list[Descriptor]
    config: dict[str, Any]


@dataclass
class LayerResult:
    digest: str
    size: int
    title: str
    files: list[dict[str, Any]]
    uploaded: bool


@dataclass
class BuildResult:
    reference: str
    digest: str
    pinned: str
    media_type: str
    size: int
    model_bytes: int
    layers: list[LayerResult]
    base: str
    base_digest: str | None
    platforms: list[str]
    seconds: float
    uploaded_bytes: int
    base_layers_copied: int = 0
    annotations: dict[str, str] = field(default_factory=dict)


def build_and_push(
    model_dir: Path,
    destination: ImageRef,
    base: ImageRef | None,
    options: ClientOptions,
    annotations: dict[str, str],
    cache: DigestCache,
    progress: Callable[[int], None] | None = None,
    workers: int = WORKERS,
    known_digests: dict[str, str] | None = None,
) -> BuildResult:
    """`known_digests`: files' sha256 (path -> sha256:...) known to be current, e.g. from run.json."""
    started = time.monotonic()
    plans = plan_layers(scan_model(model_dir))
    _known_file_digests(plans, cache, known_digests or {})
    clients = Clients(options)
    try:
        dest = open_store(destination, clients)
        origin = open_store(base, clients) if base is not None else None
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelcar-push")
        abort = threading.Event()  # set on the first failure (or Ctrl-C): running transfers stop at their next chunk
        try:
            # Largest first, so the last layer to finish is a small one. The model layers do not
            # depend on the base: they start while its manifest and configs are read.
            order = sorted(range(len(plans)), key=lambda i: -plans[i].size)
            jobs = {i: pool.submit(_push_layer, dest, plans[i], cache, progress, abort) for i in order}
            platforms, base_digest = _read_base(origin)
            base_layers = {d.digest: d for p in platforms for d in p.layers}
            base_jobs = [pool.submit(_ensure_base_layer, dest, origin, d, abort) for d in base_layers.values()]
            _raise_first_error([*jobs.values(), *base_jobs])
            layers = [_layer_result(plans[i], jobs[i]) for i in range(len(plans))]
            copied = sum(1 for job in base_jobs if job.result())
        finally:
            abort.set()
            pool.shutdown(wait=True, cancel_futures=True)
        model = [
            ModelLayer(r.digest, r.size, r.title, f"modelcar: /models {r.title}", plans[i].annotations())
            for i, r in enumerate(layers)
        ]
        top, media_type, size, names = _write_manifests(dest, platforms, model, annotations, destination)
    finally:
        clients.close()
    return BuildResult(
        reference=str(destination),
        digest=top,
        pinned=dest.pinned(top),
        media_type=media_type,
        size=size,
        model_bytes=sum(r.size for r in layers),
        layers=layers,
        base=str(base) if base is not None else "scratch",
        base_digest=base_digest,
        platforms=names,
        seconds=round(time.monotonic() - started, 3),
        uploaded_bytes=sum(r.size for r in layers if r.uploaded),
        base_layers_copied=copied,
        annotations=annotations,
    )


def _raise_first_error(jobs: list[Future[Any]]) -> None:
    """Waits for every job, but raises the first failure as soon as it happens."""
    done, _ = wait(jobs, return_when=FIRST_EXCEPTION)
    for job in done:
        error = job.exception()
        if error is not None:
            raise error


def _layer_result(plan: LayerPlan, job: Future[tuple[str, bool]]) -> LayerResult:
    digest, uploaded = job.result()
    files: list[dict[str, Any]] = []
    for entry in plan.files:
        item: dict[str, Any] = {"path": entry.name, "size": entry.size, "type": entry.kind}
        if entry.name in plan.file_digests:
            item["sha256"] = plan.file_digests[entry.name].removeprefix("sha256:")
        files.append(item)
    return LayerResult(digest, plan.size, plan.title, files, uploaded)


def _known_file_digests(plans: list[LayerPlan], cache: DigestCache, known: dict[str, str]) -> None:
    for plan in plans:
        for entry in plan.regular_files:
            digest = cache.get_file(entry) or known.get(entry.name)
            if digest is not None:
                plan.file_digests[entry.name] = digest


def _finish_file_digests(plan: LayerPlan, cache: DigestCache) -> None:
    """Each file's sha256 for its annotation: known, hashed while streaming, or else read now."""
    for entry in plan.missing_digests():
        assert entry.path is not None
        plan.file_digests[entry.name] = "sha256:" + sha256_file(entry.path)
    cache.put_files([(e, plan.file_digests[e.name]) for e in plan.regular_files])


def _push_layer(
    dest: Store,
    plan: LayerPlan,
    cache: DigestCache,
    progress: Callable[[int], None] | None,
    abort: threading.Event,
) -> tuple[str, bool]:
    """(digest, whether it was sent): HEAD first when the digest is remembered."""
    known = cache.get(plan)
    if known is not None and dest.has_blob(known):
        if progress is not None:
            progress(plan.size)
        _finish_file_digests(plan, cache)
        return known, False
    digest = dest.put_stream(AbortableBlob(plan.stream(), abort), progress)
    _finish_file_digests(plan, cache)
    cache.put(plan, digest)
    return digest, True


def _ensure_base_layer(dest: Store, origin: Store | None, descriptor: Descriptor, abort: threading.Event) -> bool:
    if origin is None or dest.has_blob(descriptor.digest):
        return False
    dest.copy_blob(origin, descriptor, abort)
    return True


def _read_base(origin: Store | None) -> tuple[list[BasePlatform], str | None]:
    if origin is None:
        return [BasePlatform(None, [], scratch_config())], None
    data, media_type, digest = origin.manifest(origin.ref.reference)
    doc = _json(data, f"the base image {origin.ref}")
    if media_type in INDEX_TYPES:
        platforms = []
        for entry in doc.get("manifests", []):
            descriptor = Descriptor.from_json(entry)
            if is_attestation(descriptor):
                continue
            child, _, _ = origin.manifest(descriptor.digest)
            platforms.append(_platform(origin, descriptor, _json(child, f"manifest {descriptor.digest}")))
        if not platforms:
            raise ImageError(f"the base image {origin.ref} is an index without any platform image")
        return platforms, digest
    return [_platform(origin, None, doc)], digest


def _platform(origin: Store, descriptor: Descriptor | None, manifest: dict[str, Any]) -> BasePlatform:
    try:
        config_digest = manifest["config"]["digest"]
        layers = [Descriptor.from_json(layer) for layer in manifest.get("layers", [])]
    except (KeyError, TypeError):
        raise ImageError(f"the base image {origin.ref} has a manifest without config or layers") from None
    return BasePlatform(descriptor, layers, origin.json_blob(config_digest))


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise ImageError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object")
    return value


def _write_manifests(
    dest: Store,
    platforms: list[BasePlatform],
    model: list[ModelLayer],
    annotations: dict[str, str],
    destination: ImageRef,
) -> tuple[str, str, int, list[str]]:
    tag = destination.tag if isinstance(destination, LayoutRef) else destination.tag or "latest"
    children: list[Descriptor] = []
    sizes: list[int] = []
    names: list[str] = []
    for platform in platforms:
        config = _blob_of_config(extend_config(platform.config, model))
        dest.put_bytes(config.data)
        manifest = extend_manifest(platform.layers, config, model, annotations)
        sizes.append(manifest.descriptor.size + config.descriptor.size + sum(d.size for d in platform.layers))
        plat = platform.descriptor.platform if platform.descriptor else None
        names.append(_platform_name(plat or platform.config))
        if platform.descriptor is None:
            digest = dest.put_manifest(manifest.data, OCI_MANIFEST, tag or "latest")
            return digest, OCI_MANIFEST, sizes[0] + sum(m.size for m in model), names
        dest.put_manifest(manifest.data, OCI_MANIFEST, None)
        children.append(Descriptor(OCI_MANIFEST, manifest.descriptor.digest, manifest.descriptor.size, platform=plat))
    index = build_index(children, annotations)
    digest = dest.put_manifest(index.data, OCI_INDEX, tag or "latest")
    return digest, OCI_INDEX, max(sizes) + sum(m.size for m in model), names


def _blob_of_config(config: dict[str, Any]) -> Blob:
    return Blob.of(OCI_CONFIG, config)


def _platform_name(platform: dict[str, Any]) -> str:
    name = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return name + (f"/{platform['variant']}" if platform.get("variant") else "")
