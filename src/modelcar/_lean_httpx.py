"""Keeps httpx from importing its command-line client, which modelcar never runs.

httpx's `__init__` imports `httpx._main` (and with it click, rich and pygments) whenever they are
installed: about 50 ms of every command's start-up, a tenth of a short push. A placeholder
module stands in for it until httpx is imported; its `main()` loads the real one, so
`httpx.main` still works for anyone who calls it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def _real_main(*args: Any, **kwargs: Any) -> Any:
    sys.modules.pop("httpx._main", None)
    return importlib.import_module("httpx._main").main(*args, **kwargs)


def install() -> None:
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    placeholder = types.ModuleType("httpx._main", "stands in for httpx's CLI until httpx.main() is called")
    placeholder.main = _real_main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = placeholder
