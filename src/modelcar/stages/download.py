"""The download-model stage: a Hub repo (or a local directory) -> <workspace>/model.

Files land in <workspace>/model.partial first (the Hub client resumes there after a crash) and
the directory is renamed to model/ only when complete, so a half download is never taken for a
finished one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .. import atomic, hub
from ..errors import ModelcarError
from ..files import inventory
from ..localsource import copy_files, model_files
from ..space import require_free_space
from .context import StageContext

PARTIAL_SUFFIX = ".partial"
SOURCE_STAMP = ".modelcar-source.json"


class NothingMatched(ModelcarError):
    """No file of the source matched the allow patterns."""


def run(context: StageContext) -> None:
    params = context.params
    model = params.require_model()
    patterns = params.allow_patterns
    target = context.workspace.model_dir
    partial = target.with_name(target.name + PARTIAL_SUFFIX)

    if params.model_is_local:
        source_dir = Path(model)
        available = model_files(source_dir)
        names = hub.matching(available, patterns)
        _require_matches(names, model, patterns, list(available))
        source = {"kind": "local", "path": model, "revision": None, "sha": None}
        _prepare_partial(partial, source)
        copy_files(source_dir, names, partial)
    else:
        token = params.hf_token.get_secret_value() if params.hf_token else None
        resolved = hub.resolve(model, params.revision, token)
        names = hub.matching(resolved.files, patterns)
        _require_matches(names, model, patterns, list(resolved.files))
        needed = sum(resolved.sizes.get(name, 0) for name in names)
        require_free_space(context.workspace.root, needed, f"downloading {model}")
        source = {"kind": "huggingface", "repo": model, "revision": params.revision, "sha": resolved.sha}
        _prepare_partial(partial, source)
        context.ui.info(f"download-model: {len(names)} files of {model} at {resolved.sha[:12]}")
        hub.download(resolved, patterns, partial, token, progress=context.ui.show_progress)
        shutil.rmtree(partial / ".cache", ignore_errors=True)

    (partial / SOURCE_STAMP).unlink(missing_ok=True)
    _replace_dir(partial, target)
    files = inventory(target)
    source["allow_patterns"] = list(patterns)
    context.record.set("source", source)
    context.record.set("files", files)
    # A fresh download is uncompressed, whatever an earlier run on this workspace did.
    context.record.set("compression", {"enabled": False})
    size = sum(f["size"] for f in files)
    context.ui.info(f"download-model: {len(files)} files, {size / 1e6:.1f} MB in {target}")


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
