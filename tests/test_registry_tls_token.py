"""`modelcar build-push` to a docker-registry serving TLS (a test CA) with `auth: token`, as Quay,
Harbor and OpenShift's registry work: a token server issues ES256 JWTs per repository, which the
registry verifies against the CA (`rootcertbundle`).

The accounts: `pusher` may push to tls/* and pull from base/* (where the busybox base is),
`reader` may only pull, and anonymous users may pull from base/*. Trust in the CA comes from
--ca-bundle, CA_BUNDLE or SSL_CERT_FILE; skopeo reads the pushed images back with --src-cert-dir.

Covered: push and a repeated push (HEAD finds every blob), the base's layers mounted across
repositories, resume after cut connections, a token that expires in the middle of a layer's
upload, wrong credentials (the message names the auth file), a scope without push, the anonymous
token flow, and (issue 11, part 6) a TLS registry whose challenge names a plain-http token realm:
refused, and the token server never sees a request, let alone an Authorization header. The
client's own refusal of such a realm, against an in-memory registry, is in test_oci_client.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers.common import CliResult, run_cli
from .helpers.fake_model import LLAMA_CONFIG, write_model_dir
from .helpers.fake_registry import write_authfile
from .helpers.fault_proxy import TcpFaultProxy
from .helpers.image_check import MIB, NEEDS_SKOPEO_UMOCI, fault_env, image_record, new_workspace, unpack
from .helpers.oci_registry import REGISTRY_BIN, Registry, RegistryTls, start_registry, stop_registry
from .helpers.pki import TestCA, make_test_ca
from .helpers.secrets import REGISTRY_PASSWORD, leaks
from .helpers.token_server import TokenServer

pytestmark = NEEDS_SKOPEO_UMOCI
READER_PASSWORD = REGISTRY_PASSWORD + "-reader"
SEEDER_PASSWORD = REGISTRY_PASSWORD + "-seeder"
USERS = {"pusher": REGISTRY_PASSWORD, "reader": READER_PASSWORD, "seeder": SEEDER_PASSWORD}
GRANTS: dict[str | None, dict[str, str]] = {
    "pusher": {"tls/*": "pull,push", "base/*": "pull"},
    "reader": {"tls/*": "pull", "base/*": "pull"},
    "seeder": {"*": "pull,push"},
    None: {"base/*": "pull"},
}
BASE = "base/busybox:1"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tokens(ca: TestCA) -> Iterator[TokenServer]:
    with TokenServer(ca, users=USERS, grants=GRANTS) as server:
        yield server


def tls_registry(root: Path, ca: TestCA, tokens: TokenServer, tls: bool = True) -> Registry:
    if not Path(REGISTRY_BIN).exists():
        pytest.skip("docker-registry is not installed (make install-test)")
    return start_registry(
        root, tokens.registry_auth(), RegistryTls(ca.server_cert, ca.server_key, ca.ca) if tls else None
    )


@pytest.fixture(scope="module")
def registry(
    ca: TestCA, tokens: TokenServer, busybox_layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """The TLS + token registry, holding the busybox base as base/busybox:1 (pushed by skopeo)."""
    root = tmp_path_factory.mktemp("tls-registry")
    registry = tls_registry(root, ca, tokens)
    seeder = write_authfile(root / "seeder.json", registry.host, "seeder", SEEDER_PASSWORD)
    skopeo(
        "copy",
        "--dest-cert-dir",
        str(ca.cert_dir),
        "--dest-authfile",
        str(seeder),
        f"oci:{busybox_layout}:latest",
        f"docker://{registry.host}/{BASE}",
    )
    yield registry
    stop_registry(registry)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of a layer each (6 and 5 MiB), small files, a card."""
    files = {
        "model-00001-of-00002.safetensors": _pattern(6 * MIB, 1),
        "model-00002-of-00002.safetensors": _pattern(5 * MIB + 7, 2),
        "config.json": LLAMA_CONFIG,
        "README.md": "# tls test model\n",
    }
    return write_model_dir(tmp_path_factory.mktemp("tls-model") / "model", files)


def _pattern(size: int, seed: int) -> bytes:
    block = bytes((i * 131 + seed * 17) % 251 for i in range(65536))
    return (block * (size // len(block) + 1))[:size]


def skopeo(*args: str) -> None:
    import subprocess

    subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=120)


def push(
    workspace: Path, image: str, base: str, *extra: str, env: dict[str, str] | None = None, verify: bool = True
) -> CliResult:
    args = ["build-push", "--workspace", str(workspace), "--image", image, "--base-image", base]
    args += ["--results-dir", str(workspace / "results"), *extra]
    if not verify:
        args.append("--no-tls-verify")
    environment = fault_env(**(env or {}))
    environment.pop("SSL_CERT_FILE", None) if "SSL_CERT_FILE" not in (env or {}) else None
    return run_cli(*args, env=environment, timeout=120)


def read_back(registry: Registry, ca: TestCA, ref: str, model: Path, tmp_path: Path, authfile: Path) -> None:
    """skopeo (trusting the CA through --src-cert-dir) copies the image out; /models is the model."""
    trust = ["--src-tls-verify=true", "--src-cert-dir", str(ca.cert_dir)] if registry.scheme == "https" else []
    rootfs = unpack(tmp_path, f"docker://{ref}", "read-back", *trust, "--src-authfile", str(authfile))
    for path in model.iterdir():
        assert (rootfs / "models" / path.name).read_bytes() == path.read_bytes(), path.name
    assert (rootfs / "bin" / "busybox").is_file()


def uploads(registry: Registry, repository: str) -> list[tuple[str, str, int]]:
    return [r for r in registry.responses() if r[0] in ("POST", "PATCH") and f"/v2/{repository}/" in r[1]]


# ---- push, repeat push, mounts, trust ------------------------------------------------------


def test_push_with_a_ca_bundle_mounts_the_base_then_a_repeat_push_sends_nothing(
    registry: Registry, ca: TestCA, tokens: TokenServer, model: Path, tmp_path: Path
) -> None:
    authfile = write_authfile(tmp_path / "auth.json", registry.host, "pusher", REGISTRY_PASSWORD)
    workspace = new_workspace(tmp_path / "ws", model)
    image = f"{registry.host}/tls/model:1"
    base = f"{registry.host}/{BASE}"
    first = push(workspace, image, base, "--ca-bundle", str(ca.ca), "--authfile", str(authfile))
    assert first.returncode == 0, first.output
    digest = str(image_record(workspace)["digest"])

    # The base's layer came by a cross-repository mount (201), not by upload.
    mounts = [r for r in uploads(registry, "tls/model") if "mount=" in r[1] and "from=base%2Fbusybox" in r[1]]
    assert mounts and all(status == 201 for _, _, status in mounts), uploads(registry, "tls/model")
    # Every token was scoped: push on the target, pull on the base, nothing else.
    for issued in [t for t in tokens.issued if t.user == "pusher"]:
        assert {a["name"] for a in issued.access} <= {"tls/model", "base/busybox"}
        assert set(issued.actions("base/busybox")) <= {"pull"}
    assert any(t.actions("tls/model") == ["pull", "push"] for t in tokens.issued if t.user == "pusher")
    read_back(registry, ca, f"{registry.host}/tls/model@{digest}", model, tmp_path, authfile)

    # Again, trusting the CA through CA_BUNDLE this time: HEAD finds every blob.
    before = len(registry.responses())
    again = push(workspace, image, base, "--authfile", str(authfile), env={"CA_BUNDLE": str(ca.ca)})
    assert again.returncode == 0, again.output
    new = registry.responses()[before:]
    assert not [r for r in new if r[0] in ("POST", "PATCH") and "/v2/tls/model/" in r[1]], new
    assert str(image_record(workspace)["digest"]) == digest
    assert not leaks(first.output + again.output)


def test_ssl_cert_file_is_trusted_and_no_trust_is_a_clear_error(
    registry: Registry, ca: TestCA, model: Path, tmp_path: Path
) -> None:
    authfile = write_authfile(tmp_path / "auth.json", registry.host, "pusher", REGISTRY_PASSWORD)
    image, base = f"{registry.host}/tls/sslcertfile:1", f"{registry.host}/{BASE}"
    untrusted = push(new_workspace(tmp_path / "ws0", model), image, base, "--authfile", str(authfile))
    assert untrusted.returncode == 1
    assert "certificate" in untrusted.stderr.lower() and registry.host in untrusted.stderr, untrusted.stderr

    workspace = new_workspace(tmp_path / "ws", model)
    result = push(workspace, image, base, "--authfile", str(authfile), env={"SSL_CERT_FILE": str(ca.ca)})
    assert result.returncode == 0, result.output
    digest = str(image_record(workspace)["digest"])
    read_back(registry, ca, f"{registry.host}/tls/sslcertfile@{digest}", model, tmp_path, authfile)


# ---- faults: cut connections, a token that expires mid-upload ------------------------------


def test_cut_connections_resume_over_tls(registry: Registry, ca: TestCA, model: Path, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    with TcpFaultProxy(registry.host, cut_after=2 * MIB, cuts=3) as proxy:
        write_authfile(authfile, proxy.host, "pusher", REGISTRY_PASSWORD)
        workspace = new_workspace(tmp_path / "ws", model)
        result = push(
            workspace,
            f"{proxy.host}/tls/cut:1",
            f"{proxy.host}/{BASE}",
            "--ca-bundle",
            str(ca.ca),
            "--authfile",
            str(authfile),
        )
        assert result.returncode == 0, result.output
        assert proxy.cut_count == 3
    digest = str(image_record(workspace)["digest"])
    write_authfile(authfile, registry.host, "pusher", REGISTRY_PASSWORD)
    read_back(registry, ca, f"{registry.host}/tls/cut@{digest}", model, tmp_path, authfile)
    # Distribution 2.8 cannot resume a PATCH cut short: its upload state names offset 0, so the
    # status GET is refused ("upload resumed at wrong offset") and the blob starts again.
    asked = [r for r in registry.responses() if r[0] == "GET" and "/v2/tls/cut/blobs/uploads/" in r[1]]
    assert asked, "the client never asked the registry how much of a cut upload it had"


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain-http"])
def test_a_token_that_expires_mid_upload_is_renewed(
    ca: TestCA, model: Path, busybox_layout: Path, tmp_path: Path, tls: bool
) -> None:
    # A registry of its own, with 2-second tokens: the first PATCH past 3 MiB is held in the
    # middle of its body until every token issued so far has expired, as Harbor's 30-minute
    # tokens do during a big layer. The PATCH (authorized when it began) goes through; the PUT
    # that completes the upload then meets a 401 and must come with a new token. Over plain
    # http the PATCH goes by the sendfile transport (oci/sendfile.py).
    with TokenServer(ca, users=USERS, grants=GRANTS, lifetime=2, tls=tls) as tokens:
        registry = tls_registry(tmp_path / "registry", ca, tokens, tls)
        try:

            def hold() -> None:
                deadline = max(t.expires_at for t in tokens.issued) + 0.2
                while time.time() < deadline:
                    time.sleep(0.05)

            with TcpFaultProxy(registry.host, hold_after=3 * MIB, hold=hold) as proxy:
                authfile = write_authfile(tmp_path / "auth.json", proxy.host, "pusher", REGISTRY_PASSWORD)
                workspace = new_workspace(tmp_path / "ws", model)
                trust = ["--ca-bundle", str(ca.ca)] if tls else []
                result = push(
                    workspace,
                    f"{proxy.host}/tls/expiring:1",
                    f"oci:{busybox_layout}",
                    *trust,
                    "--authfile",
                    str(authfile),
                    verify=tls,
                )
                assert result.returncode == 0, result.output
                assert proxy.held.is_set()
            digest = str(image_record(workspace)["digest"])
            refused = [r for r in registry.responses() if r[2] == 401 and "/blobs/uploads/" in r[1]]
            assert any(method == "PUT" and "digest=" in uri for method, uri, _ in refused), registry.responses()
            assert len([t for t in tokens.issued if t.user == "pusher"]) >= 2
            write_authfile(authfile, registry.host, "pusher", REGISTRY_PASSWORD)
            read_back(registry, ca, f"{registry.host}/tls/expiring@{digest}", model, tmp_path, authfile)
        finally:
            stop_registry(registry)


# ---- refusals ------------------------------------------------------------------------------


def test_wrong_credentials_name_the_auth_file(registry: Registry, ca: TestCA, model: Path, tmp_path: Path) -> None:
    wrong = REGISTRY_PASSWORD + "-wrong"  # holds the planted secret: any echo of it is caught
    authfile = write_authfile(tmp_path / "my-auth.json", registry.host, "pusher", wrong)
    result = push(
        new_workspace(tmp_path / "ws", model),
        f"{registry.host}/tls/denied:1",
        f"{registry.host}/{BASE}",
        env={"REGISTRY_AUTH_FILE": str(authfile), "CA_BUNDLE": str(ca.ca), "MODELCAR_DEBUG": "1"},
    )
    assert result.returncode == 1
    assert "denied access (HTTP 401)" in result.stderr and "token server refused the credentials" in result.stderr
    assert str(authfile) in result.stderr, result.stderr
    assert not leaks(result.output)


def test_a_scope_without_push_is_a_clear_error(registry: Registry, ca: TestCA, model: Path, tmp_path: Path) -> None:
    authfile = write_authfile(tmp_path / "auth.json", registry.host, "reader", READER_PASSWORD)
    result = push(
        new_workspace(tmp_path / "ws", model),
        f"{registry.host}/tls/readonly:1",
        f"{registry.host}/{BASE}",
        "--ca-bundle",
        str(ca.ca),
        "--authfile",
        str(authfile),
    )
    assert result.returncode == 1
    assert "push access to repository tls/readonly" in result.stderr, result.stderr
    assert "insufficient_scope" in result.stderr and str(authfile) in result.stderr
    assert not leaks(result.output)


def test_anonymous_token_flow_pulls_a_public_base_and_cannot_push(
    registry: Registry, ca: TestCA, tokens: TokenServer, model: Path, tmp_path: Path
) -> None:
    # No credentials anywhere: the registry still asks for a token, and the token server gives
    # anonymous users pull on base/*. A build to a layout reads the base that way.
    empty = tmp_path / "home"
    (empty / "docker").mkdir(parents=True)
    env = {"HOME": str(empty), "DOCKER_CONFIG": str(empty / "docker"), "CA_BUNDLE": str(ca.ca)}
    seen_before = len(tokens.seen)
    workspace = new_workspace(tmp_path / "ws", model)
    result = push(workspace, f"oci:{tmp_path / 'layout'}:1", f"{registry.host}/{BASE}", env=env)
    assert result.returncode == 0, result.output
    anonymous = tokens.seen[seen_before:]
    assert anonymous and not [s for s in anonymous if "authorization" in s.headers]
    assert any(t.user is None and t.actions("base/busybox") == ["pull"] for t in tokens.issued)

    denied = push(new_workspace(tmp_path / "ws2", model), f"{registry.host}/tls/anon:1", "scratch", env=env)
    assert denied.returncode == 1
    assert "push access to repository tls/anon" in denied.stderr and "no credentials" in denied.stderr, denied.stderr


# ---- part 6: a plain-http token realm behind a TLS registry --------------------------------


def test_a_plain_http_token_realm_is_refused_and_gets_no_credentials(
    ca: TestCA, model: Path, busybox_layout: Path, tmp_path: Path
) -> None:
    with TokenServer(ca, users=USERS, grants=GRANTS, tls=False) as plain:
        assert plain.realm.startswith("http://")
        registry = tls_registry(tmp_path / "registry", ca, plain)
        try:
            authfile = write_authfile(tmp_path / "auth.json", registry.host, "pusher", REGISTRY_PASSWORD)
            result = push(
                new_workspace(tmp_path / "ws", model),
                f"{registry.host}/tls/realm:1",
                f"oci:{busybox_layout}",
                "--ca-bundle",
                str(ca.ca),
                "--authfile",
                str(authfile),
            )
        finally:
            stop_registry(registry)
        assert result.returncode == 1
        assert f"token server {plain.realm}" in result.stderr and "not https" in result.stderr, result.stderr
        assert plain.authorizations() == [] and plain.seen == []
        assert not leaks(result.output)
