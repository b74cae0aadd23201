"""Shared pytest set-up. Fixture modules live in tests/helpers/ and are registered here."""

pytest_plugins = [
    "tests.helpers.secrets",
    "tests.helpers.common",
    "tests.helpers.oci_registry",
    "tests.helpers.hub",
    "tests.helpers.model_registry_server",
    "tests.helpers.tiny_llama",
]
