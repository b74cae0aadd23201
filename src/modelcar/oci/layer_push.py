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

from ..files import sha256_file
from ..growing_file import FileReplaced
from ..readyfiles import ReadyFiles
from .digest_cache import DigestCache
from .layers import LayerPlan
from .model_dir import Entry
from .store import AbortableBlob, Store


def push_layer(
    dest: Store,
    plan: LayerPlan,
    cache: DigestCache,
    progress: Callable[[int], None] | None,
    abort: threading.Event,
    source: ReadyFiles,
) -> tuple[str, bool]:
    """(digest, whether it was sent): not when the destination has the digest the cache remembers."""
    if any(e.growing is not None for e in plan.regular_files):
        return _push_growing(dest, plan, cache, progress, abort, source)
    _known_file_digests(plan, cache, source.known_digests())
    known = cache.get(plan)
    if dest.try_reuse(known):
        if progress is not None:
            progress(plan.size)
        _finish_file_digests(plan, cache)
        source.pushed(plan.regular_files)
        return known, False
    # Remembered before the blob is complete: a kill just after finds it by HEAD on the rerun.
    digest = dest.put_stream(AbortableBlob(plan.stream(), abort), progress, lambda found: cache.put(plan, found))
    _finish_file_digests(plan, cache)
    cache.put(plan, digest)
    source.pushed(plan.regular_files)
    return digest, True


def _push_growing(
    dest: Store,
    plan: LayerPlan,
    cache: DigestCache,
    progress: Callable[[int], None] | None,
    abort: threading.Event,
    source: ReadyFiles,
) -> tuple[str, bool]:
    settled = _Settled(plan)
    try:

        def before_finish(digest: str) -> None:
            cache.put(settled.plan(), digest)  # raises FileReplaced: the blob is not completed

        try:
            digest = dest.put_stream(AbortableBlob(plan.stream(), abort), progress, before_finish)
            final = settled.plan()  # a layout destination does not call before_finish
        except FileReplaced:
            final = settled.complete_plan()
            digest = dest.put_stream(AbortableBlob(final.stream(), abort), progress, lambda d: cache.put(final, d))
    finally:
        settled.close()
    _known_file_digests(final, cache, source.known_digests())
    _finish_file_digests(final, cache)
    cache.put(final, digest)
    plan.file_digests.update(final.file_digests)  # the plan the manifest's annotations come from
    source.pushed(final.regular_files)
    return digest, True


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
                finals[entry.name], digests[entry.name] = final, "sha256:" + sha256
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


def _finish_file_digests(plan: LayerPlan, cache: DigestCache) -> None:
    """Each file's sha256 for its annotation: known, hashed while streaming, or else read now."""
    for entry in plan.missing_digests():
        assert entry.path is not None
        plan.file_digests[entry.name] = "sha256:" + sha256_file(entry.path)
    cache.put_files([(e, plan.file_digests[e.name]) for e in plan.regular_files])
