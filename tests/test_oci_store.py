"""The stores (oci/store.py). Store.try_reuse, the one place that decides a blob need not be sent:
HEAD, then a cross-repository mount on the same registry, against a real registry (Distribution).
A base layer copied from a registry into a layout (RemoteBlob) resumes a broken download, and one
that keeps breaking is a clear error, against an in-memory registry.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelcar.oci.auth import ANONYMOUS
from modelcar.oci.client import RegistryClient
from modelcar.oci.errors import RegistryError
from modelcar.oci.image import Descriptor
from modelcar.oci.reference import parse_reference
from modelcar.oci.store import LayoutStore, RegistryStore

from .helpers.fake_registry import FAST
from .helpers.fake_registry import sha256_digest as _digest
from .helpers.oci_registry import Registry


def _store(client: RegistryClient, registry: Registry, repository: str) -> RegistryStore:
    return RegistryStore(parse_reference(f"{registry.host}/{repository}:1"), client)  # type: ignore[arg-type]


def _new_requests(registry: Registry, before: int) -> list[tuple[str, str]]:
    """The requests since `before` (the client's /v2/ ping left out), once the log stops growing:
    the registry writes a request's line as it answers it."""
    seen = -1
    while True:
        logged = registry.requests()
        if len(logged) == seen:
            break
        seen = len(logged)
        time.sleep(0.2)
    return [
        (method, uri.split("?")[0] + ("?mount" if "mount=" in uri else ""))
        for method, uri in logged[before:]
        if uri != "/v2/"
    ]


@pytest.fixture
def client(oci_registry: Registry) -> RegistryClient:
    client = RegistryClient(oci_registry.host, keychain=ANONYMOUS, tls_verify=False, retry=FAST)
    yield client  # type: ignore[misc]
    client.close()


def test_a_blob_in_another_repository_is_mounted_not_sent(oci_registry: Registry, client: RegistryClient) -> None:
    base = _store(client, oci_registry, "reuse/base")
    model = _store(client, oci_registry, "reuse/model")
    data = os.urandom(4096)
    digest = base.put_bytes(data)
    before = len(oci_registry.requests())
    assert model.try_reuse(digest, mount_from=base) is True
    requests = _new_requests(oci_registry, before)
    assert ("POST", "/v2/reuse/model/blobs/uploads/?mount") in requests
    assert not any(method in ("PATCH", "PUT") for method, _ in requests)
    assert model.has_blob(digest)
    before = len(oci_registry.requests())
    assert model.try_reuse(digest, mount_from=base) is True  # there now: one HEAD, no mount
    assert _new_requests(oci_registry, before) == [("HEAD", f"/v2/reuse/model/blobs/{digest}")]


def test_a_declined_mount_cancels_its_upload_session(oci_registry: Registry, client: RegistryClient) -> None:
    base = _store(client, oci_registry, "reuse/empty-base")
    model = _store(client, oci_registry, "reuse/model-2")
    missing = "sha256:" + hashlib.sha256(os.urandom(64)).hexdigest()
    before = len(oci_registry.requests())
    assert model.try_reuse(missing, mount_from=base) is False
    requests = _new_requests(oci_registry, before)
    assert requests[0] == ("HEAD", f"/v2/reuse/model-2/blobs/{missing}")
    assert requests[1] == ("POST", "/v2/reuse/model-2/blobs/uploads/?mount")
    assert requests[2][0] == "DELETE" and requests[2][1].startswith("/v2/reuse/model-2/blobs/uploads/")
    assert len(requests) == 3


def test_no_digest_or_another_store_is_only_a_head(
    oci_registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    model = _store(client, oci_registry, "reuse/model-3")
    layout = LayoutStore(parse_reference(f"oci:{tmp_path / 'layout'}:v1"))  # type: ignore[arg-type]
    before = len(oci_registry.requests())
    assert model.try_reuse(None, mount_from=layout) is False
    assert _new_requests(oci_registry, before) == []
    missing = "sha256:" + "1" * 64
    assert model.try_reuse(missing, mount_from=layout) is False
    assert _new_requests(oci_registry, before) == [("HEAD", f"/v2/reuse/model-3/blobs/{missing}")]


def _breaking_blob_client(data: bytes, breaks: list[int], ranges: list[str | None]) -> RegistryClient:
    """A registry whose blob GETs break off after breaks[i] bytes (one entry per GET, while any are left)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        ranged = request.headers.get("Range")
        ranges.append(ranged)
        start = int(ranged.removeprefix("bytes=").rstrip("-")) if ranged else 0
        cut = breaks.pop(0) if breaks else None

        def body() -> Iterator[bytes]:
            tail = data[start:]
            for i in range(0, len(tail), 4096):
                if cut is not None and i >= cut:
                    raise httpx.ReadError("connection reset by peer")
                yield tail[i : i + 4096]

        return httpx.Response(206 if ranged else 200, content=body())

    client = RegistryClient("reg.test", keychain=ANONYMOUS, retry=FAST, transport=httpx.MockTransport(handler))
    return client


def test_base_layer_copy_to_a_layout_resumes_a_broken_download(tmp_path: Path) -> None:
    mib = 1 << 20  # the client hands on whole MiB chunks: bytes after the last one are fetched again
    data = os.urandom(3 * mib + 100)
    ranges: list[str | None] = []
    client = _breaking_blob_client(data, [mib + mib // 2, mib + 8192], ranges)
    origin = RegistryStore(parse_reference("reg.test/base:1"), client)  # type: ignore[arg-type]
    dest = LayoutStore(parse_reference(f"oci:{tmp_path / 'out'}:v1"))  # type: ignore[arg-type]
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", _digest(data), len(data))
    dest.copy_blob(origin, descriptor)
    assert dest.layout.read_blob(_digest(data)) == data
    assert ranges == [None, f"bytes={mib}-", f"bytes={2 * mib}-"]


def test_base_layer_download_that_keeps_breaking_is_a_clear_registry_error(tmp_path: Path) -> None:
    data = os.urandom(2 << 20)
    ranges: list[str | None] = []
    client = _breaking_blob_client(data, [3 << 19] + [0] * 20, ranges)
    origin = RegistryStore(parse_reference("reg.test/base:1"), client)  # type: ignore[arg-type]
    dest = LayoutStore(parse_reference(f"oci:{tmp_path / 'out'}:v1"))  # type: ignore[arg-type]
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", _digest(data), len(data))
    with pytest.raises(RegistryError, match=r"broke off at byte 1048576 of 2097152 \(ReadError.*check the network"):
        dest.copy_blob(origin, descriptor)
    assert len(ranges) == FAST.attempts  # tries in all since the last progress
    assert not list((tmp_path / "out" / "blobs" / "sha256").glob(".*.tmp"))
