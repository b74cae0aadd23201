"""Every command-line option, grouped by the stage that reads it: each one's value, when not given,
comes from the parameter's environment variable (= its Tekton param), and its help names the
parameter's default (param_table.PARAMS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .param_table import ENV_NAMES, SCHEMES, shown_default
from .stages import STAGE_NAMES

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def env_option(*decls: str, field: str, help: str, **kwargs: Any) -> Decorator:
    """An option whose value, when not given, comes from the parameter's environment variable;
    `{default}` in the help is the parameter's default (params.PARAMS)."""
    env = ENV_NAMES[field]
    shown = help.replace("{default}", shown_default(field))
    return click.option(*decls, field, default=None, help=f"{shown}  [env: {env}]", **kwargs)


def _flag(on: str, off: str, field: str, help: str) -> Decorator:
    return env_option(f"{on}/{off}", field=field, help=help, flag_value=True)


SOURCE_OPTIONS = [
    env_option(
        "--model",
        "-m",
        field="model",
        help="Hub repo id (org/name) or a local directory to package.",
    ),
    env_option("--revision", field="revision", help="Branch, tag or commit of the Hub repo (default {default})."),
    env_option(
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
    env_option(
        "--scheme",
        field="scheme",
        help=f"Quantization scheme: {', '.join(SCHEMES)} (default {{default}}).",
    ),
    env_option(
        "--bits",
        field="bits",
        help="Weight bits: 4 or 8 for gptq; 8 for w8a8 and fp8-dynamic (default {default}).",
    ),
    env_option(
        "--group-size",
        field="group_size",
        help="Weights per quantization group, or 'channel' (default {default}).",
    ),
    env_option(
        "--dataset",
        field="dataset",
        help="Calibration data: c4, a Hub dataset id, or a local .jsonl/.json/.txt/.parquet file (default {default}).",
    ),
    env_option(
        "--sequence-length",
        field="sequence_length",
        help="Calibration sequence length in tokens (default {default}).",
    ),
    env_option(
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
    env_option(
        "--evaluate-dataset",
        field="evaluate_dataset",
        help="Text --evaluate measures on: c4, a Hub dataset id or a local file "
        "(default: held-out samples of --dataset, never used to calibrate).",
    ),
    env_option(
        "--max-perplexity-ratio",
        field="max_perplexity_ratio",
        help="With --evaluate, compress-model fails (original kept) when perplexity after / before "
        "exceeds this (default {default}).",
    ),
]
IMAGE_OPTIONS = [
    env_option(
        "--image",
        "-i",
        field="image",
        help="Destination: registry reference host/repo[:tag], or oci:DIR[:TAG] "
        "(default oci:<workspace>/image:latest).",
    ),
    env_option(
        "--base-image",
        field="base_image",
        help="Image to put the model on, any reference, oci:DIR[:TAG] or 'scratch' (default {default}).",
    ),
    env_option(
        "--authfile",
        field="authfile",
        help="Registry credentials file (docker config.json / containers auth.json).",
    ),
    env_option(
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
    env_option(
        "--sigstore-trust-config",
        field="sigstore_trust_config",
        help="Sigstore ClientTrustConfig JSON naming the instance's Fulcio, Rekor, TSA and OIDC URLs "
        "(e.g. Trusted Artifact Signer; default the public Sigstore).",
    ),
    env_option(
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
    env_option("--ca-bundle", field="ca_bundle", help="PEM file of extra CA certificates to trust."),
]
REGISTER_OPTIONS = [
    env_option(
        "--model-name",
        field="model_name",
        help="Registered model name (default: last part of the Hub id).",
    ),
    env_option("--model-version", field="model_version", help="Model version name (default {default})."),
    env_option(
        "--registry-url",
        field="registry_url",
        help="Model Registry REST URL; register-model is skipped without it.",
    ),
    env_option(
        "--registry-api",
        field="registry_api",
        help="Model Registry API: v1 or v1alpha3 (default v1, falling back).",
    ),
    env_option(
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
    env_option(
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
    env_option(
        "--workspace",
        "-w",
        field="workspace",
        help="Working directory (default {default}).",
    ),
    env_option(
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


def with_options(options: list[Decorator]) -> Decorator:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options + COMMON_OPTIONS):
            func = option(func)
        return func

    return apply
