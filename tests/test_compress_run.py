"""The compress-model stage for real, on a tiny Llama on the CPU (or the GPU where there is one).

Each compressed model is checked in config.json's quantization_config and by loading it with
transformers and generating a few tokens.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelcar.compression.staging import DONE, PARTIAL, STAMP
from modelcar.errors import ModelcarError
from modelcar.files import inventory
from modelcar.params import load_params
from modelcar.pipeline import run_pipeline
from modelcar.record import RunRecord
from modelcar.stages import COMPRESS
from modelcar.ui import UI

pytestmark = [pytest.mark.compress, pytest.mark.usefixtures("hub_offline")]

SAMPLES = "8"
LENGTH = "64"


def compress(workspace: Path, **values: Any) -> RunRecord:
    """`modelcar compress` in this process: parameters, workspace lock, run record and all."""
    cli = {"workspace": str(workspace), **{k: v for k, v in values.items() if v is not None}}
    params = load_params(cli, {})
    return run_pipeline(params, UI(quiet=True), (COMPRESS,), explicit=True)


def compress_gptq(workspace: Path, dataset: Path, **values: Any) -> RunRecord:
    return compress(workspace, dataset=str(dataset), num_calibration_samples=SAMPLES, sequence_length=LENGTH, **values)


def quantization_config(model_dir: Path) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text())
    qconfig = config["quantization_config"]
    assert qconfig["quant_method"] == "compressed-tensors" and qconfig["quantization_status"] == "compressed"
    assert qconfig["ignore"] == ["lm_head"]
    return qconfig


def generate(model_dir: Path, tokens: int = 4) -> list[int]:
    """Loads the compressed model with plain transformers and generates greedily."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer("the model", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + tokens
    return output[0].tolist()


def assert_swapped(workspace: Path, original: Path) -> None:
    """model-original is the untouched original; no staging directory is left behind."""
    kept = {f["path"]: f["sha256"] for f in inventory(workspace / "model-original") if f["path"] != STAMP}
    assert kept == {f["path"]: f["sha256"] for f in inventory(original)}
    assert not (workspace / PARTIAL).exists() and not (workspace / DONE).exists()


def test_gptq_w4a16_group_128_with_evaluation(model_workspace: Path, tiny_llama: Path, calibration_txt: Path) -> None:
    record = compress_gptq(model_workspace, calibration_txt, evaluate="true")
    model = model_workspace / "model"
    weights = quantization_config(model)["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["strategy"], weights["type"]) == (
        4,
        128,
        "group",
        "int",
    )
    assert weights["symmetric"] is True
    assert (model / "recipe.yaml").is_file() and "GPTQModifier" in (model / "recipe.yaml").read_text()
    for name in ("tokenizer.json", "tokenizer_config.json"):  # copied as they were
        assert (model / name).read_bytes() == (tiny_llama / name).read_bytes()
    assert_swapped(model_workspace, tiny_llama)
    generate(model)

    section = record.get("compression")
    assert section["enabled"] is True
    assert {k: section[k] for k in ("scheme", "preset", "bits", "group_size", "format")} == {
        "scheme": "gptq",
        "preset": "W4A16",
        "bits": 4,
        "group_size": 128,
        "format": "pack-quantized",
    }
    assert section["dataset"] == str(calibration_txt)
    assert (section["sequence_length"], section["num_calibration_samples"]) == (64, 8)
    assert section["calibration_samples_used"] == 8
    assert 0 < section["bytes_after"] < section["bytes_before"]
    assert section["seconds"] > 0
    assert section["device"] == "cpu" or section["device"].startswith("cuda")
    evaluation = section["evaluation"]
    assert evaluation["metric"] == "perplexity" and evaluation["samples"] == 1 and evaluation["tokens"] > 0
    for key in ("perplexity_before", "perplexity_after"):
        assert math.isfinite(evaluation[key]) and evaluation[key] > 1
    assert record.get("files") == inventory(model)
    saved = json.loads((model_workspace / "run.json").read_text())
    assert saved["compression"] == section and saved["stages"][COMPRESS]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("bits", "group_size", "strategy", "expected_group"),
    [("8", "channel", "channel", None), ("4", "64", "group", 64)],
    ids=["w8a16-channel", "w4a16-g64"],
)
def test_gptq_bits_and_group_sizes(
    model_workspace: Path,
    calibration_txt: Path,
    bits: str,
    group_size: str,
    strategy: str,
    expected_group: int | None,
) -> None:
    record = compress_gptq(model_workspace, calibration_txt, bits=bits, group_size=group_size)
    weights = quantization_config(model_workspace / "model")["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["strategy"], weights["group_size"]) == (int(bits), strategy, expected_group)
    section = record.get("compression")
    assert (section["bits"], section["group_size"], section["preset"]) == (int(bits), expected_group, f"W{bits}A16")
    generate(model_workspace / "model")


def test_fp8_dynamic_needs_no_calibration_data(model_workspace: Path, tiny_llama: Path) -> None:
    record = compress(model_workspace, scheme="fp8-dynamic")
    qconfig = quantization_config(model_workspace / "model")
    group = qconfig["config_groups"]["group_0"]
    assert (group["weights"]["type"], group["weights"]["num_bits"], qconfig["format"]) == (
        "float",
        8,
        "float-quantized",
    )
    assert group["input_activations"]["dynamic"] is True
    section = record.get("compression")
    assert (section["scheme"], section["dataset"], section["calibration_samples_used"]) == ("fp8-dynamic", None, 0)
    assert_swapped(model_workspace, tiny_llama)
    generate(model_workspace / "model")


def test_w8a8_smoothquant_and_gptq(model_workspace: Path, calibration_txt: Path) -> None:
    record = compress_gptq(model_workspace, calibration_txt, scheme="w8a8")
    qconfig = quantization_config(model_workspace / "model")
    group = qconfig["config_groups"]["group_0"]
    assert (group["weights"]["type"], group["input_activations"]["strategy"]) == ("int", "token")
    assert record.get("compression")["recipe"] == ["SmoothQuantModifier", "GPTQModifier"]
    generate(model_workspace / "model")


def test_rerun_reuses_the_same_compression_and_redoes_another(
    model_workspace: Path, tiny_llama: Path, calibration_txt: Path
) -> None:
    first = compress_gptq(model_workspace, calibration_txt).get("compression")
    weights = model_workspace / "model" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    again = compress_gptq(model_workspace, calibration_txt).get("compression")
    assert again == first and weights.stat().st_mtime_ns == written  # nothing redone

    other = compress(model_workspace, scheme="fp8-dynamic").get("compression")
    assert other["scheme"] == "fp8-dynamic"
    assert quantization_config(model_workspace / "model")["format"] == "float-quantized"
    assert_swapped(model_workspace, tiny_llama)  # recompressed from the original, which is kept


def test_a_new_download_beside_an_old_original_is_compressed(model_workspace: Path, tiny_llama: Path) -> None:
    # download-model ran again after an earlier compression: model/ is a fresh full-precision
    # copy, model-original the old one
    shutil.copytree(tiny_llama, model_workspace / "model-original")
    (model_workspace / "model-original" / "README.md").write_text("# the old revision\n")
    (model_workspace / "model" / "README.md").write_text("# a newer revision\n")
    compress(model_workspace, scheme="fp8-dynamic")
    assert (model_workspace / "model-original" / "README.md").read_text() == "# a newer revision\n"
    assert (model_workspace / "model" / "README.md").read_text() == "# a newer revision\n"
    quantization_config(model_workspace / "model")


def test_a_run_killed_while_saving_is_redone(
    model_workspace: Path, tiny_llama: Path, calibration_txt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcar.compression import quantize

    def killed(source: Path, destination: Path) -> list[str]:
        raise KeyboardInterrupt  # as far as the workspace goes, a kill after the weights were written

    monkeypatch.setattr(quantize, "copy_companions", killed)
    with pytest.raises(KeyboardInterrupt):
        compress_gptq(model_workspace, calibration_txt)
    assert (model_workspace / PARTIAL).is_dir()
    assert not (model_workspace / "model-original").exists()
    assert "quantization_config" not in json.loads((model_workspace / "model" / "config.json").read_text())

    monkeypatch.undo()
    record = compress_gptq(model_workspace, calibration_txt)
    assert record.get("compression")["bits"] == 4
    assert_swapped(model_workspace, tiny_llama)
    generate(model_workspace / "model")


def test_a_run_killed_after_the_commit_point_is_completed_without_redoing(
    model_workspace: Path, tiny_llama: Path, calibration_txt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcar.compression.staging import Staging

    def killed(self: Staging) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(Staging, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        compress_gptq(model_workspace, calibration_txt, group_size="64")
    assert (model_workspace / DONE / "model").is_dir()
    monkeypatch.undo()

    from modelcar.compression import quantize

    monkeypatch.setattr(quantize, "quantize", lambda *a: pytest.fail("compressed again"))
    record = compress_gptq(model_workspace, calibration_txt, group_size="64")
    assert record.get("compression")["group_size"] == 64
    assert_swapped(model_workspace, tiny_llama)
    assert record.get("files") == inventory(model_workspace / "model")


# Bad input: each a clear error, and the workspace as it was.


def expect_error(workspace: Path, match: str, **values: Any) -> ModelcarError:
    before = inventory(workspace / "model") if (workspace / "model").is_dir() else None
    with pytest.raises(ModelcarError, match=match) as caught:
        compress(workspace, **values)
    if before is not None:
        assert inventory(workspace / "model") == before
    assert not (workspace / "model-original").exists()
    return caught.value


def test_not_a_causal_lm(model_workspace: Path) -> None:
    config_path = model_workspace / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(model_type="bert", architectures=["BertForMaskedLM"])
    config_path.write_text(json.dumps(config))
    error = expect_error(model_workspace, "not a causal language model", scheme="fp8-dynamic")
    assert error.exit_code == 2


def test_group_size_that_does_not_divide_the_model(model_workspace: Path) -> None:
    config_path = model_workspace / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["intermediate_size"] = 384
    config_path.write_text(json.dumps(config))
    expect_error(model_workspace, "GROUP_SIZE=256.*intermediate_size=384", group_size="256")


def test_missing_hub_dataset(model_workspace: Path) -> None:
    error = expect_error(model_workspace, "cannot load calibration dataset someorg/missing", dataset="someorg/missing")
    assert error.exit_code == 2


def test_dataset_without_text(model_workspace: Path, tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n')
    expect_error(model_workspace, r"no text column \(columns: n\)", dataset=str(path))


def test_model_without_tokenizer(model_workspace: Path, calibration_txt: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_workspace / "model" / name).unlink()
    expect_error(model_workspace, "cannot load the tokenizer", dataset=str(calibration_txt))


def test_no_model_in_the_workspace(tmp_path: Path) -> None:
    expect_error(tmp_path / "ws", "run download-model first", scheme="fp8-dynamic")


def test_out_of_memory(model_workspace: Path, calibration_txt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmcompressor
    import torch

    def oneshot(**kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(llmcompressor, "oneshot", oneshot)
    error = expect_error(
        model_workspace,
        r"out of memory on .* while calibrating and quantizing; try fewer NUM_CALIBRATION_SAMPLES \(now 8\)",
        dataset=str(calibration_txt),
        num_calibration_samples=SAMPLES,
        sequence_length=LENGTH,
    )
    assert "SEQUENCE_LENGTH (now 64)" in str(error) and "Traceback" not in str(error)


def test_not_enough_disk_space(model_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import collections

    import modelcar.space

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(modelcar.space.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    error = expect_error(model_workspace, "not enough disk space", scheme="fp8-dynamic")
    assert "4.0 KiB free" in str(error) and "needs " in str(error)


def test_missing_extra_stops_before_anything_runs(model_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    error = expect_error(model_workspace, r"modelcar\[compress\]", scheme="fp8-dynamic")
    assert error.exit_code == 2 and not (model_workspace / "run.json").exists()
