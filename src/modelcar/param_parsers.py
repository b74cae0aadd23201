"""How each pipeline parameter is read and checked: the command-line value first, then its
environment variable; an empty string counts as unset (what Tekton passes for an empty param).
A bad value raises ParameterError naming the parameter, the value and what is accepted.

Over 400 lines because it holds one short reader per parameter (about 35 of them); split by
topic, the one place where a value is checked would be scattered over several.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ParameterError
from .oci.reference import (
    ACCEPTED_FORMS,
    SCRATCH,
    ImageRef,
    LayoutRef,
    ReferenceError,
    RegistryRef,
    parse_reference,
)
from .param_table import (
    ENV_NAMES,
    MAX_GROUP_SIZE,
    MIN_GROUP_SIZE,
    PER_CHANNEL,
    SCHEME_BITS,
    SCHEME_DEFAULT_BITS,
    SCHEMES,
    SCHEMES_WITH_CALIBRATION,
    SCHEMES_WITH_GROUP_SIZE,
    SERVICE_ACCOUNT_TOKEN,
    Secret,
    default_of,
)
from .stages import STAGE_NAMES

_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def read_values(cli: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Every Params field's value from command-line values (None = not given) over `env`,
    each checked; raises ParameterError on the first bad one."""
    raw = _Raw(cli, env)
    workspace = _workspace(raw)
    model, model_is_local = _model(raw)
    scheme = _scheme(raw)
    values: dict[str, Any] = {
        "model": model,
        "model_is_local": model_is_local,
        "revision": _revision(raw),
        "allow_patterns": _allow_patterns(raw),
        "hf_token": _secret(env, "HUGGINGFACE_TOKEN", "HF_TOKEN"),
        "image": _image(raw, workspace),
        "base_image": _base_image(raw),
        "compress": _bool(raw, "compress"),
        "scheme": scheme,
        "bits": _bits(raw, scheme),
        "group_size": _group_size(raw, scheme),
        "dataset": _calibration_param(raw, scheme, "dataset", _dataset),
        "sequence_length": _calibration_param(raw, scheme, "sequence_length", _positive),
        "num_calibration_samples": _calibration_param(raw, scheme, "num_calibration_samples", _positive),
        "evaluate": _bool(raw, "evaluate"),
        "evaluate_dataset": _evaluate_dataset(raw),
        "max_perplexity_ratio": _ratio(raw, "max_perplexity_ratio"),
        "model_name": _model_name(raw, model, model_is_local),
        "model_version": _non_blank(raw, "model_version"),
        "registry_url": _url(raw, "registry_url"),
        "registry_api": _choice(raw, "registry_api", ("v1", "v1alpha3")),
        "registry_token": _registry_token(raw, env),
        "overwrite": _bool(raw, "overwrite"),
        "skip": _skip(raw),
        "overlap": _bool(raw, "overlap"),
        "follow_download": _bool(raw, "follow_download"),
        "delete_after_push": _delete_after_push(raw),
        "workspace": workspace,
        "authfile": _authfile(raw),
        "tls_verify": _bool(raw, "tls_verify"),
        "ca_bundle": _existing_file(raw, "ca_bundle"),
        "results_dir": _path(raw, "results_dir"),
        **_signing(raw, env),
    }
    return values


class _Raw:
    """Command-line value first, then the environment; blank strings count as unset."""

    def __init__(self, cli: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self._cli = cli
        self._env = env

    def get(self, field: str) -> Any:
        value = self._cli.get(field)
        if value is None or value == () or value == "":
            value = self._env.get(ENV_NAMES[field])
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    def given(self, field: str) -> bool:
        return self.get(field) is not None


def _fail(field: str, value: object, accepted: str) -> ParameterError:
    return ParameterError(ENV_NAMES[field], value, accepted)


def _workspace(raw: _Raw) -> Path:
    path = Path(raw.get("workspace") or default_of("workspace")).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise _fail("workspace", str(path), "a directory (it exists and is not one)")
    return path


def _model(raw: _Raw) -> tuple[str | None, bool]:
    value = raw.get("model")
    if value is None:
        return None, False
    path = Path(value).expanduser()
    if path.is_dir():
        return str(path.absolute()), True
    if value.startswith((".", "/", "~")) or os.sep in value.replace("/", "", 1):
        raise _fail("model", value, "a local directory that exists, or a Hub repo id org/name")
    if not _HUB_ID.match(value) or "--" in value or ".." in value:
        raise _fail(
            "model",
            value,
            "a Hub repo id org/name (letters, digits, - _ . ; at most 96 each) or a local directory",
        )
    return value, False


def _revision(raw: _Raw) -> str:
    value = raw.get("revision") or default_of("revision")
    if any(ch.isspace() for ch in value) or ".." in value:
        raise _fail("revision", value, "a branch, tag or commit sha without spaces or '..'")
    return value


def split_patterns(values: Any) -> tuple[str, ...]:
    """Comma-separated and/or repeated patterns -> one tuple, blanks dropped."""
    items = [values] if isinstance(values, str) else list(values)
    return tuple(p.strip() for item in items for p in item.split(",") if p.strip())


def _allow_patterns(raw: _Raw) -> tuple[str, ...]:
    value = raw.get("allow_patterns")
    if value is None:
        return default_of("allow_patterns")
    patterns = split_patterns(value)
    if not patterns:
        raise _fail("allow_patterns", value, "one or more glob patterns, comma-separated")
    return patterns


def _secret(env: Mapping[str, str], *names: str) -> Secret | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return Secret(value)
    return None


def _image(raw: _Raw, workspace: Path) -> str:
    value = raw.get("image")
    if value is None:
        return f"oci:{workspace / 'image'}:latest"
    ref = _reference(raw, "image", value)
    if isinstance(ref, RegistryRef) and ref.digest:
        raise _fail("image", value, "a destination with a tag or none, not a @digest")
    if isinstance(ref, LayoutRef):
        return str(LayoutRef(ref.path.expanduser().absolute(), ref.tag or "latest"))
    return str(ref)


def _base_image(raw: _Raw) -> str:
    value = raw.get("base_image")
    if value is None:
        return default_of("base_image")
    if value == SCRATCH:
        return SCRATCH
    ref = _reference(raw, "base_image", value)
    if isinstance(ref, LayoutRef):
        return str(LayoutRef(ref.path.expanduser().absolute(), ref.tag, ref.digest))
    return value


def _reference(raw: _Raw, field: str, value: str) -> ImageRef:
    try:
        return parse_reference(value)
    except ReferenceError as exc:
        raise _fail(field, value, f"{exc}; expected {ACCEPTED_FORMS}") from None


def _delete_after_push(raw: _Raw) -> bool:
    """Files deleted once pushed are gone for compress-model: the two exclude each other."""
    value = _bool(raw, "delete_after_push")
    if value and _bool(raw, "compress"):
        raise _fail(
            "delete_after_push", raw.get("delete_after_push"), "false when COMPRESS_MODEL is true (it needs every file)"
        )
    return value


def _bool(raw: _Raw, field: str) -> bool:
    value = raw.get(field)
    if value is None:
        return default_of(field)
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _fail(field, value, "true or false")


def _scheme(raw: _Raw) -> str:
    value = raw.get("scheme")
    if value is None:
        return default_of("scheme")
    normalised = value.lower().replace("_", "-")
    if normalised not in SCHEMES:
        raise _fail("scheme", value, f"one of {', '.join(SCHEMES)}")
    return normalised


def _positive(raw: _Raw, field: str) -> int:
    value = raw.get(field)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _fail(field, value, "a positive whole number") from None
    if number <= 0:
        raise _fail(field, value, "a positive whole number")
    return number


def _bits(raw: _Raw, scheme: str) -> int:
    if not raw.given("bits"):
        return SCHEME_DEFAULT_BITS[scheme]
    bits = _positive(raw, "bits")
    allowed = SCHEME_BITS[scheme]
    if bits not in allowed:
        choices = " or ".join(str(b) for b in allowed)
        raise _fail("bits", raw.get("bits"), f"{choices} for scheme {scheme}")
    return bits


def _group_size(raw: _Raw, scheme: str) -> int | None:
    value = raw.get("group_size")
    if value is None:
        return default_of("group_size") if scheme in SCHEMES_WITH_GROUP_SIZE else None
    if scheme not in SCHEMES_WITH_GROUP_SIZE:
        raise _fail("group_size", value, f"not set: scheme {scheme} quantizes per channel")
    if str(value).lower() in (PER_CHANNEL, "per-channel", "-1"):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if not (MIN_GROUP_SIZE <= size <= MAX_GROUP_SIZE and size & (size - 1) == 0):
        raise _fail(
            "group_size",
            value,
            f"a positive whole number, a power of two from {MIN_GROUP_SIZE} to {MAX_GROUP_SIZE} (vLLM's "
            "kernels serve 32, 64 and 128), or 'channel' for one scale per output channel",
        )
    return size


def _calibration_param(raw: _Raw, scheme: str, field: str, parse: Any) -> Any:
    if not raw.given(field):
        return default_of(field)
    if scheme not in SCHEMES_WITH_CALIBRATION and not _bool(raw, "evaluate"):
        raise _fail(
            field, raw.get(field), f"not set: scheme {scheme} needs no calibration data (only --evaluate uses it)"
        )
    return parse(raw, field)


def _dataset(raw: _Raw, field: str) -> str:
    value = raw.get(field)
    path = Path(value).expanduser()
    if path.suffix.lower() in (".jsonl", ".json", ".txt", ".parquet") or value.startswith(("/", ".")):
        if not path.is_file():
            raise _fail(field, value, "c4, a Hub dataset id, or an existing .jsonl/.json/.txt/.parquet file")
        return str(path.absolute())
    if value != "c4" and not _HUB_ID.match(value):
        raise _fail(
            field,
            value,
            "c4, a Hub dataset id org/name, or a local .jsonl/.json/.txt/.parquet file",
        )
    return value


def _evaluate_dataset(raw: _Raw) -> str | None:
    if not raw.given("evaluate_dataset"):
        return None
    if not _bool(raw, "evaluate"):
        value = raw.get("evaluate_dataset")
        raise _fail("evaluate_dataset", value, "not set: only --evaluate (EVALUATE=true) reads it")
    return _dataset(raw, "evaluate_dataset")


def _ratio(raw: _Raw, field: str) -> float:
    value = raw.get(field)
    if value is None:
        return default_of(field)
    accepted = "a number of at least 1 (the perplexity after compression / before), e.g. 1.5"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(field, value, accepted) from None
    if not math.isfinite(number) or number < 1:
        raise _fail(field, value, accepted)
    return number


def _model_name(raw: _Raw, model: str | None, model_is_local: bool) -> str | None:
    value = raw.get("model_name")
    if value is not None:
        return value
    if model is None:
        return None
    return Path(model).name if model_is_local else model.rsplit("/", 1)[-1]


def _non_blank(raw: _Raw, field: str) -> str:
    return raw.get(field) or default_of(field)


def _url(raw: _Raw, field: str) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    match = re.match(r"^(https?)://([^/\s?#]+)(/[^\s]*)?$", value)
    if match and "@" in match.group(2):
        raise _fail(field, "<redacted>", "a URL without user:password@; give the token in MODEL_REGISTRY_TOKEN")
    if not match:
        raise _fail(
            field,
            value,
            "an http:// or https:// URL with a host, e.g. https://registry.example.com",
        )
    return value.rstrip("/")


def _choice(raw: _Raw, field: str, choices: tuple[str, ...]) -> str | None:
    value = raw.get(field)
    if value is None or value in choices:
        return value
    raise _fail(field, value, f"one of {', '.join(choices)}")


def _registry_token(raw: _Raw, env: Mapping[str, str]) -> Secret | None:
    token = _secret(env, "MODEL_REGISTRY_TOKEN")
    if token is not None:
        return token
    path_value = raw.get("registry_token_path")
    if path_value is not None:
        path = Path(path_value).expanduser()
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise _fail("registry_token_path", path_value, f"a readable token file ({exc.strerror})") from None
        if not text:
            raise _fail("registry_token_path", path_value, "a file holding a token (it is empty)")
        return Secret(text)
    if SERVICE_ACCOUNT_TOKEN.is_file():
        try:
            text = SERVICE_ACCOUNT_TOKEN.read_text().strip()
        except OSError:
            return None
        return Secret(text) if text else None
    return None


def _signing(raw: _Raw, env: Mapping[str, str]) -> dict[str, Any]:
    """SIGN_KEY (a file; its content is checked by preflight, where cryptography is needed) or
    SIGN_KEYLESS with its Sigstore options; never both."""
    key = _existing_file(raw, "sign_key")
    password = _secret(env, "SIGN_KEY_PASSWORD")
    keyless = _bool(raw, "sign_keyless")
    if key is not None and keyless:
        raise _fail("sign_keyless", raw.get("sign_keyless"), "false when SIGN_KEY is set (one way of signing)")
    if password is not None and key is None:
        raise ParameterError("SIGN_KEY_PASSWORD", "<redacted>", "set only with SIGN_KEY (the key it decrypts)")
    for field in ("sigstore_trust_config", "sigstore_identity_token_path"):
        if raw.given(field) and not keyless:
            raise _fail(field, raw.get(field), "set only with SIGN_KEYLESS=true")
    token = _existing_file(raw, "sigstore_identity_token_path")
    if keyless and token is None and SERVICE_ACCOUNT_TOKEN.is_file():
        token = SERVICE_ACCOUNT_TOKEN  # none at all: refused where build-and-push runs (preflight)
    return {
        "sign_key": key,
        "sign_key_password": password,
        "sign_keyless": keyless,
        "sigstore_trust_config": _existing_file(raw, "sigstore_trust_config"),
        "sigstore_identity_token_path": token,
    }


def _skip(raw: _Raw) -> tuple[str, ...]:
    value = raw.get("skip")
    if value is None:
        return default_of("skip")
    words = split_patterns(value)
    for word in words:
        if word not in STAGE_NAMES:
            raise _fail(
                "skip",
                value,
                f"comma-separated stage names from: {', '.join(STAGE_NAMES)} (not {word!r})",
            )
    return words


def _path(raw: _Raw, field: str) -> Path | None:
    value = raw.get(field)
    return None if value is None else Path(value).expanduser().absolute()


def _authfile(raw: _Raw) -> Path | None:
    """A credentials file must be a JSON object (docker config.json / containers auth.json)."""
    path = _existing_file(raw, "authfile")
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail("authfile", str(path), f"a readable JSON credentials file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise _fail("authfile", str(path), 'a JSON object like {"auths": {...}}')
    return path


def _existing_file(raw: _Raw, field: str) -> Path | None:
    path = _path(raw, field)
    if path is not None and not path.is_file():
        raise _fail(field, str(path), "an existing file")
    return path
