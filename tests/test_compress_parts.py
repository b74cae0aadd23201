"""The compression package's parts on their own: calibration data, recipe, model checks."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcar.compression import calibration, modelcheck
from modelcar.compression.calibration import CalibrationDataError
from modelcar.compression.settings import Settings
from modelcar.errors import ParameterError
from tests.helpers.tiny_llama import sentences, write_jsonl_dataset, write_text_dataset

pytestmark = [pytest.mark.compress, pytest.mark.usefixtures("hub_offline")]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "scheme": "gptq",
        "bits": 4,
        "group_size": 128,
        "dataset": "c4",
        "sequence_length": 64,
        "num_calibration_samples": 8,
    }
    return Settings(**{**values, **overrides})


# Calibration data


def test_a_text_file_gives_one_sample_per_non_empty_line(tmp_path: Path) -> None:
    path = write_text_dataset(tmp_path / "cal.txt", count=10)
    path.write_text("\n\n" + path.read_text())
    texts = calibration.load_texts(str(path), 4)
    assert texts == sentences(10)[:4]


def test_jsonl_reads_its_text_column_and_only_as_many_rows_as_needed(tmp_path: Path) -> None:
    path = write_jsonl_dataset(tmp_path / "cal.jsonl", count=5)
    with path.open("a") as handle:
        handle.write("this line is not JSON and is never read\n")
    assert calibration.load_texts(str(path), 5) == sentences(5)


def test_jsonl_picks_another_string_column_when_there_is_no_text(tmp_path: Path) -> None:
    path = write_jsonl_dataset(tmp_path / "cal.jsonl", count=3, column="body")
    assert calibration.load_texts(str(path), 3) == sentences(3)


@pytest.mark.parametrize(
    "data",
    [
        [{"text": "one"}, {"text": "two"}],
        {"data": [{"text": "one"}, {"text": "two"}]},
        {"text": ["one", "two"], "id": [1, 2]},
        ["one", "two"],
    ],
)
def test_json_files_in_the_usual_shapes(tmp_path: Path, data: Any) -> None:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data))
    assert calibration.load_texts(str(path), 10) == ["one", "two"]


def test_parquet_reads_the_text_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "cal.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "content": ["a b", "c d", "e f"]}), path)
    assert calibration.load_texts(str(path), 2) == ["a b", "c d"]


def test_chat_messages_become_text(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(row) + "\n")
    assert calibration.load_texts(str(path), 1) == ["hi\nhello"]


def test_a_file_without_text_names_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"a": 1, "b": 2}\n')
    with pytest.raises(CalibrationDataError, match=r"no text column \(columns: a, b\)"):
        calibration.load_texts(str(path), 1)


def test_broken_json_lines_are_reported_with_their_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(CalibrationDataError, match="line 2: not JSON"):
        calibration.load_texts(str(path), 5)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n \n")
    with pytest.raises(CalibrationDataError, match="holds no text"):
        calibration.load_texts(str(path), 5)


def test_c4_reads_one_shard_streamed_and_stops_after_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[dict[str, Any]] = []
    consumed = itertools.count()

    def rows() -> Iterator[dict[str, str]]:
        for n in consumed:
            yield {"text": f"document {n}", "url": "u"}

    def fake_load_dataset(path: str, **kwargs: Any) -> dict[str, Any]:
        calls.append({"path": path, **kwargs})
        return {"train": rows()}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    texts = calibration.load_texts("c4", 3)
    assert texts == ["document 0", "document 1", "document 2"]
    assert calls[0]["path"] == "allenai/c4" and calls[0]["streaming"] is True
    assert calls[0]["data_files"] == {"train": "en/c4-train.00000-of-01024.json.gz"}
    assert next(consumed) <= 4  # a bounded read, not the whole split


def test_a_hub_dataset_is_a_bounded_slice_of_its_train_split(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    seen: dict[str, Any] = {}

    def fake_load_dataset(path: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(path=path, **kwargs)
        return {"validation": iter([{"text": "v"}]), "train": ({"text": f"t{n}"} for n in itertools.count())}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert calibration.load_texts("org/corpus", 2, token="hf_x") == ["t0", "t1"]
    assert seen["streaming"] is True and seen["token"] == "hf_x" and seen["data_files"] is None


@pytest.mark.parametrize("dataset", ["c4", "someorg/does-not-exist"])
def test_a_dataset_the_hub_cannot_give_is_a_clear_error(dataset: str) -> None:
    with pytest.raises(CalibrationDataError) as caught:
        calibration.load_texts(dataset, 2)
    message = str(caught.value)
    assert "cannot load calibration dataset" in message and "DATASET" in message
    assert ("allenai/c4" if dataset == "c4" else dataset) in message


def test_tokenize_truncates_and_drops_what_is_too_short(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    samples = calibration.tokenize(tokenizer, [sentences(1)[0], "a"], 16)
    assert len(samples) == 1 and len(samples[0]) == 16
    dataset = calibration.to_dataset(samples)
    assert dataset.column_names == ["input_ids", "attention_mask"]


# Recipe


def test_gptq_recipe_is_built_from_bits_and_group_size() -> None:
    from modelcar.compression.recipe import build_recipe

    (gptq,) = build_recipe(settings(bits=8, group_size=64))
    weights = gptq.config_groups["group_0"].weights
    assert type(gptq).__name__ == "GPTQModifier" and gptq.ignore == ["lm_head"]
    assert (weights.num_bits, weights.group_size, weights.strategy, weights.symmetric) == (8, 64, "group", True)
    assert weights.type == "int" and gptq.config_groups["group_0"].input_activations is None
    (channel,) = build_recipe(settings(bits=4, group_size=None))
    assert channel.config_groups["group_0"].weights.strategy == "channel"


def test_w8a8_smooths_then_quantizes_and_fp8_needs_no_data() -> None:
    from modelcar.compression.recipe import build_recipe

    smooth, gptq = build_recipe(settings(scheme="w8a8", bits=8, group_size=None))
    assert (type(smooth).__name__, type(gptq).__name__, gptq.scheme) == ("SmoothQuantModifier", "GPTQModifier", "W8A8")
    (fp8,) = build_recipe(settings(scheme="fp8-dynamic", bits=8, group_size=None, dataset=None))
    assert (type(fp8).__name__, fp8.scheme, fp8.ignore) == ("QuantizationModifier", "FP8_DYNAMIC", ["lm_head"])


# Model checks


def test_causal_lms_pass_and_other_models_are_refused() -> None:
    modelcheck.check_causal_lm({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    modelcheck.check_causal_lm({"model_type": "qwen2"})
    with pytest.raises(modelcheck.NotACausalLM, match=r"BertForMaskedLM.*causal language models"):
        modelcheck.check_causal_lm({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    with pytest.raises(modelcheck.NotACausalLM, match="trust_remote_code"):
        modelcheck.check_causal_lm({"model_type": "my-own", "auto_map": {"AutoModelForCausalLM": "x.Y"}})


def test_group_size_must_divide_the_layer_widths() -> None:
    config = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "head_dim": 128}
    modelcheck.check_group_size(config, settings(group_size=128))
    modelcheck.check_group_size(config, settings(group_size=None))
    with pytest.raises(ParameterError) as caught:
        modelcheck.check_group_size(config, settings(group_size=512))
    assert caught.value.name == "GROUP_SIZE" and "intermediate_size=11008" in str(caught.value)


def test_already_quantized_models_are_refused(tmp_path: Path) -> None:
    config = {"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": 4}}
    with pytest.raises(modelcheck.UsageError, match=r"already quantized \(gptq\).*full-precision"):
        modelcheck.check_full_precision(config, tmp_path)


def test_output_size_estimate_follows_bits_and_source_dtype(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 500)
    bf16 = {"torch_dtype": "bfloat16"}
    assert modelcheck.estimate_output_bytes(tmp_path, bf16, settings(bits=4)) == 400
    assert modelcheck.estimate_output_bytes(tmp_path, bf16, settings(bits=8)) == 650
    assert modelcheck.estimate_output_bytes(tmp_path, {"dtype": "float32"}, settings(bits=4)) == 275
