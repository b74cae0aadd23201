"""The TLS trust every HTTPS client of modelcar uses (registries and the Model Registry).

Trusted: the system's CAs (as OpenSSL finds them: SSL_CERT_FILE and SSL_CERT_DIR honoured),
certifi's where the system's public CAs may be missing, and CA_BUNDLE's.

Loading a CA file parses every certificate in it: about 0.14 s each for the system bundle and
certifi's on a small machine, before the first byte of a push. The system bundle is always
loaded (a CA may have been added to it alone); a hashed certificate directory (Debian's
/etc/ssl/certs, `openssl rehash`) is read one certificate at a time as a chain needs it; certifi
is added only where neither holds the public CAs (a minimal image, or SSL_CERT_FILE naming a
private CA alone on a system without a hashed directory).
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from pathlib import Path

import certifi

from .errors import UsageError

_HASHED = re.compile(r"[0-9a-f]{8}\.\d+")


@functools.lru_cache(maxsize=8)
def ssl_context(tls_verify: bool, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """False with --no-tls-verify; else the system's CAs, certifi's where needed, and CA_BUNDLE's.

    Built once per setting (and environment): every registry client and upload thread shares it.
    The system store matters on OpenShift, where a cluster's own CA is often injected there.
    """
    if not tls_verify:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # what create_default_context() sets up, less the CA load
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if not _load_system_trust(context):
        context.load_verify_locations(cafile=certifi.where())
    if ca_bundle is not None:
        _load(context, ca_bundle, "the CA bundle")
    return context


def _load_system_trust(context: ssl.SSLContext) -> bool:
    """Adds the system's CAs; True when they include the system's public ones."""
    paths = ssl.get_default_verify_paths()
    # Variables that name the system's own bundle or directory (as some images set them) are
    # the system store, not a choice of the user's.
    env_file = _unless_same(os.environ.get(paths.openssl_cafile_env), paths.openssl_cafile)
    env_dir = _unless_same(os.environ.get(paths.openssl_capath_env), paths.openssl_capath)
    capath = env_dir or paths.openssl_capath
    hashed = _is_hashed_dir(capath)
    if hashed:
        context.load_verify_locations(capath=capath)
    if env_file:
        _load(context, Path(env_file), f"{paths.openssl_cafile_env}")
        return hashed and not env_dir
    # The system bundle is loaded even beside a hashed directory, as OpenSSL's defaults do: a CA
    # mounted into the bundle alone (a cluster's CA over /etc/ssl/certs/ca-certificates.crt, as
    # Kubernetes set-ups do) is not in the directory.
    if paths.openssl_cafile and os.path.isfile(paths.openssl_cafile):
        context.load_verify_locations(cafile=paths.openssl_cafile)
        return hashed or context.cert_store_stats()["x509_ca"] > 0
    return hashed


def _unless_same(value: str | None, default: str | None) -> str | None:
    """`value`, or None when it is empty or names the same file as `default`."""
    if not value:
        return None
    if default and os.path.realpath(value) == os.path.realpath(default):
        return None
    return value


def _is_hashed_dir(path: str | None) -> bool:
    if not path:
        return False
    try:
        with os.scandir(path) as entries:
            return any(_HASHED.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def _load(context: ssl.SSLContext, path: Path, what: str) -> None:
    try:
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load {what} {path}: {exc}; give a PEM file") from None
