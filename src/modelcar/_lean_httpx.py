"""Keeps httpx from importing its command-line client, which modelcar never runs.

httpx's `__init__` imports `httpx._main` (and with it click, rich and pygments) whenever they are
installed: about 50 ms of every command's start-up, a tenth of a short push. `install()`, called
by the command line (cli.py) before httpx is imported, puts a placeholder module in sys.modules
under that name; its `main` loads the real module at first use (a call or an attribute, such as
a click runner reading `main.name`) and then is the real one. Importing modelcar as a library
leaves sys.modules alone.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import Any

NAME = "httpx._main"


class _LazyMain:
    def _real(self) -> Any:
        module = sys.modules.get(NAME)
        if module is not None and getattr(module, "main", None) is self:
            del sys.modules[NAME]
        real = importlib.import_module(NAME).main
        httpx = sys.modules.get("httpx")
        if httpx is not None and getattr(httpx, "main", None) is self:
            httpx.main = real  # type: ignore[attr-defined]
        return real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


def install() -> None:
    if "httpx" in sys.modules or NAME in sys.modules:
        return
    placeholder = types.ModuleType(NAME, "stands in for httpx's CLI until httpx.main is used")
    placeholder.__spec__ = importlib.machinery.ModuleSpec(NAME, None)
    placeholder.main = _LazyMain()  # type: ignore[attr-defined]
    sys.modules[NAME] = placeholder
