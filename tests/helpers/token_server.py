"""A Docker token server on loopback, as registries with `auth: token` (Quay, Harbor, OpenShift's
registry, Docker Hub) use one: GET /token?service=...&scope=repository:NAME:ACTIONS, Basic auth.

- Users come from `users` (name -> password); a request without Authorization is the anonymous
  user (None), refused with 401 unless `grants` has an entry for None.
- `grants[user]` maps a repository pattern (fnmatch) to the actions the user may have there; a
  token grants the intersection of what was asked and what is allowed (nothing is an empty
  `access`, as the token spec says), so the registry answers insufficient_scope.
- JWTs are ES256, signed by the test CA's token certificate, whose chain is the header's `x5c`
  (Distribution verifies it against its `rootcertbundle`); `aud` is the service.
- `lifetime` (seconds, changeable at any time) is how long the registry accepts a token:
  Distribution adds 60 s of leeway to `exp`, so `exp` is set that much earlier.
- `seen` records every request (path, headers); `issued` every token (user, access, expiry).

TLS (the test CA's server certificate) unless `tls=False`. Threads are daemons; `close()` ends it.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .pki import TestCA

LEEWAY = 60  # Distribution's token.Leeway: a token is accepted until exp + 60 s
ISSUER = "modelcar-test-token-issuer"
SERVICE = "modelcar-test-registry"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query
    headers: dict[str, str]  # names in lower case


@dataclass(frozen=True)
class Issued:
    user: str | None
    access: list[dict[str, Any]]
    expires_at: float  # wall-clock time after which the registry refuses the token

    def actions(self, repository: str) -> list[str]:
        return next((a["actions"] for a in self.access if a["name"] == repository), [])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, chain: list[bytes]) -> str:
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode() for der in chain]}
    signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class TokenServer:
    def __init__(
        self,
        ca: TestCA,
        *,
        users: dict[str, str],
        grants: dict[str | None, dict[str, str]],
        lifetime: float = 300,
        tls: bool = True,
        service: str = SERVICE,
        issuer: str = ISSUER,
    ) -> None:
        self.ca, self.users, self.grants, self.lifetime = ca, users, grants, lifetime
        self.service, self.issuer = service, issuer
        self.seen: list[Seen] = []
        self.issued: list[Issued] = []
        self._lock = threading.Lock()
        self._key, self._chain = ca.token_signer()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with server._lock:
                    server.seen.append(Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                url = urlsplit(self.path)
                if url.path != "/token":
                    self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                    return
                user, ok = server._user(self.headers.get("Authorization"))
                if not ok:
                    self._reply(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                        {"WWW-Authenticate": 'Basic realm="modelcar-test-token"'},
                    )
                    return
                query = parse_qs(url.query)
                token = server._token(user, query.get("scope", []))
                self._reply(200, {"token": token, "access_token": token, "expires_in": int(server.lifetime)})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(ca.server_cert), str(ca.server_key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.realm = f"{self.scheme}://{self.host}/token"
        threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True).start()

    def _user(self, authorization: str | None) -> tuple[str | None, bool]:
        """(user, accepted): None for anonymous."""
        if not authorization:
            return None, None in self.grants
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            name, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, False
        return name, self.users.get(name) == password and name in self.grants

    def _token(self, user: str | None, scopes: list[str]) -> str:
        allowed = self.grants.get(user, {})
        access: list[dict[str, Any]] = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            permitted = {
                a
                for pattern, actions in allowed.items()
                if fnmatch.fnmatchcase(name, pattern)
                for a in actions.split(",")
            }
            granted = sorted(set(wanted.split(",")) & permitted)
            if granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = time.time()
        expires_at = now + self.lifetime
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": int(expires_at) - LEEWAY,
            "nbf": int(now) - 1,
            "iat": int(now),
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        with self._lock:
            # The registry refuses it once its clock passes exp + leeway (whole seconds).
            self.issued.append(Issued(user, access, float(int(expires_at)) + 1))
        return sign_jwt(claims, self._key, self._chain)

    def registry_auth(self) -> dict[str, object]:
        """The `auth:` section of a docker-registry config that trusts this server's tokens."""
        token = {"realm": self.realm, "service": self.service, "issuer": self.issuer, "rootcertbundle": str(self.ca.ca)}
        return {"token": token}

    def authorizations(self) -> list[str]:
        """The Authorization headers the server received (to check that none was sent)."""
        with self._lock:
            return [s.headers["authorization"] for s in self.seen if "authorization" in s.headers]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
