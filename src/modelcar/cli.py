"""The command line: options <-> environment variables, exit codes. No logic of its own."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from . import __version__, _lean_httpx
from .cli_options import (
    ALL_OPTIONS,
    COMPRESS_OPTIONS,
    FOLLOW_OPTIONS,
    IMAGE_OPTIONS,
    REGISTER_OPTIONS,
    SOURCE_OPTIONS,
    TLS_OPTIONS,
    with_options,
)
from .errors import ModelcarError
from .params import load_params
from .pipeline import plan, preflight, run_pipeline
from .record import RunRecord
from .results import write_results
from .stages import BUILD_PUSH, CLEANUP, COMPRESS, DOWNLOAD, REGISTER, STAGE_NAMES
from .ui import UI
from .workspace import Workspace

# The command line, not `import modelcar`, keeps httpx's own CLI from loading: before httpx is
# imported, which none of the imports above does (tests/test_startup.py checks it).
_lean_httpx.install()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="modelcar")
def main() -> None:
    """Turn a Hugging Face model into a ModelCar: an OCI image with the model under /models that
    KServe and OpenShift AI serve straight from a registry.

    \b
    Stages, in order (also the Tekton task names and the SKIP_TASKS words):
      cleanup-workspace  empty the workspace               modelcar cleanup
      download-model     Hub repo or local dir -> model/   modelcar download
      compress-model     LLM Compressor quantization       modelcar compress
      build-and-push     ModelCar image -> registry/layout modelcar build-push
      register-model     entry in the Model Registry       modelcar register

    Every option can also be set by the environment variable shown in its help, named as the
    Tekton parameter. Exit status: 0 done, 2 bad input, 1 a stage failed.

    \b
    Example:
      modelcar run --model ibm-granite/granite-3.2-2b-instruct --image quay.io/me/granite:1.0.0
    """


@contextlib.contextmanager
def exit_on_failure(ui: UI, on_error: Callable[[ModelcarError], None] | None = None) -> Iterator[None]:
    """A failure as the exit status: a ModelcarError's own (1, or 2 for bad input), 130 for Ctrl-C,
    1 for a bug, each with its message (MODELCAR_DEBUG=1 shows where). `on_error` runs after the
    message, before the exit."""
    try:
        yield
    except ModelcarError as exc:
        ui.error(str(exc))
        if os.environ.get("MODELCAR_DEBUG"):
            traceback.print_exception(exc)
        if on_error is not None:
            on_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.error("interrupted; run the same command again to continue")
        sys.exit(130)
    except Exception as exc:  # a bug: say so, and show where with MODELCAR_DEBUG=1
        ui.error(f"internal error: {type(exc).__name__}: {exc}")
        if os.environ.get("MODELCAR_DEBUG"):
            traceback.print_exc()
        sys.exit(1)


def _execute(options: dict[str, Any], stages: tuple[str, ...], explicit: bool) -> None:
    quiet = options.pop("quiet")
    json_output = options.pop("json_output")
    ui = UI(quiet=quiet)
    params = None

    def report(exc: ModelcarError) -> None:
        if exc.record is None:
            return
        if params is not None:
            # What was done stands (an image pushed, then its signing refused): IMAGE_DIGEST etc.
            write_results(params.results_dir, exc.record)
        if json_output:
            click.echo(json.dumps(exc.record.data, indent=2))

    with exit_on_failure(ui, report):
        params = load_params(options)
        record = run_pipeline(params, ui, stages, explicit)
        results = write_results(params.results_dir, record)
    for name, value in results.items():
        ui.info(f"{name}={value}")
    if json_output:
        click.echo(json.dumps(record.data, indent=2))


@main.command("run")
@with_options(ALL_OPTIONS)
def run_command(**options: Any) -> None:
    """Run the whole pipeline: cleanup, download, compress (if enabled), build-and-push, register."""
    _execute(options, STAGE_NAMES, explicit=False)


@main.command("cleanup")
@with_options([])
def cleanup_command(**options: Any) -> None:
    """Empty the workspace, dotfiles included (only a workspace modelcar created)."""
    _execute(options, (CLEANUP,), explicit=True)


@main.command("download")
@with_options(SOURCE_OPTIONS)
def download_command(**options: Any) -> None:
    """Download a Hub repo (or copy a local directory) into <workspace>/model, filtered by patterns.

    The token comes from HUGGINGFACE_TOKEN, else HF_TOKEN (empty: anonymous); HF_ENDPOINT picks
    another Hub server.
    """
    _execute(options, (DOWNLOAD,), explicit=True)


@main.command("compress")
@with_options(COMPRESS_OPTIONS)
def compress_command(**options: Any) -> None:
    """Quantize <workspace>/model in place with LLM Compressor (original kept in model-original)."""
    _execute(options, (COMPRESS,), explicit=True)


@main.command("build-push")
@with_options(IMAGE_OPTIONS + TLS_OPTIONS + FOLLOW_OPTIONS)
def build_push_command(**options: Any) -> None:
    """Build the ModelCar image from <workspace>/model on a base image and push it (or write a layout)."""
    _execute(options, (BUILD_PUSH,), explicit=True)


@main.command("register")
@with_options(REGISTER_OPTIONS + TLS_OPTIONS)
def register_command(**options: Any) -> None:
    """Register the pushed image in the Model Registry (model, version, artifact), idempotently."""
    _execute(options, (REGISTER,), explicit=True)


@main.command("validate")
@with_options(ALL_OPTIONS)
def validate_command(**options: Any) -> None:
    """Check every parameter and print which stages will run, without touching anything.

    With --results-dir, writes one file per stage, named as the stage, holding "true" when it
    runs and "false" when it is skipped (what the Tekton pipeline's `when` expressions read).
    """
    quiet = options.pop("quiet")
    json_output = options.pop("json_output")
    ui = UI(quiet=quiet)
    try:
        params = load_params(options)
        planned = plan(params)
        preflight(params, planned, Workspace(params.workspace))
    except ModelcarError as exc:
        ui.error(str(exc))
        sys.exit(exc.exit_code)
    for stage in planned:
        ui.info(f"{stage.name}: {'runs' if stage.runs else 'skipped (' + stage.reason + ')'}")
        if params.results_dir is not None:
            from . import atomic

            atomic.write_text(params.results_dir / stage.name, "true" if stage.runs else "false")
    if json_output:
        click.echo(json.dumps({"params": params.public_view(), "stages": {s.name: s.runs for s in planned}}))


@main.command("show")
@with_options([])
def show_command(**options: Any) -> None:
    """Print the run record of a workspace (run.json) and its results."""
    options.pop("json_output")
    quiet = options.pop("quiet")
    try:
        params = load_params(options)
        record = RunRecord.load(Workspace(params.workspace).run_json)
    except ModelcarError as exc:
        UI(quiet=quiet).error(str(exc))
        sys.exit(exc.exit_code)
    click.echo(json.dumps(record.data, indent=2))


from . import cli_readback  # noqa: E402,F401  (inspect, verify, pull: registered on main)
