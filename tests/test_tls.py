import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from modelcar.errors import UsageError
from modelcar.tls import ssl_context

from .helpers.pki import TestCA, make_test_ca


@pytest.fixture(autouse=True)
def fresh_contexts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test builds its own contexts, from an environment without the developer's TLS settings."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ssl_context.cache_clear()
    yield
    ssl_context.cache_clear()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


def handshake(context: ssl.SSLContext, ca: TestCA) -> None:
    """A TLS handshake with a server on 127.0.0.1 that presents the test CA's server certificate."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(ca.server_cert), str(ca.server_key))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"x")
    finally:
        thread.join(10)
        listener.close()


def system_paths(monkeypatch: pytest.MonkeyPatch, cafile: Path | None, capath: Path) -> None:
    """Makes OpenSSL's compiled-in defaults these (a system without Debian's hashed directory...)."""
    real = ssl.get_default_verify_paths()
    fake = ssl.DefaultVerifyPaths(
        str(cafile) if cafile else None,
        str(capath),
        real.openssl_cafile_env,
        str(cafile) if cafile else str(capath / "none.pem"),
        real.openssl_capath_env,
        str(capath),
    )
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: fake)


def test_no_verification_means_no_context() -> None:
    assert ssl_context(False, None) is False


def test_built_once_per_setting() -> None:
    context = ssl_context(True, None)
    assert isinstance(context, ssl.SSLContext) and context is ssl_context(True, None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_without_a_system_store_certifi_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_paths(monkeypatch, None, tmp_path)
    certifi_only = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert ssl_context(True, None).cert_store_stats()["x509_ca"] == certifi_only > 0


def test_a_system_bundle_is_loaded_and_spares_certifi(
    ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_paths(monkeypatch, ca.ca, tmp_path)  # as on UBI: a bundle, no hashed directory
    context = ssl_context(True, None)
    assert context.cert_store_stats()["x509_ca"] == 1
    handshake(context, ca)


def test_a_hashed_directory_is_read_lazily(ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = tmp_path / "certs"
    hashed.mkdir()
    (hashed / "test-ca.pem").write_bytes(ca.ca.read_bytes())
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    system_paths(monkeypatch, None, tmp_path / "no-system-store")  # no system bundle to parse
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed))
    context = ssl_context(True, None)
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
    handshake(context, ca)


def test_a_ca_only_in_the_system_bundle_is_trusted_beside_a_hashed_directory(
    ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster's CA mounted over the system bundle, while the hashed directory lacks it."""
    other = make_test_ca(tmp_path / "other")
    hashed = tmp_path / "certs"
    hashed.mkdir()
    (hashed / "other-ca.pem").write_bytes(other.ca.read_bytes())
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    system_paths(monkeypatch, ca.ca, hashed)
    handshake(ssl_context(True, None), ca)


def test_ssl_cert_file_is_honoured(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> None:
    context = ssl_context(True, None)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, ca)
    ssl_context.cache_clear()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca))
    handshake(ssl_context(True, None), ca)


def test_ssl_cert_file_of_a_private_ca_alone_keeps_the_public_cas(
    ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_paths(monkeypatch, tmp_path / "missing.pem", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca))
    certifi_only = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert ssl_context(True, None).cert_store_stats()["x509_ca"] == certifi_only + 1


def test_a_bad_ssl_cert_file_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    with pytest.raises(UsageError, match=r"cannot load SSL_CERT_FILE .*none\.pem"):
        ssl_context(True, None)


def test_a_ca_bundle_that_is_not_pem_is_bad_input(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(UsageError, match=r"cannot load the CA bundle .*ca\.pem.*give a PEM file"):
        ssl_context(True, bundle)


def test_a_pem_bundle_adds_its_certificates(ca: TestCA) -> None:
    context = ssl_context(True, ca.ca)
    assert context.cert_store_stats()["x509_ca"] >= 1
    handshake(context, ca)


def test_the_environment_has_no_say_without_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)
    assert ssl_context(False, None) is False


def test_variables_naming_the_system_store_are_the_system_store(
    ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As some images set them: SSL_CERT_FILE and SSL_CERT_DIR naming the system's own bundle and
    # hashed directory. They are the system store: its bundle (loaded, as always, since a CA may
    # be in it alone) and its directory, and certifi is not added.
    hashed = tmp_path / "certs"
    hashed.mkdir()
    (hashed / "bundle.pem").write_bytes(ca.ca.read_bytes())
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    system_paths(monkeypatch, hashed / "bundle.pem", hashed)
    monkeypatch.setenv("SSL_CERT_FILE", str(hashed / "bundle.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed))
    context = ssl_context(True, None)
    assert context.cert_store_stats()["x509_ca"] == 1
    handshake(context, ca)
