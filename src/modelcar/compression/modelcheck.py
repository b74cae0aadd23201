"""What the model directory says before anything is loaded: config.json, its kind, its size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParameterError, UsageError
from ..files import walk_files
from ..jsonfile import read_object
from ..param_table import MAX_GROUP_SIZE, MIN_GROUP_SIZE, PER_CHANNEL
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


# The layers that read each width, as Llama-style models name them (for messages only).
READERS = {
    "hidden_size": "q_proj, k_proj, v_proj, gate_proj, up_proj",
    "intermediate_size": "down_proj",
    "moe_intermediate_size": "the experts' down_proj",
    "shared_expert_intermediate_size": "the shared expert's down_proj",
    "num_attention_heads*head_dim": "o_proj",
}


def working_group_sizes(widths: list[int]) -> list[int]:
    """The group sizes GROUP_SIZE accepts that split every width into whole groups, largest first."""
    sizes, size = [], MAX_GROUP_SIZE
    while size >= MIN_GROUP_SIZE:
        if all(width % size == 0 for width in widths):
            sizes.append(size)
        size //= 2
    return sizes


def _alternatives(widths: list[int]) -> str:
    sizes = working_group_sizes(widths)
    if not sizes:
        return f"use GROUP_SIZE={PER_CHANNEL} (no group size from {MIN_GROUP_SIZE} to {MAX_GROUP_SIZE} divides them)"
    shown = " or ".join(str(size) for size in sizes[:3])
    return f"use GROUP_SIZE={shown}, or GROUP_SIZE={PER_CHANNEL} (one scale per output channel)"


def check_group_size(config: dict[str, Any], settings: Settings) -> None:
    """Each quantized layer's input must split into whole groups (as LLM Compressor requires);
    judged from config.json alone (no torch), so `modelcar validate` can say it before any work."""
    group = settings.group_size
    if settings.scheme != "gptq" or group is None:
        return
    widths = input_widths(config)
    bad = {key: width for key, width in widths.items() if width % group}
    if bad:
        shown = "; ".join(f"{READERS.get(key, key)} take {width} inputs ({key}={width})" for key, width in bad.items())
        raise ParameterError(
            "GROUP_SIZE",
            group,
            f"a size that divides every quantized layer's input width, and this model's do not divide by "
            f"{group}: {shown}; {_alternatives(list(widths.values()))}",
        )


def check_layer_widths(widths: dict[str, int], settings: Settings) -> None:
    """The same check on the model's actual Linear layers (name -> in_features), naming them."""
    group = settings.group_size
    if settings.scheme != "gptq" or group is None:
        return
    bad = {name: width for name, width in widths.items() if width % group}
    if not bad:
        return
    first, width = next(iter(bad.items()))
    others = len(bad) - 1
    more = f" (and {others} more layer{'s' if others > 1 else ''} of {', '.join(map(str, sorted(set(bad.values()))))})"
    raise ParameterError(
        "GROUP_SIZE",
        group,
        f"a size that divides every quantized layer's input width: layer {first} takes {width} inputs, "
        f"not a multiple of {group}{more if others else ''}; {_alternatives(list(widths.values()))}",
    )


def linear_widths(model_dir: Path, ignore: list[str]) -> dict[str, int]:
    """Every Linear layer's in_features, from the model built on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        name: module.in_features
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in ignore
    }


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
