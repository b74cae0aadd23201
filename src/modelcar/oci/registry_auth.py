"""Which Authorization header a registry's requests get: the token scopes they need, the
credentials from the keychain (one lookup per repository), and the answers to a 401's challenge:
Basic, or a Bearer token from the token server (the identity-token refresh grant too).

While TLS is verified, a Bearer realm that is not https is refused before anything is sent to it:
the Basic credentials would cross the network in the clear (go-containerregistry's
validateRealmURL refuses it too). A token that expires mid-push is answered like any 401.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from ..retry import describe_error
from .auth import Challenge, Credentials, Keychain, parse_challenge
from .errors import InsecureRealm, RegistryError, show_url, tls_hint

TOKEN_CLIENT_ID = "modelcar"  # the refresh-token grant's client_id


class RegistryAuth:
    """The auth state of one registry host; safe to share between threads. `send` runs a token
    request under the client's retry policy."""

    def __init__(
        self,
        registry: str,
        keychain: Keychain,
        tls_verify: bool,
        send: Callable[[Callable[[], httpx.Response]], httpx.Response],
        http: httpx.Client,
    ) -> None:
        self.registry = registry
        self.keychain = keychain
        self.tls_verify = tls_verify
        self._send = send
        self._http = http
        self._scopes: set[str] = set()
        self._lock = threading.Lock()
        self._creds_lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._auth_header: str | None = None
        self._auth_scopes: frozenset[str] = frozenset()
        self._creds_cache: dict[str, Credentials | None] = {}

    def want(self, repository: str, actions: str) -> None:
        """Adds a token scope (`pull` or `pull,push`) that later requests need."""
        with self._lock:
            self._scopes.add(f"repository:{repository}:{actions}")

    def credentials(self) -> Credentials | None:
        with self._lock:
            scopes = list(self._scopes)
            pushing = sorted(s.split(":")[1] for s in scopes if s.endswith("push"))
            key = (pushing or sorted(s.split(":")[1] for s in scopes) or [""])[0]
        # One lookup at a time (not under _lock: it reads files and may run a credential helper,
        # which may ask the user): threads challenged together get the first one's answer.
        with self._creds_lock:
            if key not in self._creds_cache:
                self._creds_cache[key] = self.keychain.resolve(self.registry, key)
            return self._creds_cache[key]

    def header(self) -> str | None:
        """The Authorization header the last answered challenge gave (None before any)."""
        with self._lock:
            return self._auth_header

    def authenticate(self, response: httpx.Response) -> None:
        """Answers the 401's challenge; raises when there is nothing better to send."""
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise RegistryError(
                f"registry {self.registry} refused access (HTTP 401) without a Basic or Bearer challenge", 401
            )
        try:
            sent = response.request.headers.get("Authorization")
        except RuntimeError:  # a response built without its request
            sent = None
        with self._auth_lock:  # threads challenged together: one fetches, the others use its answer
            with self._lock:
                scopes = frozenset(self._scopes)
                if challenge.params.get("scope"):
                    scopes = scopes | set(challenge.params["scope"].split())
                if self._auth_header is not None and self._auth_header != sent and scopes <= self._auth_scopes:
                    return  # answered by another thread since this request was sent
            self._answer_challenge(challenge, scopes)

    def _answer_challenge(self, challenge: Challenge, scopes: frozenset[str]) -> None:
        creds = self.credentials()
        if challenge.scheme == "basic":
            if creds is None:
                raise self.denied(401, "it asks for a user name and password")
            header = creds.basic_header()
        else:
            header = "Bearer " + self._fetch_token(challenge, scopes, creds)
        with self._lock:
            self._auth_header = header
            self._auth_scopes = scopes

    def _fetch_token(self, challenge: Challenge, scopes: frozenset[str], creds: Credentials | None) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.registry} sent a Bearer challenge without a realm", 401)
        self._check_realm(realm)
        params: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in sorted(scopes))

        def fetch() -> httpx.Response:
            if creds is not None and creds.identity_token:
                form = dict(params[:1])
                form.update(
                    grant_type="refresh_token",
                    refresh_token=creds.identity_token,
                    client_id=TOKEN_CLIENT_ID,
                    scope=" ".join(sorted(scopes)),
                )
                return self._http.post(realm, data=form)
            headers = {"Authorization": creds.basic_header()} if creds else {}
            return self._http.get(realm, params=params, headers=headers)

        try:
            response = self._send(fetch)
        except httpx.TransportError as exc:
            raise RegistryError(
                f"cannot reach the token server of {self.registry} ({show_url(realm)}): "
                f"{describe_error(exc)}{tls_hint(exc)}"
            ) from None
        if response.status_code in (401, 403):
            why = "the token server refused the credentials" if creds else "the token server wants credentials"
            raise self.denied(response.status_code, why)
        if response.status_code != 200:
            raise RegistryError(
                f"the token server of {self.registry} answered HTTP {response.status_code}", response.status_code
            )
        try:
            doc = response.json()
            return str(doc.get("token") or doc["access_token"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(f"the token server of {self.registry} sent no token") from None

    def _check_realm(self, realm: str) -> None:
        """Refuses a token server that is not https while TLS is verified: nothing is sent to it."""
        try:
            scheme = httpx.URL(realm).scheme
        except httpx.InvalidURL:
            scheme = ""
        if scheme == "https" or (not self.tls_verify and scheme == "http"):
            return
        shown = show_url(realm) if scheme else repr(realm[:200])
        raise InsecureRealm(
            f"registry {self.registry} names the token server {shown}, which is not https; while TLS is "
            "verified modelcar sends no credentials there (they would cross the network in the clear). "
            "Have the registry's token realm use https; pass --no-tls-verify only for a registry and "
            "network you trust",
            401,
        )

    def _known_credentials(self) -> Credentials | None:
        with self._creds_lock:
            return next((c for c in self._creds_cache.values() if c is not None), None)

    def denied(self, status: int, why: str, fix: str = "") -> RegistryError:
        """A refusal, naming the auth file the credentials came from (or the files looked in).
        `fix` replaces "log in again" where credentials were sent."""
        creds = self._known_credentials()
        if creds is not None and creds.source:
            where = f"the credentials used came from {creds.source}"
            login = f"skopeo login --authfile {creds.source} {self.registry}"
            fix = fix or f"log in again (e.g. `{login}`) or pass --authfile"
        else:  # whatever else is wrong, there are no credentials to begin with
            where = f"no credentials for it were found ({self.keychain.searched()})"
            fix = f"log in (e.g. `skopeo login {self.registry}`) or pass --authfile"
        return RegistryError(f"registry {self.registry} denied access (HTTP {status}): {why}; {where}; {fix}", status)


def describe_scopes(scopes: str) -> str:
    """`repository:a/b:pull,push` -> `pull,push access to repository a/b`."""
    described = []
    for scope in scopes.split():
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        actions = ",".join(sorted(actions.split(",")))
        described.append(f"{actions} access to {kind} {name}" if name else scope)
    return " and ".join(described) or "more access"
