"""The download-model stage: a Hub repo (or a local directory) -> <workspace>/model.

Files land in <workspace>/model.partial first (a download cut short resumes there) and
the directory is renamed to model/ only when complete, so a half download is never taken for a
finished one. Each file appears there under its name only once complete; it is then hashed and
listed in the workspace's download record (download_record.py), which build-and-push may follow
to push each file while the next ones download.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import atomic, download_record
from ..download_record import DownloadRecorder
from ..errors import ModelcarError
from ..files import inventory, sha256_file
from ..sources import hub
from ..sources.local import copy_files, model_files
from ..space import require_free_space
from . import follow
from .context import StageContext

PARTIAL_SUFFIX = ".partial"
SOURCE_STAMP = ".modelcar-source.json"
HASH_WORKERS = 1  # each file is hashed once complete, while the next one downloads


class NothingMatched(ModelcarError):
    """No file of the source matched the allow patterns."""


def run(context: StageContext) -> None:
    params = context.params
    model = params.require_model()
    patterns = params.allow_patterns
    target = context.workspace.model_dir
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    recorder = DownloadRecorder(download_record.record_path(context.workspace.root))
    recorder.start()
    follow.clear_deleted(context.workspace.root)  # files deleted after an earlier push come again
    (context.workspace.root / download_record.COMPRESS_RECORD_NAME).unlink(missing_ok=True)  # a new model
    try:
        source, files = _download(context, model, patterns, target, partial, recorder)
    except BaseException as exc:
        recorder.failed(str(exc) if isinstance(exc, ModelcarError | OSError) else f"{type(exc).__name__}: {exc}")
        raise
    recorder.done()
    source["allow_patterns"] = list(patterns)
    context.record.set("source", source)
    context.record.set("files", files)
    # A fresh download is uncompressed, whatever an earlier run on this workspace did.
    context.record.set("compression", {"enabled": False})
    size = sum(f["size"] for f in files)
    context.ui.info(f"download-model: {len(files)} files, {size / 1e6:.1f} MB in {target}")


def _download(
    context: StageContext,
    model: str,
    patterns: tuple[str, ...],
    target: Path,
    partial: Path,
    recorder: DownloadRecorder,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Downloads into model.partial, telling the recorder of each file complete; renames it to
    model/ at the end. Returns the source and the files (path, size, sha256)."""
    params = context.params
    if params.model_is_local:
        source_dir = Path(model)
        available = model_files(source_dir)
        names = hub.matching(available, patterns)
        _require_matches(names, model, patterns, list(available))
        source: dict[str, Any] = {"kind": "local", "path": model, "revision": None, "sha": None}
        recorder.expect({**source, "allow_patterns": list(patterns)}, None)  # a copy: followed once done
        _prepare_partial(partial, source)
        copy_files(source_dir, names, partial)
        (partial / SOURCE_STAMP).unlink(missing_ok=True)
        _replace_dir(partial, target)
        return source, inventory(target)

    token = params.hf_token.get_secret_value() if params.hf_token else None
    resolved = hub.resolve(model, params.revision, token)
    names = hub.matching(resolved.files, patterns)
    _require_matches(names, model, patterns, list(resolved.files))
    sizes = {name: resolved.sizes[name] for name in names if name in resolved.sizes}
    # Files deleted once pushed: the largest file is what must fit at once (two of them, nearly).
    needed = 2 * max(sizes.values(), default=0) if params.delete_after_push else sum(sizes.values())
    require_free_space(context.workspace.root, needed, f"downloading {model}")
    source = {"kind": "huggingface", "repo": model, "revision": params.revision, "sha": resolved.sha}
    _prepare_partial(partial, source)
    recorded = {**source, "allow_patterns": list(patterns)}
    known = recorder.reusable(partial, recorded)
    recorder.expect(recorded, sizes if len(sizes) == len(names) else None)
    context.ui.info(f"download-model: {len(names)} files of {model} at {resolved.sha[:12]}")
    with ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="modelcar-hash") as hashing:
        jobs: list[Future[None]] = []

        def complete(name: str, path: Path, sha256: str | None) -> None:
            if sha256 is not None:  # hashed as it arrived
                recorder.complete(name, path, sha256)
            elif name in known:
                recorder.complete(name, path, str(known[name]["sha256"]))
            else:
                jobs.append(hashing.submit(lambda: recorder.complete(name, path, sha256_file(path))))

        alone = context.cancel is None  # else build-and-push, beside it, shows both sides
        bars = context.ui.byte_progress("download-model", needed) if alone else contextlib.nullcontext(None)
        with bars as bar:
            hub.download_files(
                resolved,
                names,
                partial,
                token,
                context.ui.show_progress and alone,
                complete,
                context.cancel,
                bar.advance if bar is not None else None,
                recorder.arriving,
            )
        for job in jobs:
            job.result()
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    (partial / SOURCE_STAMP).unlink(missing_ok=True)
    _replace_dir(partial, target)
    files = [{"path": c["path"], "size": c["size"], "sha256": c["sha256"]} for c in recorder.completed()]
    return source, files


def _require_matches(names: list[str], model: str, patterns: tuple[str, ...], available: list[str]) -> None:
    if names:
        return
    shown = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
    raise NothingMatched(
        f"no file of {model} matches HUGGINGFACE_ALLOW_PATTERNS {','.join(patterns)} "
        f"(files: {shown or 'none'}); adjust the patterns"
    )


def _prepare_partial(partial: Path, source: dict[str, Any]) -> None:
    """Keeps a partial download of the same source (to resume it); discards any other."""
    stamp = partial / SOURCE_STAMP
    if partial.exists():
        try:
            same = json.loads(stamp.read_text()) == source
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic.write_json(stamp, source)


def _replace_dir(new: Path, target: Path) -> None:
    """Puts new in target's place; an older target is moved aside first, then removed."""
    if target.exists() or target.is_symlink():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
    else:
        new.rename(target)
