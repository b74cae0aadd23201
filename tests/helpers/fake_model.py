"""Small model directories for tests that need files shaped like a Hub model (not a real LLM).

One builder: a model is a mapping of relative paths to contents, each bytes, a str (UTF-8) or an
int (that many random bytes); `model_files` turns it into bytes (for a Hub stand-in's repo) and
`write_model_dir` writes it, with any symlinks, into a directory. A test that relies on certain
names or sizes spells them out; `fake_model_files` and `write_fault_model` are the shapes that
several tests share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import save

MIB = 1 << 20
Content = bytes | str | int  # an int: that many random bytes (os.urandom)
LLAMA_CONFIG = '{"architectures": ["LlamaForCausalLM"]}'


def model_files(spec: Mapping[str, Content]) -> dict[str, bytes]:
    """Each file's bytes: bytes as they are, a str encoded as UTF-8, an int as that many random bytes."""
    return {name: _content(data) for name, data in spec.items()}


def write_model_dir(
    path: Path, files: Mapping[str, Content] | None = None, links: Mapping[str, str] | None = None
) -> Path:
    """Writes each file under path (default: `fake_model_files()`), making directories as needed,
    then each symlink (its path -> the target it points to, as given); returns path."""
    path.mkdir(parents=True, exist_ok=True)
    for name, data in (fake_model_files() if files is None else files).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_content(data))
    for name, link_target in (links or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link_target, path / name)
    return path


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


def write_fault_model(path: Path) -> Path:
    """36 MiB: two shards of a layer each (over 16 MiB, unequal, so one is done well before the other),
    small files (a layer each), a card, a link."""
    files = {
        "model-00001-of-00002.safetensors": 20 * MIB,
        "model-00002-of-00002.safetensors": 16 * MIB + 3,
        "config.json": LLAMA_CONFIG,
        "tokenizer.json": '{"version": "1.0"}',
        "sub/generation_config.json": '{"max_new_tokens": 16}',
        "README.md": "# fault-test model\n",
    }
    return write_model_dir(path, files, links={"alias.json": "config.json"})


def _content(data: Content) -> bytes:
    if isinstance(data, int):
        return os.urandom(data)
    return data.encode() if isinstance(data, str) else data
