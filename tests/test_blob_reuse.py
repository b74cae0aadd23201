"""Store.try_reuse, the one place that decides a blob need not be sent: HEAD, then a
cross-repository mount on the same registry, against a real registry (Distribution)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from modelcar.oci.auth import ANONYMOUS
from modelcar.oci.client import RegistryClient
from modelcar.oci.reference import parse_reference
from modelcar.oci.store import LayoutStore, RegistryStore

from .helpers.fake_registry import FAST
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
