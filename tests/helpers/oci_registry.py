"""A real OCI registry on loopback (Debian's docker-registry, CNCF Distribution) and a busybox base image.

The registry gets its own config and storage directory in tmp and a free port; it is stopped by
its pid. With `tls` (a test CA's server certificate and key) it serves https; `extra_auth` is its
`auth:` section (htpasswd, or token: see token_server.TokenServer.registry_auth).
`busybox_layout` builds a tiny runnable base image (busybox-static, /bin/sh) as an OCI layout
with the package's own layout writer.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .common import free_port

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class RegistryTls:
    certificate: Path  # PEM, for 127.0.0.1
    key: Path
    ca: Path  # the CA that signed it, to check the registry is up


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    log: Path
    pid: int
    scheme: str = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the registry logged so far."""
        return [(method, uri) for method, uri, _ in self.responses(refused=False)]

    def responses(self, refused: bool = True) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request the registry logged so far; with `refused`, the
        ones its auth refused too (401)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            method = entry.get("http.request.method")
            uri = entry.get("http.request.uri")
            status = entry.get("http.response.status")
            message = entry.get("msg", "")
            if method and uri and message.startswith("response completed"):
                found.append((method, uri, int(status or 0) or 200))
            elif refused and method and uri and message.startswith("error authorizing context"):
                found.append((method, uri, 401))  # logged so, with no "response completed" line
        return found


def start_registry(root: Path, extra_auth: dict[str, object] | None = None, tls: RegistryTls | None = None) -> Registry:
    """Starts docker-registry with storage under `root`; waits until /v2/ answers."""
    port = free_port()
    storage = root / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    http: dict[str, object] = {"addr": f"127.0.0.1:{port}", "secret": "modelcar-test-secret"}
    if tls is not None:
        http["tls"] = {"certificate": str(tls.certificate), "key": str(tls.key)}
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": http,
    }
    if extra_auth:
        config["auth"] = extra_auth
    config_path = root / "config.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_registry_env(),
        )
    registry = Registry(f"127.0.0.1:{port}", root, log, proc.pid, "https" if tls else "http")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(tls.ca)) if tls else False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(registry.url("/v2/"), timeout=1, verify=verify)
            return registry
        except httpx.TransportError:
            time.sleep(0.05)
    stop_registry(registry)
    raise RuntimeError("docker-registry did not start within 20 s")


def _registry_env() -> dict[str, str]:
    """The environment without REGISTRY_* variables: Distribution reads them as configuration
    (a user's REGISTRY_AUTH_FILE would become `auth: file`, which it cannot start with)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def stop_registry(registry: Registry) -> None:
    try:
        os.kill(registry.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            if os.waitpid(registry.pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.05)
    os.kill(registry.pid, signal.SIGKILL)
    os.waitpid(registry.pid, 0)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for the session; tests use their own repository names."""
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed (make install-test)")
    registry = start_registry(tmp_path_factory.mktemp("registry"))
    yield registry
    stop_registry(registry)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, 0
    return info


def make_busybox_layout(path: Path, tag: str = "latest") -> Path:
    """An OCI layout holding a one-layer busybox image with what KServe's sidecar runs (sh, ln, sleep, ls)."""
    from modelcar.oci.image import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, Descriptor, sha256_digest
    from modelcar.oci.layout import Layout

    busybox = BUSYBOX.read_bytes()
    layer = _tar(
        [
            (_info("bin", tarfile.DIRTYPE, 0o755), None),
            (_info("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox)), busybox),
            (_info("bin/sh", tarfile.SYMTYPE, 0o777, link="busybox"), None),
            (_info("bin/ls", tarfile.SYMTYPE, 0o777, link="busybox"), None),
            (_info("bin/ln", tarfile.SYMTYPE, 0o777, link="busybox"), None),
            (_info("bin/sleep", tarfile.SYMTYPE, 0o777, link="busybox"), None),
        ]
    )
    layout = Layout(path)
    layout.init()
    layer_digest = layout.write_blob(layer)
    config = Blob.of(
        OCI_CONFIG,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "busybox test base"}],
        },
    )
    layout.write_blob(config.data)
    manifest = Blob.of(
        OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor.to_json(),
            "layers": [Descriptor(OCI_LAYER, layer_digest, len(layer)).to_json()],
        },
    )
    layout.write_blob(manifest.data)
    layout.tag(manifest.descriptor, tag)
    assert sha256_digest(manifest.data) == manifest.descriptor.digest
    return path


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.is_file():
        pytest.skip("busybox-static is not installed (make install-test)")
    return make_busybox_layout(tmp_path_factory.mktemp("busybox") / "layout")


def push_layout(layout: Path, destination: str, authfile: Path | None = None) -> None:
    """Copies the layout's `latest` to `destination` (host/repo:tag, plain http) with skopeo."""
    auth = ["--dest-authfile", str(authfile)] if authfile is not None else []
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            *auth,
            f"oci:{layout}:latest",
            f"docker://{destination}",
        ],
        check=True,
        capture_output=True,
    )
