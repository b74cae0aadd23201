"""build-and-push beside a download still running: the ready-files source it follows.

With FOLLOW_DOWNLOAD (Tekton: the task started beside download-model) or inside `modelcar run`,
build-and-push takes the model's files from the download record as they become complete. With
DELETE_AFTER_PUSH each file is removed once its layer is in the destination, and the workspace is
marked, so that a later build-and-push of the now incomplete model/ is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import download_record
from ..errors import ModelcarError
from ..readyfiles import FollowDownload, wait_finished
from . import COMPRESS, DOWNLOAD
from .context import StageContext

DELETED_MARK = ".modelcar-files-deleted"


class FilesDeleted(ModelcarError):
    """The model's files were deleted after an earlier push (DELETE_AFTER_PUSH)."""


def start(context: StageContext) -> FollowDownload | None:
    """The download to follow (its list of files known), or None to take model/ as it is."""
    root = context.workspace.root
    if not context.params.follow_download:
        if (root / DELETED_MARK).exists():
            raise FilesDeleted(
                f"the files of {context.workspace.model_dir} were deleted as they were pushed (DELETE_AFTER_PUSH); "
                "run download-model again before build-and-push"
            )
        return None
    params = context.params
    if DOWNLOAD in params.skip:
        return None  # no download to follow: model/ is there already
    compressing = params.compress and COMPRESS not in params.skip
    if compressing or getattr(params, "signing", False):
        # Compression (and model.sig) need every file first: the finished model, in order.
        context.ui.info("build-and-push: waiting for download-model" + (" and compress-model" if compressing else ""))
        FollowDownload(root).wait_done(threading.Event())
        if compressing:
            wait_finished(root / download_record.COMPRESS_RECORD_NAME, COMPRESS)
        context.record.refresh()  # the source and files the other tasks recorded meanwhile
        return None
    delete = params.delete_after_push
    if delete:
        mark_deleted(root)
    following = FollowDownload(root, delete_pushed=delete)
    following.entries()  # waits (bounded) for the download to list its files
    return following


def total_bytes(following: FollowDownload) -> int:
    return sum(entry.size for entry in following.entries() if entry.kind == "file")


def mark_deleted(root: Path) -> None:
    (root / DELETED_MARK).write_text("download-model deletes this mark; build-and-push needs a new download\n")


def clear_deleted(root: Path) -> None:
    (root / DELETED_MARK).unlink(missing_ok=True)


def download_meter(root: Path, report: Callable[[int], None], every_s: float = 0.5) -> Callable[[dict[str, Any]], None]:
    """For FollowDownload.on_record: reports the bytes downloaded so far (files complete, and the
    parts of those still arriving in the Hub client's temporary files), at most every `every_s`."""
    last = 0.0

    def meter(record: dict[str, Any]) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < every_s and record.get("state") != download_record.DONE:
            return
        last = now
        done = sum(int(item.get("size") or 0) for item in record.get("complete") or [])
        arriving = 0
        for part in (root / "model.partial" / ".cache" / "huggingface" / "download").rglob("*.incomplete"):
            try:
                arriving += part.stat().st_size
            except OSError:
                continue
        report(done + arriving)

    return meter
