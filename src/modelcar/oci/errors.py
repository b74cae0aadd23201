"""The OCI registry client's errors, and the words its messages share (a URL without its query,
what to do when TLS failed)."""

from __future__ import annotations

import ssl

import httpx

from ..errors import ModelcarError
from ..retry import tls_failure


class RegistryError(ModelcarError):
    """A registry answered with an error or could not be reached.

    `status` is the HTTP status (None: no answer), `codes` the distribution spec's error codes
    from the answer's body (BLOB_UNKNOWN, MANIFEST_INVALID, DENIED...), `retry_after` its
    Retry-After, for callers that retry themselves."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: str | None = None, codes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.codes = codes


class RegistryUnreachable(RegistryError):
    """No answer from the registry at all (name not resolved, connection refused, TLS failed)."""

    def __init__(self, message: str, registry: str, handshake: bool = False) -> None:
        super().__init__(message)
        self.registry = registry
        self.handshake = handshake  # it answered, but not in TLS (or with an untrusted certificate)


class InsecureLocation(RegistryError):
    """A Location or redirect to plain http while TLS is verified: refused, never retried."""


class InsecureRealm(InsecureLocation):
    """A Bearer challenge naming a token server that is not https while TLS is verified."""


def show_url(url: str) -> str:
    """A URL fit for a message: no query (upload state, signed storage parameters)."""
    return str(httpx.URL(url).copy_with(query=None))


def tls_hint(exc: BaseException) -> str:
    """What to do when https failed in the handshake; nothing for a name that does not resolve or a
    refused connection, where --no-tls-verify would not help."""
    failure = tls_failure(exc)
    if failure is None:
        return ""
    if isinstance(failure, ssl.SSLCertVerificationError):
        return "; its certificate is not trusted: pass --ca-bundle with the CA that signed it"
    return "; it does not answer in TLS there: for a plain-http registry pass --no-tls-verify"
