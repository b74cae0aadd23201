"""What the user sees on stderr: notices, warnings and progress bars (quiet when not a terminal)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class UI:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.show_progress = not quiet and sys.stderr.isatty()
        if not self.show_progress:
            # The libraries' own tqdm bars (transformers, llmcompressor, datasets): tqdm reads this
            # when it is imported, which happens later, inside the stages.
            os.environ.setdefault("TQDM_DISABLE", "1")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        self.console.print(f"error: {message}", markup=False, style="red")

    @contextlib.contextmanager
    def byte_progress(self, description: str, total: int | None) -> Iterator[ProgressHandle]:
        """A bar counting bytes; a silent stand-in when stderr is not a terminal or --quiet."""
        if not self.show_progress:
            yield ProgressHandle(None, None)
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            yield ProgressHandle(progress, progress.add_task(description, total=total))


class ProgressHandle:
    def __init__(self, progress: Progress | None, task: object) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)  # type: ignore[arg-type]
