"""Runs Red Hat's model signing tool (PyPI rh-model-signing, in .tools/sign-venv) on a ModelCar.

Its registry client speaks https only; the test registry is plain http on loopback, so the
driver below starts its CLI with that client set to plain http (nothing else is changed).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .common import REPO_ROOT

SIGN_PYTHON = REPO_ROOT / ".tools" / "sign-venv" / "bin" / "python"

_DRIVER = """
import sys
from model_signing._oci import registry
_init = registry.OrasClient.__init__
def _plain_http(self, *, insecure=True, tls_verify=False):
    _init(self, insecure=True, tls_verify=False)
registry.OrasClient.__init__ = _plain_http
from model_signing._cli import main
sys.argv[0] = "model_signing"
sys.exit(main())
"""


def available() -> bool:
    return SIGN_PYTHON.exists()


def require() -> None:
    """Fails (never skips) the test when the tool is missing: `make install-test` installs it."""
    if not available():
        pytest.fail(f"{SIGN_PYTHON} is missing: `make install-test` installs rh-model-signing 1.0.5 there")


def version() -> str:
    out = subprocess.run(
        [str(SIGN_PYTHON), "-c", "import importlib.metadata as m; print(m.version('rh-model-signing'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SIGN_PYTHON), "-c", _DRIVER, *args], capture_output=True, text=True, timeout=timeout)


def write_key_pair(
    directory: Path, curve: ec.EllipticCurve | None = None, password: str | None = None
) -> tuple[Path, Path]:
    """An EC key pair (P-256 unless told) as PEM files: (private, public); the private one
    encrypted with `password` when given."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private = directory / "sign-key.pem"
    public = directory / "sign-key.pub"
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
