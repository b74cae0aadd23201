"""The sendfile transport: a blob PATCH to a plain-http registry with the file bytes handed to the
kernel.

Through httpx every byte of a layer is read into Python, copied again by httpcore's partial
writes and once more into the socket. Here the bytes of a file range are read once, for the
sha256 (`feed`), and the kernel sends them from the page cache: on a 2-core machine that is
about a quarter of the client's CPU, which the registry needs for its own hashing.

`SendfileTransport` is an httpx transport mounted for http:// beneath the registry client, so
auth, redirects, retries and error mapping stay in the client's one request path. It takes only
requests whose body is an `UploadBody` with file parts, and passes every other request to the
transport beneath it. It is mounted only when no proxy for http is configured (the environment,
or the system settings urllib reads, as httpx does); TLS goes through httpx. A registry that
redirects one upload gets the rest through httpx too.
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.request
from collections.abc import Callable, Iterable, Iterator

import httpx

from .layers import FileRange, Part

CONNECT_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0  # like httpx's read/write timeouts: no progress for this long
ANSWER_TIMEOUT = 10.0  # for the answer of a registry that broke the connection while we sent
FLUSH_SIZE = 64 << 10


class SendFailed(httpx.NetworkError):
    """The connection broke (or timed out) before an answer came; the upload can resume."""


def usable(url: httpx.URL) -> bool:
    """Plain http, and no proxy that httpx could route the request through (NO_PROXY aside)."""
    if url.scheme != "http":
        return False
    proxies = urllib.request.getproxies()
    return not (proxies.get("http") or proxies.get("all"))


class UploadBody(httpx.SyncByteStream):
    """A PATCH body that can go out as file ranges (`parts`) or as bytes (`chunks`, for httpx);
    `feed` sees every byte, in order, either way. `start` runs before the first byte of each send
    (a body sent again after a 401 or a redirect is hashed once)."""

    def __init__(
        self,
        chunks: Callable[[], Iterator[bytes]],
        feed: Callable[[bytes], None],
        parts: Callable[[], Iterable[Part]] | None = None,
        start: Callable[[], None] = lambda: None,
    ) -> None:
        self.chunks, self.feed, self.parts, self.start = chunks, feed, parts, start

    def __iter__(self) -> Iterator[bytes]:
        self.start()
        for chunk in self.chunks():
            self.feed(chunk)
            yield chunk


class SendfileTransport(httpx.BaseTransport):
    """Sends an UploadBody with parts by sendfile; everything else goes to `fallback`."""

    def __init__(self, fallback: httpx.BaseTransport) -> None:
        self.fallback = fallback
        self.enabled = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.stream
        if not (self.enabled and isinstance(body, UploadBody) and body.parts is not None and usable(request.url)):
            return self.fallback.handle_request(request)
        body.start()
        try:
            response = send_patch(request.url, dict(request.headers), body.parts(), body.feed)
        except SendFailed as exc:
            raise SendFailed(str(exc), request=request) from None
        if response.is_redirect:
            self.enabled = False  # this registry redirects uploads: httpx from now on
        return response

    def close(self) -> None:
        self.fallback.close()


def send_patch(
    url: httpx.URL,
    headers: dict[str, str],
    parts: Iterable[Part],
    feed: Callable[[bytes], None],
) -> httpx.Response:
    """Sends PATCH `url` with the parts as body; `feed` sees every byte sent, in order.

    The answer comes back as an httpx.Response, so the caller treats it like any other.
    Errors of the model files (ModelDirError) and of `feed` go up as they are.
    """
    where = f"{url.host}:{url.port or 80}"
    connection = http.client.HTTPConnection(url.host, url.port or 80, timeout=CONNECT_TIMEOUT)
    try:
        try:
            connection.connect()
            sock = connection.sock
            sock.settimeout(IDLE_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            skip_host = any(name.lower() == "host" for name in headers)
            connection.putrequest("PATCH", url.raw_path.decode("ascii"), skip_host=skip_host, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            raise SendFailed(f"cannot send to {where}: {exc}") from None
        try:
            _send_body(sock, parts, feed)
        except TimeoutError:
            raise SendFailed(f"{where} took no data for {IDLE_TIMEOUT:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            # The registry may have answered (and closed) before reading everything: use its answer.
            sock.settimeout(ANSWER_TIMEOUT)
            answer = _answer(connection, url, headers)
            if answer is not None:
                return answer
            raise SendFailed(f"the connection to {where} broke while sending: {exc}") from None
        answer = _answer(connection, url, headers)
        if answer is None:
            raise SendFailed(f"{where} closed the connection, or sent no answer for {IDLE_TIMEOUT:g} s")
        return answer
    finally:
        connection.close()


def _send_body(sock: socket.socket, parts: Iterable[Part], feed: Callable[[bytes], None]) -> None:
    pending = bytearray()  # headers and padding, a few hundred bytes each: sent together
    for part in parts:
        if isinstance(part, bytes):
            feed(part)
            pending += part
            if len(pending) >= FLUSH_SIZE:
                sock.sendall(pending)
                pending.clear()
            continue
        if pending:
            sock.sendall(pending)
            pending.clear()
        _send_range(sock, part, feed)
    if pending:
        sock.sendall(pending)


def _send_range(sock: socket.socket, part: FileRange, feed: Callable[[bytes], None]) -> None:
    """Reads the range for `feed`, then sends it from the same open file; a file changed meanwhile
    (size or mtime) is an error, so the digest is always that of the bytes sent."""
    with part.open() as handle:
        before = os.fstat(handle.fileno())
        feed(part.read(handle))
        sent = sock.sendfile(handle, part.start, part.length)
        after = os.fstat(handle.fileno())
    if sent != part.length:
        raise part.changed()
    if part.growing is None and (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise part.changed()  # a file still downloading grows meanwhile; growing_file.py checks it


def _answer(connection: http.client.HTTPConnection, url: httpx.URL, headers: dict[str, str]) -> httpx.Response | None:
    try:
        answer = connection.getresponse()
        content = answer.read()
    except (OSError, http.client.HTTPException):
        return None
    return httpx.Response(
        answer.status,
        headers=answer.getheaders(),
        content=content,
        request=httpx.Request("PATCH", url, headers=headers),  # what was sent, for authenticate()
    )
