"""What a modelcar run tells the Model Registry, built from the run record and the model files.

The record sections come from other stages (possibly other pods): `source`, `files`,
`compression` and `image`. Any of them but `image` may be missing; without an image pushed to a
registry there is nothing to register.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelcarError
from ..oci.reference import LayoutRef, ReferenceError, RegistryRef, is_sha256_digest, parse_reference
from .modelcard import read_model_card
from .modelformat import detect_format
from .registration import Registration

FRAMEWORK = "pytorch"
COMPRESSION_SETTINGS = ("scheme", "bits", "group_size", "dataset", "sequence_length", "num_calibration_samples")
COMPRESSION_SIZES = ("bytes_before", "bytes_after")
# What --evaluate measured (run.json's compression.evaluation key -> version property).
EVALUATION_PROPERTIES = {
    "perplexity_before": "perplexity_original",
    "perplexity_after": "perplexity_compressed",
    "dataset": "evaluation_dataset",
}
# Every version property modelcar writes; one it no longer wants (say, compression settings after
# an --overwrite with an uncompressed image) is removed, while other people's properties stay.
MANAGED_PROPERTIES = frozenset(
    {"source", "framework", "compressed", "hf_repo", "hf_revision", "image_digest", "image_tag"}
    | set(COMPRESSION_SETTINGS)
    | set(COMPRESSION_SIZES)
    | set(EVALUATION_PROPERTIES.values())
    | {"signed", "signature_ref"}
)


class NoPushedImage(ModelcarError):
    """The run record has no image in a registry to register."""


@dataclass(frozen=True)
class PushedImage:
    ref: RegistryRef  # host/repo, no tag, with the digest
    digest: str
    tag: str | None

    @property
    def uri(self) -> str:
        return f"oci://{self.ref.registry}/{self.ref.repository}@{self.digest}"


def pushed_image(image: Any) -> PushedImage:
    """The registry image from the record's `image` section, or NoPushedImage saying why not."""
    if not isinstance(image, Mapping) or not image.get("reference"):
        raise NoPushedImage(
            "the run record has no pushed image (run.json has no image section): run build-and-push "
            "first, with OCI_IMAGE set to a registry reference such as quay.io/org/model:1.0.0"
        )
    reference = str(image["reference"])
    try:
        parsed = parse_reference(reference)
    except ReferenceError as exc:
        raise NoPushedImage(f"the run record's image reference {reference!r} is not valid ({exc})") from None
    if isinstance(parsed, LayoutRef):
        raise NoPushedImage(
            f"register-model needs an image in a registry, but build-and-push wrote {reference} (an OCI "
            "layout on disk); set OCI_IMAGE to a registry reference such as quay.io/org/model:1.0.0 and "
            "run build-and-push again"
        )
    digest = str(image.get("digest") or parsed.digest or "")
    if not is_sha256_digest(digest):
        raise NoPushedImage(
            f"the run record's image {reference} has no sha256 digest ({digest or 'none'}); run build-and-push again"
        )
    tag = parsed.tag or (None if parsed.digest else "latest")  # a bare host/repo means :latest
    pinned = image.get("pinned")
    if pinned:
        try:
            pinned_ref = parse_reference(str(pinned))
        except ReferenceError:
            pinned_ref = None
        if isinstance(pinned_ref, RegistryRef) and pinned_ref.digest == digest:
            parsed = pinned_ref
    return PushedImage(ref=parsed.with_digest(digest), digest=digest, tag=tag)


def registration_for_run(
    *,
    model_name: str,
    model_version: str,
    model_dir: Path,
    record: Mapping[str, Any],
    fallback_source: Mapping[str, Any] | None = None,
) -> Registration:
    """The Registration for this run: image from `image`, properties from the other sections."""
    image = pushed_image(record.get("image"))
    source = _mapping(record.get("source")) or _mapping(fallback_source)
    compression = _mapping(record.get("compression"))
    files = record.get("files")
    paths = [str(f["path"]) for f in files if isinstance(f, Mapping) and "path" in f] if isinstance(files, list) else []
    model_format = detect_format(model_dir, paths or None)
    card = read_model_card(model_dir / "README.md")
    kind = str(source.get("kind") or "huggingface")
    from_hub = kind == "huggingface" and bool(source.get("repo"))
    revision = source.get("sha") or source.get("revision")
    compressed = bool(compression.get("enabled"))
    properties: dict[str, Any] = {
        "source": kind,
        "framework": FRAMEWORK,
        "compressed": compressed,
        "hf_repo": source.get("repo") if from_hub else None,
        "hf_revision": revision if from_hub else None,
        "image_digest": image.digest,
        "image_tag": image.tag,
    }
    if compressed:
        for key in COMPRESSION_SETTINGS:
            value = compression.get(key)
            properties[key] = "channel" if key == "group_size" and value is None else value
        for key in COMPRESSION_SIZES:
            properties[key] = compression.get(key)
        evaluation = _mapping(compression.get("evaluation"))
        for key, name in EVALUATION_PROPERTIES.items():
            properties[name] = evaluation.get(key)
    signature = _mapping(_mapping(record.get("image")).get("signature"))
    if signature.get("ref"):
        properties["signed"] = True
        properties["signature_ref"] = str(signature["ref"])
    origin = f"{source.get('repo')}@{revision}" if from_hub and revision else source.get("repo") or source.get("path")
    return Registration(
        model_name=model_name,
        version_name=model_version,
        uri=image.uri,
        image_digest=image.digest,
        version_properties={k: v for k, v in properties.items() if v is not None},
        managed_properties=MANAGED_PROPERTIES,
        model_format_name=model_format.name if model_format else None,
        model_format_version=model_format.version if model_format else None,
        source_kind="huggingface" if from_hub else None,
        source_name=str(source["repo"]) if from_hub else None,
        description=card.description,
        license=card.license,
        version_description=f"ModelCar image of {origin}" if origin else None,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
