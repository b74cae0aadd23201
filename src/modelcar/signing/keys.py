"""The signing key: a PEM EC private key (P-256/384/521), optionally encrypted with a password.

Checked before any work (exit 2 naming SIGN_KEY or SIGN_KEY_PASSWORD, never showing either's
content). Needs the `cryptography` package, which the `sign` extra installs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ParameterError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

CURVES = (256, 384, 521)
EXTRA_HINT = "pip install 'modelcar[sign]' (the sign extra: the cryptography package)"


def available() -> bool:
    try:
        import cryptography.hazmat.primitives.serialization  # noqa: F401
    except ImportError:
        return False
    return True


def require_cryptography() -> None:
    if not available():
        raise UsageError(f"SIGN_KEY is set but this environment cannot sign: {EXTRA_HINT}")


def load_private_key(path: Path, password: str | None = None) -> EllipticCurvePrivateKey:
    """The EC private key in `path`; ParameterError (exit 2) for anything else."""
    require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParameterError("SIGN_KEY", str(path), f"a readable PEM EC private key file ({exc.strerror})") from None
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise ParameterError("SIGN_KEY", str(path), "a PEM EC private key (-----BEGIN ... PRIVATE KEY-----)")
    try:
        key = serialization.load_pem_private_key(data, password=password.encode() if password is not None else None)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise ParameterError(
                "SIGN_KEY", str(path), "an unencrypted key, or set SIGN_KEY_PASSWORD: this key is encrypted"
            ) from None
        raise ParameterError(
            "SIGN_KEY_PASSWORD", "<redacted>", f"not set: the key SIGN_KEY={str(path)!r} is not encrypted"
        ) from exc
    except ValueError:
        if password is not None and b"ENCRYPTED" in data:
            raise ParameterError(
                "SIGN_KEY_PASSWORD", "<redacted>", f"the password of SIGN_KEY={str(path)!r}: it does not decrypt it"
            ) from None
        raise ParameterError("SIGN_KEY", str(path), "a PEM EC private key that can be read (it cannot)") from None
    except Exception:  # cryptography's unsupported-algorithm errors
        raise ParameterError("SIGN_KEY", str(path), "a PEM EC private key that can be read (it cannot)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.key_size not in CURVES:
        raise ParameterError("SIGN_KEY", str(path), "an EC private key on P-256, P-384 or P-521 (it is another kind)")
    return key
