"""Small model directories for tests that need files shaped like a Hub model (not a real LLM)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save


def fake_model_files(seed: int = 0, shard_mib: float = 1.0) -> dict[str, bytes]:
    """config.json, two safetensors shards, a tokenizer, a card, files in a subfolder, a stray .bin."""
    rng = np.random.default_rng(seed)
    elements = int(shard_mib * 1024 * 1024 / 4)
    shard = {
        f"model-0000{i}-of-00002.safetensors": save({f"w{i}": rng.standard_normal(elements, dtype=np.float32)})
        for i in (1, 2)
    }
    return {
        "config.json": json.dumps(
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "seed": seed}
        ).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "generation_config.json": b'{"max_new_tokens": 16}',
        "README.md": b"---\nlicense: apache-2.0\n---\n# Tiny test model\n\nA model for tests.\n",
        "vocab.txt": b"a\nb\nc\n",
        "sub/config.json": b'{"nested": true}',
        "pytorch_model.bin": os.urandom(1024),
        **shard,
    }


def write_model_dir(path: Path, files: dict[str, bytes] | None = None) -> Path:
    for name, data in (files or fake_model_files()).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return path
