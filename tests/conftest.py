"""Shared pytest set-up. Fixture modules live in tests/helpers/ and are registered here."""

pytest_plugins = [
    "tests.helpers.common",
    "tests.helpers.hub",
]
