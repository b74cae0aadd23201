"""The optional `compress` extra: torch, llmcompressor and datasets, imported only when used."""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import UsageError

PACKAGES = ("torch", "transformers", "llmcompressor", "compressed_tensors", "datasets")
INSTALL_HINT = "pip install 'modelcar[compress]' (or make install-test in a checkout)"


class MissingExtra(UsageError):
    """A package the compress-model stage needs is not installed."""


def missing_packages() -> list[str]:
    """The extra's packages that are not installed; cheap, imports nothing."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def check_installed() -> None:
    """Raises MissingExtra naming what is missing (for checks before any stage starts)."""
    missing = missing_packages()
    if missing:
        raise MissingExtra(
            f"compress-model needs the optional packages {', '.join(missing)}, which are not installed: {INSTALL_HINT}"
        )


def import_extra() -> None:
    """Imports the extra's packages, turning a missing or broken one into MissingExtra."""
    check_installed()
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtra(f"compress-model cannot import {name} ({exc}); reinstall with {INSTALL_HINT}") from None
