"""Keyless signing (Sigstore: a Fulcio certificate for an OIDC identity, a Rekor log entry), as
OpenShift AI plans it with Trusted Artifact Signer: SIGN_KEYLESS=true, the instance's trust
configuration in SIGSTORE_TRUST_CONFIG (a ClientTrustConfig JSON naming its Fulcio, Rekor, TSA and
OIDC URLs; without it, the public Sigstore instance, found by TUF), and the identity token from
SIGSTORE_IDENTITY_TOKEN_PATH (by default the pod's service-account token, projected with the
audience `sigstore`).

The signing itself is model-signing's (the `keyless` extra, rh-model-signing), over the same
statement as a key signature. Before it, every service the signing will call is connected to
with a short timeout, so an unreachable one (an offline cluster, a wrong URL) fails at once,
named, instead of somewhere inside the Sigstore client.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..errors import ModelcarError, ParameterError, UsageError

PUBLIC_SERVICES = (
    ("Sigstore TUF repository", "https://tuf-repo-cdn.sigstore.dev"),
    ("Fulcio (certificate authority)", "https://fulcio.sigstore.dev"),
    ("Rekor (transparency log)", "https://rekor.sigstore.dev"),
)
# signingConfig keys (v0.2, and v0.1's single URLs) -> what the service is
SIGNING_CONFIG_KEYS = (
    ("caUrls", "Fulcio (certificate authority)"),
    ("caUrl", "Fulcio (certificate authority)"),
    ("rekorTlogUrls", "Rekor (transparency log)"),
    ("tlogUrls", "Rekor (transparency log)"),
    ("tsaUrls", "timestamp authority"),
)
CONNECT_TIMEOUT = float(os.environ.get("MODELCAR_SIGSTORE_TIMEOUT", "5"))
EXTRA_HINT = "pip install 'modelcar[keyless]' (rh-model-signing, with the Sigstore client)"


class SigstoreUnreachable(ModelcarError):
    """A Sigstore service that keyless signing needs does not answer."""


@dataclass(frozen=True)
class Service:
    name: str
    url: str


def require_library() -> None:
    try:
        import model_signing.signing  # noqa: F401
    except ImportError:
        raise UsageError(f"SIGN_KEYLESS=true but this environment cannot sign keyless: {EXTRA_HINT}") from None


def services(trust_config: Path | None) -> list[Service]:
    """The services signing will call: the trust config's, or the public instance's."""
    if trust_config is None:
        return [Service(name, url) for name, url in PUBLIC_SERVICES]
    try:
        doc = json.loads(trust_config.read_text())
        signing = doc.get("signingConfig", doc) if isinstance(doc, dict) else None
    except (OSError, ValueError) as exc:
        raise ParameterError(
            "SIGSTORE_TRUST_CONFIG", str(trust_config), f"a Sigstore ClientTrustConfig JSON file ({exc})"
        ) from None
    if not isinstance(signing, dict):
        raise ParameterError("SIGSTORE_TRUST_CONFIG", str(trust_config), "a ClientTrustConfig JSON object")
    found: list[Service] = []
    for key, name in SIGNING_CONFIG_KEYS:
        value = signing.get(key)
        for entry in value if isinstance(value, list) else [value]:
            url = entry.get("url") if isinstance(entry, dict) else entry
            if isinstance(url, str) and url:
                found.append(Service(name, url))
    if not any(s.name.startswith("Fulcio") for s in found):
        raise ParameterError(
            "SIGSTORE_TRUST_CONFIG",
            str(trust_config),
            "a ClientTrustConfig whose signingConfig names a Fulcio URL (caUrls)",
        )
    return found


def check_reachable(found: list[Service], timeout: float = CONNECT_TIMEOUT) -> None:
    """A TCP connection to each service, `timeout` seconds at most each."""
    for service in found:
        parts = urlsplit(service.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=timeout):
                pass
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise SigstoreUnreachable(
                f"keyless signing cannot reach the Sigstore {service.name} at {service.url} ({reason}); "
                "check SIGSTORE_TRUST_CONFIG and the network (proxy, egress), or sign with a key (SIGN_KEY)"
            ) from None


def signer(trust_config: Path | None, token_path: Path) -> Callable[[dict[str, str], str, tuple[str, ...]], bytes]:
    """A function (files, name, ignore_paths) -> Sigstore bundle bytes, signing keyless."""
    check_reachable(services(trust_config))
    require_library()
    from model_signing import signing as ms_signing

    try:
        token = token_path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read SIGSTORE_IDENTITY_TOKEN_PATH={str(token_path)!r} ({exc.strerror})") from None
    try:
        config = ms_signing.Config().use_sigstore_signer(identity_token=token, trust_config=trust_config)
    except Exception as exc:  # a trust config the Sigstore client cannot use, a TUF failure
        raise ModelcarError(f"keyless signing cannot start: {type(exc).__name__}: {exc}") from None

    def sign(files: dict[str, str], name: str, ignore_paths: tuple[str, ...]) -> bytes:
        try:
            return config._signer.sign(payload(files, name, ignore_paths)).to_bytes()
        except Exception as exc:  # the Sigstore client's errors: name them, no traceback
            raise ModelcarError(f"keyless signing failed: {type(exc).__name__}: {exc}") from None

    return sign


def payload(files: dict[str, str], name: str, ignore_paths: tuple[str, ...]) -> Any:
    """model-signing's in-toto payload over {path: sha256:...}, built from known digests."""
    from model_signing import manifest
    from model_signing._hashing import hashing
    from model_signing._signing import signing as internal

    items = [
        manifest.FileManifestItem(
            path=PurePosixPath(path), digest=hashing.Digest("sha256", bytes.fromhex(digest.removeprefix("sha256:")))
        )
        for path, digest in sorted(files.items())
    ]
    serialization = manifest._FileSerialization("sha256", False, [Path(p) for p in ignore_paths])
    return internal.Payload(manifest.Manifest(name, items, serialization))
