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
from .errors import ModelcarError
from .param_table import ENV_NAMES, SCHEMES, shown_default
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

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _option(*decls: str, field: str, help: str, **kwargs: Any) -> Decorator:
    """An option whose value, when not given, comes from the parameter's environment variable;
    `{default}` in the help is the parameter's default (params.PARAMS)."""
    env = ENV_NAMES[field]
    shown = help.replace("{default}", shown_default(field))
    return click.option(*decls, field, default=None, help=f"{shown}  [env: {env}]", **kwargs)


def _flag(on: str, off: str, field: str, help: str) -> Decorator:
    return _option(f"{on}/{off}", field=field, help=help, flag_value=True)


SOURCE_OPTIONS = [
    _option(
        "--model",
        "-m",
        field="model",
        help="Hub repo id (org/name) or a local directory to package.",
    ),
    _option("--revision", field="revision", help="Branch, tag or commit of the Hub repo (default {default})."),
    _option(
        "--allow-patterns",
        field="allow_patterns",
        multiple=True,
        help="Files to take, as globs; comma-separated or repeated (default {default}).",
    ),
]
COMPRESS_OPTIONS = [
    _flag(
        "--compress",
        "--no-compress",
        "compress",
        "Quantize with LLM Compressor before packaging (default {default}).",
    ),
    _option(
        "--scheme",
        field="scheme",
        help=f"Quantization scheme: {', '.join(SCHEMES)} (default {{default}}).",
    ),
    _option(
        "--bits",
        field="bits",
        help="Weight bits: 4 or 8 for gptq; 8 for w8a8 and fp8-dynamic (default {default}).",
    ),
    _option(
        "--group-size",
        field="group_size",
        help="Weights per quantization group, or 'channel' (default {default}).",
    ),
    _option(
        "--dataset",
        field="dataset",
        help="Calibration data: c4, a Hub dataset id, or a local .jsonl/.json/.txt/.parquet file (default {default}).",
    ),
    _option(
        "--sequence-length",
        field="sequence_length",
        help="Calibration sequence length in tokens (default {default}).",
    ),
    _option(
        "--num-calibration-samples",
        field="num_calibration_samples",
        help="How many calibration samples (default {default}).",
    ),
    _flag(
        "--evaluate",
        "--no-evaluate",
        "evaluate",
        "Measure perplexity before and after compression; fail when it rises past --max-perplexity-ratio.",
    ),
    _option(
        "--evaluate-dataset",
        field="evaluate_dataset",
        help="Text --evaluate measures on: c4, a Hub dataset id or a local file "
        "(default: held-out samples of --dataset, never used to calibrate).",
    ),
    _option(
        "--max-perplexity-ratio",
        field="max_perplexity_ratio",
        help="With --evaluate, compress-model fails (original kept) when perplexity after / before "
        "exceeds this (default {default}).",
    ),
]
IMAGE_OPTIONS = [
    _option(
        "--image",
        "-i",
        field="image",
        help="Destination: registry reference host/repo[:tag], or oci:DIR[:TAG] "
        "(default oci:<workspace>/image:latest).",
    ),
    _option(
        "--base-image",
        field="base_image",
        help="Image to put the model on, any reference, oci:DIR[:TAG] or 'scratch' (default {default}).",
    ),
    _option(
        "--authfile",
        field="authfile",
        help="Registry credentials file (docker config.json / containers auth.json).",
    ),
    _option(
        "--sign-key",
        field="sign_key",
        help="PEM EC private key (P-256/384/521): signs the model files (/models/model.sig) and the pushed "
        "image; an encrypted key's password in the environment variable SIGN_KEY_PASSWORD.",
    ),
    _flag(
        "--sign-keyless",
        "--no-sign-keyless",
        "sign_keyless",
        "Sign keyless with Sigstore (Fulcio, Rekor) instead of a key; needs the keyless extra.",
    ),
    _option(
        "--sigstore-trust-config",
        field="sigstore_trust_config",
        help="Sigstore ClientTrustConfig JSON naming the instance's Fulcio, Rekor, TSA and OIDC URLs "
        "(e.g. Trusted Artifact Signer; default the public Sigstore).",
    ),
    _option(
        "--sigstore-identity-token-path",
        field="sigstore_identity_token_path",
        help="File holding the OIDC identity token for keyless signing (default the pod's service-account token).",
    ),
]
TLS_OPTIONS = [
    _flag(
        "--tls-verify",
        "--no-tls-verify",
        "tls_verify",
        "Verify TLS certificates; --no-tls-verify also allows plain http.",
    ),
    _option("--ca-bundle", field="ca_bundle", help="PEM file of extra CA certificates to trust."),
]
REGISTER_OPTIONS = [
    _option(
        "--model-name",
        field="model_name",
        help="Registered model name (default: last part of the Hub id).",
    ),
    _option("--model-version", field="model_version", help="Model version name (default {default})."),
    _option(
        "--registry-url",
        field="registry_url",
        help="Model Registry REST URL; register-model is skipped without it.",
    ),
    _option(
        "--registry-api",
        field="registry_api",
        help="Model Registry API: v1 or v1alpha3 (default v1, falling back).",
    ),
    _option(
        "--registry-token-path",
        field="registry_token_path",
        help="File holding the Model Registry token (else MODEL_REGISTRY_TOKEN, else the pod's service account).",
    ),
    _flag(
        "--overwrite",
        "--no-overwrite",
        "overwrite",
        "Let an existing version point at a new image digest.",
    ),
]
SKIP_OPTIONS = [
    _option(
        "--skip",
        field="skip",
        multiple=True,
        help=f"Stages to skip, comma-separated or repeated: {', '.join(STAGE_NAMES)}.",
    ),
]
FOLLOW_OPTIONS = [
    _flag(
        "--follow-download",
        "--no-follow-download",
        "follow_download",
        "build-push: push each file while download-model still runs on the same workspace (Tekton: the two "
        "tasks side by side).",
    ),
    _flag(
        "--delete-after-push",
        "--keep-after-push",
        "delete_after_push",
        "Delete each file from the workspace once its layer is pushed (a volume smaller than the model; "
        "no compression, a re-push needs a new download).",
    ),
]
OVERLAP_OPTIONS = [
    _flag(
        "--overlap",
        "--sequential",
        "overlap",
        "Without compression, push each file while the next ones download (default), or one stage after the other.",
    ),
    *FOLLOW_OPTIONS,
]
COMMON_OPTIONS = [
    _option(
        "--workspace",
        "-w",
        field="workspace",
        help="Working directory (default {default}).",
    ),
    _option(
        "--results-dir",
        field="results_dir",
        help="Also write each result (IMAGE_DIGEST, ...) as a file here.",
    ),
    click.option(
        "--json",
        "json_output",
        is_flag=True,
        help="Print the run record as one JSON object on stdout.",
    ),
    click.option("--quiet", "-q", is_flag=True, help="Only errors and warnings on stderr; no progress bars."),
]
ALL_OPTIONS = (
    SOURCE_OPTIONS + COMPRESS_OPTIONS + IMAGE_OPTIONS + TLS_OPTIONS + REGISTER_OPTIONS + SKIP_OPTIONS + OVERLAP_OPTIONS
)


def _with(options: list[Decorator]) -> Decorator:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options + COMMON_OPTIONS):
            func = option(func)
        return func

    return apply


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
@_with(ALL_OPTIONS)
def run_command(**options: Any) -> None:
    """Run the whole pipeline: cleanup, download, compress (if enabled), build-and-push, register."""
    _execute(options, STAGE_NAMES, explicit=False)


@main.command("cleanup")
@_with([])
def cleanup_command(**options: Any) -> None:
    """Empty the workspace, dotfiles included (only a workspace modelcar created)."""
    _execute(options, (CLEANUP,), explicit=True)


@main.command("download")
@_with(SOURCE_OPTIONS)
def download_command(**options: Any) -> None:
    """Download a Hub repo (or copy a local directory) into <workspace>/model, filtered by patterns.

    The token comes from HUGGINGFACE_TOKEN, else HF_TOKEN (empty: anonymous); HF_ENDPOINT picks
    another Hub server.
    """
    _execute(options, (DOWNLOAD,), explicit=True)


@main.command("compress")
@_with(COMPRESS_OPTIONS)
def compress_command(**options: Any) -> None:
    """Quantize <workspace>/model in place with LLM Compressor (original kept in model-original)."""
    _execute(options, (COMPRESS,), explicit=True)


@main.command("build-push")
@_with(IMAGE_OPTIONS + TLS_OPTIONS + FOLLOW_OPTIONS)
def build_push_command(**options: Any) -> None:
    """Build the ModelCar image from <workspace>/model on a base image and push it (or write a layout)."""
    _execute(options, (BUILD_PUSH,), explicit=True)


@main.command("register")
@_with(REGISTER_OPTIONS + TLS_OPTIONS)
def register_command(**options: Any) -> None:
    """Register the pushed image in the Model Registry (model, version, artifact), idempotently."""
    _execute(options, (REGISTER,), explicit=True)


@main.command("validate")
@_with(ALL_OPTIONS)
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
@_with([])
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
