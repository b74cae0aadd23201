"""Compression parameters: what each scheme accepts, checked before anything runs (no torch needed)."""

from __future__ import annotations

import pytest

from modelcar.compression.extra import MissingExtra, check_installed
from modelcar.compression.settings import Settings
from modelcar.errors import ParameterError
from modelcar.params import Params, load_params


def params(**env: str) -> Params:
    return load_params({}, {"MODELCAR_WORKSPACE": "/tmp/modelcar-test-ws", **env})


@pytest.mark.parametrize(("value", "expected"), [("32", 32), ("64", 64), ("128", 128), ("1024", 1024)])
def test_group_sizes_that_kernels_serve_are_accepted(value: str, expected: int) -> None:
    assert params(GROUP_SIZE=value).group_size == expected


@pytest.mark.parametrize("value", ["channel", "per-channel", "-1", "CHANNEL"])
def test_per_channel_spellings(value: str) -> None:
    assert params(GROUP_SIZE=value).group_size is None


@pytest.mark.parametrize("value", ["100", "8", "2048", "0", "-64", "abc", "12.5"])
def test_group_sizes_that_are_not_powers_of_two_in_range_are_refused(value: str) -> None:
    with pytest.raises(ParameterError) as caught:
        params(GROUP_SIZE=value)
    assert caught.value.name == "GROUP_SIZE"
    assert "power of two from 16 to 1024" in str(caught.value) and "'channel'" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "name", "accepted"),
    [
        ({"BITS": "3"}, "BITS", "4 or 8 for scheme gptq"),
        ({"BITS": "16"}, "BITS", "4 or 8"),
        ({"SCHEME": "w8a8", "BITS": "4"}, "BITS", "8 for scheme w8a8"),
        ({"SCHEME": "fp8-dynamic", "BITS": "4"}, "BITS", "8 for scheme fp8-dynamic"),
        ({"SCHEME": "fp8-dynamic", "GROUP_SIZE": "64"}, "GROUP_SIZE", "per channel"),
        ({"SCHEME": "w8a8", "GROUP_SIZE": "channel"}, "GROUP_SIZE", "per channel"),
        ({"SCHEME": "fp8-dynamic", "DATASET": "c4"}, "DATASET", "needs no calibration data"),
        ({"SCHEME": "awq"}, "SCHEME", "gptq, w8a8, fp8-dynamic"),
    ],
)
def test_parameters_a_scheme_does_not_take(env: dict[str, str], name: str, accepted: str) -> None:
    with pytest.raises(ParameterError) as caught:
        params(**env)
    assert caught.value.name == name
    assert accepted in str(caught.value)


def test_fp8_dynamic_takes_a_dataset_only_to_evaluate() -> None:
    p = params(SCHEME="fp8-dynamic", EVALUATE="true", DATASET="c4", NUM_CALIBRATION_SAMPLES="16")
    settings = Settings.from_params(p)
    assert not settings.calibrates
    assert (settings.dataset, settings.num_calibration_samples, settings.evaluation_samples) == ("c4", 16, 2)
    assert settings.quantization_key()["dataset"] is None  # evaluation data does not change the model


def test_settings_follow_the_parameters() -> None:
    settings = Settings.from_params(params(BITS="8", GROUP_SIZE="channel", SEQUENCE_LENGTH="256"))
    assert (settings.scheme, settings.bits, settings.group_size, settings.label) == ("gptq", 8, None, "W8A16")
    assert settings.sequence_length == 256 and settings.dataset == "c4"
    assert "per channel" in settings.describe()
    fp8 = Settings.from_params(params(SCHEME="fp8-dynamic"))
    assert (fp8.label, fp8.dataset, fp8.group_size) == ("FP8_DYNAMIC", None, None)
    assert Settings.from_params(params(SCHEME="w8a8")).label == "W8A8"


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llmcompressor" else real(name, *a)
    )
    with pytest.raises(MissingExtra) as caught:
        check_installed()
    assert "llmcompressor" in str(caught.value) and "modelcar[compress]" in str(caught.value)
    assert caught.value.exit_code == 2
