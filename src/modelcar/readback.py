"""`modelcar inspect`, `verify` and `pull`: a ModelCar read back from a registry or an `oci:` layout.

All three open the image with oci/reader.py (manifests and configs); only verify and pull stream
layers (oci/pull.py). KServe readiness reuses build-push's base check (oci/base_check.py): the
base layers' file lists are read once and remembered in the user's cache directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelcarError, UsageError
from .files import sha256_file
from .oci import base_check
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


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "modelcar" / "base-check.json"


def inspect(ref: ImageRef, options: ClientOptions) -> dict[str, Any]:
    """What the manifests and configs say (and the base's file lists, once): no model layer is read."""
    with ImageReader(ref, options) as reader:
        view = reader.read()
        image = preferred(view.platforms)
        signature = reader.signature(view.digest)
        kserve = _kserve(reader, view, image)
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
    }


def _source(annotations: dict[str, str]) -> dict[str, str]:
    """The source annotations build-push writes (on the index, or on the manifest)."""
    return {name: annotations[key] for key, name in SOURCE_KEYS.items() if key in annotations}


def _kserve(reader: ImageReader, view: ImageView, image: PlatformImage) -> dict[str, Any]:
    models = bool(image.model)
    platforms = [base_check.Platform(p.name, p.base_layers, p.config) for p in view.platforms]
    if not any(p.layers for p in platforms):
        fitness = base_check.scratch()
    else:
        fitness = base_check.check(reader.store, view.reference, platforms, base_check.FitnessCache(_cache_path()))
    ready = bool(models and fitness.ready)
    out: dict[str, Any] = {"ready": ready, "models_non_empty": models, "base": fitness.to_json()}
    out["notes"] = [text for _, text in fitness.messages()] + ([] if models else ["/models is empty"])
    return out


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

    With a key: the attached signature, then the image's files against the signed digests (file
    layers by their annotations, no layer read; directory layers by their bytes). Without: every
    model layer's bytes against its digest, diff_id and annotations.
    """
    checked: list[str] = []
    with ImageReader(ref, options) as reader:
        view = reader.read()
        if public_key is not None:
            from .signing.verify import verify_signature

            signature = reader.signature(view.digest)
            if signature is None:
                raise Mismatch(f"no signature is attached to {ref} ({view.digest}); nothing to check the key against")
            expected = verify_signature(reader, signature, public_key)
            checked.append(f"signature ({signature.kind}, {signature.where}) verified with {public_key}")
            for image in view.platforms:
                _compare_signed(_image_digests(reader, image), expected)
            checked.append(f"the image's files are the {len(expected)} signed ones")
        else:
            expected = {}
            for image in view.platforms:
                for path, digest in verify_layers(reader, image).items():
                    expected.setdefault(path, digest)
                checked.append(f"{image.name}: every model layer's bytes match its digest, diff_id and annotations")
    if local_model is not None:
        _compare_local(local_model, expected)
        checked.append(f"the files in {local_model} match")
    return checked


def _image_digests(reader: ImageReader, image: PlatformImage) -> dict[str, str]:
    """{path: sha256:...}: file layers from their annotations, directory layers from their bytes."""
    found = {f.path: f.digest for f in image.files() if f.kind == "file" and f.digest}
    if any(f.kind == "directory" for f in image.files()):
        found.update(verify_layers(reader, image, directories_only=True))
    return found


def _compare_signed(image: dict[str, str], signed: dict[str, str]) -> None:
    for path in sorted(set(image) | set(signed)):
        if path not in signed:
            raise Mismatch(f"/models/{path}: in the image but not signed")
        if path not in image:
            raise Mismatch(f"/models/{path}: signed but not in the image")
        if image[path] != signed[path]:
            raise Mismatch(f"/models/{path}: the image has {image[path]}, the signature {signed[path]}")


def _compare_local(local: Path, expected: dict[str, str]) -> None:
    if not local.is_dir():
        raise UsageError(f"invalid --local-model={str(local)!r}: not a directory")
    for path, digest in sorted(expected.items()):
        file = local / path
        if file.is_symlink() or not file.is_file():
            raise Mismatch(f"{path}: missing from {local}")
        actual = "sha256:" + sha256_file(file)
        if actual != digest:
            raise Mismatch(f"{path}: {file} has digest {actual}, the image says {digest}")
    extra = sorted(
        p.relative_to(local).as_posix()
        for p in local.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(local).as_posix() not in expected
    )
    if extra:
        raise Mismatch(
            f"{extra[0]}: in {local} but not in the image" + (f" (and {len(extra) - 1} more)" if extra[1:] else "")
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
) -> ImageSignature:
    """Signs the image's files (from its annotations; directory layers read) as model-signing
    does and attaches the signature: as an OCI 1.1 referrer where the registry has the referrers
    API (`mode` "auto" or "referrer"), else under the tag sha256-<hex>.sig (`mode` "tag")."""
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
            found = _image_digests(reader, image)
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
