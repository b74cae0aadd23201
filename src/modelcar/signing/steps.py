"""The two signing steps of build-and-push: `model.sig` into the model directory before packaging,
and the pushed image signed in its registry (or layout) afterwards, both with one signer (SIGN_KEY,
or keyless Sigstore). What was signed goes into run.json's `image.signature`; from there the
results (SIGNATURE_REF, SIGNATURE_DIGEST, MODEL_SIG_DIGEST) and the Model Registry's `signed` and
`signature_ref` properties.

A signature the registry refuses (or any failure after the push) leaves the image pushed and
recorded, marked unsigned, and fails the stage: a signature was asked for, so the pipeline must
not go on to register the image as if it had one. Running build-and-push again sends no layer a
second time and signs; so does `modelcar sign IMAGE_URL`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import ModelcarError
from ..oci.reference import parse_reference
from ..oci.store import ClientOptions
from ..params import Params
from .model_sig import MODEL_SIG, ModelSignature, Signer


class ImageNotSigned(ModelcarError):
    """The image was pushed, but signing it failed."""


def make_signer(params: Params) -> tuple[Signer, dict[str, Any]] | None:
    """The signer for this run and how it signs (for run.json), or None when not signing.

    For keyless signing, every Sigstore service is connected to here, before any work."""
    if params.sign_key is not None:
        from cryptography.hazmat.primitives import serialization

        from .keys import load_private_key
        from .sign import key_signer

        password = params.sign_key_password.get_secret_value() if params.sign_key_password else None
        key = load_private_key(params.sign_key, password)
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return key_signer(key), {"method": "key", "key_hint": hashlib.sha256(pem).hexdigest()}
    if params.sign_keyless:
        from . import keyless

        assert params.sigstore_identity_token_path is not None  # params fills in the default
        sign = keyless.signer(params.sigstore_trust_config, params.sigstore_identity_token_path)
        config = str(params.sigstore_trust_config) if params.sigstore_trust_config else "public Sigstore"
        return sign, {"method": "keyless", "trust_config": config}
    return None


def sign_pushed(
    pinned: str,
    options: ClientOptions,
    signer: Signer,
    how: dict[str, Any],
    model_sig: ModelSignature,
    image: dict[str, Any],
) -> dict[str, Any]:
    """Signs the pushed image; returns run.json's `image.signature`. On failure the section
    says unsigned (in `image`, which the caller has recorded) and ImageNotSigned is raised."""
    from ..readback import sign_image

    section: dict[str, Any] = {
        **how,
        "signed": False,
        "model_sig": {"path": f"/models/{MODEL_SIG}", "digest": model_sig.digest, "files": model_sig.files},
    }
    image["signature"] = section
    try:
        signed = sign_image(parse_reference(pinned), options, signer=signer)
    except (ModelcarError, OSError) as exc:
        section["error"] = str(exc)
        raise ImageNotSigned(
            f"the image {pinned} was pushed (IMAGE_DIGEST={image.get('digest')}) but is NOT signed: {exc}. "
            f"/models/{MODEL_SIG} is in it; run build-and-push again (nothing is sent twice) or "
            f"`modelcar sign {pinned} --sign-key KEY` once the registry takes the signature"
        ) from None
    section.update(signed.to_json())
    section["signed"] = True
    return section
