"""The quality gate of --evaluate (MAX_PERPLEXITY_RATIO), EVALUATE_DATASET, and what a measured
compression leaves in run.json, the model directory (recipe.yaml) and the Model Registry.

The gate is triggered deterministically with a tiny Llama trained for a few steps and then given
one outlier input column per quantized layer, fed by a near-zero norm weight: harmless at full
precision, but int4 scales sized for the outlier round every other weight of those layers to
zero, so the compressed model loses its attention and MLP (perplexity about 5x the original's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcar.compression import gate
from modelcar.compression.settings import Settings
from modelcar.compression.staging import DONE, PARTIAL, STAMP
from modelcar.errors import ModelcarError, ParameterError, StageFailed
from modelcar.files import inventory
from modelcar.modelregistry.describe import registration_for_run
from modelcar.params import load_params
from modelcar.pipeline import run_pipeline
from modelcar.record import RunRecord
from modelcar.stages import BUILD_PUSH, COMPRESS, STAGE_NAMES
from modelcar.ui import UI
from tests.helpers.tiny_llama import build_tiny_llama, sentences, write_text_dataset

SAMPLES = "16"
LENGTH = "64"
TRAINING_STEPS = 40
OUTLIER, NEAR_ZERO = 50.0, 1e-3


def params(**env: str) -> Any:
    return load_params({}, {"MODELCAR_WORKSPACE": "/tmp/modelcar-test-ws", **env})


# -- parameters (no torch) ------------------------------------------------------------------


def test_defaults() -> None:
    loaded = params()
    assert (loaded.max_perplexity_ratio, loaded.evaluate_dataset) == (1.5, None)
    settings = Settings.from_params(params(EVALUATE="true"))
    assert settings.evaluation_source == "c4 (held-out samples, not used for calibration)"


@pytest.mark.parametrize(("value", "expected"), [("1", 1.0), ("1.05", 1.05), (" 2 ", 2.0), ("100", 100.0)])
def test_max_perplexity_ratio_accepted(value: str, expected: float) -> None:
    assert params(MAX_PERPLEXITY_RATIO=value).max_perplexity_ratio == expected


@pytest.mark.parametrize("value", ["0.99", "0", "-1", "abc", "inf", "nan", "1,5"])
def test_max_perplexity_ratio_refused(value: str) -> None:
    with pytest.raises(ParameterError) as caught:
        params(MAX_PERPLEXITY_RATIO=value)
    assert caught.value.name == "MAX_PERPLEXITY_RATIO" and caught.value.exit_code == 2
    assert "a number of at least 1" in str(caught.value)


def test_evaluate_dataset_needs_evaluate_and_is_checked_like_dataset(tmp_path: Path) -> None:
    text = write_text_dataset(tmp_path / "eval.txt", 4)
    with pytest.raises(ParameterError, match=r"EVALUATE_DATASET.*only --evaluate"):
        params(EVALUATE_DATASET=str(text))
    with pytest.raises(ParameterError, match=r"EVALUATE_DATASET.*existing .jsonl/.json/.txt/.parquet"):
        params(EVALUATE="true", EVALUATE_DATASET=str(tmp_path / "missing.txt"))
    assert params(EVALUATE="true", EVALUATE_DATASET="wikitext").evaluate_dataset == "wikitext"
    settings = Settings.from_params(params(EVALUATE="true", EVALUATE_DATASET=str(text)))
    assert settings.evaluation_source == str(text)
    # naming DATASET again means its held-out samples, never the calibration samples themselves
    same = Settings.from_params(params(EVALUATE="true", DATASET=str(text), EVALUATE_DATASET=str(text)))
    assert same.evaluate_dataset is None and "held-out" in (same.evaluation_source or "")


def test_gate_settings_do_not_change_what_counts_as_the_same_compression() -> None:
    plain = Settings.from_params(params())
    gated = Settings.from_params(params(EVALUATE="true", EVALUATE_DATASET="wikitext", MAX_PERPLEXITY_RATIO="1.1"))
    assert plain.quantization_key() == gated.quantization_key()


def test_the_cli_refuses_a_bad_ratio_before_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modelcar.cli import main

    result = CliRunner().invoke(
        main, ["validate", "--model", "org/m", "-w", str(tmp_path / "ws"), "--max-perplexity-ratio", "0.5"]
    )
    assert result.exit_code == 2 and "MAX_PERPLEXITY_RATIO" in result.output
    assert not (tmp_path / "ws").exists()


# -- the gate's verdict and message ---------------------------------------------------------


def evaluation(before: Any, after: Any) -> dict[str, Any]:
    return {"perplexity_before": before, "perplexity_after": after, "samples": 4, "dataset": "lee.txt"}


def test_gate_verdicts() -> None:
    settings = Settings.from_params(params(EVALUATE="true"))
    assert gate.passes(evaluation(10.0, 15.0), settings)  # exactly the ratio passes
    assert not gate.passes(evaluation(10.0, 15.01), settings)
    for broken in ("inf", "nan", None, float("nan")):
        assert not gate.passes(evaluation(10.0, broken), settings)


def test_gate_message_gives_both_numbers_and_other_settings() -> None:
    gptq = Settings.from_params(params(EVALUATE="true", NUM_CALIBRATION_SAMPLES="32"))
    message = str(gate.failure(evaluation(13.62, 320652166737.0), gptq))
    assert "3.207e+11" in message and "13.62" in message and "MAX_PERPLEXITY_RATIO=1.5" in message
    assert "BITS=8 (GPTQ W8A16)" in message and "more NUM_CALIBRATION_SAMPLES (now 32)" in message
    assert "model/" in message and "nothing is pushed or registered" in message
    w8a8 = Settings.from_params(params(EVALUATE="true", SCHEME="w8a8"))
    assert "SCHEME=gptq BITS=8" in str(gate.failure(evaluation(10.0, "inf"), w8a8))


def test_evaluation_goes_to_the_model_registry(tmp_path: Path) -> None:
    compression = {
        "enabled": True,
        "scheme": "gptq",
        "bits": 4,
        "group_size": 128,
        "evaluation": {"perplexity_before": 19.69, "perplexity_after": 25.58, "dataset": "wikitext (held-out)"},
    }
    image = {"reference": "quay.io/org/m:1.0.0", "digest": "sha256:" + "a" * 64}
    wanted = registration_for_run(
        model_name="m", model_version="1", model_dir=tmp_path, record={"compression": compression, "image": image}
    )
    props = wanted.version_properties
    assert (props["perplexity_original"], props["perplexity_compressed"]) == (19.69, 25.58)
    assert props["evaluation_dataset"] == "wikitext (held-out)"
    assert {"perplexity_original", "perplexity_compressed", "evaluation_dataset"} <= wanted.managed_properties
    plain = registration_for_run(
        model_name="m", model_version="1", model_dir=tmp_path, record={"compression": {"enabled": True}, "image": image}
    )
    assert "perplexity_original" not in plain.version_properties


# -- for real, on a damaged tiny Llama --------------------------------------------------------


def build_damaged_llama(directory: Path) -> Path:
    """A tiny Llama trained briefly on the calibration text, then made fragile under int4."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_llama(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    torch.manual_seed(0)
    batch = tokenizer(sentences(32, seed=3), truncation=True, max_length=int(LENGTH), return_tensors="pt", padding=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(TRAINING_STEPS):
        ids = batch["input_ids"][(step * 8) % 32 : (step * 8) % 32 + 8]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[0] = NEAR_ZERO
            layer.post_attention_layernorm.weight[0] = NEAR_ZERO
            attention, mlp = layer.self_attn, layer.mlp
            for linear in (attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj):
                linear.weight[:, 0] = OUTLIER
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def damaged_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("llmcompressor")
    return build_damaged_llama(tmp_path_factory.mktemp("damaged-llama") / "model")


@pytest.fixture(scope="session")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Calibration text, and another file of the same kind for EVALUATE_DATASET."""
    root = tmp_path_factory.mktemp("gate-text")
    return write_text_dataset(root / "calibration.txt", 64, seed=3), write_text_dataset(root / "eval.txt", 8, seed=9)


@pytest.fixture
def damaged_workspace(tmp_path: Path, damaged_llama: Path) -> Path:
    workspace = tmp_path / "ws"
    shutil.copytree(damaged_llama, workspace / "model")
    return workspace


def compress(workspace: Path, dataset: Path, stages: tuple[str, ...] = (COMPRESS,), **values: Any) -> RunRecord:
    cli = {
        "workspace": str(workspace),
        "dataset": str(dataset),
        "num_calibration_samples": SAMPLES,
        "sequence_length": LENGTH,
        "evaluate": "true",
        **values,
    }
    return run_pipeline(load_params(cli, {}), UI(quiet=True), stages, explicit=stages == (COMPRESS,))


def saved(workspace: Path) -> dict[str, Any]:
    return json.loads((workspace / "run.json").read_text())


def assert_original_in_place(workspace: Path, original: Path) -> None:
    model = workspace / "model"
    assert {f["path"]: f["sha256"] for f in inventory(model)} == {f["path"]: f["sha256"] for f in inventory(original)}
    assert not (workspace / "model-original").exists() and not (model / STAMP).exists()
    assert not (workspace / PARTIAL).exists() and not (workspace / DONE).exists()


def expect_gate_failure(workspace: Path, dataset: Path, **values: Any) -> str:
    with pytest.raises(StageFailed) as caught:
        compress(workspace, dataset, **values)
    assert caught.value.exit_code == 1
    return str(caught.value)


@pytest.mark.compress
@pytest.mark.usefixtures("hub_offline")
def test_gate_fails_the_stage_and_keeps_the_original(
    damaged_workspace: Path, damaged_llama: Path, text_files: tuple[Path, Path]
) -> None:
    message = expect_gate_failure(damaged_workspace, text_files[0], group_size="channel")
    assert message.startswith("stage compress-model failed: the compressed model's perplexity is ")
    assert "MAX_PERPLEXITY_RATIO=1.5" in message and "BITS=8 (GPTQ W8A16)" in message
    assert_original_in_place(damaged_workspace, damaged_llama)
    record = saved(damaged_workspace)
    assert record["stages"][COMPRESS]["status"] == "failed"
    assert record["compression"]["enabled"] is False
    measured = record["compression"]["rejected"]["evaluation"]
    assert measured["perplexity_after"] / measured["perplexity_before"] > 2  # far past the gate, not near it
    assert f"{measured['perplexity_before']:.6g}" in message and f"{measured['perplexity_after']:.6g}" in message
    assert measured["held_out"] is True and measured["max_perplexity_ratio"] == 1.5
    assert record["files"] == inventory(damaged_workspace / "model")


@pytest.mark.compress
@pytest.mark.usefixtures("hub_offline")
def test_gate_after_an_earlier_compression_puts_the_original_back(
    damaged_workspace: Path, damaged_llama: Path, text_files: tuple[Path, Path]
) -> None:
    """A compression that passed a loose gate is rejected by a strict one: model/ is the original again."""
    passed = compress(damaged_workspace, text_files[0], group_size="channel", max_perplexity_ratio="1000")
    assert passed.get("compression")["enabled"] is True and (damaged_workspace / "model-original").is_dir()
    first = passed.get("compression")["evaluation"]
    message = expect_gate_failure(damaged_workspace, text_files[0], group_size="channel")
    assert f"{first['perplexity_after']:.6g}" in message  # the same compression, judged again, not redone
    assert_original_in_place(damaged_workspace, damaged_llama)


@pytest.mark.compress
@pytest.mark.usefixtures("hub_offline")
def test_modelcar_run_stops_at_the_gate(tmp_path: Path, damaged_llama: Path, text_files: tuple[Path, Path]) -> None:
    workspace = tmp_path / "ws"
    with pytest.raises(StageFailed):
        compress(workspace, text_files[0], STAGE_NAMES, model=str(damaged_llama), compress="true", group_size="channel")
    record = saved(workspace)
    assert record["stages"][COMPRESS]["status"] == "failed" and BUILD_PUSH not in record["stages"]
    assert "image" not in record and not (workspace / "image").exists()
    assert_original_in_place(workspace, damaged_llama)


@pytest.mark.compress
@pytest.mark.usefixtures("hub_offline")
def test_evaluate_dataset_and_recipe_in_the_model(
    damaged_workspace: Path, damaged_llama: Path, text_files: tuple[Path, Path]
) -> None:
    calibration, other = text_files
    record = compress(
        damaged_workspace, calibration, bits="8", evaluate_dataset=str(other), max_perplexity_ratio="1000"
    )
    section = record.get("compression")
    measured = section["evaluation"]
    assert (measured["dataset"], measured["held_out"]) == (str(other), False)
    assert measured["samples"] == 2 and measured["ratio"] == round(
        measured["perplexity_after"] / measured["perplexity_before"], 4
    )
    assert section["calibration_samples_used"] == int(SAMPLES)  # none held out: the text is elsewhere
    # recipe.yaml ships in the ModelCar: it is in model/ and in the files build-and-push packs
    recipe = damaged_workspace / "model" / "recipe.yaml"
    assert "recipe.yaml" in {f["path"] for f in record.get("files")}
    text = recipe.read_text()
    modifier = yaml.safe_load(text)["default_stage"]["default_modifiers"]["GPTQModifier"]
    args = modifier["config_groups"]["group_0"]["weights"]
    # plain values (actorder too, not a python/object tag): any YAML reader, and LLM Compressor, load it
    assert (args["num_bits"], args["strategy"], args["group_size"], args["actorder"]) == (8, "group", 128, "static")
    from llmcompressor.recipe import Recipe

    assert [type(m).__name__ for m in Recipe.create_instance(str(recipe)).modifiers] == ["GPTQModifier"]
    registered = registration_for_run(
        model_name="m",
        model_version="1",
        model_dir=damaged_workspace / "model",
        record={**saved(damaged_workspace), "image": {"reference": "quay.io/o/m:1", "digest": "sha256:" + "b" * 64}},
    )
    props = registered.version_properties
    assert props["evaluation_dataset"] == str(other)
    assert props["perplexity_original"] == measured["perplexity_before"]
    assert props["perplexity_compressed"] == measured["perplexity_after"]


@pytest.mark.compress
@pytest.mark.usefixtures("hub_offline")
def test_held_out_samples_are_never_calibration_samples(damaged_workspace: Path, tmp_path: Path) -> None:
    """A text repeated through the dataset cannot be measured on: it is also calibrated on."""
    repeated = tmp_path / "repeated.txt"
    repeated.write_text((sentences(1, seed=5)[0] + "\n") * 40)
    with pytest.raises(ModelcarError, match=r"no usable sample .* that calibration does not also use") as caught:
        compress(damaged_workspace, repeated)
    assert caught.value.exit_code == 2
