"""Free-space checks before work that writes a lot."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import ModelcarError

# Room left over for the run record, temp files and the file system's own needs.
MARGIN_BYTES = 64 * 1024 * 1024


class NotEnoughSpace(ModelcarError):
    """The file system lacks room for what is about to be written."""


def require_free_space(directory: Path, needed: int, what: str) -> None:
    if needed <= 0:
        return
    free = shutil.disk_usage(directory).free
    if free < needed + MARGIN_BYTES:
        raise NotEnoughSpace(
            f"not enough disk space for {what}: needs {_human(needed)} (+{_human(MARGIN_BYTES)} margin), "
            f"{_human(free)} free in {directory}; free some space or use a larger volume"
        )


def _human(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
