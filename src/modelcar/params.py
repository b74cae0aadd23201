"""The pipeline parameters as one validated model, Params, built by load_params before any stage
runs. The table of parameters (environment variable, default) is param_table.py; how each value
is read and checked is param_parsers.py.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ParameterError
from .oci.reference import SCRATCH, ImageRef, parse_reference
from .param_parsers import read_values
from .param_table import Secret


# A plain frozen dataclass, not a pydantic model: the parsers below validate every value, and
# pydantic's import and schema build were a quarter of a second of every command's start-up.
@dataclasses.dataclass(frozen=True, kw_only=True)
class Params:
    """Every parameter of the pipeline, validated and normalised; built by load_params only (the
    defaults are PARAMS')."""

    model: str | None
    model_is_local: bool
    revision: str
    allow_patterns: tuple[str, ...]
    hf_token: Secret | None
    image: str
    base_image: str
    compress: bool
    scheme: str  # one of SCHEMES
    bits: int
    group_size: int | None  # None: one scale per output channel
    dataset: str
    sequence_length: int
    num_calibration_samples: int
    evaluate: bool
    evaluate_dataset: str | None  # None: held-out samples of DATASET
    max_perplexity_ratio: float
    model_name: str | None
    model_version: str
    registry_url: str | None
    registry_api: str | None  # "v1" | "v1alpha3"
    registry_token: Secret | None
    overwrite: bool
    skip: tuple[str, ...]
    overlap: bool  # modelcar run without compression: push each file while the next ones download
    follow_download: bool  # build-and-push follows a download still running (download.progress)
    delete_after_push: bool  # with overlap or follow: each file deleted once its layer is pushed
    workspace: Path
    authfile: Path | None
    tls_verify: bool
    ca_bundle: Path | None
    results_dir: Path | None
    sign_key: Path | None  # a PEM EC private key: model.sig and the image signature
    sign_key_password: Secret | None  # SIGN_KEY_PASSWORD, for an encrypted SIGN_KEY
    sign_keyless: bool  # Sigstore keyless signing (Fulcio certificate, Rekor entry)
    sigstore_trust_config: Path | None  # a Sigstore ClientTrustConfig JSON (e.g. Trusted Artifact Signer)
    sigstore_identity_token_path: Path | None  # the OIDC token; default the pod's service account

    @property
    def signing(self) -> bool:
        return self.sign_key is not None or self.sign_keyless

    @property
    def image_ref(self) -> ImageRef:
        return parse_reference(self.image)

    @property
    def base_image_ref(self) -> ImageRef | None:
        return None if self.base_image == SCRATCH else parse_reference(self.base_image)

    def require_model(self) -> str:
        if not self.model:
            raise ParameterError(
                "HUGGINGFACE_MODEL",
                "",
                "required: org/name on the Hub or a local directory (--model)",
            )
        return self.model

    def public_view(self) -> dict[str, Any]:
        """The parameters without secrets, for the run record."""
        data = {
            field.name: _plain(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.name not in ("hf_token", "registry_token", "sign_key_password")
        }
        data["hf_token_set"] = self.hf_token is not None
        data["registry_token_set"] = self.registry_token is not None
        data["sign_key_password_set"] = self.sign_key_password is not None
        return data


def _plain(value: Any) -> Any:
    """A JSON value: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def load_params(cli: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Params:
    """Builds Params from command-line values (None = not given) over the environment."""
    return Params(**read_values(cli, os.environ if environ is None else environ))
