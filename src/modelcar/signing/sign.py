"""Signs a model's files as model-signing does (`model_signing sign key`), and attaches the
signature to an image where model-signing and `modelcar verify` find it.

The statement lists every file and its sha256 (sorted by name); its subject digest is the sha256
over those digests in that order. The bundle (Sigstore bundle v0.3, DSSE envelope) is signed with
an EC key (P-256/384/521) and names the key by the sha256 of its PEM public key. On an image, the
signature goes under the tag `sha256-<manifest hex>.sig` (model-signing's tag convention, which
registries without the referrers API hold too), as a manifest whose one layer is the bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..oci.errors import RegistryError
from ..oci.image import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json
from ..oci.store import RegistryStore, Store
from .keys import load_private_key
from .verify import BUNDLE, IN_TOTO

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
ARTIFACT_TYPE = "application/vnd.model-signing.signature.v0.1"
REFERRER_CONFIG = "application/vnd.model-signing.signature.v0.1.config+json"
ARTIFACT_ANNOTATION = "dev.sigstore.model-signing.artifact-type"
SERIALIZATION = {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": []}


GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")  # model-signing leaves them out


def statement(files: dict[str, str], name: str, ignore_paths: tuple[str, ...] = ()) -> bytes:
    """The in-toto statement over `files` ({path: sha256:...}), as model-signing writes it;
    `ignore_paths` are recorded as left out (model.sig itself, in a model directory)."""
    if not files:
        raise UsageError("there are no model files to sign")
    root = hashlib.sha256()
    resources = []
    for path in sorted(files):
        hexdigest = files[path].removeprefix("sha256:")
        root.update(bytes.fromhex(hexdigest))
        resources.append({"name": path, "algorithm": "sha256", "digest": hexdigest})
    serialization = {**SERIALIZATION, "ignore_paths": list(ignore_paths)}
    doc: dict[str, Any] = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": serialization, "resources": resources},
    }
    return json.dumps(doc, indent=2).encode()


def sign_files(
    files: dict[str, str],
    private_key: Path | EllipticCurvePrivateKey,
    name: str = "model",
    password: str | None = None,
    ignore_paths: tuple[str, ...] = (),
) -> bytes:
    """The signature bundle (JSON bytes) over `files`, signed with the EC private key (or the
    PEM file holding it, decrypted with `password`)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = load_private_key(private_key, password) if isinstance(private_key, Path) else private_key
    algorithm = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    payload = statement(files, name, ignore_paths)
    pae = f"DSSEv1 {len(IN_TOTO)} {IN_TOTO} {len(payload)} ".encode() + payload
    # RFC 6979: the same key and files give the same bytes, so a signed image stays reproducible.
    signature = key.sign(pae, ec.ECDSA(algorithm, deterministic_signing=True))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = {
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": hashlib.sha256(pem).hexdigest()}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle, indent=2).encode()


def attach(store: Store, image_digest: str, bundle: bytes) -> str:
    """Puts the signature under the tag sha256-<hex>.sig beside the image; returns its digest."""
    layer_digest = store.put_bytes(bundle)
    # model-signing writes b"{}" under the image-config media type, which the OCI config schema
    # refuses; its verifier reads only the layer. An empty image config over the one layer (as
    # cosign's tag signatures carry) keeps the media type every registry takes and passes the schema.
    config = canonical_json(
        {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    )
    store.put_bytes(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(OCI_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(), len(config)).to_json(),
        "layers": [Descriptor(BUNDLE, layer_digest, len(bundle)).to_json()],
        "annotations": {ARTIFACT_ANNOTATION: ARTIFACT_TYPE},
    }
    return store.put_manifest(canonical_json(manifest), OCI_MANIFEST, tag_for(image_digest))


def key_signer(key: EllipticCurvePrivateKey) -> Callable[[dict[str, str], str, tuple[str, ...]], bytes]:
    """sign_files with `key`, as the (files, name, ignore_paths) -> bundle function signing takes."""
    return lambda files, name, ignore_paths: sign_files(files, key, name, ignore_paths=ignore_paths)


def tag_for(image_digest: str) -> str:
    return image_digest.replace(":", "-") + ".sig"


def has_referrers_api(store: Store, image_digest: str) -> bool:
    """Whether the registry answers `GET /v2/<repo>/referrers/<digest>` with an image index (OCI
    1.1); Distribution 2.8 (Debian's docker-registry) and GHCR answer 404. A layout has none."""
    if not isinstance(store, RegistryStore):
        return False
    store.client.want(store.repository, "pull")
    try:
        response = store.client.request(
            "GET",
            f"/v2/{store.repository}/referrers/{image_digest}",
            headers={"Accept": OCI_INDEX},
            ok=(200, 404, 400, 405),
        )
    except RegistryError:
        return False
    if response.status_code != 200:
        return False
    try:
        doc = response.json()
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("manifests"), list)


def attach_referrer(store: Store, subject: Descriptor, bundle: bytes) -> str:
    """Pushes the signature as an OCI 1.1 referrer of `subject` (by digest, no tag), as
    model-signing's referrers mode does; returns its digest."""
    config = b"{}"
    store.put_bytes(config)
    layer_digest = store.put_bytes(bundle)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": Descriptor(REFERRER_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(), len(config)).to_json(),
        "layers": [Descriptor(BUNDLE, layer_digest, len(bundle)).to_json()],
        "subject": subject.to_json(),
    }
    return store.put_manifest(canonical_json(manifest), OCI_MANIFEST, None)
