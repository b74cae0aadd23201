"""What a run tells the Model Registry: image from run.json, format from files, model card text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcar.modelregistry.describe import NoPushedImage, pushed_image, registration_for_run
from modelcar.modelregistry.modelcard import parse_model_card
from modelcar.modelregistry.modelformat import ModelFormat, detect_format

DIGEST = "sha256:" + "c" * 64
IMAGE = {"reference": "registry.example.com:5000/org/granite:1.0.0", "digest": DIGEST}

CARD = """---
license: apache-2.0
language: [en]
---

# Granite tiny

[![badge](https://img.example/b.svg)](https://example.com)

Granite tiny is a small
language model for tests.

## Usage
Run it.
"""


def test_model_card_description_and_license() -> None:
    card = parse_model_card(CARD)
    assert card.license == "apache-2.0"
    assert card.description == "Granite tiny is a small language model for tests."


def test_model_card_front_matter_description_other_license_and_length() -> None:
    card = parse_model_card("---\nlicense: other\nlicense_name: llama3\ndescription: Short.\n---\nBody text.\n")
    assert (card.description, card.license) == ("Short.", "llama3")
    long = parse_model_card("word " * 400)
    assert long.description is not None and len(long.description) <= 500 and long.description.endswith("…")
    assert parse_model_card("") == parse_model_card("---\n: [bad yaml\n---\n")


def test_format_from_files_and_compressed_tensors(tmp_path: Path) -> None:
    assert detect_format(tmp_path, ["model-00001.safetensors", "config.json"]) == ModelFormat("safetensors", "1")
    assert detect_format(tmp_path, ["model.gguf"]) == ModelFormat("gguf")
    assert detect_format(tmp_path, ["config.json"]) is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"x")
    assert detect_format(tmp_path) == ModelFormat("safetensors", "1")
    config = {
        "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "version": "0.10.2"}
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert detect_format(tmp_path, ["w.safetensors"]) == ModelFormat("compressed-tensors", "0.10.2")


def test_pushed_image_gives_a_digest_pinned_uri_and_the_tag() -> None:
    image = pushed_image(dict(IMAGE, pinned=f"registry.example.com:5000/org/granite@{DIGEST}"))
    assert image.uri == f"oci://registry.example.com:5000/org/granite@{DIGEST}"
    assert image.tag == "1.0.0"
    assert pushed_image({"reference": "registry.example.com/org/granite", "digest": DIGEST}).tag == "latest"


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (None, "no pushed image"),
        ({"reference": "oci:/tmp/layout:latest", "digest": DIGEST}, "needs an image in a registry"),
        ({"reference": "registry.example.com/org/granite:1", "digest": "md5:00"}, "no sha256 digest"),
        ({"reference": "Not A Ref", "digest": DIGEST}, "is not valid"),
    ],
)
def test_no_usable_image_is_a_clear_error(image: object, says: str) -> None:
    with pytest.raises(NoPushedImage) as caught:
        pushed_image(image)
    assert says in str(caught.value)


def test_describe_an_uncompressed_hub_model(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(CARD)
    record = {
        "source": {"kind": "huggingface", "repo": "org/granite", "revision": "main", "sha": "f" * 40},
        "files": [{"path": "model.safetensors", "size": 1, "sha256": "0" * 64}],
        "image": IMAGE,
    }
    wanted = registration_for_run(model_name="granite", model_version="1.0.0", model_dir=tmp_path, record=record)
    assert wanted.version_properties == {
        "source": "huggingface",
        "framework": "pytorch",
        "compressed": False,
        "hf_repo": "org/granite",
        "hf_revision": "f" * 40,
        "image_digest": DIGEST,
        "image_tag": "1.0.0",
    }
    assert (wanted.source_kind, wanted.source_name) == ("huggingface", "org/granite")
    assert (wanted.model_format_name, wanted.license) == ("safetensors", "apache-2.0")
    assert wanted.uri == f"oci://registry.example.com:5000/org/granite@{DIGEST}"


def test_describe_a_compressed_local_model(tmp_path: Path) -> None:
    compression = {
        "enabled": True,
        "scheme": "gptq",
        "bits": 4,
        "group_size": None,
        "dataset": "c4",
        "sequence_length": 512,
        "num_calibration_samples": 64,
        "bytes_before": 12_000_000_000,
        "bytes_after": 3_500_000_000,
    }
    record = {"source": {"kind": "local", "path": "/models/x"}, "compression": compression, "image": IMAGE}
    wanted = registration_for_run(model_name="x", model_version="2", model_dir=tmp_path / "missing", record=record)
    props = wanted.version_properties
    assert props["source"] == "local" and props["compressed"] is True
    assert (props["scheme"], props["bits"], props["group_size"]) == ("gptq", 4, "channel")
    assert props["bytes_before"] == 12_000_000_000
    assert "hf_repo" not in props and wanted.source_kind is None
    assert wanted.description is None and wanted.model_format_name is None


def test_describe_without_source_uses_what_the_parameters_say(tmp_path: Path) -> None:
    fallback = {"kind": "huggingface", "repo": "org/granite", "revision": "v2", "sha": None}
    wanted = registration_for_run(
        model_name="granite", model_version="1", model_dir=tmp_path, record={"image": IMAGE}, fallback_source=fallback
    )
    assert wanted.version_properties["hf_revision"] == "v2"
