"""Fault injection between `modelcar build-push` and a real docker-registry on loopback.

Each test pushes the same 33 MiB model (two shard layers, small files, card, busybox base) through a
proxy that breaks the conversation in one way, then pulls the image back from the registry
itself (skopeo copy + umoci unpack), compares /models byte for byte with the model directory,
and checks the digest is the one a fault-free push gives.

- TCP: connections cut after 4 MiB (several times per blob: resume from the registry's offset),
  and the first connections reset outright.
- HTTP: 503/500 bursts on the first requests of every kind, every 2nd PATCH/PUT failing, and
  429 with Retry-After: 1 (the wait is measured).
- Redirects: an htpasswd-protected registry whose blob GETs are answered with a 307 to a second
  port; that port must never see the Authorization header the first one got.
- No planted secret in the output, run.json or results, even with MODELCAR_DEBUG=1.

The proxies live in tests/helpers/fault_proxy.py. Elsewhere: build_and_push in-process through the
TCP proxy in test_oci_build.py; the same faults against an in-memory registry, a module at a time,
in test_oci_client.py (retries, redirects) and test_oci_upload.py (resume); kill -9 in
test_crash_push.py.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from .helpers.common import CliResult, run_cli
from .helpers.fake_model import write_fault_model
from .helpers.fault_proxy import (
    Action,
    BlobStorageServer,
    HttpFaultProxy,
    ProxyRequest,
    RedirectOnSuccess,
    Reply,
    TcpFaultProxy,
    every_nth,
    first_of_each_kind,
)
from .helpers.image_check import (
    MIB,
    NEEDS_SKOPEO_UMOCI,
    build_push_args,
    fault_env,
    image_record,
    new_workspace,
    pull_and_compare,
    unpack_layout_and_compare,
)
from .helpers.oci_registry import Registry, push_layout, start_registry, stop_registry
from .helpers.secrets import REGISTRY_PASSWORD, leaks

pytestmark = NEEDS_SKOPEO_UMOCI
USER = "modelcar"


def push(workspace: Path, image: str, base: str, *extra: str, **env: str) -> CliResult:
    return run_cli(*build_push_args(workspace, image, base, *extra), env=fault_env(**env), timeout=180)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fault_model(tmp_path_factory.mktemp("fault-model") / "model")


@pytest.fixture(scope="module")
def reference(
    oci_registry: Registry, busybox_layout: Path, model: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The digest of a fault-free push of the model on the busybox base."""
    workspace = new_workspace(tmp_path_factory.mktemp("reference"), model)
    result = push(workspace, f"{oci_registry.host}/faults/reference:1", f"oci:{busybox_layout}")
    assert result.returncode == 0, result.output
    return str(image_record(workspace)["digest"])


def push_through(
    proxy_host: str, repository: str, registry: Registry, busybox_layout: Path, model: Path, tmp_path: Path
) -> str:
    """Pushes through the proxy; pulls back from the registry itself; returns the digest."""
    workspace = new_workspace(tmp_path / "ws", model)
    result = push(workspace, f"{proxy_host}/{repository}:1", f"oci:{busybox_layout}")
    assert result.returncode == 0, result.output
    assert not leaks(result.output)
    digest = str(image_record(workspace)["digest"])
    pull_and_compare(f"docker://{registry.host}/{repository}@{digest}", model, tmp_path, "pulled")
    return digest


# ---- TCP faults ------------------------------------------------------------------------------


def test_connections_cut_mid_blob_several_times(
    oci_registry: Registry, busybox_layout: Path, model: Path, reference: str, tmp_path: Path
) -> None:
    # Only the two shard layers (20 and 16 MiB) put more than 4 MiB on one connection, so six cuts
    # mean at least three on one blob: each resumed from where the registry says it is.
    with TcpFaultProxy(oci_registry.host, cut_after=4 * MIB, cuts=6) as proxy:
        digest = push_through(proxy.host, "faults/cut", oci_registry, busybox_layout, model, tmp_path)
    assert proxy.cut_count == 6
    assert digest == reference
    asked = [u for m, u in oci_registry.requests() if m == "GET" and u.startswith("/v2/faults/cut/blobs/uploads/")]
    assert asked, "the upload's offset was never asked for: the blobs were restarted, not resumed"


def test_first_connections_reset(
    oci_registry: Registry, busybox_layout: Path, model: Path, reference: str, tmp_path: Path
) -> None:
    with TcpFaultProxy(oci_registry.host, reset_first=5) as proxy:
        digest = push_through(proxy.host, "faults/reset", oci_registry, busybox_layout, model, tmp_path)
    assert proxy.reset_count == 5 and proxy.connections > 5
    assert digest == reference


# ---- HTTP faults -----------------------------------------------------------------------------


def test_5xx_bursts_on_every_kind_of_request(
    oci_registry: Registry, busybox_layout: Path, model: Path, reference: str, tmp_path: Path
) -> None:
    with HttpFaultProxy(oci_registry.host, first_of_each_kind(2, (503, 500))) as proxy:
        digest = push_through(proxy.host, "faults/burst", oci_registry, busybox_layout, model, tmp_path)
    assert digest == reference
    for kind in ("POST upload", "PATCH upload", "GET upload", "PUT upload", "HEAD blob", "PUT manifest"):
        assert [r.status for r in proxy.injected(kind)] == [503, 500], kind


def test_every_second_patch_and_put_fails(
    oci_registry: Registry, busybox_layout: Path, model: Path, reference: str, tmp_path: Path
) -> None:
    kinds = {"PATCH upload", "PUT upload", "PUT manifest"}
    with HttpFaultProxy(oci_registry.host, every_nth(2, kinds, 500)) as proxy:
        digest = push_through(proxy.host, "faults/nth", oci_registry, busybox_layout, model, tmp_path)
    assert digest == reference
    assert len(proxy.injected("PATCH upload")) >= 2 and len(proxy.injected("PUT upload")) >= 2


def test_429_retry_after_is_honoured(
    oci_registry: Registry, busybox_layout: Path, model: Path, reference: str, tmp_path: Path
) -> None:
    throttled = {"POST upload", "PATCH upload", "PUT manifest"}

    def decide(request: ProxyRequest) -> Action | None:
        if request.kind in throttled and request.number == 1:
            return Reply(429, {"Retry-After": "1"})
        return None

    with HttpFaultProxy(oci_registry.host, decide) as proxy:
        digest = push_through(proxy.host, "faults/throttled", oci_registry, busybox_layout, model, tmp_path)
    assert digest == reference
    for kind in ("PATCH upload", "PUT manifest"):
        first = proxy.injected(kind)[0]
        again = [r for r in proxy.requests(kind) if r.path == first.path and r is not first]
        assert again, kind
        assert again[0].at - first.at >= 0.95, f"{kind} was sent again {again[0].at - first.at:.2f} s after a 429"
    assert [r.status for r in proxy.injected("POST upload")] == [429]


def test_a_patch_answered_with_a_challenge_is_sent_again_with_credentials(
    oci_registry: Registry, busybox_layout: Path, model: Path, reference: str, tmp_path: Path
) -> None:
    # As when a token expires mid-push: the first PATCH of each of two blobs is answered 401 with
    # a Basic challenge; the client answers it from the auth file and sends the whole body again.
    # Counted per upload, not per PATCH: one blob's resend may come before the other's first try.
    challenged_uploads: set[str] = set()
    lock = threading.Lock()

    def decide(request: ProxyRequest) -> Action | None:
        if request.kind != "PATCH upload":
            return None
        with lock:
            if request.path in challenged_uploads or len(challenged_uploads) >= 2:
                return None
            challenged_uploads.add(request.path)
        return Reply(401, {"WWW-Authenticate": 'Basic realm="modelcar-test"'})

    with HttpFaultProxy(oci_registry.host, decide) as proxy:
        authfile = write_authfile(tmp_path / "auth.json", [proxy.host])
        workspace = new_workspace(tmp_path / "ws", model)
        result = push(
            workspace, f"{proxy.host}/faults/challenged:1", f"oci:{busybox_layout}", "--authfile", str(authfile)
        )
        assert result.returncode == 0, result.output
    assert not leaks(result.output)
    digest = str(image_record(workspace)["digest"])
    assert digest == reference
    pull_and_compare(f"docker://{oci_registry.host}/faults/challenged@{digest}", model, tmp_path, "pulled")
    challenged = proxy.injected("PATCH upload")
    assert [r.status for r in challenged] == [401, 401]
    for first in challenged:
        again = [r for r in proxy.requests("PATCH upload") if r.path == first.path and r is not first]
        assert again and again[0].status == 202, first.path
        assert again[0].headers.get("authorization") == _basic(REGISTRY_PASSWORD)
        assert again[0].headers.get("user-agent") == "modelcar"


# ---- redirects to another origin, with an htpasswd registry ---------------------------------


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


def write_authfile(path: Path, hosts: list[str], password: str = REGISTRY_PASSWORD) -> Path:
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth} for host in hosts}}))
    return path


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory, busybox_layout: Path) -> Iterator[Registry]:
    """A docker-registry behind htpasswd (bcrypt) holding the busybox base as base/busybox:1."""
    root = tmp_path_factory.mktemp("auth-registry")
    hashed = bcrypt.hashpw(REGISTRY_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (root / "htpasswd").write_text(f"{USER}:{hashed}\n")
    registry = start_registry(root, {"htpasswd": {"realm": "modelcar-test", "path": str(root / "htpasswd")}})
    try:
        authfile = write_authfile(root / "skopeo-auth.json", [registry.host])
        push_layout(busybox_layout, f"{registry.host}/base/busybox:1", authfile)
        yield registry
    finally:
        stop_registry(registry)


@pytest.fixture(scope="module")
def auth_reference(auth_registry: Registry, model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The digest of a fault-free build on the base in the htpasswd registry, straight to it."""
    tmp = tmp_path_factory.mktemp("auth-reference")
    workspace = new_workspace(tmp / "ws", model)
    authfile = write_authfile(tmp / "auth.json", [auth_registry.host])
    base = f"{auth_registry.host}/base/busybox:1"
    result = push(workspace, f"oci:{tmp / 'out'}:v1", base, "--authfile", str(authfile))
    assert result.returncode == 0, result.output
    return str(image_record(workspace)["digest"])


def _storage_path(registry: Registry, digest: str) -> Path:
    hexdigest = digest.split(":", 1)[1]
    return (
        registry.root
        / "storage"
        / "docker"
        / "registry"
        / "v2"
        / "blobs"
        / "sha256"
        / hexdigest[:2]
        / hexdigest
        / "data"
    )


@pytest.mark.parametrize("destination", ["layout", "registry"])
def test_blob_redirect_to_another_port_gets_no_credentials(
    auth_registry: Registry,
    auth_reference: str,
    oci_registry: Registry,
    model: Path,
    tmp_path: Path,
    destination: str,
) -> None:
    storage = BlobStorageServer(lambda digest: _storage_path(auth_registry, digest))

    def decide(request: ProxyRequest) -> Action | None:
        if request.kind == "GET blob":
            digest = request.path.rsplit("/", 1)[1]
            return RedirectOnSuccess(f"http://{storage.host}/blobs/{digest}?X-Amz-Signature=signed")
        return None

    with storage, HttpFaultProxy(auth_registry.host, decide) as proxy:
        workspace = new_workspace(tmp_path / "ws", model)
        authfile = write_authfile(tmp_path / "auth.json", [proxy.host])
        image = f"oci:{tmp_path / 'out'}:v1" if destination == "layout" else f"{oci_registry.host}/faults/redirected:1"
        result = push(workspace, image, f"{proxy.host}/base/busybox:1", "--authfile", str(authfile), MODELCAR_DEBUG="1")
        assert result.returncode == 0, result.output

    redirected = proxy.injected("GET blob")
    assert len(redirected) >= 2  # the base's config and its layer
    assert all(r.status == 307 and r.headers.get("authorization") == _basic(REGISTRY_PASSWORD) for r in redirected)
    assert len(storage.seen) >= len(redirected)
    assert {r.path.split("?")[0] for r in storage.seen} == {r.path.replace("/v2/base/busybox", "") for r in redirected}
    for seen in storage.seen:
        assert "authorization" not in seen.headers, seen
        assert REGISTRY_PASSWORD not in json.dumps(seen.headers)

    record = image_record(workspace)
    assert record["digest"] == auth_reference
    for text in (
        result.output,
        (workspace / "run.json").read_text(),
        (workspace / "results" / "IMAGE_URL").read_text(),
    ):
        assert REGISTRY_PASSWORD not in text and _basic(REGISTRY_PASSWORD).split()[1] not in text
    if destination == "layout":
        unpack_layout_and_compare(tmp_path / "out", "v1", model, tmp_path, "redirected")
    else:
        pull_and_compare(f"docker://{oci_registry.host}/faults/redirected@{record['digest']}", model, tmp_path, "r")


def test_a_wrong_password_is_refused_and_never_shown(auth_registry: Registry, model: Path, tmp_path: Path) -> None:
    wrong = REGISTRY_PASSWORD + "-wrong"  # holds the planted secret: any echo of it is caught
    workspace = new_workspace(tmp_path / "ws", model)
    authfile = write_authfile(tmp_path / "auth.json", [auth_registry.host], wrong)
    result = push(
        workspace,
        f"{auth_registry.host}/faults/denied:1",
        f"{auth_registry.host}/base/busybox:1",
        "--authfile",
        str(authfile),
        MODELCAR_DEBUG="1",
    )
    assert result.returncode == 1
    assert "denied access (HTTP 401)" in result.stderr
    assert not leaks(result.output) and _basic(wrong).split()[1] not in result.output


def test_credentials_from_a_credential_helper(
    auth_registry: Registry, model: Path, auth_reference: str, tmp_path: Path
) -> None:
    # A docker config that keeps the secret in a credential helper (credHelpers), as `docker login`
    # with a keychain does: modelcar runs the helper, pushes, and never shows the secret.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    helper = bin_dir / "docker-credential-testkeychain"
    helper.write_text(
        "#!/bin/sh\n"
        f'read -r server; echo "$1 $server" >> "{asked}"\n'
        f'printf \'{{"ServerURL": "%s", "Username": "{USER}", "Secret": "{REGISTRY_PASSWORD}"}}\' "$server"\n'
    )
    helper.chmod(0o755)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {}, "credHelpers": {auth_registry.host: "testkeychain"}}))
    workspace = new_workspace(tmp_path / "ws", model)
    result = push(
        workspace,
        f"{auth_registry.host}/faults/helper:1",
        f"{auth_registry.host}/base/busybox:1",
        "--authfile",
        str(config),
        PATH=f"{bin_dir}:/usr/bin:/bin",
    )
    assert result.returncode == 0, result.output
    assert not leaks(result.output) and not leaks((workspace / "run.json").read_text())
    assert image_record(workspace)["digest"] == auth_reference
    assert asked.read_text().split() == ["get", auth_registry.host]  # asked once: the answer is kept
