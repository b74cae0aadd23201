"""Registry credentials: where they come from (a Keychain, by default the auth files) and the
parsing of a 401's WWW-Authenticate challenge. Answering the challenge (Basic, the Bearer token
fetch) is the client's (client.py).

Credentials come from the first of: --authfile / REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,
~/.docker/config.json, $XDG_RUNTIME_DIR/containers/auth.json that has an entry for the registry
(a Kubernetes `.dockerconfigjson` secret is such a file). In one file, as the docker CLI does: a
`credHelpers` entry for the registry's host first, then the most specific `auths` entry with
credentials, then the `credsStore`; a helper is the program `docker-credential-<name>`, asked
with `get` and the server on stdin. Secrets live in `Credentials` only, whose repr hides them;
nothing here logs or formats one into a message.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import UsageError

DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"  # what credential helpers store Docker Hub under
HELPER_TIMEOUT = 60.0  # a keychain may ask the user first
IDENTITY_TOKEN_USER = "<token>"  # a helper's Username when Secret is an identity (refresh) token


@dataclass(frozen=True)
class Credentials:
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = field(default="", compare=False)  # the auth file they came from, for messages

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return "Credentials(***)"


class Keychain(Protocol):
    """Where a registry client's credentials come from (go-containerregistry's authn.Keychain)."""

    def resolve(self, registry: str, repository: str) -> Credentials | None:
        """The credentials for `registry/repository`; None when there are none (anonymous)."""
        ...

    def searched(self) -> str:
        """Where it looked, for a message when there were none."""
        ...


@dataclass(frozen=True)
class AuthFiles:
    """The keychain of auth files: `authfile` alone when given, else the usual places.

    A credential helper's answer depends on the server alone, so each helper is asked once per
    server for the keychain's life, however many repositories of that registry (the base's, the
    destination's) need credentials, and in whichever order they ask.
    """

    authfile: Path | None = None
    _asked: dict[tuple[str, str, bool], Credentials | None] = field(default_factory=dict, compare=False, repr=False)
    _asking: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def resolve(self, registry: str, repository: str) -> Credentials | None:
        return find_credentials(registry, repository, self.authfile, self._ask)

    def _ask(self, helper: str, host: str, path: Path, required: bool) -> Credentials | None:
        with self._asking:
            key = (helper, host, required)
            if key not in self._asked:
                self._asked[key] = _from_helper(helper, host, path, required)
            return self._asked[key]

    def searched(self) -> str:
        return "looked in " + ", ".join(str(p) for p in auth_file_candidates(self.authfile))


@dataclass(frozen=True)
class StaticCredentials:
    """One set of credentials (or none) for every repository: for callers that hold them already."""

    credentials: Credentials | None = None

    def resolve(self, registry: str, repository: str) -> Credentials | None:
        return self.credentials

    def searched(self) -> str:
        return "none were given to this client"


ANONYMOUS = StaticCredentials()


def auth_file_candidates(authfile: Path | None) -> list[Path]:
    if authfile is not None:
        return [authfile]
    found: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        found.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("DOCKER_CONFIG"):
        found.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    found.append(Path.home() / ".docker" / "config.json")
    if os.environ.get("XDG_RUNTIME_DIR"):
        found.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    return found


HelperAsk = Callable[[str, str, Path, bool], "Credentials | None"]


def find_credentials(
    registry: str, repository: str, authfile: Path | None, ask: HelperAsk | None = None
) -> Credentials | None:
    """The credentials for `registry/repository` from the first auth file that has some;
    `ask(helper, host, path, required)` runs a credential helper (by default each time)."""
    for path in auth_file_candidates(authfile):
        if not path.is_file():
            if authfile is not None:
                raise UsageError(f"the auth file {path} does not exist; check --authfile / REGISTRY_AUTH_FILE")
            continue
        creds = _from_file(_read_config(path), registry, repository, path, ask or _from_helper)
        if creds is not None:
            return dataclasses.replace(creds, source=str(path))
    return None


def _from_file(
    doc: dict[str, object], registry: str, repository: str, path: Path, ask: HelperAsk
) -> Credentials | None:
    host = "docker.io" if registry in DOCKER_HUB_KEYS else registry
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if _normalise_key(str(key)) == host and isinstance(helper, str) and helper:
                return ask(helper, host, path, True)
    creds = _lookup(_auths(doc), registry, repository, path)
    if creds is not None:
        return creds
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return ask(store, host, path, False)
    return None


def _read_config(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not valid JSON"
        raise UsageError(f"cannot read the registry auth file {path}: {reason}; fix or remove it") from None
    if not isinstance(doc, dict):
        raise UsageError(f"the registry auth file {path} is not a JSON object; fix or remove it")
    return doc


def _auths(doc: dict[str, object]) -> dict[str, dict[str, str]]:
    # A file with neither key is the old ~/.dockercfg form: the registries at the top level.
    keys = ("auths", "credHelpers", "credsStore")
    auths = doc.get("auths", doc if not any(k in doc for k in keys) else {})
    if not isinstance(auths, dict):
        return {}
    return {str(k): v for k, v in auths.items() if isinstance(v, dict)}


def _from_helper(helper: str, host: str, path: Path, required: bool) -> Credentials | None:
    """Asks `docker-credential-<helper> get`; None when it has nothing for the registry.

    A `credsStore` whose program is missing (a Docker Desktop config copied to a machine without
    Docker Desktop) means anonymous, as an empty `auths` entry does; a `credHelpers` entry names
    the registry itself, so its missing program is an error.
    """
    program = f"docker-credential-{helper}"
    server = DOCKER_HUB_SERVER if host == "docker.io" else host
    where = f"the credential helper {program} (named in {path})"
    try:
        answer = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError:
        if not required:
            return None
        raise UsageError(
            f"{where} is not installed or not on PATH; install it, or log in with "
            f"`skopeo login --authfile FILE {host}` and pass --authfile FILE"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{where} could not be run for {host}: {type(exc).__name__}") from None
    if answer.returncode != 0:
        message = (answer.stderr or answer.stdout).strip().splitlines()
        first = message[0][:200] if message else f"exit status {answer.returncode}"
        if "not found" in first.lower():
            return None  # the helper's way of saying: no credentials for this server
        raise UsageError(f"{where} failed for {host}: {first}")
    try:
        doc = json.loads(answer.stdout)
        username, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    except (ValueError, AttributeError):
        raise UsageError(f"{where} answered for {host} with something that is not its JSON") from None
    if not secret:
        return None
    if username == IDENTITY_TOKEN_USER:
        return Credentials("", "", secret)
    return Credentials(username, secret)


def _normalise_key(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key).rstrip("/")
    if key.endswith("/v1") or key.endswith("/v2"):
        key = key[:-3]
    host, _, rest = key.partition("/")
    if host in DOCKER_HUB_KEYS:
        host = "docker.io"
    return f"{host}/{rest}" if rest else host


def _lookup(auths: dict[str, dict[str, str]], registry: str, repository: str, path: Path) -> Credentials | None:
    host = "docker.io" if registry in DOCKER_HUB_KEYS else registry
    wanted = f"{host}/{repository}"
    best: tuple[int, dict[str, str]] | None = None
    for key, entry in auths.items():
        norm = _normalise_key(key)
        if (wanted == norm or wanted.startswith(norm + "/")) and (best is None or len(norm) > best[0]):
            best = (len(norm), entry)
    if best is None:
        return None
    return _credentials(best[1], path, host)


def _credentials(entry: dict[str, str], path: Path, host: str) -> Credentials | None:
    """The entry's credentials; None for an entry without any (Docker Desktop's `{}` with a credsStore)."""
    if entry.get("identitytoken"):
        return Credentials(entry.get("username", ""), "", entry["identitytoken"])
    if entry.get("username") is not None and entry.get("password") is not None:
        return Credentials(entry["username"], entry["password"])
    if not entry.get("auth"):
        return None  # anonymous, unless a later auth file has credentials
    try:
        decoded = base64.b64decode(entry.get("auth", ""), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, sep, password = decoded.partition(":")
    if not sep:
        raise UsageError(
            f"the entry for {host} in the auth file {path} has no usable credentials "
            "(expected auth = base64 of user:password); log in again"
        )
    return Credentials(user, password)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge | None:
    """The first Basic or Bearer challenge in a WWW-Authenticate header."""
    header = header.strip()
    match = re.match(r"^([A-Za-z]+)\s*(.*)$", header, re.S)
    if not match:
        return None
    scheme = match.group(1).lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(match.group(2))
    }
    params = {k: v.replace('\\"', '"') for k, v in params.items()}
    return Challenge(scheme, params)
