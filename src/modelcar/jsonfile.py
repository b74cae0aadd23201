"""Reading a file (or bytes) that must hold a JSON object, with the caller's error for when it does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_object(path: Path, error: Callable[[str], Exception], what: str = "") -> dict[str, Any]:
    """The JSON object in `path`; raises `error(message)` when it cannot be read or holds something else.

    `what` names the file in messages ("the run record" -> "cannot read the run record PATH: ...").
    """
    name = f"{what} {path}" if what else str(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {name}: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{name} is not a JSON object")
    return value


def parse_object(data: bytes, error: Callable[[str], Exception], what: str) -> dict[str, Any]:
    """The JSON object in `data` (`what` names it in messages); raises `error(message)` otherwise."""
    try:
        value = json.loads(data)
    except ValueError:
        raise error(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    return value
