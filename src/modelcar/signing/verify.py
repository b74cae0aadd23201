"""Checks a model-signing signature (Sigstore bundle v0.3, DSSE, in-toto) with an EC public key.

The bundle's envelope is signed over DSSE's pre-authentication encoding of its payload with
ECDSA (SHA-256/384/512 for P-256/384/521), as model-signing's `sign key` does; a bundle names
its key by a hint, the sha256 of the PEM public key. The payload's `predicate.resources` are the
signed files: {name, algorithm, digest}. Only key signatures are checked here (no Sigstore
certificates or transparency log).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import ModelcarError, UsageError
from ..oci.reader import ImageReader, Signature

IN_TOTO = "application/vnd.in-toto+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


class SignatureInvalid(ModelcarError):
    """The signature does not verify with the key, or is not one this tool reads."""


def verify_signature(reader: ImageReader, signature: Signature, public_key: Path) -> dict[str, str]:
    """The signed files {path: sha256:...}, once the attached signature verified with the key."""
    layer = next((d for d in signature.layers if d.media_type == BUNDLE), None)
    if layer is None:
        raise SignatureInvalid(
            f"the signature ({signature.where}) holds no model-signing bundle ({BUNDLE}); "
            "only model-signing key signatures can be checked"
        )
    return verify_bundle(reader.blob(layer), public_key)


def verify_bundle(data: bytes, public_key: Path) -> dict[str, str]:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:  # pragma: no cover - a dependency of modelcar
        raise ModelcarError("checking a signature needs the `cryptography` package; pip install cryptography") from None
    try:
        key = serialization.load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"invalid --public-key={str(public_key)!r}: not a readable PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.key_size not in (256, 384, 521):
        raise UsageError(f"invalid --public-key={str(public_key)!r}: not an EC P-256, P-384 or P-521 public key")
    algorithm = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    try:
        bundle = json.loads(data)
        envelope = bundle["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        signatures = [base64.b64decode(s["sig"]) for s in envelope["signatures"]]
        payload_type = str(envelope.get("payloadType", IN_TOTO))
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureInvalid(f"the signature bundle cannot be read ({exc})") from None
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    if hint and hint != hashlib.sha256(pem).hexdigest():
        raise SignatureInvalid(f"the image was signed with another key than {public_key} (key hint {hint})")
    pae = f"DSSEv1 {len(payload_type)} {payload_type} {len(payload)} ".encode() + payload
    for sig in signatures:
        try:
            key.verify(sig, pae, ec.ECDSA(algorithm))
            break
        except InvalidSignature:
            continue
    else:
        raise SignatureInvalid(f"the signature does not verify with {public_key}: the signed statement was changed")
    return _resources(payload)


def _resources(payload: bytes) -> dict[str, str]:
    """The signed files; the subject digest must be the sha256 over their digests, in order."""
    try:
        statement: dict[str, Any] = json.loads(payload)
        resources = statement["predicate"]["resources"]
        root = hashlib.sha256()
        files = {}
        for r in resources:
            if r.get("algorithm", "sha256") != "sha256":
                raise SignatureInvalid(f"the signature hashes {r.get('name')} with {r.get('algorithm')}, not sha256")
            root.update(bytes.fromhex(r["digest"]))
            files[str(r["name"])] = "sha256:" + str(r["digest"])
        subject = statement["subject"][0]["digest"]["sha256"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SignatureInvalid(f"the signed statement lists no files ({exc})") from None
    if subject != root.hexdigest():
        raise SignatureInvalid("the signed statement is inconsistent: its subject digest is not that of its files")
    return files
