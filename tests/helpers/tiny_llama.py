"""A tiny Llama model, its own trained tokenizer and a local calibration text file, for tests.

Everything is built offline in a second or two: LlamaConfig with hidden size 128 (a multiple of
the default group size, so GPTQ g128 applies), a byte-level BPE tokenizer trained with
`tokenizers` on the same generated text the calibration file holds.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

_VOCABULARY = """the a model image layer weight scale group token server cluster pipeline registry quantize
compress calibrate serve load save push pull build run test check small large fast slow red green blue
river mountain city forest ocean music paper window garden and or but with from into over under after
before while because"""
WORDS = tuple(_VOCABULARY.split())

HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
VOCAB_SIZE = 384


def sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English lines, long enough to fill a short calibration sequence."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(24, 48))]
        lines.append(" ".join(words).capitalize() + ".")
    return lines


def write_text_dataset(path: Path, count: int = 64, seed: int = 0) -> Path:
    """A local .txt calibration file: one sample per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences(count, seed)) + "\n")
    return path


def write_jsonl_dataset(path: Path, count: int = 64, column: str = "text", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for line in sentences(count, seed):
            handle.write(json.dumps({column: line, "id": len(line)}) + "\n")
    return path


def build_tokenizer(directory: Path) -> None:
    """Trains a byte-level BPE tokenizer and saves it in transformers' format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences(200, seed=1), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=4096,
    )
    fast.save_pretrained(directory)


def build_tiny_llama(directory: Path, layers: int = 2, seed: int = 0) -> Path:
    """Saves a randomly initialised tiny LlamaForCausalLM (safetensors) with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = 2
    model.save_pretrained(directory, safe_serialization=True)
    return directory


# Fixtures (registered in tests/conftest.py).


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama directory built once per session; copy it before changing anything."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def calibration_txt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("calibration") / "calibration.txt")


@pytest.fixture
def model_workspace(tmp_path: Path, tiny_llama: Path) -> Path:
    """A workspace holding nothing but model/ (a copy of the tiny Llama)."""
    workspace = tmp_path / "ws"
    shutil.copytree(tiny_llama, workspace / "model")
    return workspace


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hub: offline mode, also for modules that read it at import time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")  # restored afterwards even if modelcar sets it
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    try:
        import datasets.config
    except ImportError:
        return
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
