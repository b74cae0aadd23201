"""The build-and-push stage: `<workspace>/model` + base image -> ModelCar in a registry or layout."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..oci.base_check import FitnessCache, default_cache_path
from ..oci.build import BuildResult, build_and_push
from ..oci.digest_cache import DigestCache
from ..oci.file_digests import recorded_digests
from ..oci.store import ClientOptions
from ..signing.steps import make_signer, sign_pushed
from . import follow
from .context import StageContext

CACHE_NAME = ".modelcar-layer-digests.json"
SOURCE_ANNOTATION = "io.modelcar.source"


def run(context: StageContext) -> None:
    params = context.params
    options = ClientOptions(tls_verify=params.tls_verify, ca_bundle=params.ca_bundle, authfile=params.authfile)
    cache = DigestCache(context.workspace.root / CACHE_NAME)
    annotations = source_annotations(context.record.get("source"))
    model_dir = context.workspace.model_dir
    following = follow.start(context)  # a download still running, followed; None: model/ as it is
    # The source as the download recorded it (it may have ended only while build-and-push waited).
    annotations = source_annotations(following.source if following is not None else context.record.get("source"))
    known = recorded_digests(context.record.data, model_dir)
    signing = make_signer(params)  # keyless: its services are reached for here, before any work
    model_sig = None
    if signing is not None:
        from ..signing.model_sig import MODEL_SIG, write_model_sig

        title = annotations.get("org.opencontainers.image.title", "model")
        model_sig = write_model_sig(model_dir, signing[0], title, cache, known)
        known = {**known, MODEL_SIG: model_sig.digest}
        context.ui.info(f"build-and-push: {model_sig.files} files signed into /models/{MODEL_SIG}")
    total = (
        follow.total_bytes(following)
        if following is not None
        else sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink())
    )
    ui = context.ui
    bars = ui.byte_progress("build-and-push", total) if following is None else ui.transfer_progress(total)
    with bars as bar:
        if following is not None:  # both sides: bytes downloaded and pushed, one ETA
            following.on_record = follow.download_meter(context.workspace.root, bar.downloaded)  # type: ignore[union-attr]
        result = build_and_push(
            model_dir if following is None else following,
            params.image_ref,
            params.base_image_ref,
            options,
            annotations,
            cache,
            progress=bar.advance,
            base_check=FitnessCache(default_cache_path()),
            known_digests=known,
        )
    image = image_record(result)
    context.record.set("image", image)
    if result.kserve is not None:
        for level, text in result.kserve.messages():
            (context.ui.warn if level == "warning" else context.ui.info)(text)
    context.ui.info(summary(result))
    if signing is not None and model_sig is not None:
        try:
            section = sign_pushed(result.pinned, options, signing[0], signing[1], model_sig, image)
        finally:
            context.record.set("image", image)  # pushed, signed or not
        context.ui.info(f"build-and-push: image signed ({section['mode']}), signature {section['ref']}")


def source_annotations(source: Any) -> dict[str, str]:
    """Manifest annotations naming the model and revision (from the run record's source)."""
    if not isinstance(source, dict):
        return {}
    out: dict[str, str] = {}
    if source.get("repo"):
        repo = str(source["repo"])
        out[SOURCE_ANNOTATION] = f"huggingface:{repo}"
        out["org.opencontainers.image.source"] = f"https://huggingface.co/{repo}"
        out["org.opencontainers.image.title"] = repo.rsplit("/", 1)[-1]
    elif source.get("path"):
        # Only the directory's name: a host path would make the digest depend on the machine.
        name = str(source["path"]).rstrip("/").rsplit("/", 1)[-1]
        out[SOURCE_ANNOTATION] = f"local:{name}"
        out["org.opencontainers.image.title"] = name
    if source.get("revision"):
        out["io.modelcar.source.revision"] = str(source["revision"])
    if source.get("sha"):
        out["org.opencontainers.image.revision"] = str(source["sha"])
    return out


def image_record(result: BuildResult) -> dict[str, Any]:
    data = asdict(result)
    data["layers"] = [
        {
            "digest": layer.digest,
            "size": layer.size,
            "title": layer.title,
            "uploaded": layer.uploaded,
            "files": layer.files,
        }
        for layer in result.layers
    ]
    data["kserve"] = result.kserve.to_json() if result.kserve is not None else None
    return data


def summary(result: BuildResult) -> str:
    sent = sum(1 for layer in result.layers if layer.uploaded)
    rate = result.uploaded_bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
    return (
        f"image {result.pinned}: {_size(result.model_bytes)} of model in {len(result.layers)} layers "
        f"({sent} sent, {len(result.layers) - sent} already there), {len(result.platforms)} platform(s), "
        f"{result.seconds:.1f} s, {rate:.0f} MB/s"
    )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
