"""`modelcar inspect | verify | pull | sign REF`: a ModelCar read back (the commands; logic in readback.py).

Registered on the main group by cli.py. The registry options (auth, TLS) are build-push's, with
the same environment variables. Exit status: 0 ok, 1 a mismatch or failure, 2 bad input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli import exit_on_failure, main
from .cli_options import TLS_OPTIONS, env_option
from .params import load_params
from .ui import UI

if TYPE_CHECKING:
    from .oci.store import ClientOptions

# The commands import their logic (and httpx) when they run: every other command starts faster.

REGISTRY_OPTIONS = [
    env_option(
        "--authfile",
        field="authfile",
        help="Registry credentials file (docker config.json / containers auth.json).",
    ),
    *TLS_OPTIONS,
]


def _with_registry(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(REGISTRY_OPTIONS):
        func = option(func)
    return click.argument("ref")(func)


def _client_options(options: dict[str, Any]) -> ClientOptions:
    from .oci.store import ClientOptions

    params = load_params({k: options.pop(k) for k in ("authfile", "tls_verify", "ca_bundle")})
    return ClientOptions(tls_verify=params.tls_verify, ca_bundle=params.ca_bundle, authfile=params.authfile)


def _run(ui: UI, work: Callable[[], None]) -> None:
    with exit_on_failure(ui):
        work()


@main.command("inspect")
@_with_registry
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--check-base",
    is_flag=True,
    help="Read the base layers' file lists to decide KServe readiness (by default: the verdict "
    "build-push recorded in the manifest, or one remembered in the cache).",
)
def inspect_command(ref: str, json_output: bool, check_base: bool, **options: Any) -> None:
    """Show a ModelCar from its manifests and configs (no layer is read): platforms, base,
    every model file with size and sha256, source, signature, KServe readiness.

    REF is a registry reference (host/repo[:tag][@sha256:...]) or oci:DIR[:TAG].
    """
    ui = UI(quiet=False)

    def work() -> None:
        from . import readback

        report = readback.inspect(readback.parse_ref(ref), _client_options(options), check_base)
        click.echo(json.dumps(report, indent=2) if json_output else readback.render_inspect(report))

    _run(ui, work)


@main.command("verify")
@_with_registry
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM EC public key: check the attached signature (model-signing) and the signed file digests.",
)
@click.option(
    "--local-model",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also check the files in this directory against the image's (or the signature's) digests.",
)
def verify_command(ref: str, public_key: Path | None, local_model: Path | None, **options: Any) -> None:
    """Check a ModelCar: every model layer's bytes against its digest, the config's diff_id and
    the per-file digests; with --public-key first its signature, and the files read must be the
    signed ones. Exit 1 names the file."""
    ui = UI(quiet=False)

    def work() -> None:
        from . import readback

        for line in readback.verify(readback.parse_ref(ref), _client_options(options), public_key, local_model):
            ui.info(f"verify: {line}")
        click.echo(f"verified {ref}")

    _run(ui, work)


@main.command("pull")
@_with_registry
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def pull_command(ref: str, directory: Path, **options: Any) -> None:
    """Extract /models of a ModelCar into DIRECTORY, each file checked against its digest; an
    interrupted pull resumes; entries that could leave DIRECTORY are refused."""
    ui = UI(quiet=False)

    def work() -> None:
        from . import readback

        result = readback.pull_image(readback.parse_ref(ref), _client_options(options), directory)
        ui.info(
            f"pull: {len(result.files)} files from {result.layers_read} layers"
            + (f", {len(result.reused)} already there" if result.reused else "")
            + (f", {len(result.links)} links" if result.links else "")
            + f" in {directory}"
        )

    _run(ui, work)


@main.command("sign")
@_with_registry
@click.option(
    "--sign-key",
    "sign_key",
    envvar="SIGN_KEY",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM EC private key (P-256/384/521).  [env: SIGN_KEY]",
)
@click.option(
    "--trust-annotations",
    is_flag=True,
    help="Sign the per-file digests the manifest's annotations give, without reading the layers "
    "(only for an image whose layers you pushed yourself: the annotations are not signed).",
)
def sign_command(ref: str, sign_key: Path, trust_annotations: bool, **options: Any) -> None:
    """Sign a ModelCar's files as model-signing does and attach the signature beside it: an OCI
    1.1 referrer where the registry has the referrers API, else the tag sha256-<digest>.sig;
    `modelcar verify --public-key` and `model_signing verify key` check it. Every model layer is
    read and checked first, so what is signed is the bytes' digests. An encrypted key's password
    comes from the environment variable SIGN_KEY_PASSWORD."""
    ui = UI(quiet=False)

    def work() -> None:
        from . import readback

        password = os.environ.get("SIGN_KEY_PASSWORD") or None
        signed = readback.sign_image(
            readback.parse_ref(ref),
            _client_options(options),
            sign_key,
            password,
            check_bytes=not trust_annotations,
        )
        where = f"under the tag {signed.ref}" if signed.mode == "tag" else f"as a referrer {signed.ref}"
        ui.info(f"sign: {signed.files} files signed; signature {signed.digest} {where}")

    _run(ui, work)
