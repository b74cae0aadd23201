"""Planted secrets, and a check over the whole test run that none of them ever leaked.

Tests that need a token or password use these values. Every `modelcar` invocation through
tests.helpers.common.run_cli is captured; at the end of the session the captured output and
every run record and result file under the session's temp dir are scanned for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HUB_TOKEN = "hf_PLANTEDsecretTOKEN0123456789"
REGISTRY_PASSWORD = "PLANTED-registry-passw0rd"
REGISTRY_TOKEN = "PLANTED-registry-bearer-token"
MODEL_REGISTRY_TOKEN = "PLANTED-model-registry-token"
SIGN_KEY_PASSWORD = "PLANTED-sign-key-passw0rd"
PLANTED = (HUB_TOKEN, REGISTRY_PASSWORD, REGISTRY_TOKEN, MODEL_REGISTRY_TOKEN, SIGN_KEY_PASSWORD)

# Files modelcar writes; the tests' own auth files and server configs hold secrets on purpose.
SCANNED_NAMES = (
    "run.json",
    "IMAGE_DIGEST",
    "IMAGE_URL",
    "MODEL_URI",
    "REGISTERED_MODEL_ID",
    "MODEL_VERSION_ID",
    "SIGNATURE_REF",
    "SIGNATURE_DIGEST",
    "MODEL_SIG_DIGEST",
    "model.sig",
)

captured_output: list[str] = []


def leaks(text: str) -> list[str]:
    return [secret for secret in PLANTED if secret in text]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = [f"CLI output #{i}: {leaks(text)}" for i, text in enumerate(captured_output) if leaks(text)]
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        base = Path(factory.getbasetemp())
        for path in base.rglob("*"):
            if path.name in SCANNED_NAMES and path.is_file() and leaks(path.read_text(errors="replace")):
                found.append(f"{path}: {leaks(path.read_text(errors='replace'))}")
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("PLANTED SECRET LEAKED:\n  " + "\n  ".join(found), red=True)
