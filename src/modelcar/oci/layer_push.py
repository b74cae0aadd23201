"""One model layer to the destination: reused when the destination has it, else streamed and hashed.

A layer whose files are all on disk keys the digest cache on their stat: remembered from an
earlier push and present in the destination, it is not read at all. A layer with a file still
being downloaded (growing_file.py) is streamed as the file grows; before the blob is completed
the download must list that file complete, and it must be the file that was read. Then the
layer's digest is remembered under the complete file's stat, and the file's own sha256 is the one
the download computed. When the download started the file again instead, the layer is pushed
once more from the complete file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..files import sha256_file
from ..growing_file import FileReplaced
from ..readyfiles import ReadyFiles
from .digest_cache import DigestCache
from .layers import LayerPlan
from .model_dir import Entry
from .store import AbortableBlob, Store


@dataclass(frozen=True)
class LayerPusher:
    """Pushes the model layers of one build to `dest`; `abort` (the build's) stops a transfer."""

    dest: Store
    cache: DigestCache
    source: ReadyFiles
    abort: threading.Event
    progress: Callable[[int], None] | None = None

    def push(self, plan: LayerPlan) -> tuple[str, bool]:
        """(digest, whether it was sent): not when the destination has the digest the cache remembers."""
        if any(e.growing is not None for e in plan.regular_files):
            return self._push_growing(plan)
        _known_file_digests(plan, self.cache, self.source.known_digests())
        known = self.cache.get(plan)
        if self.dest.try_reuse(known):
            if self.progress is not None:
                self.progress(plan.size)
            self._finish(plan, known)
            return known, False
        # Remembered before the blob is complete: a kill just after finds it by HEAD on the rerun.
        return self._finish(plan, self._send(plan, lambda found: self.cache.put(plan, found))), True

    def _push_growing(self, plan: LayerPlan) -> tuple[str, bool]:
        settled = _Settled(plan)
        try:

            def before_finish(digest: str) -> None:
                self.cache.put(settled.plan(), digest)  # raises FileReplaced: the blob is not completed

            try:
                digest = self._send(plan, before_finish)
                final = settled.plan()  # a layout destination does not call before_finish
            except FileReplaced:
                final = settled.complete_plan()
                digest = self._send(final, lambda found: self.cache.put(final, found))
        finally:
            settled.close()
        _known_file_digests(final, self.cache, self.source.known_digests())
        self._finish(final, digest)
        plan.file_digests.update(final.file_digests)  # the plan the manifest's annotations come from
        return digest, True

    def _send(self, plan: LayerPlan, before_finish: Callable[[str], None]) -> str:
        return self.dest.put_stream(AbortableBlob(plan.stream(), self.abort), self.progress, before_finish)

    def _finish(self, plan: LayerPlan, digest: str) -> str:
        """Each file's sha256 for its annotation (known, hashed while streaming, or else read now),
        remembered with the layer's digest; the files' layer is in the destination."""
        for entry in plan.missing_digests():
            assert entry.path is not None
            plan.file_digests[entry.name] = "sha256:" + sha256_file(entry.path)
        self.cache.put_files([(e, plan.file_digests[e.name]) for e in plan.regular_files])
        self.cache.put(plan, digest)
        self.source.pushed(plan.regular_files)
        return digest


class _Settled:
    """The layer as it is once its growing files are complete: their final entries and sha256."""

    def __init__(self, plan: LayerPlan) -> None:
        self.growing = [e for e in plan.regular_files if e.growing is not None]
        self.source = plan
        self._final: LayerPlan | None = None
        self._intact = True

    def complete_plan(self) -> LayerPlan:
        """The layer of the complete files, whether or not they are the ones read."""
        if self._final is None:
            finals: dict[str, Entry] = {}
            digests: dict[str, str] = {}
            for entry in self.growing:
                assert entry.growing is not None
                final, sha256, same = entry.growing.settle()
                finals[entry.name] = final
                if sha256:  # else hashed from the complete file (LayerPusher._finish)
                    digests[entry.name] = "sha256:" + sha256
                self._intact = self._intact and same
            plan = self.source
            self._final = LayerPlan(
                [finals.get(e.name, e) for e in plan.entries], plan.title, plan.content, plan.content_path
            )
            self._final.file_digests.update(plan.file_digests)
            self._final.file_digests.update(digests)
        return self._final

    def plan(self) -> LayerPlan:
        """The complete layer, when its growing files are the ones read; else FileReplaced."""
        final = self.complete_plan()
        if not self._intact:
            names = ", ".join(e.name for e in self.growing)
            raise FileReplaced(f"{names} was started again by the download while its layer was sent")
        return final

    def close(self) -> None:
        for entry in self.growing:
            assert entry.growing is not None
            entry.growing.close()


def _known_file_digests(plan: LayerPlan, cache: DigestCache, known: dict[str, str]) -> None:
    for entry in plan.regular_files:
        digest = cache.get_file(entry) or known.get(entry.name)
        if digest is not None:
            plan.file_digests[entry.name] = digest
