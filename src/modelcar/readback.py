"""`modelcar inspect`, `verify` and `pull`: a ModelCar read back from a registry or an `oci:` layout.

All three open the image with oci/reader.py (manifests and configs); only verify and pull stream
layers (oci/pull.py). KServe readiness is the verdict build-push recorded in the manifest
(`io.modelcar.kserve.ready`, `io.modelcar.kserve.missing`); without it, a verdict remembered in
the user's cache directory; only `inspect --check-base` reads the base layers' file lists
(build-push's base check, oci/base_check.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelcarError, UsageError
from .files import sha256_file
from .oci import base_check
from .oci.base_check import KSERVE_MISSING, KSERVE_READY
from .oci.image import Descriptor
from .oci.pull import Mismatch, PullResult, preferred, pull, verify_layers
from .oci.reader import ImageReader, ImageView, PlatformImage
from .oci.reference import ImageRef, LayoutRef, ReferenceError, parse_reference
from .oci.store import ClientOptions

# (files {path: sha256:...}, name, paths left out) -> signature bundle bytes
Signer = Callable[[dict[str, str], str, tuple[str, ...]], bytes]

SOURCE_KEYS = {
    "io.modelcar.source": "source",
    "io.modelcar.source.revision": "revision",
    "org.opencontainers.image.revision": "sha",
    "org.opencontainers.image.source": "url",
}


def parse_ref(text: str) -> ImageRef:
    try:
        return parse_reference(text)
    except (ReferenceError, ValueError) as exc:
        raise UsageError(
            f"invalid REF={text!r}: {exc}; expected host[:port]/path[:tag][@sha256:...] or oci:DIR[:TAG]"
        ) from None


def inspect(ref: ImageRef, options: ClientOptions, check_base: bool = False) -> dict[str, Any]:
    """What the manifests and configs say: no layer is read (but the base's, with `check_base`,
    when the manifest holds no KServe verdict)."""
    with ImageReader(ref, options) as reader:
        view = reader.read()
        image = preferred(view.platforms)
        signature = reader.signature(view.digest)
        kserve = _kserve(reader, view, image, check_base)
    files = [f.to_json() for f in image.files()]
    base = image.base_layers
    return {
        "reference": view.reference,
        "digest": view.digest,
        "media_type": view.media_type,
        "platforms": [p.name for p in view.platforms],
        "base": {
            "layers": len(base),
            "size": sum(d.size for d in base),
            "entrypoint": (image.config.get("config") or {}).get("Entrypoint"),
            "cmd": (image.config.get("config") or {}).get("Cmd"),
        },
        "files": files,
        "model_size": sum(f.get("size", 0) for f in files),
        "source": _source({**image.manifest.get("annotations", {}), **view.annotations}),
        "signature": None
        if signature is None
        else {"kind": signature.kind, "where": signature.where, "digest": signature.manifest_digest},
        "kserve": kserve,
        "warnings": [f"{p.name}: {text}" for p in view.platforms for text in p.problems()],
    }


def _source(annotations: dict[str, str]) -> dict[str, str]:
    """The source annotations build-push writes (on the index, or on the manifest)."""
    return {name: annotations[key] for key, name in SOURCE_KEYS.items() if key in annotations}


def _kserve(reader: ImageReader, view: ImageView, image: PlatformImage, check_base: bool) -> dict[str, Any]:
    models = bool(image.model)
    platforms = [base_check.Platform(p.name, p.base_layers, p.config) for p in view.platforms]
    recorded = _recorded_fitness(view, image)
    if not any(p.layers for p in platforms):
        fitness = base_check.scratch()
    elif recorded is not None and not check_base:
        fitness = recorded
    else:
        origin = reader.store if check_base else _NoLayers(reader.store)
        cache = base_check.FitnessCache(base_check.default_cache_path())
        fitness = base_check.check(origin, view.reference, platforms, cache, max_bytes=None)
    ready = bool(models and fitness.ready)
    out: dict[str, Any] = {"ready": ready, "models_non_empty": models, "base": fitness.to_json()}
    out["notes"] = [text for _, text in fitness.messages()] + ([] if models else ["/models is empty"])
    return out


def _recorded_fitness(view: ImageView, image: PlatformImage) -> base_check.Fitness | None:
    """The verdict build-push recorded in the manifest, if any."""
    annotations = image.manifest.get("annotations") or {}
    value = annotations.get(KSERVE_READY)
    if value not in ("true", "false"):
        return None
    missing = [m for m in str(annotations.get(KSERVE_MISSING, "")).split(",") if m]
    entrypoint = (image.config.get("config") or {}).get("Entrypoint")
    return base_check.Fitness(
        ready=value == "true",
        base=view.reference,
        platform=image.name,
        platforms=len(view.platforms),
        missing=missing,
        entrypoint=[str(a) for a in entrypoint] if isinstance(entrypoint, list) and entrypoint else None,
        cached=True,
    )


class _NoLayers:
    """The store for a base check that may use only a remembered verdict: reading a layer fails."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def blob(self, descriptor: Descriptor) -> Any:
        raise ModelcarError(
            "the image records no KServe verdict and none is remembered; `modelcar inspect --check-base` "
            "reads the base layers' file lists to decide"
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def render_inspect(report: dict[str, Any]) -> str:
    lines = [
        f"image      {report['reference']}",
        f"digest     {report['digest']} ({report['media_type']})",
        f"platforms  {', '.join(report['platforms'])}",
        f"base       {report['base']['layers']} layers, {_size(report['base']['size'])}"
        + (f", ENTRYPOINT {report['base']['entrypoint']}" if report["base"]["entrypoint"] else ""),
    ]
    source = report["source"]
    lines.append("source     " + (", ".join(f"{k}={v}" for k, v in source.items()) if source else "not recorded"))
    sig = report["signature"]
    lines.append(f"signature  {sig['kind']} ({sig['where']}, {sig['digest']})" if sig else "signature  none attached")
    kserve = report["kserve"]
    lines.append(f"kserve     {'ready' if kserve['ready'] else 'NOT ready'} for oci:// storage")
    lines.extend(f"           {note}" for note in kserve["notes"])
    lines.extend(f"WARNING    {text}" for text in report.get("warnings", []))
    lines.append(f"files      {len(report['files'])} layers, {_size(report['model_size'])}")
    for item in report["files"]:
        size = _size(item["size"]) if "size" in item else f"layer {_size(item['layer_size'])}"
        digest = item.get("digest") or ("files listed in the layer only" if item["type"] == "directory" else "-")
        path = "/models/" + item["path"] if item["path"] else "/models"
        label = {"file": "", "directory": " (directory)", "other": " (links, empty directories)"}[item["type"]]
        lines.append(f"  {path}{label}  {size}  {digest}")
    return "\n".join(lines)


def verify(ref: ImageRef, options: ClientOptions, public_key: Path | None, local_model: Path | None) -> list[str]:
    """Checks the image (and local files); returns what was checked; raises on any difference.

    Every model layer's bytes against its digest, diff_id and annotations, on every platform.
    With a key, first the attached signature; then the files read from the layers must be the
    signed ones (the per-file annotations are not signed, so they are never trusted alone).
    """
    if public_key is not None:
        _check_public_key(public_key)
    if local_model is not None and not local_model.is_dir():
        raise UsageError(f"invalid --local-model={str(local_model)!r}: not a directory")
    checked: list[str] = []
    found: dict[str, dict[str, str]] = {}  # platform -> {path: sha256:...}
    with ImageReader(ref, options) as reader:
        view = reader.read()
        signed: dict[str, str] | None = None
        if public_key is not None:
            signed, line = _verified_signature(reader, ref, view.digest, public_key)
            checked.append(line)
        for image in view.platforms:
            if not image.model:
                raise Mismatch(f"{image.name}: the image has no model layers (nothing under /models)")
            found[image.name] = verify_layers(reader, image)
            checked.append(f"{image.name}: every model layer's bytes match its digest, diff_id and annotations")
            if signed is not None:
                _compare_signed(found[image.name], signed, image.name)
        if signed is not None:
            checked.append(f"the files read from the layers are the {len(signed)} signed ones")
    if local_model is not None:
        for name, files in found.items():
            _compare_local(local_model, files, name if len(found) > 1 else None)
        checked.append(f"the files in {local_model} match those of {', '.join(found)}")
    return checked


def _check_public_key(public_key: Path) -> None:
    """A readable PEM public key, before any image is read (a bad one is bad input: exit 2)."""
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"invalid --public-key={str(public_key)!r}: not a readable PEM public key ({exc})") from None


def _verified_signature(
    reader: ImageReader, ref: ImageRef, digest: str, public_key: Path
) -> tuple[dict[str, str], str]:
    """The signed files of the first attached signature that verifies with the key (each tried)."""
    from .signing.verify import verify_signature

    signatures = reader.signatures(digest)
    if not signatures:
        raise Mismatch(f"no signature is attached to {ref} ({digest}); nothing to check the key against")
    failures = []
    for signature in signatures:
        try:
            expected = verify_signature(reader, signature, public_key)
        except ModelcarError as exc:
            if isinstance(exc, UsageError):
                raise
            failures.append(f"{signature.kind} ({signature.where}, {signature.manifest_digest}): {exc}")
            continue
        return expected, f"signature ({signature.kind}, {signature.where}) verified with {public_key}"
    raise Mismatch(
        f"no signature attached to {ref} verifies with {public_key} ({len(signatures)} tried): " + "; ".join(failures)
    )


def _image_digests(reader: ImageReader, image: PlatformImage) -> dict[str, str]:
    """{path: sha256:...}: file layers from their annotations, directory layers from their bytes.
    For an image whose layers this process just pushed itself (build-push's signing)."""
    return verify_layers(reader, image, directories_only=True)


def _compare_signed(image: dict[str, str], signed: dict[str, str], platform: str) -> None:
    for path in sorted(set(image) | set(signed)):
        if path not in signed:
            raise Mismatch(f"/models/{path}: in the image ({platform}) but not signed")
        if path not in image:
            raise Mismatch(f"/models/{path}: signed but not in the image ({platform})")
        if image[path] != signed[path]:
            raise Mismatch(f"/models/{path}: the image ({platform}) has {image[path]}, the signature {signed[path]}")


def _compare_local(local: Path, expected: dict[str, str], platform: str | None = None) -> None:
    image = f"the image ({platform})" if platform else "the image"
    for path, digest in sorted(expected.items()):
        file = local / path
        if file.is_symlink() or not file.is_file():
            raise Mismatch(f"{path}: missing from {local}" + (f" (in {image})" if platform else ""))
        actual = "sha256:" + sha256_file(file)
        if actual != digest:
            raise Mismatch(f"{path}: {file} has digest {actual}, {image} says {digest}")
    extra = sorted(
        p.relative_to(local).as_posix()
        for p in local.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(local).as_posix() not in expected
    )
    if extra:
        raise Mismatch(
            f"{extra[0]}: in {local} but not in {image}" + (f" (and {len(extra) - 1} more)" if extra[1:] else "")
        )


@dataclass(frozen=True)
class ImageSignature:
    mode: str  # "tag" (sha256-<hex>.sig) or "referrer" (OCI 1.1 referrers API)
    ref: str  # where the signature is: repo:sha256-<hex>.sig, or repo@<signature digest>
    digest: str  # the signature manifest's digest
    files: int  # files signed

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "ref": self.ref, "digest": self.digest, "files": self.files}


def sign_image(
    ref: ImageRef,
    options: ClientOptions,
    private_key: Path | None = None,
    password: str | None = None,
    signer: Signer | None = None,
    mode: str = "auto",
    check_bytes: bool = False,
) -> ImageSignature:
    """Signs the image's files as model-signing does and attaches the signature: as an OCI 1.1
    referrer where the registry has the referrers API (`mode` "auto" or "referrer"), else under
    the tag sha256-<hex>.sig (`mode` "tag").

    With `check_bytes` (`modelcar sign`), every model layer is read and checked first, and the
    digests signed are those of the bytes; without (build-push, which just pushed those bytes
    itself), file layers are taken by their annotations and only directory layers are read."""
    from .signing.keys import load_private_key
    from .signing.sign import attach, attach_referrer, has_referrers_api, key_signer, tag_for

    if signer is None:
        if private_key is None:
            raise UsageError("no signing key given (--sign-key / SIGN_KEY)")
        signer = key_signer(load_private_key(private_key, password))
    with ImageReader(ref, options) as reader:
        view = reader.read()
        files: dict[str, str] = {}
        for image in view.platforms:
            if not image.model:
                raise Mismatch(f"{image.name}: the image has no model layers (nothing under /models); nothing to sign")
            found = verify_layers(reader, image) if check_bytes else _image_digests(reader, image)
            if files and found != files:
                raise Mismatch(f"the platforms of {ref} hold different model files; sign each platform's image")
            files = found
        bundle = signer(files, view.annotations.get("org.opencontainers.image.title", "model"), ())
        store = reader.store
        use_referrer = mode == "referrer" or (mode == "auto" and has_referrers_api(store, view.digest))
        if use_referrer:
            data, media_type, _ = store.manifest(view.digest)
            digest = attach_referrer(store, Descriptor(media_type, view.digest, len(data)), bundle)
            where = _repository(ref) + "@" + digest
        else:
            digest = attach(store, view.digest, bundle)
            where = _repository(ref) + ":" + tag_for(view.digest)
    return ImageSignature("referrer" if use_referrer else "tag", where, digest, len(files))


def _repository(ref: ImageRef) -> str:
    """host/repo (or oci:DIR) without tag or digest."""
    if isinstance(ref, LayoutRef):
        return f"oci:{ref.path}"
    return ref.name


def pull_image(ref: ImageRef, options: ClientOptions, dest: Path) -> PullResult:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"invalid DIR={str(dest)!r}: exists and is not a directory")
    with ImageReader(ref, options) as reader:
        view = reader.read()
        return pull(reader, preferred(view.platforms), dest)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


__all__ = ["ModelcarError", "inspect", "parse_ref", "pull_image", "render_inspect", "verify"]
