"""Where compression runs (LLM Compressor onloads layer by layer to the first accelerator) and
what running out of memory there looks like."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelcarError

CPU_WARNING = (
    "no GPU found: compressing on the CPU, which takes hours for a model of a few billion parameters (minutes on a GPU)"
)


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda", "cpu", ...
    name: str  # "NVIDIA H100 80GB HBM3", "cpu"
    count: int = 1

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"

    def describe(self) -> str:
        if not self.is_accelerator:
            return "cpu"
        return f"{self.kind}:0 ({self.name})" + (f", {self.count} devices" if self.count > 1 else "")


class OutOfMemory(ModelcarError):
    """Compression ran out of GPU or host memory."""


def detect() -> Device:
    import torch

    if torch.cuda.is_available():
        return Device("cuda", torch.cuda.get_device_name(0), torch.cuda.device_count())
    if torch.accelerator.is_available():
        accelerator = torch.accelerator.current_accelerator()
        kind = accelerator.type if accelerator is not None else "accelerator"
        return Device(kind, kind, torch.accelerator.device_count())
    return Device("cpu", "cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory(device: Device, what: str, samples: int | None, sequence_length: int | None) -> OutOfMemory:
    advice = []
    if samples:
        advice.append(f"fewer NUM_CALIBRATION_SAMPLES (now {samples})")
    if sequence_length:
        advice.append(f"a shorter SEQUENCE_LENGTH (now {sequence_length})")
    advice.append("a GPU with more memory" if device.is_accelerator else "a machine with more memory or a GPU")
    return OutOfMemory(f"out of memory on {device.describe()} while {what}; try {', or '.join(advice)}")


def release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
