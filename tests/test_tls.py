import ssl
from pathlib import Path

import certifi
import pytest

from modelcar.errors import UsageError
from modelcar.tls import ssl_context


def test_no_verification_means_no_context() -> None:
    assert ssl_context(False, None) is False


def test_trust_is_certifi_plus_the_system_and_built_once() -> None:
    context = ssl_context(True, None)
    assert context is ssl_context(True, None)
    certifi_only = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    system_only = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert context.cert_store_stats()["x509_ca"] >= max(certifi_only, system_only) > 0


def test_a_ca_bundle_that_is_not_pem_is_bad_input(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(UsageError, match=r"cannot load the CA bundle .*ca\.pem.*give a PEM file"):
        ssl_context(True, bundle)


def test_a_pem_bundle_adds_its_certificates(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())
    assert ssl_context(True, bundle).cert_store_stats()["x509_ca"] > 0
