"""The LLM Compressor recipe, built from the settings rather than a fixed preset."""

from __future__ import annotations

from typing import Any

from .settings import Settings

# Left at full precision: the output projection is small next to the rest and sensitive.
IGNORE = ["lm_head"]
TARGETS = ["Linear"]
SMOOTHING_STRENGTH = 0.8


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


def build_recipe(settings: Settings) -> list[Any]:
    """The modifiers for oneshot: GPTQ W{4,8}A16, SmoothQuant + GPTQ W8A8, or FP8 dynamic."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if settings.scheme == "gptq":
        return [GPTQModifier(config_groups={"group_0": weight_scheme(settings)}, ignore=list(IGNORE))]
    if settings.scheme == "w8a8":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        return [
            SmoothQuantModifier(smoothing_strength=SMOOTHING_STRENGTH),
            GPTQModifier(targets=list(TARGETS), scheme="W8A8", ignore=list(IGNORE)),
        ]
    if settings.scheme == "fp8-dynamic":
        return [QuantizationModifier(targets=list(TARGETS), scheme="FP8_DYNAMIC", ignore=list(IGNORE))]
    raise ValueError(f"unknown scheme {settings.scheme!r}")  # params.py validated it already


def describe_recipe(modifiers: list[Any]) -> list[str]:
    return [type(modifier).__name__ for modifier in modifiers]
