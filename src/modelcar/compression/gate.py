"""The quality gate of --evaluate: a compressed model whose perplexity rose past
MAX_PERPLEXITY_RATIO times the original's is rejected, and the user is told what to try."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelcarError
from .settings import Settings


class QualityGateFailed(ModelcarError):
    """The compressed model lost more quality than MAX_PERPLEXITY_RATIO allows (exit 1)."""


def ratio(evaluation: dict[str, Any]) -> float:
    """Perplexity after / before; infinite or NaN when compression broke the model."""
    before, after = _number(evaluation.get("perplexity_before")), _number(evaluation.get("perplexity_after"))
    if math.isnan(before) or math.isnan(after) or before <= 0:
        return math.nan
    return after / before


def passes(evaluation: dict[str, Any], settings: Settings) -> bool:
    value = ratio(evaluation)
    return math.isfinite(value) and value <= settings.max_perplexity_ratio


def failure(evaluation: dict[str, Any], settings: Settings) -> QualityGateFailed:
    """The error for an evaluation that failed the gate: both numbers, and what to try instead."""
    value = ratio(evaluation)
    shown = _show_ratio(value)
    return QualityGateFailed(
        f"the compressed model's perplexity is {_show(evaluation.get('perplexity_after'))}, against "
        f"{_show(evaluation.get('perplexity_before'))} for the original ({shown}, more than "
        f"MAX_PERPLEXITY_RATIO={settings.max_perplexity_ratio:g}) on {evaluation.get('samples')} samples of "
        f"{evaluation.get('dataset')}; the original model stays in place as model/ and nothing is pushed or "
        f"registered. Try {advice(settings)}"
    )


def advice(settings: Settings) -> str:
    """Other settings likely to keep more quality, most effective first."""
    more_samples = "more NUM_CALIBRATION_SAMPLES" + (
        f" (now {settings.num_calibration_samples})" if settings.num_calibration_samples else ""
    )
    options: list[str] = []
    if settings.scheme == "gptq" and settings.bits == 4:
        options.append("BITS=8 (GPTQ W8A16)")
        if settings.group_size is None or settings.group_size > 32:
            options.append("a smaller GROUP_SIZE (64 or 32)")
        options.append(more_samples)
    elif settings.scheme == "gptq":
        options.append(more_samples)
    else:
        options.append("SCHEME=gptq BITS=8 (W8A16: int8 weights, activations kept at 16 bits)")
        if settings.calibrates:
            options.append(more_samples)
    options.append(f"a higher MAX_PERPLEXITY_RATIO if this loss is acceptable (now {settings.max_perplexity_ratio:g})")
    return ", or ".join(options)


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # non-finite values are recorded as text: "inf", "nan"
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _show_ratio(value: float) -> str:
    if not math.isfinite(value):
        return "unbounded"
    return f"{value:.2f}x" if value < 1000 else f"{value:.3g}x"


def _show(value: Any) -> str:
    number = _number(value)
    if not math.isfinite(number):
        return str(number)
    return f"{number:.6g}" if number < 1e6 else f"{number:.3e}"
