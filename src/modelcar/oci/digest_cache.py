"""Layer digests remembered between runs, so a second push can HEAD before it reads a byte.

The key of a layer is its tar headers (names, sizes, modes) and, for each file, (device, inode,
size, mtime_ns, ctime_ns): a file rewritten in any way gets a new ctime, hence a new key.
The cache is trusted: when the key matches and the destination has the remembered digest, that
digest goes into the manifest without a byte being read or hashed, so a wrong entry (a file
changed with its ctime kept, a hand-edited cache) would give a wrong image. Only when the
destination lacks the remembered digest is the layer sent, and then the digest is the one computed.

Each file's own sha256 (the layer's `olot.layer.content.digest`) is remembered the same way, keyed
by its name and (device, inode, size, mtime_ns, ctime_ns).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from .. import atomic
from .layers import LayerPlan
from .model_dir import Entry

CACHE_VERSION = 1


class DigestCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, int | str]] = {}
        self._files: dict[str, str] = {}
        if path is not None and path.is_file():
            try:
                doc = json.loads(path.read_text())
                if doc.get("version") == CACHE_VERSION:
                    self._entries = dict(doc.get("layers") or {})
                    self._files = {str(k): str(v) for k, v in dict(doc.get("files") or {}).items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self._entries, self._files = {}, {}

    @staticmethod
    def key(plan: LayerPlan) -> str:
        hasher = hashlib.sha256()
        for entry in plan.entries:
            hasher.update(plan.headers[entry.name])
            hasher.update(json.dumps(entry.stat_key).encode())
        return hasher.hexdigest()

    @staticmethod
    def keyable(plan: LayerPlan) -> bool:
        """Only a layer whose files all have their stat (a file still downloading has none yet)."""
        return all(e.stat_key for e in plan.regular_files)

    def get(self, plan: LayerPlan) -> str | None:
        if not self.keyable(plan):
            return None
        with self._lock:
            entry = self._entries.get(self.key(plan))
        if entry and entry.get("size") == plan.size:
            return str(entry["digest"])
        return None

    def put(self, plan: LayerPlan, digest: str) -> None:
        if not self.keyable(plan):
            return
        entry = {"digest": digest, "size": plan.size}
        with self._lock:
            key = self.key(plan)
            if self._entries.get(key) != entry:  # remembered already (a reused layer): no rewrite
                self._entries[key] = entry
                self._save()

    @staticmethod
    def file_key(entry: Entry) -> str:
        return hashlib.sha256(json.dumps([entry.name, list(entry.stat_key)]).encode()).hexdigest()

    def get_file(self, entry: Entry) -> str | None:
        """The remembered sha256 of a file (sha256:...), when its name and stat are the same."""
        with self._lock:
            return self._files.get(self.file_key(entry)) if entry.stat_key else None

    def put_files(self, digests: list[tuple[Entry, str]]) -> None:
        with self._lock:
            new = {self.file_key(e): d for e, d in digests if e.stat_key}
            if any(self._files.get(key) != digest for key, digest in new.items()):
                self._files.update(new)
                self._save()

    def _save(self) -> None:
        if self.path is not None:
            doc = {"version": CACHE_VERSION, "layers": self._entries, "files": self._files}
            atomic.write_json(self.path, doc)
