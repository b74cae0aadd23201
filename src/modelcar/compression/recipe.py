"""The LLM Compressor recipe, built from the settings rather than a fixed preset."""

from __future__ import annotations

from typing import Any

from .settings import Settings

# Left at full precision: the output projection is small next to the rest and sensitive.
IGNORE = ["lm_head"]
TARGETS = ["Linear"]
SMOOTHING_STRENGTH = 0.8

# SmoothQuant divides each norm's weight by per-channel scales and multiplies the Linear layers
# that the norm feeds by them. LLM Compressor maps Gemma 2 and 3 like Llama (MAPPINGS_REGISTRY:
# DEFAULT_SMOOTHQUANT_MAPPINGS), but there post_attention_layernorm normalizes the attention
# *output* and pre_feedforward_layernorm is what feeds the MLP: smoothing the former scales the
# residual stream, not the MLP's input, and the model is destroyed (perplexity 13.6 -> 3e11 on
# Gemma-3-270M). These are the right pairs. (Gemma's norms scale by 1 + weight, which a division
# of the weight does not divide; LLM Compressor's oneshot handles that itself, in
# llmcompressor.modeling.offset_norm.norm_calibration_context.)
GEMMA_MLP_NORM = {"gemma": "post_attention_layernorm", "gemma2": "pre_feedforward_layernorm"}
GEMMA_MODEL_TYPES = {
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma2",
    "gemma3_text": "gemma2",
}


def weight_scheme(settings: Settings) -> Any:
    """GPTQ weights: symmetric int of BITS bits, per group of GROUP_SIZE or per output channel."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    if settings.group_size is None:
        weights = QuantizationArgs(num_bits=settings.bits, type="int", symmetric=True, strategy="channel")
    else:
        weights = QuantizationArgs(
            num_bits=settings.bits,
            type="int",
            symmetric=True,
            strategy="group",
            group_size=settings.group_size,
        )
    return QuantizationScheme(targets=list(TARGETS), weights=weights)


def smoothquant_mappings(config: dict[str, Any] | None) -> list[list[Any]] | None:
    """The SmoothQuant mappings for this model, where LLM Compressor's own are wrong; None: its own."""
    model_type = str((config or {}).get("model_type") or "")
    family = GEMMA_MODEL_TYPES.get(model_type)
    if family is None:
        return None
    return [
        [["re:.*self_attn\\.q_proj$", "re:.*self_attn\\.k_proj$", "re:.*self_attn\\.v_proj$"], "re:.*input_layernorm$"],
        [["re:.*mlp\\.gate_proj$", "re:.*mlp\\.up_proj$"], f"re:.*{GEMMA_MLP_NORM[family]}$"],
    ]


def build_recipe(settings: Settings, config: dict[str, Any] | None = None) -> list[Any]:
    """The modifiers for oneshot: GPTQ W{4,8}A16, SmoothQuant + GPTQ W8A8, or FP8 dynamic."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if settings.scheme == "gptq":
        return [GPTQModifier(config_groups={"group_0": weight_scheme(settings)}, ignore=list(IGNORE))]
    if settings.scheme == "w8a8":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        return [
            SmoothQuantModifier(smoothing_strength=SMOOTHING_STRENGTH, mappings=smoothquant_mappings(config)),
            GPTQModifier(targets=list(TARGETS), scheme="W8A8", ignore=list(IGNORE)),
        ]
    if settings.scheme == "fp8-dynamic":
        return [QuantizationModifier(targets=list(TARGETS), scheme="FP8_DYNAMIC", ignore=list(IGNORE))]
    raise ValueError(f"unknown scheme {settings.scheme!r}")  # params.py validated it already
