"""A test CA on disk, made with `cryptography`: server certificates for 127.0.0.1 and a token
signing certificate, as a registry behind TLS with `auth: token` needs them.

- `ca.pem`: the root (trusted through --ca-bundle / CA_BUNDLE / SSL_CERT_FILE);
- `server.pem` + `server-key.pem`: a leaf for IP 127.0.0.1 and DNS localhost, signed by the root;
- `token.pem` + `token-key.pem`: a P-256 leaf that signs the token server's JWTs; its chain goes
  in each JWT's `x5c`, and the registry's `rootcertbundle` is `ca.pem`;
- `certs.d/`: a directory with `ca.crt`, for skopeo's `--cert-dir`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestCA:
    """The files of one test CA."""

    __test__ = False  # a helper, not a pytest test class

    root: Path
    ca: Path
    server_cert: Path
    server_key: Path
    token_cert: Path
    token_key: Path
    cert_dir: Path

    def token_signer(self) -> tuple[ec.EllipticCurvePrivateKey, list[bytes]]:
        """The token signing key and its x5c chain (DER, leaf first)."""
        key = serialization.load_pem_private_key(self.token_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = x509.load_pem_x509_certificate(self.token_cert.read_bytes())
        return key, [cert.public_bytes(serialization.Encoding.DER)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_test_ca(root: Path) -> TestCA:
    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("modelcar test CA"))
        .issuer_name(_name("modelcar test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, cert sign, CRL sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, key: ec.EllipticCurvePrivateKey, server: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )  # digital signature
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    server_key = ec.generate_private_key(ec.SECP256R1())
    token_key = ec.generate_private_key(ec.SECP256R1())
    ca = TestCA(
        root=root,
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server-key.pem",
        token_cert=root / "token.pem",
        token_key=root / "token-key.pem",
        cert_dir=root / "certs.d",
    )
    _write_cert(ca.ca, ca_cert)
    _write_cert(ca.server_cert, leaf("127.0.0.1", server_key, server=True))
    _write_key(ca.server_key, server_key)
    _write_cert(ca.token_cert, leaf("modelcar test token issuer", token_key, server=False))
    _write_key(ca.token_key, token_key)
    ca.cert_dir.mkdir(exist_ok=True)
    (ca.cert_dir / "ca.crt").write_bytes(ca.ca.read_bytes())
    return ca
