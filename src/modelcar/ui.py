"""What the user sees on stderr: notices, warnings and progress bars (quiet when not a terminal)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class UI:
    """rich is imported only for a terminal: in a pod's log (and in `--quiet` runs) plain lines
    are all that is needed, and every Tekton step starts a fresh process."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.is_terminal = sys.stderr.isatty()
        self.show_progress = not quiet and self.is_terminal
        self._console: Console | None = None
        if not self.show_progress:
            # The libraries' own tqdm bars (transformers, llmcompressor, datasets): tqdm reads this
            # when it is imported, which happens later, inside the stages.
            os.environ.setdefault("TQDM_DISABLE", "1")

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._console

    def _say(self, message: str, style: str | None = None) -> None:
        if self.is_terminal:
            self.console.print(message, markup=False, style=style)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def info(self, message: str) -> None:
        if not self.quiet:
            self._say(message)

    def warn(self, message: str) -> None:
        self._say(f"warning: {message}", "yellow")

    def error(self, message: str) -> None:
        self._say(f"error: {message}", "red")

    @contextlib.contextmanager
    def byte_progress(self, description: str, total: int | None) -> Iterator[ProgressHandle]:
        """A bar counting bytes; a silent stand-in when stderr is not a terminal or --quiet."""
        if not self.show_progress:
            yield ProgressHandle(None, None)
            return
        with self._byte_bars() as progress:
            yield ProgressHandle(progress, progress.add_task(description, total=total))

    @contextlib.contextmanager
    def transfer_progress(self, total: int | None) -> Iterator[TransferHandle]:
        """Two bars for a push that follows a download: bytes downloaded and bytes pushed, with one
        ETA (the push's, which ends last); a silent stand-in when stderr is not a terminal or --quiet."""
        if not self.show_progress:
            yield TransferHandle(None, None, None)
            return
        with self._byte_bars() as progress:
            down = progress.add_task("downloaded", total=total, eta=False)
            up = progress.add_task("pushed    ", total=total)
            yield TransferHandle(progress, down, up)

    def _byte_bars(self) -> Progress:
        """rich bars counting bytes: description, bar, bytes, speed, and the time left (not shown
        for a task added with eta=False)."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        class OptionalEta(TimeRemainingColumn):
            def render(self, task):  # type: ignore[no-untyped-def]
                return super().render(task) if task.fields.get("eta", True) else ""

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            OptionalEta(),
        )
        return Progress(*columns, console=self.console, transient=True)


class TransferHandle:
    def __init__(self, progress: Progress | None, down: object, up: object) -> None:
        self._progress, self._down, self._up = progress, down, up

    def advance(self, amount: int) -> None:
        """Bytes pushed."""
        if self._progress is not None:
            self._progress.advance(self._up, amount)  # type: ignore[arg-type]

    def downloaded(self, completed: int) -> None:
        """Bytes downloaded so far (all of them, not an increment)."""
        if self._progress is not None:
            self._progress.update(self._down, completed=completed)  # type: ignore[arg-type]


class ProgressHandle:
    def __init__(self, progress: Progress | None, task: object) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)  # type: ignore[arg-type]
