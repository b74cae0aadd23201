"""Files' sha256 from the run record, when they are certainly those of the files on disk now.

download-model and compress-model record every file's sha256 (run.json `files`). build-and-push
annotates each layer with its file's sha256 (olot's `olot.layer.content.digest`); taking the
recorded one saves hashing every byte a second time. A recorded digest is taken only when the
file has the recorded size and has not been changed (ctime, which any write or rename moves)
since the stage that recorded it finished; otherwise the file is hashed while it is sent.

The stage's end is its `time_ns`, less a margin for the kernel's coarse file-time clock (a file
written just after could get a time a few milliseconds earlier); a record without `time_ns`
counts from the start of its `time`'s second. Either way a file changed after the stage is
hashed again, at worst also one written in its last moments.
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import Any

RECORDING_STAGES = ("download-model", "compress-model")
COARSE_CLOCK_MARGIN_NS = 50_000_000  # file times come from a clock a tick (<= 10 ms) behind


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
        if info.st_size == size and info.st_ctime_ns < finished and info.st_mtime_ns < finished:
            out[rel] = "sha256:" + digest
    return out


def _last_recording(stages: Any) -> int | None:
    """When the last stage that wrote `files` finished (ns since the epoch), or None."""
    if not isinstance(stages, dict):
        return None
    times: list[int] = []
    for name in RECORDING_STAGES:
        entry = stages.get(name)
        if not isinstance(entry, dict) or entry.get("status") != "succeeded":
            continue
        if isinstance(entry.get("time_ns"), int):
            times.append(entry["time_ns"] - COARSE_CLOCK_MARGIN_NS)
        elif entry.get("time"):
            try:
                parsed = time.strptime(str(entry["time"]), "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                return None
            times.append(calendar.timegm(parsed) * 1_000_000_000)
    return max(times) if times else None
