"""`model.sig` in the model directory: every file's sha256 signed before packaging, so the image
carries it as `/models/model.sig` (where the Kubeflow upload job puts it).

The same file `model_signing sign key DIR` writes: the signature file itself and git's files are
left out (and named as left out), so `model_signing verify key DIR --signature DIR/model.sig`
checks the directory, or a pulled copy of /models. Digests come from the digest cache and the
run record when the files are unchanged since; only the others are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..files import sha256_file
from ..oci.digest_cache import DigestCache
from ..oci.model_dir import Entry, scan_model
from .sign import GIT_PATHS

# (files {path: sha256:...}, name, paths left out) -> signature bundle bytes
Signer = Callable[[dict[str, str], str, tuple[str, ...]], bytes]

MODEL_SIG = "model.sig"
IGNORED = (MODEL_SIG, *GIT_PATHS)
WORKERS = 4


@dataclass(frozen=True)
class ModelSignature:
    path: Path
    digest: str  # sha256:... of model.sig
    files: int


def files_to_sign(model_dir: Path, cache: DigestCache, known: Mapping[str, str]) -> dict[str, str]:
    """{path: sha256:...} of every regular file but model.sig and git's files."""
    found: dict[str, str] = {}
    missing: list[Entry] = []
    for entry in scan_model(model_dir):
        if entry.kind != "file" or entry.name.split("/", 1)[0] in IGNORED:
            continue
        digest = cache.get_file(entry) or known.get(entry.name)
        if digest is None:
            missing.append(entry)
        else:
            found[entry.name] = digest
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="modelcar-sign") as pool:
        hashed = pool.map(lambda e: "sha256:" + sha256_file(e.path), missing)
        for entry, digest in zip(missing, hashed, strict=True):
            found[entry.name] = digest
    cache.put_files([(e, found[e.name]) for e in missing])
    return found


def write_model_sig(
    model_dir: Path,
    sign: Signer,
    name: str,
    cache: DigestCache,
    known: Mapping[str, str],
) -> ModelSignature:
    """Signs the files of `model_dir` into `model_dir/model.sig` (left as it is when unchanged:
    a key signature is deterministic, so the same key and files give the same bytes)."""
    files = files_to_sign(model_dir, cache, known)
    bundle = sign(files, name, IGNORED)
    path = model_dir / MODEL_SIG
    try:
        current = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    except OSError:
        current = None
    if current != bundle:
        if path.is_symlink():
            path.unlink()
        atomic.write_bytes(path, bundle)
    return ModelSignature(path, "sha256:" + hashlib.sha256(bundle).hexdigest(), len(files))
