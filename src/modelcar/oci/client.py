"""A client for the OCI distribution API of one registry: auth, retries, redirects, blobs, manifests.

- TLS is verified unless --no-tls-verify, which also allows plain http (tried after https fails).
- Timeouts are idle timeouts (connect, read, write); there is no total timeout.
- One request path (`request`): every request to the registry, its redirects, its 401 and its
  retries go through it; the transports beneath it are httpx's and, for model layers on plain
  http, sendfile's (sendfile.py).
- What is transient, and the one retry loop, are retry.py's: connection errors and 408/429/5xx,
  exponential backoff and jitter, Retry-After honoured.
- Redirects are followed by hand: the Authorization header goes only to the registry's own origin
  (scheme, host, port), never to an upload Location or redirect elsewhere; while TLS is verified,
  a plain-http Location or redirect is refused.
- A 401's challenge is answered by registry_auth.py (Basic, or a Bearer token; credentials from
  the keychain, auth files by default); a token that expires mid-push (Harbor's last 30 minutes)
  is answered like any 401: a new token, and the request sent again (an upload resumes; see
  upload.py).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ..retry import (
    RetryPolicy,
    call_with_retries,
    describe_error,
    is_transient_error,
    is_transient_status,
)
from ..tls import ssl_context
from . import sendfile
from .auth import AuthFiles, Keychain, parse_challenge
from .errors import InsecureLocation, RegistryError, RegistryUnreachable, show_url, tls_hint
from .image import ACCEPT, media_type_of, sha256_digest
from .registry_auth import RegistryAuth, describe_scopes

TIMEOUT = httpx.Timeout(connect=30.0, read=300.0, write=300.0, pool=None)
MAX_REDIRECTS = 10
USER_AGENT = "modelcar"

Body = bytes | Callable[[], Iterable[bytes] | httpx.SyncByteStream] | None


class RegistryClient:
    """One registry host; safe to share between threads."""

    def __init__(
        self,
        registry: str,
        *,
        tls_verify: bool = True,
        ca_bundle: Path | None = None,
        keychain: Keychain | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.host = "registry-1.docker.io" if registry == "docker.io" else registry
        self.tls_verify = tls_verify
        self.retry = retry or RetryPolicy.from_env()
        self.scheme: str | None = None
        self._ping_lock = threading.Lock()
        verify = ssl_context(tls_verify, ca_bundle)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        # Model layers to a plain-http registry go by sendfile (sendfile.py), beneath this client's
        # request path; with a proxy for http configured, httpx's proxy transport takes http:// instead.
        mounts: dict[str, httpx.BaseTransport] = {}
        if sendfile.usable(httpx.URL("http://registry")):
            fallback = transport or httpx.HTTPTransport(verify=verify, limits=limits)
            mounts["http://"] = sendfile.SendfileTransport(fallback)
        self._http = httpx.Client(
            verify=verify,
            timeout=TIMEOUT,
            follow_redirects=False,
            limits=limits,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            mounts=mounts,
        )

        self.auth = RegistryAuth(registry, keychain or AuthFiles(), tls_verify, self._with_retries, self._http)

    @property
    def keychain(self) -> Keychain:
        return self.auth.keychain

    def close(self) -> None:
        self._http.close()

    def want(self, repository: str, actions: str) -> None:
        """Adds a token scope (`pull` or `pull,push`) that later requests need."""
        self.auth.want(repository, actions)

    def authenticate(self, response: httpx.Response) -> None:
        """Answers the 401's challenge (registry_auth.py); raises when there is nothing better to send."""
        self.auth.authenticate(response)

    # ---- the request loop -----------------------------------------------------------------

    def _base(self) -> str:
        if self.scheme is None:
            with self._ping_lock:  # upload threads start together: one of them finds the scheme
                if self.scheme is None:
                    self._ping()
        return f"{self.scheme}://{self.host}"

    def authorization_for(self, url: httpx.URL) -> str | None:
        """The Authorization header to send to `url`: only the registry's own origin gets one."""
        auth = self.auth.header()
        return auth if auth and _same_origin(url, httpx.URL(self._base())) else None

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self._base() + path

    def check_url(self, url: str | httpx.URL) -> None:
        """Refuses a plain-http URL (an upload Location, a redirect) while TLS is verified."""
        if self.tls_verify and httpx.URL(str(url)).scheme != "https":
            raise InsecureLocation(
                f"registry {self.registry} sent the client to {show_url(str(url))}, which is not https; "
                "refusing it while TLS is verified (pass --no-tls-verify only for a registry you trust)"
            )

    def _ping(self) -> None:
        """Finds the scheme: https, or http when TLS verification is off and https does not answer."""
        if not self.tls_verify:
            try:
                self._http.get(f"https://{self.host}/v2/")
                self.scheme = "https"
                return
            except httpx.TransportError:
                pass  # not TLS (or not up): plain http is allowed with --no-tls-verify
        scheme = "https" if self.tls_verify else "http"
        try:
            self._with_retries(lambda: self._http.get(f"{scheme}://{self.host}/v2/"), answers=False)
        except httpx.TransportError as exc:
            hint = tls_hint(exc) if self.tls_verify else ""
            raise RegistryUnreachable(
                f"cannot reach registry {self.registry}: {describe_error(exc)}{hint}", self.registry, bool(hint)
            ) from None
        self.scheme = scheme

    def _with_retries(
        self,
        send: Callable[[], httpx.Response],
        *,
        answers: bool = True,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """`send` under the retry policy: transport errors and, with `answers`, transient answers
        that are not in `ok` are tried again (a dropped response is closed)."""
        policy = self.retry if attempts is None else dataclasses.replace(self.retry, attempts=attempts)
        return call_with_retries(
            send,
            policy,
            # Only the network's failures: an error raised here (a token server's refusal) is final.
            transient_error=lambda exc: isinstance(exc, httpx.TransportError) and is_transient_error(exc),
            transient_answer=lambda r: answers and r.status_code not in ok and is_transient_status(r.status_code),
            before_retry=lambda _attempt, _wait, outcome: (
                _close(outcome, stream) if isinstance(outcome, httpx.Response) else None
            ),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: Body = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        retries: bool = True,
    ) -> httpx.Response:
        """Sends a request with auth, retries and redirects; returns a response whose status is in `ok`.

        `content` is bytes or a factory of byte iterators, so a retry can send the body again.
        A streamed response must be closed by the caller.
        """
        url = self.url(path)
        tried_auth = False

        def send_once() -> httpx.Response:
            nonlocal tried_auth
            response = self._send(method, url, headers or {}, content, params, stream)
            if response.status_code == 401 and not tried_auth:
                _close(response, stream)
                self.authenticate(response)
                tried_auth = True
                response = self._send(method, url, headers or {}, content, params, stream)
            return response

        try:
            response = self._with_retries(send_once, ok=ok, stream=stream, attempts=None if retries else 1)
        except httpx.TransportError as exc:
            raise RegistryError(f"{method} {show_url(url)} failed: {describe_error(exc)}") from None
        if response.status_code in ok:
            return response
        if stream:
            response.read()
            response.close()
        raise self.error_for(method, url, response)

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: Body,
        params: dict[str, str] | None,
        stream: bool,
    ) -> httpx.Response:
        current = url
        for _ in range(MAX_REDIRECTS):
            sent = dict(headers)
            target = httpx.URL(current)
            self.check_url(target)
            auth = self.authorization_for(target)
            if auth:
                sent["Authorization"] = auth
            body: Any = content() if callable(content) else content
            query = params if current == url else None
            if isinstance(body, httpx.SyncByteStream):  # an UploadBody: the transport beneath picks how it goes
                request = self._http.build_request(method, current, headers=sent, params=query)
                request.stream = body
            else:
                request = self._http.build_request(method, current, headers=sent, content=body, params=query)
            response = self._http.send(request, stream=stream)
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                _close(response, stream)
                current = str(response.url.join(response.headers["Location"]))
                if response.status_code == 303:
                    method, content = "GET", None
                continue
            return response
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def error_for(self, method: str, url: str, response: httpx.Response) -> RegistryError:
        status = response.status_code
        detail = ""
        codes: tuple[str, ...] = ()
        try:
            errors = [e for e in response.json().get("errors") or [] if isinstance(e, dict)]
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors[:3])
            codes = tuple(str(e["code"]) for e in errors if isinstance(e.get("code"), str))
        except (ValueError, AttributeError, TypeError):
            detail = response.text[:200].strip() if response.text else ""
        if status in (401, 403):
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if challenge is not None and challenge.params.get("error") == "insufficient_scope":
                wanted = describe_scopes(challenge.params.get("scope", ""))
                denied = self.auth.denied(
                    status,
                    f"{method} {show_url(url)} needs {wanted}, which the token server did not grant "
                    "(insufficient_scope)",
                    "ask the registry's administrators for that access, or use an account that has it",
                )
            else:
                denied = self.auth.denied(
                    status, f"{method} {show_url(url)} was refused" + (f" ({detail})" if detail else "")
                )
            denied.codes = codes
            return denied
        return RegistryError(
            f"registry {self.registry} answered HTTP {status} to {method} {show_url(url)}"
            + (f" ({detail})" if detail else ""),
            status,
            response.headers.get("Retry-After"),
            codes,
        )

    # ---- the distribution API ---------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index."""
        self.want(repository, "pull")
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ACCEPT},
            ok=(200,),
        )
        data = response.content
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"registry {self.registry} sent a manifest for {reference} whose digest is {digest}")
        return data, media_type_of(data, response.headers.get("Content-Type")), digest

    def get_blob(self, repository: str, digest: str) -> bytes:
        self.want(repository, "pull")
        data = self.request("GET", f"/v2/{repository}/blobs/{digest}").content
        if sha256_digest(data) != digest:
            raise RegistryError(f"blob {digest} from {self.registry}/{repository} does not match its digest")
        return data

    def get_json(self, repository: str, digest: str) -> dict[str, Any]:
        try:
            value = json.loads(self.get_blob(repository, digest))
        except ValueError:
            raise RegistryError(f"blob {digest} of {self.registry}/{repository} is not JSON") from None
        if not isinstance(value, dict):
            raise RegistryError(f"blob {digest} of {self.registry}/{repository} is not a JSON object")
        return value

    @contextmanager
    def open_blob(self, repository: str, digest: str, offset: int = 0) -> Iterator[Iterator[bytes]]:
        """The blob's bytes from `offset`, streamed (redirects to storage hosts get no credentials)."""
        self.want(repository, "pull")
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", headers=headers, ok=(200, 206), stream=True)
        try:
            skip = offset if (offset and response.status_code == 200) else 0
            yield _skipping(response.iter_bytes(1 << 20), skip)
        finally:
            response.close()

    def has_blob(self, repository: str, digest: str) -> bool:
        self.want(repository, "pull")
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404))
        return response.status_code == 200

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        self.want(repository, "pull,push")
        self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            content=data,
            ok=(200, 201, 202),
        )
        return sha256_digest(data)


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _close(response: httpx.Response, stream: bool) -> None:
    if stream:
        response.close()
    else:
        response.read()


def _skipping(chunks: Iterator[bytes], skip: int) -> Iterator[bytes]:
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        yield chunk[skip:] if skip else chunk
        skip = 0
