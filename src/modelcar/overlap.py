"""download-model and build-and-push side by side in one process (`modelcar run`, no compression).

The download runs in a thread and lists each file in the workspace's download record once it is
complete; build-and-push follows that record (readyfiles.FollowDownload), pushing each file's
layer while the next files download, and writes the manifest and tag once the download is done
and every layer is in place. Each stage keeps its own entry in run.json. A download that fails
ends build-and-push too (and the download's error is the one reported); a push that fails stops
the download at its next file.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import download_record
from .params import Params
from .stages import BUILD_PUSH, COMPRESS, DOWNLOAD
from .stages.context import StageContext

JOIN_AFTER_FAILURE_S = 10.0  # how long a failed push waits for the download to stop at a file's end


def applies(params: Params, running: set[str]) -> bool:
    """Both stages run, compression does not (it needs every file first), nor does signing
    (model.sig lists every file's digest before the first layer goes)."""
    return (
        params.overlap
        and {DOWNLOAD, BUILD_PUSH} <= running
        and COMPRESS not in running
        and not getattr(params, "signing", False)
    )


def run_side_by_side(context: StageContext, run_stage: Callable[[str, StageContext], None]) -> None:
    download_record.mark_pending(download_record.record_path(context.workspace.root))
    cancel = threading.Event()
    downloading = dataclasses.replace(context, cancel=cancel)
    pushing = dataclasses.replace(
        context, params=dataclasses.replace(context.params, follow_download=True), cancel=cancel
    )
    failure: list[BaseException] = []

    def download() -> None:
        try:
            run_stage(DOWNLOAD, downloading)
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    thread = threading.Thread(target=download, name="modelcar-download-stage", daemon=True)
    thread.start()
    if not _files_listed(download_record.record_path(context.workspace.root), thread):
        thread.join()  # it failed before it knew its files (a bad repo, no file matching): nothing to push
        if failure:
            raise failure[0]
        return
    try:
        run_stage(BUILD_PUSH, pushing)
    except KeyboardInterrupt:
        cancel.set()
        raise
    except BaseException:
        cancel.set()
        thread.join(JOIN_AFTER_FAILURE_S)
        if failure:
            raise failure[0] from None  # the download's own error says what went wrong first
        raise
    thread.join()
    if failure:
        raise failure[0]


def _files_listed(path: Path, download: threading.Thread) -> bool:
    """Waits until the download has listed the files it will hold (or finished); False when it
    failed first."""
    while True:
        data = download_record.read(path)
        if data is not None:
            state = data.get("state")
            if state == download_record.DONE or (state == download_record.RUNNING and data.get("expected") is not None):
                return True
            if state == download_record.FAILED:
                return False
        if not download.is_alive():
            data = download_record.read(path)
            return data is not None and data.get("state") == download_record.DONE
        time.sleep(0.02)
