"""W8A8 on Gemma: why LLM Compressor's SmoothQuant destroyed Gemma-3-270M, and the fix.

SmoothQuant must be an identity transform: a norm's weight divided by per-channel scales, the
Linear layers it feeds multiplied by them. On Gemma 2/3 LLM Compressor's mappings (Llama's)
pair gate/up_proj with post_attention_layernorm, which there normalizes the attention output
(pre_feedforward_layernorm feeds the MLP). A tiny random Gemma 3 shows it: smoothing alone with
LLM Compressor's own mappings changes the model's output; with modelcar's
(recipe.smoothquant_mappings) it does not. (Gemma's norms scale by 1 + weight; LLM Compressor's
oneshot already converts them for smoothing, see llmcompressor.modeling.offset_norm.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelcar.compression import recipe
from tests.helpers.tiny_llama import VOCAB_SIZE, build_tokenizer, sentences

pytestmark = [pytest.mark.compress, pytest.mark.usefixtures("hub_offline")]


def test_gemma_mappings_pair_each_norm_with_the_layers_it_feeds() -> None:
    for model_type in ("gemma2", "gemma3", "gemma3_text"):
        attention, mlp = recipe.smoothquant_mappings({"model_type": model_type}) or []
        assert attention[1] == "re:.*input_layernorm$" and "q_proj" in attention[0][0]
        assert mlp[1] == "re:.*pre_feedforward_layernorm$" and "gate_proj" in mlp[0][0]
    assert recipe.smoothquant_mappings({"model_type": "gemma"})[1][1] == "re:.*post_attention_layernorm$"
    assert recipe.smoothquant_mappings({"model_type": "llama"}) is None  # LLM Compressor's own


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    directory = tmp_path_factory.mktemp("tiny-gemma")
    build_tokenizer(directory)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=512,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = Gemma3ForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():  # trained norms are far from their zero init; smoothing must keep them exact
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.normal_(0.0, 2.0)
    model.save_pretrained(directory)  # oneshot reads the config back from model.name_or_path
    model = Gemma3ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(directory)


def _smooth(model: Any, tokenizer: Any, mappings: Any) -> tuple[float, float]:
    """Relative change of the logits and of the norms' weights after SmoothQuant alone."""
    import copy

    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    from modelcar.compression.calibration import to_dataset, tokenize

    model = copy.deepcopy(model)
    samples = tokenize(tokenizer, sentences(8, seed=4), 64)
    probe = torch.tensor([samples[0]])
    with torch.no_grad():
        before = model(input_ids=probe).logits
    norms = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("layernorm.weight")}
    modifier = SmoothQuantModifier(smoothing_strength=0.8, mappings=mappings)
    oneshot(model=model, processor=tokenizer, recipe=[modifier], dataset=to_dataset(samples))
    with torch.no_grad():
        after = model(input_ids=probe).logits
    moved = max(float((p.detach() - norms[n]).abs().max()) for n, p in model.named_parameters() if n in norms)
    return float((after - before).norm() / before.norm()), moved


def test_llm_compressors_own_gemma_smoothing_changes_the_model(tiny_gemma: tuple[Any, Any]) -> None:
    change, _ = _smooth(*tiny_gemma, mappings=None)
    assert change > 0.05


def test_modelcars_gemma_smoothing_is_an_identity(tiny_gemma: tuple[Any, Any]) -> None:
    mappings = recipe.smoothquant_mappings({"model_type": "gemma3_text"})
    change, moved = _smooth(*tiny_gemma, mappings=mappings)
    assert moved > 0.01  # the norms were smoothed ...
    assert change < 1e-4  # ... and the model computes what it did


def test_the_w8a8_recipe_uses_them(tmp_path: Path) -> None:
    from modelcar.compression.settings import Settings
    from modelcar.params import load_params

    settings = Settings.from_params(load_params({"scheme": "w8a8", "workspace": str(tmp_path)}, {}))
    smoothing, _ = recipe.build_recipe(settings, {"model_type": "gemma3_text"})
    assert smoothing.mappings == recipe.smoothquant_mappings({"model_type": "gemma3_text"})
    default, _ = recipe.build_recipe(settings, {"model_type": "llama"})
    assert default.mappings is None
