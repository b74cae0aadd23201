"""What the model directory says before anything is loaded: config.json, its kind, its size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParameterError, UsageError
from ..files import walk_files
from ..jsonfile import read_object
from .settings import Settings

COMPRESSED_TENSORS = "compressed-tensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# The width of each linear layer's input, by the config key that gives it.
INPUT_WIDTH_KEYS = ("hidden_size", "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size")
# Room for the weights compression leaves at full precision (embeddings, lm_head, norms) and
# for the scales, as a fraction of the original size.
UNQUANTIZED_SHARE = 0.15


class NotACausalLM(UsageError):
    """The model is not a text-generation model LLM Compressor can quantize."""


class ModelNotFound(UsageError):
    """No model (or no config.json) where the stage expects one."""


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelNotFound(
            f"{model_dir} has no config.json, so it is not a transformers model; compress-model "
            "needs a model downloaded by download-model (or your own files in that layout)"
        )
    return read_object(path, ModelNotFound)


def quantization_method(config: dict[str, Any]) -> str | None:
    qconfig = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(qconfig, dict):
        return None
    return str(qconfig.get("quant_method") or "unknown")


def is_compressed(model_dir: Path) -> bool:
    """True when model_dir holds a compressed-tensors model (what this stage writes)."""
    try:
        return quantization_method(read_config(model_dir)) == COMPRESSED_TENSORS
    except ModelNotFound:
        return False


def check_full_precision(config: dict[str, Any], model_dir: Path) -> None:
    method = quantization_method(config)
    if method is not None:
        raise UsageError(
            f"the model in {model_dir} is already quantized ({method}); compress-model needs the "
            "full-precision model: download that one, or leave COMPRESS_MODEL false"
        )


def check_causal_lm(config: dict[str, Any]) -> None:
    """Refuses what AutoModelForCausalLM cannot load as a text generator, naming what it is."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    architectures = [str(a) for a in config.get("architectures") or []]
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    known_type = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if known_type and (not architectures or any(a in causal_classes for a in architectures)):
        return
    what = f"model_type {model_type!r}" + (f", architectures {', '.join(architectures)}" if architectures else "")
    if model_type and not known_type and config.get("auto_map"):
        hint = "it needs custom code from the repo (trust_remote_code), which modelcar does not run"
    else:
        hint = "compress-model quantizes causal language models (text generation) only"
    raise NotACausalLM(f"the model is not a causal language model that transformers knows ({what}): {hint}")


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def input_widths(config: dict[str, Any]) -> dict[str, int]:
    """The input widths of the model's linear layers that config.json reveals."""
    text = text_config(config)
    widths = {key: text[key] for key in INPUT_WIDTH_KEYS if isinstance(text.get(key), int)}
    heads, head_dim = text.get("num_attention_heads"), text.get("head_dim")
    if isinstance(heads, int) and isinstance(head_dim, int):
        widths["num_attention_heads*head_dim"] = heads * head_dim
    return widths


def check_group_size(config: dict[str, Any], settings: Settings) -> None:
    """Each quantized layer's input must split into whole groups (as LLM Compressor requires)."""
    group = settings.group_size
    if settings.scheme != "gptq" or group is None:
        return
    bad = {key: width for key, width in input_widths(config).items() if width >= group and width % group}
    if bad:
        shown = ", ".join(f"{key}={width}" for key, width in bad.items())
        raise ParameterError(
            "GROUP_SIZE",
            group,
            f"a size that divides this model's layer widths ({shown}); choose a smaller power of two or 'channel'",
        )


def weight_bytes(model_dir: Path) -> int:
    """The size of the weight files (what compression rewrites)."""
    return sum(
        p.stat().st_size for p in walk_files(model_dir) if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES)
    )


def source_bytes_per_weight(config: dict[str, Any]) -> int:
    dtype = str(text_config(config).get("dtype") or config.get("torch_dtype") or config.get("dtype") or "")
    return 4 if dtype in ("float32", "fp32") else 2


def estimate_output_bytes(model_dir: Path, config: dict[str, Any], settings: Settings) -> int:
    """A generous estimate of the compressed model's size, for the disk-space check."""
    weights = weight_bytes(model_dir)
    ratio = (settings.bits / 8) / source_bytes_per_weight(config) + UNQUANTIZED_SHARE
    return int(weights * min(1.0, ratio))
