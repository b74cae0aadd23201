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
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..oci.image import OCI_CONFIG, OCI_MANIFEST, Descriptor, canonical_json
from ..oci.store import Store
from .verify import BUNDLE, IN_TOTO

PREDICATE_TYPE = "https://model_signing/signature/v1.0"
ARTIFACT_TYPE = "application/vnd.model-signing.signature.v0.1"
ARTIFACT_ANNOTATION = "dev.sigstore.model-signing.artifact-type"
SERIALIZATION = {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": []}


def statement(files: dict[str, str], name: str) -> bytes:
    """The in-toto statement over `files` ({path: sha256:...}), as model-signing writes it."""
    if not files:
        raise UsageError("there are no model files to sign")
    root = hashlib.sha256()
    resources = []
    for path in sorted(files):
        hexdigest = files[path].removeprefix("sha256:")
        root.update(bytes.fromhex(hexdigest))
        resources.append({"name": path, "algorithm": "sha256", "digest": hexdigest})
    doc: dict[str, Any] = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": SERIALIZATION, "resources": resources},
    }
    return json.dumps(doc, indent=2).encode()


def sign_files(files: dict[str, str], private_key: Path, name: str = "model") -> bytes:
    """The signature bundle (JSON bytes) over `files`, signed with the PEM EC private key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(
            f"invalid SIGN_KEY={str(private_key)!r}: not a readable unencrypted PEM private key ({exc})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.key_size not in (256, 384, 521):
        raise UsageError(f"invalid SIGN_KEY={str(private_key)!r}: not an EC P-256, P-384 or P-521 private key")
    algorithm = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    payload = statement(files, name)
    pae = f"DSSEv1 {len(IN_TOTO)} {IN_TOTO} {len(payload)} ".encode() + payload
    signature = key.sign(pae, ec.ECDSA(algorithm))
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
    config = b"{}"
    store.put_bytes(config)
    layer_digest = store.put_bytes(bundle)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(OCI_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(), len(config)).to_json(),
        "layers": [Descriptor(BUNDLE, layer_digest, len(bundle)).to_json()],
        "annotations": {ARTIFACT_ANNOTATION: ARTIFACT_TYPE},
    }
    return store.put_manifest(canonical_json(manifest), OCI_MANIFEST, image_digest.replace(":", "-") + ".sig")
