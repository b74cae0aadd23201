"""The registry client (oci/client.py) against an in-memory registry (httpx.MockTransport): auth, token
realms, retries, redirects, upload Locations on other origins, error answers.

Elsewhere: the upload protocol on top of it (resume, restart, chunked fallback) in
test_oci_upload.py; a base layer's download that resumes (store.py's RemoteBlob) in
test_oci_store.py; auth files and challenges in test_oci_auth.py; the client against a real
TLS registry with a token server in test_registry_tls_token.py.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelcar.oci.auth import ANONYMOUS, AuthFiles, Credentials
from modelcar.oci.client import RegistryClient
from modelcar.oci.errors import InsecureRealm, RegistryError
from modelcar.oci.upload import upload_blob

from .helpers.fake_registry import FAST, PASSWORD, TOKEN, BytesSource, FakeRegistry, write_authfile
from .helpers.fake_registry import fake_client as _client
from .helpers.fake_registry import push_blob as _push
from .helpers.fake_registry import sha256_digest as _digest
from .helpers.secrets import REGISTRY_PASSWORD


def test_bearer_flow_and_one_streamed_patch(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = os.urandom(300_000)
    assert _push(fake, tmp_path, data) == _digest(data)
    assert fake.blobs[_digest(data)] == data
    assert [m for m, _, _ in fake.log].count("PATCH") == 1
    token_requests = [entry for entry in fake.log if entry[1] == "/token"]
    assert len(token_requests) == 1


def test_threads_challenged_together_fetch_one_token(tmp_path: Path) -> None:
    # Four layers start at once and all get a 401: one token request, the others use its answer.
    fake = FakeRegistry()
    slow_token = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            slow_token.wait(0.3)  # long enough for every thread to have its 401
        return fake.handler(request)

    authfile = tmp_path / "auth.json"
    authfile.write_text(
        json.dumps({"auths": {"reg.test": {"auth": base64.b64encode(b"me:" + PASSWORD.encode()).decode()}}})
    )
    client = RegistryClient(
        "reg.test", keychain=AuthFiles(authfile), retry=FAST, transport=httpx.MockTransport(handler)
    )
    client.want("r", "pull")
    client.scheme = "https"
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: client.has_blob("r", _digest(bytes([i]))), range(4)))
    finally:
        client.close()
    assert answers == [False] * 4
    assert len([entry for entry in fake.log if entry[1] == "/token"]) == 1
    assert len([entry for entry in fake.log if entry[0] == "HEAD" and entry[2] is None]) == 4  # all challenged


def test_a_token_server_whose_certificate_is_not_trusted_is_asked_once(tmp_path: Path) -> None:
    """A failed TLS verification fails the same way every time: no retries, and a hint that helps."""
    fake = FakeRegistry()
    token_tries = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            token_tries.append(request.url.path)
            error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
            error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
            raise error
        return fake.handler(request)

    client = RegistryClient("reg.test", keychain=ANONYMOUS, retry=FAST, transport=httpx.MockTransport(handler))
    client.want("r", "pull")
    client.scheme = "https"
    try:
        with pytest.raises(RegistryError) as caught:
            client.has_blob("r", _digest(b"x"))
    finally:
        client.close()
    assert token_tries == ["/token"]
    message = str(caught.value)
    assert "cannot reach the token server of reg.test (https://auth.test/token)" in message
    assert "pass --ca-bundle" in message


def test_basic_flow(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="basic")
    data = b"hello" * 1000
    assert _push(fake, tmp_path, data) == _digest(data)


def test_no_credentials_is_a_clear_error_without_secrets(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="basic")
    client = RegistryClient("reg.test", keychain=ANONYMOUS, retry=FAST, transport=httpx.MockTransport(fake.handler))
    with pytest.raises(RegistryError, match=r"denied access \(HTTP 401\).*--authfile"):
        client.has_blob("r", _digest(b"x"))


def test_5xx_and_429_are_retried(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="none", fail_statuses=[503, 500, 429, 502])
    data = b"abc" * 100
    assert _push(fake, tmp_path, data) == _digest(data)


def test_too_many_failures_give_up_with_the_status(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="none", fail_statuses=[503] * 20)
    client = _client(fake, tmp_path)
    with pytest.raises(RegistryError, match="HTTP 503"):
        client.has_blob("r", _digest(b"x"))


def test_redirect_to_storage_gets_no_authorization(tmp_path: Path) -> None:
    fake = FakeRegistry()
    client = _client(fake, tmp_path)
    with client.open_blob("r", _digest(b"blob-bytes")) as chunks:
        assert b"".join(chunks) == b"blob-bytes"
    assert fake.storage_auth == [None]
    assert any(auth == f"Bearer {TOKEN}" for _, path, auth in fake.log if "/blobs/" in path)


def test_secrets_never_in_error_messages(tmp_path: Path) -> None:
    fake = FakeRegistry()
    client = _client(fake, tmp_path)
    client.has_blob("r", _digest(b"x"))
    fake.fail_statuses.append(400)
    with pytest.raises(RegistryError) as info:
        client.has_blob("r", _digest(b"x"))
    assert TOKEN not in str(info.value) and PASSWORD not in str(info.value)
    assert PASSWORD not in repr(client.keychain.resolve("reg.test", "r"))


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_upload_location_on_another_host_gets_no_authorization(tmp_path: Path, auth: str) -> None:
    fake = FakeRegistry(auth=auth, upload_origin="https://other.example", cut_after=[1000])
    data = os.urandom(50_000)
    assert _push(fake, tmp_path, data) == _digest(data)
    methods = [m for m, _ in fake.other_log]
    assert "PATCH" in methods and "GET" in methods and "PUT" in methods  # upload, resume query, finish
    assert fake.other_log and all(sent is None for _, sent in fake.other_log), fake.other_log
    assert any(sent is not None for m, _, sent in fake.log if m == "POST")  # the registry itself still gets it


def test_plain_http_upload_location_is_refused_while_tls_is_verified(tmp_path: Path) -> None:
    fake = FakeRegistry(upload_origin="http://other.example")
    with pytest.raises(RegistryError, match=r"http://other\.example/upload/\w+, which is not https"):
        _push(fake, tmp_path, b"x" * 1000)
    assert fake.other_log == []
    assert [m for m, _, _ in fake.log if m != "GET"] == ["POST", "POST"]  # 401, then the session; no retries


def test_plain_http_redirect_is_refused_while_tls_is_verified(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            raise AssertionError(f"a request went to {request.url}")
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(307, headers={"Location": "http://storage.test/blob?sig=1"})

    client = RegistryClient("reg.test", keychain=ANONYMOUS, retry=FAST, transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError, match=r"http://storage\.test/blob, which is not https"):
        client.get_blob("r", _digest(b"x"))


def test_plain_http_redirect_of_a_patch_is_refused_not_retried(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.scheme}://{request.url.host}{request.url.path}")
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/upload/1"})
        if request.method == "PATCH":
            request.read()
            return httpx.Response(307, headers={"Location": "http://other.example/upload/1"})
        return httpx.Response(200)

    client = RegistryClient("reg.test", keychain=ANONYMOUS, retry=FAST, transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError, match=r"http://other\.example/upload/1, which is not https"):
        upload_blob(client, "r", BytesSource(b"x" * 1000))
    assert [s for s in seen if not s.startswith("GET")] == [
        "POST https://reg.test/v2/r/blobs/uploads/",
        "PATCH https://reg.test/upload/1",
    ]


def _bearer_registry(realm: str, token_requests: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            token_requests.append(request)
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("Authorization") == "Bearer t":
            return httpx.Response(200)
        challenge = f'Bearer realm="{realm}",service="reg",scope="repository:a/b:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return httpx.MockTransport(handler)


def test_client_refuses_an_http_realm_only_while_tls_is_verified(tmp_path: Path) -> None:
    authfile = write_authfile(tmp_path / "auth.json", "reg.test", "pusher", REGISTRY_PASSWORD)
    fast = dataclasses.replace(FAST, attempts=2)
    seen: list[httpx.Request] = []
    client = RegistryClient(
        "reg.test", keychain=AuthFiles(authfile), retry=fast, transport=_bearer_registry("http://auth.test/token", seen)
    )
    with pytest.raises(InsecureRealm, match=r"token server http://auth\.test/token, which is not https") as caught:
        client.get_blob("a/b", "sha256:" + "0" * 64)
    assert caught.value.status == 401 and seen == []
    assert REGISTRY_PASSWORD not in str(caught.value)

    client = RegistryClient(
        "reg.test",
        tls_verify=False,
        keychain=AuthFiles(authfile),
        retry=fast,
        transport=_bearer_registry("http://auth.test/token", seen),
    )
    assert client.has_blob("a/b", "sha256:" + "0" * 64)
    assert [r.headers.get("Authorization", "")[:6] for r in seen] == ["Basic "]

    client = RegistryClient(
        "reg.test", keychain=AuthFiles(authfile), retry=fast, transport=_bearer_registry("ftp://auth.test/token", [])
    )
    with pytest.raises(RegistryError, match="not https"):
        client.has_blob("a/b", "sha256:" + "0" * 64)


class RecordingKeychain:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, registry: str, repository: str) -> Credentials | None:
        with self.lock:
            self.asked.append((registry, repository))
        return Credentials("me", PASSWORD)

    def searched(self) -> str:
        return "a test keychain"


def test_the_keychain_is_asked_once_for_the_repository_pushed_to() -> None:
    fake = FakeRegistry(auth="basic")
    keychain = RecordingKeychain()
    client = RegistryClient("reg.test", keychain=keychain, retry=FAST, transport=httpx.MockTransport(fake.handler))
    client.want("base", "pull")
    for data in (b"one" * 100, b"two" * 100):
        assert upload_blob(client, "r", BytesSource(data)) == _digest(data)
    assert keychain.asked == [("reg.test", "r")]
    client.close()


def test_scopes_added_while_other_threads_authenticate() -> None:
    # want() from upload threads while others are challenged: every request still authenticates.
    fake = FakeRegistry(auth="basic")
    client = RegistryClient(
        "reg.test", keychain=RecordingKeychain(), retry=FAST, transport=httpx.MockTransport(fake.handler)
    )

    def work(i: int) -> bool:
        client.want(f"repo{i}", "pull")
        return client.has_blob("r", _digest(str(i).encode()))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(work, range(200))) == [False] * 200
    client.close()


def test_error_answers_keep_their_status_and_distribution_codes(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        if "manifests" in request.url.path:
            body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}, {"message": "no code"}]}
            return httpx.Response(404, json=body)
        return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "requested access is denied"}]})

    client = RegistryClient("reg.test", retry=FAST, transport=httpx.MockTransport(handler))
    with pytest.raises(RegistryError) as missing:
        client.get_manifest("r", "v1")
    assert missing.value.status == 404 and missing.value.codes == ("MANIFEST_UNKNOWN",)
    assert "MANIFEST_UNKNOWN: manifest unknown" in str(missing.value)
    with pytest.raises(RegistryError) as denied:
        client.get_blob("r", "sha256:" + "0" * 64)
    assert denied.value.status == 403 and denied.value.codes == ("DENIED",)
    assert "denied access (HTTP 403)" in str(denied.value)
    client.close()
