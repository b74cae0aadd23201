"""Every pipeline parameter's environment variable (= its Tekton param) and default, written once,
and the constants the parameters are checked against (compression schemes, their bits and
groups). A Secret keeps a token out of reprs, logs and the run record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

# Compression schemes and the parameters each one takes.
SCHEMES = ("gptq", "w8a8", "fp8-dynamic")
SCHEME_BITS = {"gptq": (4, 8), "w8a8": (8,), "fp8-dynamic": (8,)}
SCHEME_DEFAULT_BITS = {"gptq": 4, "w8a8": 8, "fp8-dynamic": 8}
SCHEMES_WITH_GROUP_SIZE = ("gptq",)
SCHEMES_WITH_CALIBRATION = ("gptq", "w8a8")
MIN_GROUP_SIZE, MAX_GROUP_SIZE = 16, 1024
PER_CHANNEL = "channel"


@dataclasses.dataclass(frozen=True)
class Param:
    """A parameter's environment variable (= its Tekton param) and its default when unset."""

    env: str
    default: Any = None


# Every parameter by its Params field: the one place its environment variable and its default
# are written. A default of None is "not set", or worked out from other values where noted.
PARAMS: dict[str, Param] = {
    "model": Param("HUGGINGFACE_MODEL"),  # required by the stages that read the model
    "revision": Param("HUGGINGFACE_REVISION", "main"),
    "allow_patterns": Param("HUGGINGFACE_ALLOW_PATTERNS", ("*.safetensors", "*.json", "*.txt")),
    "image": Param("OCI_IMAGE"),  # oci:<workspace>/image:latest
    "base_image": Param(
        "BASE_IMAGE",
        "registry.access.redhat.com/ubi9-micro@sha256:414cfa255ea10eaef4528a26d5618eb67cf487b635ee20f8f14b9317bfd6a4be",
    ),
    "compress": Param("COMPRESS_MODEL", False),
    "scheme": Param("SCHEME", "gptq"),
    "bits": Param("BITS"),  # the scheme's, SCHEME_DEFAULT_BITS
    "group_size": Param("GROUP_SIZE", 128),  # schemes without groups: None, per output channel
    "dataset": Param("DATASET", "c4"),
    "sequence_length": Param("SEQUENCE_LENGTH", 2048),
    "num_calibration_samples": Param("NUM_CALIBRATION_SAMPLES", 512),
    "evaluate": Param("EVALUATE", False),
    "evaluate_dataset": Param("EVALUATE_DATASET"),  # held-out samples of DATASET
    # The quality gate of --evaluate: compress-model fails when perplexity after / before exceeds it.
    "max_perplexity_ratio": Param("MAX_PERPLEXITY_RATIO", 1.5),
    "model_name": Param("MODEL_NAME"),  # the model's last path part
    "model_version": Param("MODEL_VERSION", "1.0.0"),
    "registry_url": Param("MODEL_REGISTRY_URL"),
    "registry_api": Param("MODEL_REGISTRY_API"),  # v1, falling back to v1alpha3
    "registry_token_path": Param("MODEL_REGISTRY_TOKEN_PATH"),
    "overwrite": Param("OVERWRITE", False),
    "skip": Param("SKIP_TASKS", ()),
    "overlap": Param("OVERLAP_DOWNLOAD_PUSH", True),
    "follow_download": Param("FOLLOW_DOWNLOAD", False),
    "delete_after_push": Param("DELETE_AFTER_PUSH", False),
    "workspace": Param("MODELCAR_WORKSPACE", "./modelcar-workspace"),
    "authfile": Param("REGISTRY_AUTH_FILE"),
    "tls_verify": Param("TLS_VERIFY", True),
    "ca_bundle": Param("CA_BUNDLE"),
    "results_dir": Param("RESULTS_DIR"),
    "sign_key": Param("SIGN_KEY"),
    "sign_keyless": Param("SIGN_KEYLESS", False),
    "sigstore_trust_config": Param("SIGSTORE_TRUST_CONFIG"),
    "sigstore_identity_token_path": Param("SIGSTORE_IDENTITY_TOKEN_PATH"),
}
# The environment variable (= Tekton parameter) of each field, for lookups and error messages.
ENV_NAMES: dict[str, str] = {field: param.env for field, param in PARAMS.items()}
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = PARAMS["allow_patterns"].default
DEFAULT_BASE_IMAGE: str = PARAMS["base_image"].default
DEFAULT_MAX_PERPLEXITY_RATIO: float = PARAMS["max_perplexity_ratio"].default


def shown_default(field: str) -> str:
    """A parameter's default as the help texts show it."""
    if field == "bits":
        return str(SCHEME_DEFAULT_BITS[PARAMS["scheme"].default])
    default = PARAMS[field].default
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def default_of(field: str) -> Any:
    return PARAMS[field].default


SECRET_ENV_NAMES = ("HUGGINGFACE_TOKEN", "HF_TOKEN", "MODEL_REGISTRY_TOKEN", "SIGN_KEY_PASSWORD")


class Secret:
    """A token that keeps out of reprs, logs and the run record; `get_secret_value()` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
