from pathlib import Path

import pytest

from modelcar.errors import ParameterError
from modelcar.param_table import DEFAULT_ALLOW_PATTERNS, DEFAULT_BASE_IMAGE
from modelcar.params import load_params


def params(cli: dict | None = None, **env: str):
    return load_params(cli or {}, env)


def test_defaults(tmp_path: Path) -> None:
    p = params(HUGGINGFACE_MODEL="ibm-granite/granite-3.2-2b-instruct", MODELCAR_WORKSPACE=str(tmp_path))
    assert p.model == "ibm-granite/granite-3.2-2b-instruct" and not p.model_is_local
    assert p.revision == "main"
    assert p.allow_patterns == DEFAULT_ALLOW_PATTERNS
    assert p.image == f"oci:{tmp_path / 'image'}:latest"
    assert p.base_image == DEFAULT_BASE_IMAGE
    assert (p.compress, p.scheme, p.bits, p.group_size) == (False, "gptq", 4, 128)
    assert (p.dataset, p.sequence_length, p.num_calibration_samples) == ("c4", 2048, 512)
    assert p.model_name == "granite-3.2-2b-instruct"
    assert p.model_version == "1.0.0"
    assert p.registry_url is None and p.registry_api is None
    assert p.skip == () and p.tls_verify is True


def test_command_line_wins_over_environment_and_blank_means_unset() -> None:
    p = params({"revision": "v2", "bits": None}, HUGGINGFACE_REVISION="v1", BITS="", SKIP_TASKS=" ")
    assert p.revision == "v2" and p.bits == 4 and p.skip == ()


def test_patterns_comma_separated_and_repeated() -> None:
    p = params({"allow_patterns": ("*.json, *.txt", "sub/*")})
    assert p.allow_patterns == ("*.json", "*.txt", "sub/*")
    assert params(HUGGINGFACE_ALLOW_PATTERNS="*.safetensors,,config.json").allow_patterns == (
        "*.safetensors",
        "config.json",
    )


def test_tokens_are_secret_and_fall_back() -> None:
    p = params(HF_TOKEN="hf_abc", HUGGINGFACE_TOKEN="")
    assert p.hf_token is not None and p.hf_token.get_secret_value() == "hf_abc"
    assert "hf_abc" not in repr(p) and "hf_abc" not in str(p.public_view())
    assert params(HUGGINGFACE_TOKEN="", HF_TOKEN="").hf_token is None
    assert params(HUGGINGFACE_TOKEN="a", HF_TOKEN="b").hf_token.get_secret_value() == "a"


def test_registry_token_from_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    p = params(MODEL_REGISTRY_TOKEN_PATH=str(token_file))
    assert p.registry_token.get_secret_value() == "s3cret"
    assert (
        params(
            MODEL_REGISTRY_TOKEN="direct", MODEL_REGISTRY_TOKEN_PATH=str(token_file)
        ).registry_token.get_secret_value()
        == "direct"
    )


def test_local_model_directory(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    p = params(HUGGINGFACE_MODEL=str(model))
    assert p.model_is_local and p.model == str(model) and p.model_name == "my-model"


def test_scheme_specific_defaults() -> None:
    p = params(SCHEME="w8a8")
    assert (p.bits, p.group_size) == (8, None)
    p = params(SCHEME="FP8_DYNAMIC")
    assert p.scheme == "fp8-dynamic"
    assert params(GROUP_SIZE="channel").group_size is None
    assert params(BITS="8", GROUP_SIZE="64").group_size == 64


def test_oci_layout_destination_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert params(OCI_IMAGE="oci:out").image == f"oci:{tmp_path / 'out'}:latest"
    assert params(OCI_IMAGE="oci:out:v1").image == f"oci:{tmp_path / 'out'}:v1"


BAD = [
    ("OCI_IMAGE", "quay.io/Me/x", "image reference"),
    ("OCI_IMAGE", "quay.io/me/x@sha256:" + "a" * 64, "not a @digest"),
    ("BASE_IMAGE", "not a ref", "image reference"),
    ("SKIP_TASKS", "download-model,bogus", "stage names"),
    ("BITS", "3", "4 or 8"),
    ("BITS", "four", "positive whole number"),
    ("GROUP_SIZE", "0", "positive whole number"),
    ("SEQUENCE_LENGTH", "-5", "positive whole number"),
    ("NUM_CALIBRATION_SAMPLES", "1.5", "positive whole number"),
    ("COMPRESS_MODEL", "maybe", "true or false"),
    ("TLS_VERIFY", "yes please", "true or false"),
    ("MODEL_REGISTRY_URL", "registry.example.com", "http:// or https://"),
    ("MODEL_REGISTRY_URL", "ftp://registry", "http:// or https://"),
    ("MODEL_REGISTRY_API", "v2", "v1, v1alpha3"),
    ("SCHEME", "awq", "gptq"),
    ("HUGGINGFACE_MODEL", "./does-not-exist", "local directory"),
    ("HUGGINGFACE_MODEL", "a/b/c", "Hub repo id"),
    ("HUGGINGFACE_MODEL", "org/na me", "Hub repo id"),
    ("HUGGINGFACE_REVISION", "a b", "without spaces"),
    ("DATASET", "/no/such/file.jsonl", "existing"),
    ("DATASET", "not a dataset!", "Hub dataset id"),
    ("REGISTRY_AUTH_FILE", "/no/such/auth.json", "existing file"),
    ("CA_BUNDLE", "/no/such/ca.pem", "existing file"),
    ("MODEL_REGISTRY_TOKEN_PATH", "/no/such/token", "readable token file"),
]


@pytest.mark.parametrize(("name", "value", "accepted"), BAD)
def test_bad_values_name_the_parameter_value_and_what_is_accepted(name: str, value: str, accepted: str) -> None:
    with pytest.raises(ParameterError) as caught:
        params(**{name: value})
    message = str(caught.value)
    assert message.startswith(f"invalid {name}=")
    assert repr(value) in message or value in message
    assert accepted in message


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SCHEME": "w8a8", "BITS": "4"}, "BITS"),
        ({"SCHEME": "w8a8", "GROUP_SIZE": "128"}, "GROUP_SIZE"),
        ({"SCHEME": "fp8-dynamic", "DATASET": "c4"}, "DATASET"),
        ({"SCHEME": "fp8-dynamic", "SEQUENCE_LENGTH": "512"}, "SEQUENCE_LENGTH"),
        ({"SCHEME": "fp8-dynamic", "NUM_CALIBRATION_SAMPLES": "8"}, "NUM_CALIBRATION_SAMPLES"),
    ],
)
def test_parameters_a_scheme_does_not_take_are_refused(env: dict, name: str) -> None:
    with pytest.raises(ParameterError) as caught:
        params(**env)
    assert caught.value.name == name


def test_workspace_must_be_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ParameterError, match="MODELCAR_WORKSPACE"):
        params(MODELCAR_WORKSPACE=str(file))
