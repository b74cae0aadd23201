"""The model format to record (`modelFormatName`/`modelFormatVersion`), read from the files.

Quantized checkpoints written by LLM Compressor are safetensors files in the compressed-tensors
format (config.json: quantization_config.quant_method = compressed-tensors); serving runtimes
need to know that, so it wins over the plain file format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class ModelFormat:
    name: str
    version: str | None = None


# Suffix -> format, in order of preference when a directory holds several kinds.
_BY_SUFFIX: tuple[tuple[str, ModelFormat], ...] = (
    (".safetensors", ModelFormat("safetensors", "1")),
    (".gguf", ModelFormat("gguf")),
    (".onnx", ModelFormat("onnx", "1")),
    (".bin", ModelFormat("pytorch")),
    (".pt", ModelFormat("pytorch")),
    (".pth", ModelFormat("pytorch")),
)
COMPRESSED_TENSORS = "compressed-tensors"


def detect_format(model_dir: Path, paths: Iterable[str] | None = None) -> ModelFormat | None:
    """The format of the model in `model_dir` (file paths relative to it, or found by walking it)."""
    quantized = _compressed_tensors(model_dir / "config.json")
    if quantized is not None:
        return quantized
    if paths is None:
        found = model_dir.rglob("*") if model_dir.is_dir() else ()
        paths = (str(p.relative_to(model_dir)) for p in found if p.is_file())
    suffixes = {PurePosixPath(path).suffix.lower() for path in paths}
    for suffix, model_format in _BY_SUFFIX:
        if suffix in suffixes:
            return model_format
    return None


def _compressed_tensors(config_path: Path) -> ModelFormat | None:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(quantization, dict) or quantization.get("quant_method") != COMPRESSED_TENSORS:
        return None
    version = quantization.get("version")
    return ModelFormat(COMPRESSED_TENSORS, str(version) if version else None)
