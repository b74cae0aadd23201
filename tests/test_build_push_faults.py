"""Uploads through a TCP proxy that cuts connections mid-blob: resumed (or restarted), same digest.

The proxy lives in tests/helpers/fault_proxy.py; tests/test_faults_registry.py runs the CLI through it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from modelcar.oci.build import build_and_push
from modelcar.oci.digest_cache import DigestCache
from modelcar.oci.layers import plan_layers
from modelcar.oci.model_dir import scan_model
from modelcar.oci.reference import parse_reference
from modelcar.oci.store import ClientOptions

from .helpers.fake_model import MIB, write_model_dir
from .helpers.fake_registry import FAST
from .helpers.fault_proxy import TcpFaultProxy
from .helpers.oci_registry import Registry


def test_cut_connections_still_give_the_same_image(oci_registry: Registry, tmp_path: Path) -> None:
    model = write_model_dir(tmp_path / "model", {"weights.safetensors": 24 * MIB, "config.json": "{}"})
    plans = plan_layers(scan_model(model))
    expected = {"sha256:" + hashlib.sha256(b"".join(p.stream().chunks())).hexdigest() for p in plans}

    proxy = TcpFaultProxy(oci_registry.host, cut_after=5 * MIB, cuts=3)
    try:
        result = build_and_push(
            model,
            parse_reference(f"{proxy.host}/faults/model:1"),
            None,
            ClientOptions(tls_verify=False, retry=FAST),
            {},
            DigestCache(None),
        )
    finally:
        proxy.close()
    assert proxy.cut_count == 3
    assert {layer.digest for layer in result.layers} == expected
    for digest in expected:  # the registry has each blob whole, under its digest
        response = httpx.get(oci_registry.url(f"/v2/faults/model/blobs/{digest}"))
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
