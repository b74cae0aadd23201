"""A small REST client for the Kubeflow Model Registry (`/api/model_registry/v1` or `v1alpha3`).

It contacts nobody until `connect()`, which picks the API version: the one asked for, or v1 with
a fallback to v1alpha3 when the server answers 404 on v1. Every request is retried with backoff
and jitter on what retry.py deems transient (connection errors, 408, 429 honouring Retry-After,
5xx but 501 and 505; not a failed TLS handshake). The bearer token lives in the client's headers
only: httpx drops it on a redirect to another origin, and every message that leaves this module
is scrubbed of it.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..retry import RetryPolicy, call_with_retries, tls_failure, transient_response
from ..tls import ssl_context
from .errors import (
    AuthRefused,
    Conflict,
    ModelRegistryApiError,
    ModelRegistryUnreachable,
    NotAModelRegistry,
    NotFound,
)

API_ROOT = "/api/model_registry"
API_VERSIONS = ("v1", "v1alpha3")
NOT_THIS_API = frozenset({404, 405, 501})
PAGE_SIZE = 100
MAX_PAGES = 1000
DEFAULT_TIMEOUT = httpx.Timeout(connect=15.0, read=60.0, write=60.0, pool=15.0)  # idle, not total
TOKEN_HELP = (
    "check MODEL_REGISTRY_TOKEN, the file named by MODEL_REGISTRY_TOKEN_PATH, or the service "
    "account's access to the Model Registry"
)

Json = dict[str, Any]
Log = Callable[[str], None]


class ModelRegistryClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        api_version: str | None = None,
        tls_verify: bool = True,
        ca_bundle: Path | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        log: Log | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if api_version is not None and api_version not in API_VERSIONS:
            raise ValueError(f"unknown Model Registry API {api_version!r}")
        self.server_url = server_url(url)
        self.display_url = without_userinfo(self.server_url)
        self.requested_api = api_version
        self.api_version: str | None = None
        self._token = token or None
        self._retry = retry or RetryPolicy.from_env()
        self._log = log or (lambda _message: None)
        self._sleep = sleep
        headers = {"Accept": "application/json", "User-Agent": "modelcar"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._http = httpx.Client(
            headers=headers,
            timeout=timeout,
            verify=ssl_context(tls_verify, ca_bundle),
            follow_redirects=True,
            transport=transport,
            trust_env=True,
        )

    def __enter__(self) -> ModelRegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- API version ---------------------------------------------------------------------------

    def connect(self) -> str:
        """Finds the API version the server speaks (the one asked for, or v1 then v1alpha3)."""
        if self.api_version is not None:
            return self.api_version
        candidates = (self.requested_api,) if self.requested_api else API_VERSIONS
        for version in candidates:
            response = self._send("GET", self._url(version, "/registered_models"), {"pageSize": "1"})
            if response.status_code in NOT_THIS_API:
                continue
            self._raise_for_auth(response)
            data = _json_or_none(response) if response.is_success else None
            if isinstance(data, dict) and isinstance(data.get("items"), list):
                self.api_version = version
                return version
            if response.is_success:
                raise NotAModelRegistry(
                    f"{self.display_url} answers on {API_ROOT}/{version}, but not with the Model "
                    "Registry REST API (no JSON list of registered models); check MODEL_REGISTRY_URL"
                )
            self._raise_error(response, f"listing registered models ({API_ROOT}/{version})")
        tried = " and ".join(f"{API_ROOT}/{v}" for v in candidates)
        hint = "" if self.requested_api is None else "; try MODEL_REGISTRY_API unset or the other version"
        raise NotAModelRegistry(
            f"{self.display_url} is not a Model Registry: it answered 404 on {tried}; set "
            f"MODEL_REGISTRY_URL to the Model Registry's REST endpoint (as shown in the OpenShift AI "
            f"dashboard, e.g. https://<registry>-rest.<apps domain>){hint}"
        )

    # -- registered models ----------------------------------------------------------------------

    def find_registered_model(self, name: str) -> Json | None:
        return self._find("/registered_model", {"name": name}, f"looking up registered model {name!r}")

    def create_registered_model(self, body: Json) -> Json:
        return self._call("POST", "/registered_models", f"creating registered model {body.get('name')!r}", body)

    # -- model versions -------------------------------------------------------------------------

    def find_model_version(self, name: str, registered_model_id: str) -> Json | None:
        params = {"name": name, "parentResourceId": registered_model_id}
        return self._find("/model_version", params, f"looking up model version {name!r}")

    def create_model_version(self, body: Json) -> Json:
        return self._call("POST", "/model_versions", f"creating model version {body.get('name')!r}", body)

    def update_model_version(self, version_id: str, body: Json) -> Json:
        return self._call("PATCH", f"/model_versions/{version_id}", f"updating model version {version_id}", body)

    # -- artifacts ------------------------------------------------------------------------------

    def model_version_artifacts(self, version_id: str) -> list[Json]:
        """Every artifact of a version, all pages."""
        return list(
            self._pages(f"/model_versions/{version_id}/artifacts", f"listing artifacts of version {version_id}")
        )

    def add_model_version_artifact(self, version_id: str, body: Json) -> Json:
        what = f"adding a model artifact to version {version_id}"
        return self._call("POST", f"/model_versions/{version_id}/artifacts", what, body)

    def update_model_artifact(self, artifact_id: str, body: Json) -> Json:
        what = f"updating model artifact {artifact_id}"
        return self._call("PATCH", f"/model_artifacts/{artifact_id}", what, body)

    # -- plumbing -------------------------------------------------------------------------------

    def _url(self, version: str, path: str) -> str:
        return f"{self.server_url}{API_ROOT}/{version}{path}"

    def _api_url(self, path: str) -> str:
        return self._url(self.connect(), path)

    def _find(self, path: str, params: dict[str, str], what: str) -> Json | None:
        try:
            return self._call("GET", path, what, params=params)
        except NotFound:
            return None

    def _pages(self, path: str, what: str) -> Iterator[Json]:
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = {"pageSize": str(PAGE_SIZE)}
            if token:
                params["nextPageToken"] = token
            page = self._call("GET", path, what, params=params)
            items = page.get("items") or []
            yield from items
            token = page.get("nextPageToken") or None
            if not token or not items:
                return

    def _call(
        self, method: str, path: str, what: str, body: Json | None = None, params: dict[str, str] | None = None
    ) -> Json:
        response = self._send(method, self._api_url(path), params, body)
        if not response.is_success:
            self._raise_error(response, what)
        data = _json_or_none(response)
        if not isinstance(data, dict):
            raise ModelRegistryApiError(
                f"the Model Registry at {self.display_url} gave an answer that is not a JSON object "
                f"while {what} (HTTP {response.status_code})",
                response.status_code,
            )
        return data

    def _send(
        self, method: str, url: str, params: dict[str, str] | None = None, body: Json | None = None
    ) -> httpx.Response:
        """One request, retried on connection errors, 429 and 5xx; returns the last answer."""
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else None
        attempts = self._retry.attempts
        tries = 1

        def send() -> httpx.Response:
            # Only reads follow redirects: a POST or PATCH redirected with 301/302 would be
            # replayed as a GET and its answer taken for the created entity.
            return self._http.request(
                method, url, params=params, content=content, headers=headers, follow_redirects=method == "GET"
            )

        def before_retry(attempt: int, delay: float, outcome: Any) -> None:
            nonlocal tries
            tries = attempt + 1
            if isinstance(outcome, httpx.Response):
                outcome.close()
                what = f"answered HTTP {outcome.status_code} to {method} {urlsplit(url).path}"
                self._log(f"Model Registry {what}; retrying in {delay:.1f} s (attempt {attempt + 1} of {attempts})")
            else:
                what = _describe_transport_error(outcome)
                self._log(f"Model Registry: {what}; retrying in {delay:.1f} s (attempt {attempt + 1} of {attempts})")

        try:
            response = call_with_retries(
                send, self._retry, transient_answer=transient_response, before_retry=before_retry, sleep=self._sleep
            )
        except httpx.TransportError as exc:
            failure = tls_failure(exc)
            if isinstance(failure, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ModelRegistryUnreachable(
                    f"TLS verification failed for the Model Registry at {self.display_url}: "
                    f"{self._scrub(str(exc))}; give the CA that signed its certificate with "
                    "--ca-bundle / CA_BUNDLE, or use --no-tls-verify"
                ) from None
            if failure is not None:
                raise ModelRegistryUnreachable(
                    f"the Model Registry at {self.display_url} does not answer in TLS "
                    f"({self._scrub(str(exc))}); for a server on plain http give MODEL_REGISTRY_URL as http://"
                ) from None
            raise ModelRegistryUnreachable(
                f"cannot reach the Model Registry at {self.display_url}: "
                f"{_describe_transport_error(exc)} (tried {tries} times); check "
                "MODEL_REGISTRY_URL and that the server is running and reachable"
            ) from None
        if response.is_redirect:
            target = without_userinfo(response.headers.get("Location", "?"))
            raise ModelRegistryApiError(
                f"the Model Registry at {self.display_url} redirected {method} {urlsplit(url).path} "
                f"(HTTP {response.status_code}) to {target}; set MODEL_REGISTRY_URL to the address it "
                "redirects to",
                response.status_code,
            )
        return response

    def _raise_for_auth(self, response: httpx.Response) -> None:
        if response.status_code not in (401, 403):
            return
        if self._token:
            raise AuthRefused(
                f"the Model Registry at {self.display_url} refused the token (HTTP "
                f"{response.status_code}); {TOKEN_HELP}"
            )
        raise AuthRefused(
            f"the Model Registry at {self.display_url} needs a token (HTTP {response.status_code}) "
            "and none was given; set MODEL_REGISTRY_TOKEN or MODEL_REGISTRY_TOKEN_PATH"
        )

    def _raise_error(self, response: httpx.Response, what: str) -> None:
        self._raise_for_auth(response)
        status = response.status_code
        server_message = self._scrub(_server_message(response))
        detail = f": {server_message}" if server_message else ""
        message = f"the Model Registry at {self.display_url} answered HTTP {status} while {what}{detail}"
        if status == 404:
            raise NotFound(message, status, server_message)
        if status == 409:
            raise Conflict(message, status, server_message)
        raise ModelRegistryApiError(message, status, server_message)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def server_url(url: str) -> str:
    """The server part of MODEL_REGISTRY_URL: a trailing slash or /api/model_registry/<v> dropped."""
    url = url.rstrip("/")
    for version in API_VERSIONS:
        suffix = f"{API_ROOT}/{version}"
        if url.endswith(suffix):
            return url[: -len(suffix)]
    if url.endswith(API_ROOT):
        return url[: -len(API_ROOT)]
    return url


def without_userinfo(url: str) -> str:
    """The URL as it may be shown: any user:password@ removed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _server_message(response: httpx.Response) -> str:
    data = _json_or_none(response)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    else:
        text = response.text if "json" in response.headers.get("content-type", "") else ""
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _describe_transport_error(exc: httpx.TransportError) -> str:
    kind = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.WriteTimeout: "sending timed out",
        httpx.PoolTimeout: "no free connection in time",
        httpx.RemoteProtocolError: "the connection was closed",
        httpx.ReadError: "the connection broke while reading",
        httpx.WriteError: "the connection broke while sending",
    }.get(type(exc), type(exc).__name__)
    detail = str(exc).strip()
    return f"{kind} ({detail})" if detail else kind
