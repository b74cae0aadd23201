"""build_and_push (oci/build.py) called in-process against a real docker-registry on loopback,
for what `modelcar build-push` cannot time or reach from outside: a layer that fails stops the
other uploads at once, so does Ctrl-C, the model's layers upload while a slow base is still being
read, and uploads through a TCP proxy that cuts connections mid-blob are resumed (or restarted)
and give the same image.

The same engine through the CLI: test_build_push_registry.py (a clean push, read back by skopeo
and umoci), test_faults_registry.py (faults through the proxies of tests/helpers/fault_proxy.py),
test_crash_push.py (kill -9, then the same command again).
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from modelcar.oci import layers as layers_module
from modelcar.oci.build import build_and_push
from modelcar.oci.digest_cache import DigestCache
from modelcar.oci.layers import FileRange, plan_layers
from modelcar.oci.model_dir import ModelDirError, scan_model
from modelcar.oci.reference import parse_reference
from modelcar.oci.store import ClientOptions

from .helpers.common import wait_for
from .helpers.fake_model import MIB, write_model_dir
from .helpers.fake_registry import FAST
from .helpers.fault_proxy import HttpFaultProxy, ProxyRequest, Stall, TcpFaultProxy
from .helpers.image_check import NEEDS_SKOPEO_UMOCI
from .helpers.oci_registry import Registry, push_layout


def _slow_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str | None) -> Path:
    """a.safetensors streams in 68 chunks of 0.1 s (about 7 s); `failing` cannot be read at all."""
    model = write_model_dir(tmp_path / "model", {"a.safetensors": 17 * MIB, "b.safetensors": 17 * MIB})
    monkeypatch.setattr(layers_module, "READ_SIZE", 256 * 1024)
    original = FileRange.read

    def read(part: FileRange, handle: BinaryIO | None = None) -> bytes:
        if part.name == failing:
            raise ModelDirError(f"cannot read {part.name}: gone")
        if part.name == "a.safetensors":
            time.sleep(0.1)
        return original(part, handle)

    monkeypatch.setattr(FileRange, "read", read)
    return model


def _build(model: Path, image: str) -> None:
    build_and_push(
        model, parse_reference(image), None, ClientOptions(tls_verify=False), {}, DigestCache(None), workers=4
    )


def test_a_failing_layer_stops_the_other_uploads_at_once(
    oci_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _slow_model(tmp_path, monkeypatch, failing="b.safetensors")
    started = time.monotonic()
    with pytest.raises(ModelDirError, match=r"cannot read b\.safetensors"):
        _build(model, f"{oci_registry.host}/it/abort:1")
    assert time.monotonic() - started < 2.5  # not the ~7 s the slow layer needs


def test_an_interrupt_stops_the_running_uploads(
    oci_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _slow_model(tmp_path, monkeypatch, failing=None)
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    # Ctrl-C as a terminal delivers it: a process started in the background by a shell without
    # job control inherits SIGINT ignored, and Python then leaves it so.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ctrl_c = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
    started = time.monotonic()
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _build(model, f"{oci_registry.host}/it/interrupt:1")
    finally:
        ctrl_c.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 2.5


@NEEDS_SKOPEO_UMOCI  # push_layout copies the base with skopeo
def test_model_layers_upload_while_the_base_is_still_being_read(
    oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    # A base on a slow registry (the default base is on registry.access.redhat.com) does not hold
    # the model back: the base's manifest is stalled until the model's first upload has started.
    push_layout(busybox_layout, f"{oci_registry.host}/base/slow:1")

    def uploads_started() -> bool:
        return any(m == "POST" and p.startswith("/v2/it/early/blobs/uploads") for m, p in oci_registry.requests())

    def decide(request: ProxyRequest) -> Stall | None:
        return Stall() if request.kind == "GET manifest" and request.number == 1 else None

    model = write_model_dir(tmp_path / "model", {"weights.safetensors": 17 * MIB})
    seen: dict[str, bool] = {}
    with HttpFaultProxy(oci_registry.host, decide) as proxy:

        def release_once_uploading() -> None:
            seen["uploading before the base was read"] = wait_for(uploads_started, 20)
            proxy.release()

        releaser = threading.Thread(target=release_once_uploading, daemon=True)
        releaser.start()
        build_and_push(
            model,
            parse_reference(f"{oci_registry.host}/it/early:1"),
            parse_reference(f"{proxy.host}/base/slow:1"),
            ClientOptions(tls_verify=False),
            {},
            DigestCache(None),
        )
        releaser.join(30)
    assert proxy.injected("GET manifest"), "the base's manifest was not stalled"
    assert seen == {"uploading before the base was read": True}


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
