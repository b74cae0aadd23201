"""The sendfile transport (plain-http PATCH bodies by sendfile), against a small socket server on loopback.

The server reads the request the way a registry does and answers in the ways that matter: after
the whole body, before reading the body (and then draining it), or by dropping the connection.
The last tests put the sendfile path under upload_blob: a redirect, a 401 whose token server is
down, a configured proxy (a real registry).

The layers it sends are tested in test_oci_layers.py, the upload protocol in test_oci_upload.py.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modelcar.oci import sendfile
from modelcar.oci.auth import ANONYMOUS
from modelcar.oci.client import RegistryClient
from modelcar.oci.errors import RegistryError
from modelcar.oci.layers import LARGE_FILE, FileRange, plan_layers
from modelcar.oci.model_dir import ModelDirError, scan_model
from modelcar.oci.upload import upload_blob

from .helpers.fake_model import write_model_dir
from .helpers.fake_registry import FAST, FakeRegistry
from .helpers.oci_registry import Registry

Handler = Callable[[socket.socket, bytes, dict[str, str]], None]


class OneShotServer:
    """Accepts one connection on 127.0.0.1, reads the request head and hands it to `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.head = b""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                self.head, rest = data.split(b"\r\n\r\n", 1)
                lines = self.head.decode("latin-1").split("\r\n")[1:]
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
                self.handler(conn, rest, headers)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self) -> None:
        self.thread.join(10)
        self.listener.close()
        if self.error is not None:
            raise self.error

    def url(self, path: str = "/v2/r/blobs/uploads/abc?_state=s") -> httpx.URL:
        return httpx.URL(f"http://127.0.0.1:{self.port}{path}")


def read_body(conn: socket.socket, rest: bytes, length: int) -> bytes:
    body = bytearray(rest)
    while len(body) < length:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return bytes(body)


def answer(conn: socket.socket, status: str, headers: dict[str, str] | None = None) -> None:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in (headers or {}).items()), "Content-Length: 0"]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


@pytest.fixture
def layer(tmp_path: Path):  # type: ignore[no-untyped-def]
    model = write_model_dir(tmp_path / "model", {"weights.safetensors": LARGE_FILE + 12345, "config.json": '{"a": 1}'})
    plans = plan_layers(scan_model(model))
    return next(p for p in plans if p.title == "weights.safetensors").stream()


@pytest.mark.parametrize("offset", [0, 700, 5 << 20])
def test_the_body_is_the_layer_byte_for_byte_and_feed_sees_it_in_order(layer, offset: int) -> None:  # type: ignore[no-untyped-def]
    received: dict[str, bytes] = {}

    def handler(conn: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        received["body"] = read_body(conn, rest, int(headers["content-length"]))
        received["headers"] = repr(headers).encode()
        answer(conn, "202 Accepted", {"Location": "/v2/r/blobs/uploads/abc?_state=next"})

    server = OneShotServer(handler)
    fed = hashlib.sha256()
    length = layer.size - offset
    headers = {"Content-Length": str(length), "Authorization": "Bearer t0ken"}
    response = sendfile.send_patch(server.url(), headers, layer.parts(offset), fed.update)
    server.join()
    expected = b"".join(layer.chunks(offset))
    assert received["body"] == expected
    assert fed.digest() == hashlib.sha256(expected).digest()
    assert response.status_code == 202
    assert response.headers["Location"] == "/v2/r/blobs/uploads/abc?_state=next"
    assert server.head.startswith(b"PATCH /v2/r/blobs/uploads/abc?_state=s HTTP/1.1\r\n")
    assert b"'authorization': 'Bearer t0ken'" in received["headers"]


def test_an_answer_sent_before_the_body_was_read_is_returned(layer) -> None:  # type: ignore[no-untyped-def]
    # Registries check auth before reading the body; the answer must reach the caller, not a broken pipe.
    def handler(conn: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        answer(conn, "401 Unauthorized", {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1/token"'})
        conn.shutdown(socket.SHUT_WR)
        read_body(conn, rest, int(headers["content-length"]))

    server = OneShotServer(handler)
    headers = {"Content-Length": str(layer.size)}
    response = sendfile.send_patch(server.url(), headers, layer.parts(0), lambda data: None)
    server.join()
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_a_connection_dropped_mid_body_is_a_send_failure(layer) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        read_body(conn, rest, 1 << 20)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, no answer

    server = OneShotServer(handler)
    with pytest.raises(sendfile.SendFailed, match=r"broke while sending|without an answer"):
        sendfile.send_patch(server.url(), {"Content-Length": str(layer.size)}, layer.parts(0), lambda data: None)
    server.join()


def test_nobody_listening_is_a_send_failure() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    with pytest.raises(sendfile.SendFailed, match=f"cannot send to 127.0.0.1:{port}"):
        sendfile.send_patch(httpx.URL(f"http://127.0.0.1:{port}/x"), {}, iter([b"abc"]), lambda data: None)


def test_a_file_that_shrank_is_a_model_error_not_a_network_one(layer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        read_body(conn, rest, int(headers["content-length"]))

    server = OneShotServer(handler)
    os.truncate(tmp_path / "model" / "weights.safetensors", 1000)
    with pytest.raises(ModelDirError, match="changed while it was being packaged"):
        sendfile.send_patch(server.url(), {"Content-Length": str(layer.size)}, layer.parts(0), lambda data: None)
    server.join()


def test_parts_from_any_offset_are_the_chunks(layer) -> None:  # type: ignore[no-untyped-def]
    def materialise(parts: Iterator[bytes | FileRange]) -> bytes:
        return b"".join(p if isinstance(p, bytes) else p.read() for p in parts)

    whole = b"".join(layer.chunks())
    assert len(whole) == layer.size
    for offset in (0, 1, 511, 512, 513, 4 << 20, layer.size - 1024, layer.size - 1):
        assert materialise(layer.parts(offset)) == whole[offset:]


@pytest.mark.parametrize(
    ("url", "env", "usable"),
    [
        ("http://127.0.0.1:5000/v2/x", {}, True),
        ("https://127.0.0.1:5000/v2/x", {}, False),
        ("http://127.0.0.1:5000/v2/x", {"HTTP_PROXY": "http://proxy:3128"}, False),
        ("http://127.0.0.1:5000/v2/x", {"http_proxy": "http://proxy:3128"}, False),
        ("http://127.0.0.1:5000/v2/x", {"ALL_PROXY": "socks5://proxy:1080"}, False),
        ("http://127.0.0.1:5000/v2/x", {"HTTPS_PROXY": "http://proxy:3128"}, True),
    ],
)
def test_only_plain_http_without_a_proxy_goes_by_sendfile(
    url: str, env: dict[str, str], usable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert sendfile.usable(httpx.URL(url)) is usable


def test_a_registry_that_stops_reading_times_out_once(layer, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # No second wait for an answer after the idle timeout: a stalled registry costs one timeout.
    monkeypatch.setattr(sendfile, "IDLE_TIMEOUT", 0.5)
    release = threading.Event()

    def handler(conn: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        release.wait(10)  # reads nothing more: the socket buffers fill, sendfile stalls

    server = OneShotServer(handler)
    started = time.monotonic()
    with pytest.raises(sendfile.SendFailed, match="took no data"):
        sendfile.send_patch(server.url(), {"Content-Length": str(layer.size)}, layer.parts(0), lambda data: None)
    assert time.monotonic() - started < 3
    release.set()
    server.join()


def test_a_file_rewritten_between_hashing_and_sending_is_an_error(layer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Same size, new bytes: without the check the digest would not be that of the bytes sent.
    weights = tmp_path / "model" / "weights.safetensors"

    def handler(conn: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        read_body(conn, rest, int(headers["content-length"]))

    def rewrite_once(data: bytes) -> None:
        if len(data) > 1 << 20 and not rewritten:
            rewritten.append(True)
            time.sleep(0.01)  # a later mtime, whatever the file system's clock granularity
            with open(weights, "r+b") as handle:
                handle.write(os.urandom(4096))

    rewritten: list[bool] = []
    server = OneShotServer(handler)
    with pytest.raises(ModelDirError, match="changed while it was being packaged"):
        sendfile.send_patch(server.url(), {"Content-Length": str(layer.size)}, layer.parts(0), rewrite_once)
    server.join()


def test_a_redirected_patch_goes_through_httpx_and_the_next_ones_too(layer, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    fake = FakeRegistry(auth="none")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            raise httpx.ConnectError("plain http only")
        return fake.handler(request)

    client = RegistryClient(
        "reg.test", keychain=ANONYMOUS, tls_verify=False, retry=FAST, transport=httpx.MockTransport(handler)
    )
    redirected: list[str] = []

    def send_patch(url: httpx.URL, headers: dict[str, str], parts, feed):  # type: ignore[no-untyped-def]
        redirected.append(str(url))
        for part in parts:
            feed(part if isinstance(part, bytes) else part.read())
        return httpx.Response(307, headers={"Location": str(url)}, request=httpx.Request("PATCH", url))

    monkeypatch.setattr(sendfile, "send_patch", send_patch)
    expected = "sha256:" + hashlib.sha256(b"".join(layer.chunks())).hexdigest()
    assert upload_blob(client, "first", layer) == expected
    assert upload_blob(client, "second", layer) == expected
    assert len(redirected) == 1  # the first PATCH; its redirect and the second blob went through httpx
    assert fake.blobs[expected] == b"".join(layer.chunks())


def test_a_token_server_that_fails_after_a_401_lets_the_upload_resume(
    layer,  # type: ignore[no-untyped-def]
    oci_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = RegistryClient(oci_registry.host, keychain=ANONYMOUS, tls_verify=False, retry=FAST)
    real_send_patch = sendfile.send_patch
    challenges: list[str] = []

    def challenged_once(url: httpx.URL, headers: dict[str, str], parts, feed):  # type: ignore[no-untyped-def]
        if challenges:
            return real_send_patch(url, headers, parts, feed)
        challenges.append(str(url))
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:9/token"'})

    def token_server_down(response: httpx.Response) -> None:
        raise RegistryError("cannot reach the token server: connection refused")

    monkeypatch.setattr(sendfile, "send_patch", challenged_once)
    monkeypatch.setattr(client, "authenticate", token_server_down)
    expected = "sha256:" + hashlib.sha256(b"".join(layer.chunks())).hexdigest()
    try:
        assert upload_blob(client, "sendfile/resume", layer) == expected
        assert client.has_blob("sendfile/resume", expected)
    finally:
        client.close()
    assert len(challenges) == 1  # the 401's failed answer was a resume, not the end of the upload


@pytest.mark.parametrize("proxied", [False, True], ids=["no-proxy", "http-proxy-configured"])
def test_the_client_sends_model_layers_by_sendfile_unless_a_proxy_is_configured(
    layer,  # type: ignore[no-untyped-def]
    oci_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    proxied: bool,
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxied:  # a proxy for http, which this registry is exempt from: httpx goes to it directly
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    real_send_patch = sendfile.send_patch
    sent: list[str] = []

    def counting(url: httpx.URL, headers: dict[str, str], parts, feed):  # type: ignore[no-untyped-def]
        sent.append(str(url))
        return real_send_patch(url, headers, parts, feed)

    monkeypatch.setattr(sendfile, "send_patch", counting)
    client = RegistryClient(oci_registry.host, keychain=ANONYMOUS, tls_verify=False, retry=FAST)
    expected = "sha256:" + hashlib.sha256(b"".join(layer.chunks())).hexdigest()
    try:
        assert upload_blob(client, f"sendfile/proxied-{str(proxied).lower()}", layer) == expected
        assert client.has_blob(f"sendfile/proxied-{str(proxied).lower()}", expected)
    finally:
        client.close()
    assert len(sent) == (0 if proxied else 1)
