"""Resumable blob uploads (oci/upload.py) against the in-memory registry of tests/helpers/fake_registry.py:
a cut connection resumes from the registry's Range, a lost session restarts the blob, a refused
streamed PATCH falls back to chunks.

Elsewhere: the client beneath (auth, retries, redirects, upload Locations) in test_oci_client.py;
an upload by sendfile that resumes after its 401 found the token server down in
test_oci_sendfile.py; connections cut by a TCP proxy in front of a real registry in test_oci_build.py,
over TLS in test_registry_tls_token.py, and under `modelcar build-push` in test_faults_registry.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers.fake_registry import FakeRegistry
from .helpers.fake_registry import push_blob as _push
from .helpers.fake_registry import sha256_digest as _digest


def test_cut_connections_resume_from_the_registry_range(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="none", cut_after=[100_000, 70_000, 5])
    data = os.urandom(1_000_000)
    assert _push(fake, tmp_path, data) == _digest(data)
    patches = [e for e in fake.log if e[0] == "PATCH"]
    assert len(patches) == 4
    assert [m for m, _, _ in fake.log].count("POST") == 1  # resumed, never restarted


def test_lost_session_restarts_the_blob(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="none", cut_after=[1000], lose_session_once=True)
    data = os.urandom(50_000)
    assert _push(fake, tmp_path, data) == _digest(data)
    assert [m for m, _, _ in fake.log].count("POST") == 2


def test_chunked_fallback_when_the_stream_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("modelcar.oci.upload.CHUNK", 64 * 1024)
    fake = FakeRegistry(auth="none", refuse_stream=True)
    data = os.urandom(200_000)
    assert _push(fake, tmp_path, data) == _digest(data)
    assert [m for m, _, _ in fake.log].count("PATCH") == 1 + 4
