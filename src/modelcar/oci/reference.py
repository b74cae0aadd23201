"""Image references: the docker/distribution grammar, and `oci:DIR[:TAG]` for an image layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
SCRATCH = "scratch"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

NAME_MAX_LENGTH = 255

ACCEPTED_FORMS = (
    "an image reference host[:port]/path[:tag][@sha256:<64 hex>] (lowercase path; a bare "
    "name means docker.io) or oci:DIR[:TAG] for an OCI image layout"
)


class ReferenceError(ValueError):
    """A string that is not an image reference; the message says why."""


@dataclass(frozen=True)
class RegistryRef:
    """An image in a registry: `registry/repository[:tag][@digest]`."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> RegistryRef:
        return RegistryRef(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class LayoutRef:
    """An image in an OCI image layout on disk: `oci:DIR[:TAG][@sha256:...]`."""

    path: Path
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> LayoutRef:
        return LayoutRef(self.path, None, digest)

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


ImageRef = RegistryRef | LayoutRef


def is_sha256_digest(text: str) -> bool:
    return bool(_SHA256_RE.match(text))


def parse_reference(text: str) -> ImageRef:
    """Parses a registry reference or an `oci:DIR[:TAG]` layout reference."""
    if text.startswith("oci:"):
        return _parse_layout(text[len("oci:") :])
    return parse_registry_reference(text)


def _parse_layout(rest: str) -> LayoutRef:
    if not rest:
        raise ReferenceError("oci: needs a directory, as in oci:./image or oci:/path/image:tag")
    digest = None
    head, sep, tail = rest.rpartition("@")
    if sep and _SHA256_RE.match(tail):
        rest, digest = head, tail
    directory, tag = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail:
        directory, tag = head, tail
        if not _TAG_RE.match(tag):
            raise ReferenceError(f"tag {tag!r} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]*)")
    if not directory:
        raise ReferenceError("oci: needs a directory, as in oci:./image or oci:/path/image:tag")
    return LayoutRef(Path(directory), tag, digest)


def parse_registry_reference(text: str) -> RegistryRef:
    if not text or text != text.strip():
        raise ReferenceError("empty or surrounded by whitespace")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise ReferenceError(f"digest {digest!r} is not algorithm:hex")
        if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
            raise ReferenceError(f"digest {digest!r} is not sha256 followed by 64 lowercase hex")
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ReferenceError(f"tag {tag!r} is not valid (letters, digits, _ . -; at most 128)")
    registry, path = _split_domain(remainder)
    if not _PATH_RE.match(path):
        raise ReferenceError(
            f"repository {path!r} is not valid (lowercase letters, digits and separators . _ - between path components)"
        )
    if len(f"{registry}/{path}") > NAME_MAX_LENGTH:
        raise ReferenceError(f"the name is longer than {NAME_MAX_LENGTH} characters")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return RegistryRef(registry, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    looks_like_domain = "." in first or ":" in first or first == "localhost" or first != first.lower()
    if sep and looks_like_domain:
        if not _DOMAIN_RE.match(first):
            raise ReferenceError(f"registry host {first!r} is not a valid host[:port]")
        return (DEFAULT_REGISTRY if first == "index.docker.io" else first), rest
    return DEFAULT_REGISTRY, name
