"""A file's body from the Hub, received straight into the file and hashed once on the way.

The huggingface_hub client spends about 4 CPU-seconds per GiB on a body (httpx's chunking, tqdm,
copies); here the bytes go from the socket into one reused buffer, are hashed and written from
it: about a quarter of that, which matters when the push runs beside the download on the same
cores. The client still does the part that needs its knowledge: the file's metadata (HEAD:
commit, ETag, size, the URL the body comes from, its errors), so HF_ENDPOINT, tokens and the
Hub's error codes work as before.

The body goes to `<dir>/.cache/huggingface/download/<name>.incomplete` (where the client puts its
own) and is renamed to its name once complete, so a file appears whole or not at all. What a
killed run left there is kept: the next one hashes it and asks for the rest (Range). An LFS file
whose sha256 the Hub gave (its X-Linked-Etag) is checked against it. The `.incomplete` file is
only ever appended to, so a push may read it as it grows (growing_file.py).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelcarError
from ..retry import Resumes, RetryPolicy

BUFFER = 1 << 20
TIMEOUT = 60.0
MAX_REDIRECTS = 5
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TransferError(ModelcarError):
    """The Hub did not send the file's body whole; the message says what happened."""


class Interrupted(Exception):
    """The connection broke mid-body; the transfer resumes where it stopped."""


def usable() -> bool:
    """No proxy configured (urllib's view, as httpx's): proxies stay with the Hub client."""
    proxies = urllib.request.getproxies()
    return not any(proxies.get(k) for k in ("http", "https", "all"))


def incomplete_path(root: Path, name: str) -> Path:
    """Where the body of `name` arrives, under the download directory `root`."""
    return root / ".cache" / "huggingface" / "download" / f"{name}.incomplete"


def fetch(
    url: str,
    headers: dict[str, str],
    root: Path,
    name: str,
    size: int,
    etag: str | None,
    progress: Callable[[int], None] | None = None,
    policy: RetryPolicy | None = None,
    opened: Callable[[Path], None] | None = None,
) -> str:
    """Downloads `url` (`size` bytes) to `root/name`; returns the body's sha256 (hex).

    `opened(path)`: the body is being written into `path` from its first byte on, only appended
    to (a reader may follow it); called again for a new file when the server ignored the Range.
    """
    policy = policy or RetryPolicy.from_env()
    target = root / name
    partial = incomplete_path(root, name)
    partial.parent.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    position = _hash_existing(partial, hasher, size)
    tries = Resumes(policy)
    out = partial.open("ab" if position else "wb")
    try:
        if opened is not None:
            opened(partial)
        while position < size:
            try:
                position = _receive(url, headers, out, hasher, position, size, progress)
            except Interrupted as exc:
                position = out.tell()  # every byte written was hashed: go on from there
                if not tries.failed(position):
                    raise TransferError(
                        f"downloading {name} kept breaking off at byte {position} of {size} ({exc}); "
                        "check the network and run again (what arrived is kept)"
                    ) from None
            except _Restart:
                # A new file, not the old one truncated: a reader of the old one sees it replaced.
                out.close()
                partial.unlink()
                out = partial.open("wb")
                hasher, position = hashlib.sha256(), 0
                if opened is not None:
                    opened(partial)
    finally:
        out.close()
    digest = hasher.hexdigest()
    expected = (etag or "").strip('"').lower()
    if SHA256.match(expected) and expected != digest:
        partial.unlink(missing_ok=True)
        raise TransferError(
            f"the Hub sent {name} with sha256 {digest}, not the {expected} it lists; run download-model again"
        )
    os.replace(partial, target)
    return digest


class _Restart(Exception):
    """The server ignored the Range: start again from 0."""


def _hash_existing(partial: Path, hasher: hashlib._Hash, size: int) -> int:
    """Hashes what an earlier run left; returns how many bytes there are (0: start afresh)."""
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if have == 0 or have > size:
        partial.unlink(missing_ok=True)
        return 0
    with partial.open("rb", buffering=0) as handle:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
    return have


def _receive(
    url: str,
    headers: dict[str, str],
    out: object,
    hasher: hashlib._Hash,
    position: int,
    size: int,
    progress: Callable[[int], None] | None,
) -> int:
    """One GET from `position`; returns the position reached (raises Interrupted mid-body)."""
    request_headers = dict(headers)
    if position:
        request_headers["Range"] = f"bytes={position}-"
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(current)
        connection = _connect(parts)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                connection.request("GET", path or "/", headers=request_headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise Interrupted(str(exc) or type(exc).__name__) from None
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                response.read()
                following = urllib.parse.urljoin(current, location)
                if urllib.parse.urlsplit(following).netloc != parts.netloc:
                    request_headers.pop("Authorization", None)  # a signed CDN URL: no token there
                current = following
                continue
            if response.status == 200 and position:
                response.close()
                raise _Restart()
            if response.status not in (200, 206):
                body = response.read(2000).decode(errors="replace")
                raise TransferError(
                    f"the Hub answered {response.status} for {parts.path.rsplit('/', 1)[-1]}: {body[:200]}"
                )
            return _read_body(response, out, hasher, position, size, progress)
        finally:
            connection.close()
    raise TransferError(f"more than {MAX_REDIRECTS} redirects for {url}")


def _read_body(
    response: http.client.HTTPResponse,
    out: object,
    hasher: hashlib._Hash,
    position: int,
    size: int,
    progress: Callable[[int], None] | None,
) -> int:
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    write = out.write  # type: ignore[attr-defined]
    try:
        while position < size:
            count = response.readinto(buffer)
            if not count:
                raise Interrupted(f"the connection closed at byte {position} of {size}")
            chunk = view[:count]
            hasher.update(chunk)
            write(chunk)
            position += count
            if progress is not None:
                progress(count)
    except (OSError, http.client.HTTPException) as exc:
        out.flush()  # type: ignore[attr-defined]
        raise Interrupted(str(exc) or type(exc).__name__) from None
    out.flush()  # type: ignore[attr-defined]
    return position


def _connect(parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, parts.port or 443, timeout=TIMEOUT, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(host, parts.port or 80, timeout=TIMEOUT)
