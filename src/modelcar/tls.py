"""The TLS trust every HTTPS client of modelcar uses (registries and the Model Registry)."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

import certifi

from .errors import UsageError


@functools.lru_cache(maxsize=8)
def ssl_context(tls_verify: bool, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """False with --no-tls-verify; else the system's CAs, certifi's and CA_BUNDLE's.

    Built once per setting: loading the CA files takes a while, and every registry client and
    upload thread would otherwise do it again. The system store matters on OpenShift, where a
    cluster's own CA is often injected there.
    """
    if not tls_verify:
        return False
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the CA bundle {ca_bundle}: {exc}; give a PEM file") from None
    return context
