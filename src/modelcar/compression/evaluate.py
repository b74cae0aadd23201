"""Perplexity on held-out text: what compression cost, in one number per model.

A model that compression broke can have a loss whose exponential overflows, or a NaN loss:
its perplexity is then infinite (or NaN), which the quality gate rejects; see gate.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .device import Device, is_out_of_memory, out_of_memory, release_memory


def perplexity(model_dir: Path, samples: list[list[int]], device: Device) -> dict[str, Any]:
    """Loads the model in model_dir (a compressed one decompresses on load) and measures it."""
    import torch
    from compressed_tensors.offload import dispatch_model, get_execution_device
    from transformers import AutoModelForCausalLM

    model: Any = None
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
        if device.is_accelerator:
            dispatch_model(model)  # on the GPUs, offloading what does not fit
        model.eval()
        target = get_execution_device(model.get_input_embeddings(), torch.device("cpu"))
        nll, tokens = 0.0, 0
        with torch.no_grad():
            for ids in samples:
                inputs = torch.tensor([ids], device=target)
                loss = model(input_ids=inputs, labels=inputs).loss
                count = len(ids) - 1
                nll += float(loss.float()) * count
                tokens += count
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(device, f"evaluating {model_dir.name}", len(samples), None) from None
        raise
    finally:
        del model
        release_memory()
    value = _exp(nll / tokens) if tokens else None
    return {"perplexity": value, "samples": len(samples), "tokens": tokens}


def _exp(mean_nll: float) -> float:
    if math.isnan(mean_nll):
        return math.nan
    try:
        return round(math.exp(mean_nll), 4)
    except OverflowError:
        return math.inf
