"""Tekton results: one file per result under --results-dir, written atomically."""

from __future__ import annotations

from pathlib import Path

from . import atomic
from .record import RunRecord


def write_results(results_dir: Path | None, record: RunRecord) -> dict[str, str]:
    results = record.results()
    if results_dir is not None:
        for name, value in results.items():
            atomic.write_text(results_dir / name, value)
    return results
