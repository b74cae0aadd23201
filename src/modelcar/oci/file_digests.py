"""Files' sha256 from the run record, when they are certainly those of the files on disk now.

download-model and compress-model record every file's sha256 (run.json `files`). build-and-push
annotates each layer with its file's sha256 (olot's `olot.layer.content.digest`); taking the
recorded one saves hashing every byte a second time. A recorded digest is taken only when the
file has the recorded size and has not been changed (ctime, which any write or rename moves)
since the stage that recorded it finished; otherwise the file is hashed while it is sent.
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import Any

RECORDING_STAGES = ("download-model", "compress-model")
CLOCK_SLACK_NS = 1_000_000_000  # stage times are recorded to the second, rounded down


def recorded_digests(record: dict[str, Any], model_dir: Path) -> dict[str, str]:
    """path -> sha256:... for the recorded files that are unchanged since they were recorded."""
    finished = _last_recording(record.get("stages"))
    files = record.get("files")
    if finished is None or not isinstance(files, list):
        return {}
    out: dict[str, str] = {}
    for item in files:
        try:
            rel, size, digest = str(item["path"]), int(item["size"]), str(item["sha256"])
        except (KeyError, TypeError, ValueError):
            continue
        if len(digest) != 64 or ".." in rel.split("/"):
            continue
        try:
            info = (model_dir / rel).lstat()
        except OSError:
            continue
        if info.st_size == size and info.st_ctime_ns <= finished and info.st_mtime_ns <= finished:
            out[rel] = "sha256:" + digest
    return out


def _last_recording(stages: Any) -> int | None:
    """When the last stage that wrote `files` finished (ns since the epoch), or None."""
    if not isinstance(stages, dict):
        return None
    times: list[int] = []
    for name in RECORDING_STAGES:
        entry = stages.get(name)
        if isinstance(entry, dict) and entry.get("status") == "succeeded" and entry.get("time"):
            try:
                parsed = time.strptime(str(entry["time"]), "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                return None
            times.append(calendar.timegm(parsed) * 1_000_000_000 + CLOCK_SLACK_NS)
    return max(times) if times else None
