"""Checks of the model against the compression settings before any stage runs (`modelcar
validate`, the first Tekton task): only what config.json says, read where that is cheap.

The config comes from a local model directory, from the workspace's model/ when download-model
does not run, or with one small GET from the Hub. No torch, nothing written to disk; when the
config cannot be had quickly (offline, a private repo without a token, a slow network) the
check is skipped, and compress-model makes it again on the downloaded model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..params import Params
from .modelcheck import check_group_size
from .settings import Settings

HUB_TIMEOUT_S = 5.0
DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_CONFIG_BYTES = 1 << 20


def check_before_work(params: Params, model_dir: Path | None, downloads: bool) -> None:
    """Raises ParameterError (exit 2) when the model's layer widths do not divide GROUP_SIZE.

    model_dir is the workspace's model/ (used when download-model does not run this time).
    """
    settings = Settings.from_params(params)
    if settings.scheme != "gptq" or settings.group_size is None:
        return
    config = _config(params, model_dir, downloads)
    if config is not None:
        check_group_size(config, settings)


def _config(params: Params, model_dir: Path | None, downloads: bool) -> dict[str, Any] | None:
    if params.model and params.model_is_local and downloads:
        return _read(Path(params.model) / "config.json")
    if not downloads:
        return _read(model_dir / "config.json") if model_dir is not None else None
    if params.model:
        token = params.hf_token.get_secret_value() if params.hf_token else None
        return _from_hub(params.model, params.revision, token)
    return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # compress-model reports a missing or broken config itself
    return data if isinstance(data, dict) else None


def _from_hub(repo: str, revision: str, token: str | None) -> dict[str, Any] | None:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT  # as huggingface_hub reads it
    url = f"{endpoint.rstrip('/')}/{repo}/resolve/{quote(revision, safe='')}/config.json"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=HUB_TIMEOUT_S, follow_redirects=True) as client:
            response = client.get(url, headers=headers)
    except (httpx.HTTPError, OSError):
        return None
    if response.status_code != 200 or len(response.content) > MAX_CONFIG_BYTES:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
