"""Builds a ModelCar on a base image and writes it to a registry or a layout, in one pass.

1. Model layers stream from the model directory to the destination, several at once, each hashed
   on the way; a layer whose digest is remembered and that the destination has is not read.
   The first failure (or Ctrl-C) is reported at once and stops the other transfers at their next chunk.
2. Meanwhile the base's manifest (or index: every platform) and configs are read.
3. Base layers the destination lacks are mounted (same registry) or copied.
4. Configs, manifests (and the index) are written; the tag goes last.
Alongside, one platform of the base is checked against KServe's ModelCar contract from its layers'
file lists (base_check.py); the verdict is remembered, so a re-push reads no base layer for it.
A base or destination registry that cannot be reached at all is named by its parameter
(BASE_IMAGE, OCI_IMAGE), with what to do instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelcarError
from ..readyfiles import CompleteDirectory, ReadyFiles
from .base_check import Fitness, FitnessCache, Platform, check_in_background, scratch
from .digest_cache import DigestCache
from .errors import RegistryUnreachable
from .image import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Descriptor,
    ModelLayer,
    build_index,
    extend_config,
    extend_manifest,
    scratch_config,
)
from .layer_push import LayerPusher
from .layers import LayerPlan, plan_layers
from .model_dir import Entry
from .reference import ImageRef, LayoutRef, RegistryRef
from .store import ClientOptions, Clients, Store, open_store, read_manifests

WORKERS = 4


class ImageError(ModelcarError):
    """The base image cannot be used."""


class BaseUnreachable(ImageError):
    """The base's registry does not answer: the message says how to build without it."""

    def __init__(self, base: RegistryRef, cause: RegistryUnreachable) -> None:
        source = base.name + (f"@{base.digest}" if base.digest else f":{base.tag or 'latest'}")
        pinned = source[len(base.registry) :]
        super().__init__(
            f"cannot reach the base image BASE_IMAGE={base}: {cause}. To build without {base.registry}: "
            f"set BASE_IMAGE to a mirror that holds it (e.g. BASE_IMAGE=<mirror-host>{pinned}); "
            f"or copy it beforehand, where it can be reached, into an OCI layout "
            f"(`skopeo copy docker://{source} oci:DIR:base`) and set BASE_IMAGE=oci:DIR:base; "
            "or set BASE_IMAGE=scratch for no base, which KServe serves only with oci+native:// "
            "or oci+fetch:// storage"
        )


class DestinationUnreachable(ModelcarError):
    """The destination's registry does not answer."""

    def __init__(self, destination: RegistryRef, cause: RegistryUnreachable) -> None:
        advice = (
            ""
            if cause.handshake
            else "; check the registry's host name and port, the network and any proxy (HTTPS_PROXY, NO_PROXY), "
            "or write to an OCI layout (OCI_IMAGE=oci:DIR:TAG) and copy it later with `skopeo copy`"
        )
        super().__init__(f"cannot reach the destination OCI_IMAGE={destination}: {cause}{advice}")


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
    kserve: Fitness | None = None  # the base's fitness for KServe, when it was checked


def build_and_push(
    model_dir: Path | ReadyFiles,
    destination: ImageRef,
    base: ImageRef | None,
    options: ClientOptions,
    annotations: dict[str, str],
    cache: DigestCache,
    progress: Callable[[int], None] | None = None,
    workers: int = WORKERS,
    base_check: FitnessCache | None = None,
    known_digests: dict[str, str] | None = None,
) -> BuildResult:
    """`model_dir`: a finished directory, or a ReadyFiles source whose files are pushed as they come
    (a download still running). `known_digests`: files' sha256 (path -> sha256:...) known to be
    current, e.g. from run.json."""
    started = time.monotonic()
    source = CompleteDirectory(model_dir, known_digests) if isinstance(model_dir, Path) else model_dir
    plans = plan_layers(source.entries())
    clients = Clients(options)
    try:
        dest = open_store(destination, clients)
        origin = open_store(base, clients) if base is not None else None
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelcar-push")
        abort = threading.Event()  # set on the first failure (or Ctrl-C): running transfers stop at their next chunk
        try:
            # Each layer goes once its files are ready (a finished directory: all at once, largest
            # first, so the last layer to finish is a small one). The model layers do not depend
            # on the base: they start while its manifest and configs are read.
            pusher = LayerPusher(dest, cache, source, abort, progress)
            feeder = _LayerFeeder(plans, source, lambda plan: pool.submit(pusher.push, plan))
            feeding = _start_thread(feeder.run, abort)
            platforms, base_digest = _read_base(origin)
            checking = _check_base(origin, platforms, base_check, abort)
            base_layers = {d.digest: d for p in platforms for d in p.layers}
            base_jobs = [pool.submit(_ensure_base_layer, dest, origin, d, abort) for d in base_layers.values()]
            try:
                jobs = feeder.wait(feeding, base_jobs)
                source.wait_done(abort)
            except RegistryUnreachable as exc:
                if isinstance(destination, RegistryRef) and exc.registry == destination.registry:
                    raise DestinationUnreachable(destination, exc) from None
                raise
            layers = [_layer_result(plans[i], jobs[i]) for i in range(len(plans))]
            copied = sum(1 for job in base_jobs if job.result())
            kserve = checking.result() if checking is not None else None
        finally:
            abort.set()
            pool.shutdown(wait=True, cancel_futures=True)
        model = [
            ModelLayer(r.digest, r.size, r.title, f"modelcar: /models {r.title}", plans[i].annotations())
            for i, r in enumerate(layers)
        ]
        verdict = kserve.annotations() if kserve is not None else {}  # so inspect reads no base layer
        top, media_type, size, names = _write_manifests(dest, platforms, model, annotations, destination, verdict)
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
        kserve=kserve,
    )


class _LayerFeeder:
    """Submits each layer once the source has all of its files, and keeps the layers' jobs."""

    def __init__(
        self, plans: list[LayerPlan], source: ReadyFiles, submit: Callable[[LayerPlan], Future[tuple[str, bool]]]
    ) -> None:
        self.plans = plans
        self.source = source
        self.submit = submit
        self.jobs: dict[int, Future[tuple[str, bool]]] = {}
        self._lock = threading.Lock()

    def run(self, abort: threading.Event) -> None:
        waiting = {i: {e.name for e in p.regular_files} for i, p in enumerate(self.plans)}
        layer_of = {name: i for i, names in waiting.items() for name in names}
        ready: dict[int, dict[str, Entry]] = {i: {} for i in waiting}
        for i in sorted((i for i, names in waiting.items() if not names), key=lambda i: -self.plans[i].size):
            self._submit(i)
        for entry in self.source.arrivals(abort):
            i = layer_of[entry.name]
            ready[i][entry.name] = entry
            waiting[i].discard(entry.name)
            if not waiting[i]:
                self._submit(i, ready.pop(i))
        if any(waiting.values()) and not abort.is_set():
            raise AssertionError("the source ended before every file of the model arrived")

    def _submit(self, i: int, arrived: dict[str, Entry] | None = None) -> None:
        plan = self.plans[i]
        if arrived and any(arrived[e.name] is not e for e in plan.regular_files):
            plan = LayerPlan(
                [arrived.get(e.name, e) for e in plan.entries], plan.title, plan.content, plan.content_path
            )
            self.plans[i] = plan
        with self._lock:
            self.jobs[i] = self.submit(plan)

    def wait(self, feeding: Future[None], others: list[Future[Any]]) -> dict[int, Future[tuple[str, bool]]]:
        """Waits for every layer and the other jobs, but raises the first failure as soon as it happens."""
        while True:
            with self._lock:
                current = [feeding, *self.jobs.values(), *others]
            done, pending = wait(current, timeout=0.2, return_when=FIRST_EXCEPTION)
            for job in done:
                error = job.exception()
                if error is not None:
                    raise error
            if not pending and feeding.done():
                with self._lock:
                    if len(self.jobs) == len(self.plans) and all(job.done() for job in self.jobs.values()):
                        return dict(self.jobs)


def _start_thread(target: Callable[[threading.Event], None], abort: threading.Event) -> Future[None]:
    """Runs target(abort) in a thread of its own; its outcome as a Future."""
    outcome: Future[None] = Future()

    def body() -> None:
        try:
            target(abort)
        except BaseException as exc:  # handed to the waiting thread
            outcome.set_exception(exc)
        else:
            outcome.set_result(None)

    threading.Thread(target=body, name="modelcar-ready-files", daemon=True).start()
    return outcome


def _layer_result(plan: LayerPlan, job: Future[tuple[str, bool]]) -> LayerResult:
    digest, uploaded = job.result()
    files: list[dict[str, Any]] = []
    for entry in plan.files:
        item: dict[str, Any] = {"path": entry.name, "size": entry.size, "type": entry.kind}
        if entry.name in plan.file_digests:
            item["sha256"] = plan.file_digests[entry.name].removeprefix("sha256:")
        files.append(item)
    return LayerResult(digest, plan.size, plan.title, files, uploaded)


def _ensure_base_layer(dest: Store, origin: Store | None, descriptor: Descriptor, abort: threading.Event) -> bool:
    """Whether the base layer was sent (copied from `origin`); not when the destination has it or
    mounted it."""
    if origin is None or dest.try_reuse(descriptor.digest, mount_from=origin):
        return False
    dest.copy_blob(origin, descriptor, abort)
    return True


def _check_base(
    origin: Store | None, platforms: list[BasePlatform], cache: FitnessCache | None, abort: threading.Event
) -> Future[Fitness] | None:
    """The base's fitness for KServe, found in a thread of its own while the layers upload."""
    if cache is None:
        return None
    if origin is None:
        done: Future[Fitness] = Future()
        done.set_result(scratch())
        return done
    named = [Platform(_platform_name(_platform_of(p)), p.layers, p.config) for p in platforms]
    return check_in_background(origin, str(origin.ref), named, cache, abort)


def _read_base(origin: Store | None) -> tuple[list[BasePlatform], str | None]:
    if origin is None:
        return [BasePlatform(None, [], scratch_config())], None
    try:
        found = read_manifests(origin, origin.ref.reference, f"the base image {origin.ref}", ImageError)
    except RegistryUnreachable as exc:
        if isinstance(origin.ref, RegistryRef):
            raise BaseUnreachable(origin.ref, exc) from None
        raise
    platforms = [BasePlatform(p.descriptor, p.layers, origin.json_blob(p.config_digest)) for p in found.platforms]
    return platforms, found.digest


def _write_manifests(
    dest: Store,
    platforms: list[BasePlatform],
    model: list[ModelLayer],
    annotations: dict[str, str],
    destination: ImageRef,
    manifest_annotations: dict[str, str] | None = None,
) -> tuple[str, str, int, list[str]]:
    tag = destination.tag if isinstance(destination, LayoutRef) else destination.tag or "latest"
    children: list[Descriptor] = []
    sizes: list[int] = []
    names: list[str] = []
    for platform in platforms:
        config = _blob_of_config(extend_config(platform.config, model))
        dest.put_bytes(config.data)
        manifest = extend_manifest(platform.layers, config, model, {**annotations, **(manifest_annotations or {})})
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


def _platform_of(platform: BasePlatform) -> dict[str, Any]:
    """The platform as the index names it, else as the config does."""
    return (platform.descriptor.platform if platform.descriptor else None) or platform.config


def _platform_name(platform: dict[str, Any]) -> str:
    name = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return name + (f"/{platform['variant']}" if platform.get("variant") else "")
