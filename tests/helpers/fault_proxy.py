"""Fault-injecting proxies on loopback, to put between modelcar and a real registry.

- `TcpFaultProxy`: forwards bytes (TLS included: it never looks inside); resets the first K
  connections outright (RST), cuts connections once they have sent N bytes (several times per
  blob, each new connection counts afresh), or holds the first connection that has sent N bytes
  until a `hold` function returns (to let a token expire in the middle of a request body).
- `HttpFaultProxy`: an HTTP/1.1 proxy that lets a `decide` function answer a request itself (500,
  503, 429 with Retry-After...), stall it mid-body until released (to kill modelcar at a known
  moment), or turn the registry's 2xx answer into a 307 to another origin. Everything else passes
  through, request and response bodies streamed in 256 KiB pieces (Content-Length or chunked), so
  tens of MiB of upload never sit in memory. The Host header is passed as sent, so the registry's
  upload Locations point back at the proxy.
- `BlobStorageServer`: a second origin on 127.0.0.1 that serves blobs (as a storage host that a
  registry redirects to) and records every request's headers.

All sockets are bound to 127.0.0.1; threads are daemons; `close()` ends them.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

PIECE = 256 * 1024
STALL_LIMIT = 120.0  # seconds a stalled connection waits for release() before it is dropped anyway


def _listen() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    return server


def _target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def _shut(*socks: socket.socket | None) -> None:
    for sock in socks:
        if sock is None:
            continue
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def _reset(sock: socket.socket) -> None:
    """Closes with an RST instead of a FIN (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Server:
    """An accept loop on a free loopback port; one thread per connection."""

    def __init__(self) -> None:
        self._server = _listen()
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"proxy-{self.host}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _forward(
        self, pieces: Iterable[bytes], sink: socket.socket, stop_after: int | None, request: ProxyRequest
    ) -> bool:
        """Sends the pieces on; with `stop_after`, only that many bytes, then stalls (returns False)."""
        passed = 0
        for piece in pieces:
            if stop_after is not None and passed + len(piece) > stop_after:
                sink.sendall(piece[: stop_after - passed])
                request.injected = True
                self._stall()
                return False
            sink.sendall(piece)
            passed += len(piece)
        return True

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, *socks: socket.socket | None) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)  # type: ignore[arg-type]
        _shut(*socks)

    def close(self) -> None:
        self._closed.set()
        _shut(self._server)
        with self._lock:
            socks = list(self._open)
        _shut(*socks)

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpFaultProxy(_Server):
    """Forwards 127.0.0.1:port to `target`.

    - The first `reset_first` connections are reset (RST) as soon as they are accepted.
    - Then the first `cuts` connections that send more than `cut_after` bytes (counted per
      connection, from the client) are closed after exactly that many bytes went through.
    - The first connection that sends more than `hold_after` bytes is paused after exactly that
      many went through, until `hold()` returns; then it goes on (`held` is set meanwhile).
    """

    def __init__(
        self,
        target: str,
        *,
        cut_after: int | None = None,
        cuts: int = 0,
        reset_first: int = 0,
        hold_after: int | None = None,
        hold: Callable[[], None] | None = None,
    ) -> None:
        self.target = _target(target)
        self.cut_after, self.cuts, self.reset_first = cut_after, cuts, reset_first
        self.hold_after, self.hold = hold_after, hold
        self.held = threading.Event()
        self.cut_count = 0
        self.reset_count = 0
        self.connections = 0
        super().__init__()

    def _handle(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            reset = self.reset_count < self.reset_first
            self.reset_count += reset
        if reset:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            _reset(client)
            return
        self._track(client)
        self._track(upstream)
        threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
        self._pump(upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        sent = 0
        try:
            while data := src.recv(PIECE):
                sent += len(data)
                if outbound and self.hold_after is not None and sent > self.hold_after and self._take_hold():
                    before = len(data) - (sent - self.hold_after)
                    dst.sendall(data[:before])
                    if self.hold is not None:
                        self.hold()
                    data = data[before:]
                if outbound and self.cut_after is not None and sent > self.cut_after:
                    with self._lock:
                        cut = self.cut_count < self.cuts
                        self.cut_count += cut
                    if cut:
                        dst.sendall(data[: len(data) - (sent - self.cut_after)])
                        break
                dst.sendall(data)
        except OSError:
            pass
        self._untrack(src, dst)

    def _take_hold(self) -> bool:
        with self._lock:
            if self.held.is_set():
                return False
            self.held.set()
            return True


# ---- HTTP ----------------------------------------------------------------------------------


def request_kind(method: str, target: str) -> str:
    """What a registry request is, e.g. "PATCH upload", "GET blob", "PUT manifest", "GET ping"."""
    path = target.split("?", 1)[0]
    if path.rstrip("/") == "/v2":
        what = "ping"
    elif "/blobs/uploads/" in path:
        what = "upload"
    elif "/blobs/" in path:
        what = "blob"
    elif "/manifests/" in path:
        what = "manifest"
    else:
        what = "other"
    return f"{method} {what}"


@dataclass
class ProxyRequest:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # names in lower case
    kind: str  # request_kind()
    number: int  # 1 for the first request of this kind through the proxy, 2 for the next...
    at: float = field(default_factory=time.monotonic)
    status: int | None = None  # what the client got (None: the connection was dropped)
    injected: bool = False  # the proxy answered (or stalled) instead of the registry

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class Reply:
    """Answer this instead of forwarding (the request body is read and dropped first)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: a distribution-style JSON error


@dataclass(frozen=True)
class Stall:
    """Forward, but stop after this many bytes of the request body (or of the response body) and
    wait for `release()`; then drop the connection. Both None: stop before forwarding anything."""

    request_after: int | None = None
    response_after: int | None = None


@dataclass(frozen=True)
class RedirectOnSuccess:
    """Forward; when the registry answers 2xx, answer a 307 to `location` instead."""

    location: str


Action = Reply | Stall | RedirectOnSuccess
Decide = Callable[[ProxyRequest], Action | None]


def first_of_each_kind(count: int, statuses: tuple[int, ...] = (503, 500), kinds: set[str] | None = None) -> Decide:
    """The first `count` requests of every kind (or of `kinds`) get the statuses in turn."""

    def decide(request: ProxyRequest) -> Action | None:
        if request.kind.endswith(" ping") or (kinds is not None and request.kind not in kinds):
            return None
        if request.number <= count:
            return Reply(statuses[(request.number - 1) % len(statuses)])
        return None

    return decide


def every_nth(n: int, kinds: set[str], status: int = 500) -> Decide:
    """Every n-th request of each of `kinds` gets `status`."""

    def decide(request: ProxyRequest) -> Action | None:
        if request.kind in kinds and request.number % n == 0:
            return Reply(status)
        return None

    return decide


def chain(*decides: Decide) -> Decide:
    def decide(request: ProxyRequest) -> Action | None:
        for one in decides:
            action = one(request)
            if action is not None:
                return action
        return None

    return decide


class _Closed(Exception):
    """A peer closed the connection mid-message."""


def _read_head(reader: BinaryIO) -> list[bytes] | None:
    """The start line and header lines of one message; None at a clean end of stream."""
    lines: list[bytes] = []
    while True:
        line = reader.readline(65536)
        if not line:
            if lines:
                raise _Closed("end of stream inside a message head")
            return None
        if line in (b"\r\n", b"\n"):
            if not lines:
                continue  # stray CRLF between messages
            return lines
        lines.append(line)


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def _read_exactly(reader: BinaryIO, length: int) -> Iterator[bytes]:
    while length > 0:
        data = reader.read1(min(PIECE, length))  # type: ignore[attr-defined]
        if not data:
            raise _Closed("end of stream inside a body")
        length -= len(data)
        yield data


def _body(reader: BinaryIO, headers: dict[str, str], *, until_close: bool = False) -> Iterator[bytes]:
    """The body as framed on the wire (chunk sizes included), in pieces."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.readline(65536)
            if not size_line:
                raise _Closed("end of stream inside a chunked body")
            yield size_line
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    trailer = reader.readline(65536)
                    if not trailer:
                        raise _Closed("end of stream inside chunked trailers")
                    yield trailer
                    if trailer in (b"\r\n", b"\n"):
                        return
            yield from _read_exactly(reader, size + 2)
    elif "content-length" in headers:
        yield from _read_exactly(reader, int(headers["content-length"]))
    elif until_close:
        while data := reader.read1(PIECE):  # type: ignore[attr-defined]
            yield data


def _reply_bytes(method: str, reply: Reply) -> bytes:
    body = reply.body
    if body is None:
        code = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}.get(reply.status, "UNKNOWN")
        body = json.dumps({"errors": [{"code": code, "message": "injected by the test proxy"}]}).encode()
    headers = {"Content-Type": "application/json", **reply.headers, "Content-Length": str(len(body))}
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Injected"
    head = f"HTTP/1.1 {reply.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + (b"" if method == "HEAD" else body)


class HttpFaultProxy(_Server):
    """An HTTP/1.1 proxy to the registry at `target` whose `decide(request)` may inject a fault.

    `log` lists every request seen (with what the client got); `stalled` is set when a Stall is
    reached; `release()` lets stalled connections go (they are dropped, never completed).
    `decide` may be replaced at any time (None: pass everything).
    """

    def __init__(self, target: str, decide: Decide | None = None) -> None:
        self.target = _target(target)
        self.decide = decide
        self.log: list[ProxyRequest] = []
        self.stalled = threading.Event()
        self._released = threading.Event()
        self._counts: dict[str, int] = {}
        super().__init__()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        super().close()

    def requests(self, kind: str | None = None) -> list[ProxyRequest]:
        with self._lock:
            return [r for r in self.log if kind is None or r.kind == kind]

    def injected(self, kind: str | None = None) -> list[ProxyRequest]:
        return [r for r in self.requests(kind) if r.injected]

    def _stall(self) -> None:
        self.stalled.set()
        self._released.wait(STALL_LIMIT)

    def _handle(self, client: socket.socket) -> None:
        try:
            first = client.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if not first.isalpha():  # a TLS handshake (modelcar tries https first) or nothing: not HTTP
            _shut(client)
            return
        self._track(client)
        upstream: socket.socket | None = None
        reader = client.makefile("rb", buffering=PIECE)
        upstream_reader: BinaryIO | None = None
        try:
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                method, target, _ = head[0].decode("latin-1").split(" ", 2)
                headers = _headers(head[1:])
                kind = request_kind(method, target)
                with self._lock:
                    self._counts[kind] = number = self._counts.get(kind, 0) + 1
                    request = ProxyRequest(method, target, headers, kind, number)
                    self.log.append(request)
                decide = self.decide
                action = decide(request) if decide is not None else None
                body = _body(reader, headers)

                if isinstance(action, Reply):
                    for _ in body:
                        pass
                    request.injected, request.status = True, action.status
                    client.sendall(_reply_bytes(method, action))
                    continue
                stall = action if isinstance(action, Stall) else None
                if stall is not None and stall.request_after is None and stall.response_after is None:
                    request.injected = True
                    self._stall()
                    return

                if upstream is None:
                    upstream = socket.create_connection(self.target)
                    self._track(upstream)
                    upstream_reader = upstream.makefile("rb", buffering=PIECE)
                assert upstream_reader is not None
                upstream.sendall(b"".join(head) + b"\r\n")
                if not self._forward(body, upstream, stall.request_after if stall else None, request):
                    return

                response_head = _read_head(upstream_reader)
                if response_head is None:
                    return
                status = int(response_head[0].split(b" ", 2)[1])
                response_headers = _headers(response_head[1:])
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                framed = "content-length" in response_headers or "chunked" in response_headers.get(
                    "transfer-encoding", ""
                )
                response_body: Iterator[bytes] = (
                    iter(()) if no_body else _body(upstream_reader, response_headers, until_close=True)
                )
                if isinstance(action, RedirectOnSuccess) and 200 <= status < 300:
                    for _ in response_body:
                        pass
                    request.injected, request.status = True, 307
                    client.sendall(_reply_bytes(method, Reply(307, {"Location": action.location}, b"")))
                    continue
                request.status = status
                client.sendall(b"".join(response_head) + b"\r\n")
                if not self._forward(response_body, client, stall.response_after if stall else None, request):
                    return
                if not (no_body or framed):
                    return  # a body delimited by the end of the connection
                if "close" in (headers.get("connection", "") + response_headers.get("connection", "")).lower():
                    return
        except (OSError, _Closed, ValueError, IndexError):
            return
        finally:
            with contextlib.suppress(OSError):
                reader.close()
            if upstream_reader is not None:
                with contextlib.suppress(OSError):
                    upstream_reader.close()
            self._untrack(client, upstream)


# ---- a storage host that a registry redirects blob traffic to ------------------------------


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


class BlobStorageServer:
    """Serves `GET/HEAD /blobs/<digest>` (Range: bytes=N- honoured) from `lookup(digest) -> Path`
    and records each request's headers in `seen`."""

    def __init__(self, lookup: Callable[[str], Path]) -> None:
        self.seen: list[SeenRequest] = []
        seen, lock = self.seen, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, with_body: bool) -> None:
                with lock:
                    seen.append(SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                match = re.fullmatch(r"/blobs/(sha256:[0-9a-f]{64})", self.path.split("?", 1)[0])
                path = lookup(match.group(1)) if match else None
                if path is None or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
                if ranged:
                    start = min(int(ranged.group(1)), size)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                if with_body:
                    with open(path, "rb") as handle:
                        handle.seek(start)
                        while chunk := handle.read(PIECE):
                            self.wfile.write(chunk)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> BlobStorageServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
