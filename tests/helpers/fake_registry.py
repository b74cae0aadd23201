"""An in-memory OCI registry for httpx.MockTransport: enough of the distribution API (Bearer or
Basic auth, resumable uploads, blobs), with faults to inject; and what the registry-client tests
share: a client of it, an upload to it, a digest, an auth file."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelcar.oci.auth import AuthFiles
from modelcar.oci.client import RegistryClient
from modelcar.oci.upload import upload_blob
from modelcar.retry import RetryPolicy

FAST = RetryPolicy(attempts=6, base_delay=0.001, max_delay=0.05)
TOKEN = "tok-s3cr3t"
PASSWORD = "pa55-s3cr3t"


@dataclass
class BytesSource:
    data: bytes
    size: int = 0

    def __post_init__(self) -> None:
        self.size = len(self.data)

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        for i in range(offset, self.size, 1 << 16):
            yield self.data[i : i + (1 << 16)]


@dataclass
class FakeRegistry:
    """Enough of the distribution API, with faults to inject."""

    auth: str = "bearer"  # "bearer" | "basic" | "none"
    cut_after: list[int] = field(default_factory=list)  # cut the next PATCHes after N bytes each
    lose_session_once: bool = False
    refuse_stream: bool = False  # 413 on a PATCH without Content-Range
    fail_statuses: list[int] = field(default_factory=list)  # answers to the next requests
    uploads: dict[str, bytearray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    storage_auth: list[str | None] = field(default_factory=list)
    upload_origin: str = ""  # e.g. "https://other.example": upload Locations point there (absolute)
    other_log: list[tuple[str, str | None]] = field(default_factory=list)  # (method, Authorization) there

    def handler(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization")
        self.log.append((request.method, request.url.path, auth))
        host = request.url.host
        if host == "auth.test":
            expected = "Basic " + base64.b64encode(f"me:{PASSWORD}".encode()).decode()
            if auth != expected:
                return httpx.Response(401)
            assert any(s.startswith("repository:r:pull") for s in request.url.params.get_list("scope"))
            return httpx.Response(200, json={"token": TOKEN})
        if host == "other.example":
            self.other_log.append((request.method, auth))
            return self._upload(request, request.url.path.rsplit("/", 1)[1])
        if host == "storage.test":
            self.storage_auth.append(auth)
            return httpx.Response(200, content=b"blob-bytes")
        if self.fail_statuses:
            status = self.fail_statuses.pop(0)
            return httpx.Response(status, headers={"Retry-After": "0"} if status == 429 else {})
        if not self._authorized(auth):
            challenge = (
                'Bearer realm="https://auth.test/token",service="reg.test"'
                if self.auth == "bearer"
                else 'Basic realm="x"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return self._route(request)

    def _authorized(self, auth: str | None) -> bool:
        if self.auth == "none":
            return True
        if self.auth == "bearer":
            return auth == f"Bearer {TOKEN}"
        return auth == "Basic " + base64.b64encode(f"me:{PASSWORD}".encode()).decode()

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200)
        if request.method == "POST" and path.endswith("/blobs/uploads/"):
            upload = uuid.uuid4().hex
            self.uploads[upload] = bytearray()
            return httpx.Response(202, headers={"Location": f"{self.upload_origin}/upload/{upload}?_state=x"})
        if path.startswith("/upload/"):
            return self._upload(request, path.rsplit("/", 1)[1])
        if "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            if request.method == "HEAD":
                return httpx.Response(200 if digest in self.blobs else 404)
            return httpx.Response(307, headers={"Location": "https://storage.test/blob?sig=1"})
        return httpx.Response(404)

    def _upload(self, request: httpx.Request, upload: str) -> httpx.Response:
        if upload not in self.uploads:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        data = self.uploads[upload]
        location = {"Location": f"{self.upload_origin}/upload/{upload}?_state=y"}
        if request.method == "GET":
            if self.lose_session_once:
                self.lose_session_once = False
                del self.uploads[upload]
                return httpx.Response(404)
            return httpx.Response(204, headers={**location, "Range": f"0-{len(data) - 1}"})
        if request.method == "PATCH":
            ranged = request.headers.get("Content-Range")
            if self.refuse_stream and not ranged:
                request.read()
                return httpx.Response(413)
            if ranged and int(ranged.split("-")[0]) != len(data):
                request.read()
                return httpx.Response(416)
            limit = self.cut_after.pop(0) if self.cut_after else None
            for chunk in request.stream:  # type: ignore[union-attr]
                if limit is not None and len(chunk) >= limit:
                    data += chunk[:limit]
                    raise httpx.WriteError("connection cut")
                if limit is not None:
                    limit -= len(chunk)
                data += chunk
            return httpx.Response(202, headers=location)
        if request.method == "PUT":
            digest = request.url.params["digest"]
            assert digest == "sha256:" + hashlib.sha256(bytes(data)).hexdigest()
            self.blobs[digest] = bytes(data)
            del self.uploads[upload]
            return httpx.Response(201)
        return httpx.Response(405)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_client(fake: FakeRegistry, tmp_path: Path) -> RegistryClient:
    """A client of `fake` as reg.test, with me's password in an auth file."""
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(f"me:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {"reg.test": {"auth": token}}}))
    return RegistryClient(
        "reg.test", keychain=AuthFiles(authfile), retry=FAST, transport=httpx.MockTransport(fake.handler)
    )


def push_blob(fake: FakeRegistry, tmp_path: Path, data: bytes) -> str:
    """Uploads `data` to repository r of `fake` (upload_blob); returns the digest it gives."""
    client = fake_client(fake, tmp_path)
    try:
        return upload_blob(client, "r", BytesSource(data))
    finally:
        client.close()


def write_authfile(path: Path, host: str, user: str, password: str) -> Path:
    """A containers auth.json with one entry: `user`:`password` for `host`."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path
