"""Uploads through a TCP proxy that cuts connections mid-blob: resumed (or restarted), same digest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from pathlib import Path

import httpx

from modelcar.oci.build import build_and_push
from modelcar.oci.digest_cache import DigestCache
from modelcar.oci.layers import plan_layers, scan_model
from modelcar.oci.reference import parse_reference
from modelcar.oci.store import ClientOptions
from modelcar.retry import RetryPolicy

from .helpers.oci_registry import Registry

MIB = 1 << 20


class CuttingProxy:
    """Forwards 127.0.0.1:port to the registry; the first `cuts` connections that send more than
    `after` bytes are closed after that many."""

    def __init__(self, target: str, after: int, cuts: int) -> None:
        host, port = target.split(":")
        self.target = (host, int(port))
        self.after, self.cuts = after, cuts
        self.cut_count = 0
        self._lock = threading.Lock()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.host = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        sent = 0
        try:
            while data := src.recv(256 * 1024):
                sent += len(data)
                if outbound and sent > self.after:
                    with self._lock:
                        cut = self.cut_count < self.cuts
                        self.cut_count += cut
                    if cut:
                        dst.sendall(data[: len(data) - (sent - self.after)])
                        break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()


def test_cut_connections_still_give_the_same_image(oci_registry: Registry, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(os.urandom(24 * MIB))
    (model / "config.json").write_text("{}")
    plans = plan_layers(scan_model(model))
    expected = {"sha256:" + hashlib.sha256(b"".join(p.stream().chunks())).hexdigest() for p in plans}

    proxy = CuttingProxy(oci_registry.host, after=5 * MIB, cuts=3)
    try:
        result = build_and_push(
            model,
            parse_reference(f"{proxy.host}/faults/model:1"),
            None,
            ClientOptions(tls_verify=False, retry=RetryPolicy(base_delay=0.01, max_delay=0.05)),
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
