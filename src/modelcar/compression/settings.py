"""What to compress with: the pipeline parameters that concern compression, and nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..param_table import DEFAULT_MAX_PERPLEXITY_RATIO, SCHEMES_WITH_CALIBRATION
from ..params import Params

# The calibration samples set aside for --evaluate: a fraction of NUM_CALIBRATION_SAMPLES,
# at least one and at most this many.
MAX_EVALUATION_SAMPLES = 64


@dataclass(frozen=True)
class Settings:
    scheme: str
    bits: int
    group_size: int | None
    dataset: str | None
    sequence_length: int | None
    num_calibration_samples: int | None
    evaluate: bool = False
    evaluate_dataset: str | None = None  # None: held-out samples of `dataset`
    max_perplexity_ratio: float = DEFAULT_MAX_PERPLEXITY_RATIO

    @classmethod
    def from_params(cls, params: Params) -> Settings:
        uses_data = params.scheme in SCHEMES_WITH_CALIBRATION or params.evaluate
        return cls(
            scheme=params.scheme,
            bits=params.bits,
            group_size=params.group_size if params.scheme == "gptq" else None,
            dataset=params.dataset if uses_data else None,
            sequence_length=params.sequence_length if uses_data else None,
            num_calibration_samples=params.num_calibration_samples if uses_data else None,
            evaluate=params.evaluate,
            # the same dataset named twice means held-out samples of it, never the same samples
            evaluate_dataset=params.evaluate_dataset if params.evaluate_dataset != params.dataset else None,
            max_perplexity_ratio=params.max_perplexity_ratio,
        )

    @property
    def calibrates(self) -> bool:
        return self.scheme in SCHEMES_WITH_CALIBRATION

    @property
    def label(self) -> str:
        """The compressed-tensors preset name this recipe amounts to."""
        if self.scheme == "fp8-dynamic":
            return "FP8_DYNAMIC"
        if self.scheme == "w8a8":
            return "W8A8"
        return f"W{self.bits}A16"

    @property
    def evaluation_source(self) -> str | None:
        """What --evaluate measures on, as recorded: EVALUATE_DATASET, or DATASET's held-out samples."""
        if not self.evaluate:
            return None
        if self.evaluate_dataset is not None:
            return self.evaluate_dataset
        return f"{self.dataset} (held-out samples, not used for calibration)"

    @property
    def evaluation_samples(self) -> int:
        total = self.num_calibration_samples or 0
        return max(1, min(MAX_EVALUATION_SAMPLES, total // 8))

    def quantization_key(self) -> dict[str, Any]:
        """What makes two compressions the same (evaluating does not change the model)."""
        key = asdict(self)
        for name in ("evaluate", "evaluate_dataset", "max_perplexity_ratio"):
            key.pop(name)
        if not self.calibrates:
            key.update(dataset=None, sequence_length=None, num_calibration_samples=None)
        return key

    def describe(self) -> str:
        parts = [f"{self.scheme} {self.label}"]
        if self.scheme == "gptq":
            parts.append("per channel" if self.group_size is None else f"group size {self.group_size}")
        if self.calibrates:
            parts.append(f"{self.num_calibration_samples} samples of {self.dataset}, {self.sequence_length} tokens")
        return ", ".join(parts)
