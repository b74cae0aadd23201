"""Quantization quality on a real model: `make quality` (not part of `make test`).

Gemma-3-270M (tests/helpers/gemma_gguf.py: PyPI's GGUF part wheels expanded to a plain HF
directory) is compressed by `modelcar compress --evaluate` with each scheme, calibrated on
Wikipedia text (gensim's shortened dump) and measured on Lee news text (lee_background, never
calibrated on); a plain round-to-nearest W4A16 g128 (LLM Compressor's QuantizationModifier, no
calibration) is the floor GPTQ must beat. Each run is a process of its own, for its time and
peak memory. Prints a table, writes it as JSON, and exits 1 when a gate fails:

    GPTQ W4A16 g128 within 1.45x of the original's perplexity, and better than RTN
    W8A16 and W8A8 within 1.03x (or W8A8 refused before any work, with a clear error)
    every compressed model loads in transformers and generates
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import gemma_gguf  # noqa: E402

MODELCAR = Path(sys.executable).with_name("modelcar")


@dataclass(frozen=True)
class Row:
    name: str
    args: tuple[str, ...]  # modelcar compress options; () for the RTN floor
    gate: float | None = None  # the largest accepted ratio
    may_refuse: bool = False  # a clear refusal (exit 2) before any work also passes


ROWS = (
    Row("GPTQ W4A16 g128", ("--scheme", "gptq", "--bits", "4", "--group-size", "128"), 1.45),
    Row("RTN W4A16 g128", ()),
    Row("GPTQ W4A16 per-channel", ("--scheme", "gptq", "--bits", "4", "--group-size", "channel")),
    Row("GPTQ W8A16 g128", ("--scheme", "gptq", "--bits", "8"), 1.03),
    Row("W8A8 (SmoothQuant + GPTQ)", ("--scheme", "w8a8"), 1.03, may_refuse=True),
    Row("FP8 dynamic", ("--scheme", "fp8-dynamic")),
)


@dataclass
class Result:
    name: str
    status: str = "ok"  # ok, refused, failed
    before: float | None = None
    after: float | None = None
    ratio: float | None = None
    bytes_before: int | None = None
    bytes_after: int | None = None
    compress_seconds: float | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    generates: bool | None = None
    message: str = ""
    gates: list[str] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gemma", type=Path, default=REPO / ".tools" / "gemma", help="where the model is built")
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (default 32)")
    parser.add_argument("--length", type=int, default=512, help="tokens per sample (default 512)")
    parser.add_argument("--only", default="", help="comma-separated row names (substrings) to run")
    parser.add_argument("--out", type=Path, default=REPO / ".tools" / "quality.json")
    parser.add_argument("--rtn", nargs=3, metavar=("SOURCE", "DEST", "EVAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rtn:
        return _rtn(Path(args.rtn[0]), Path(args.rtn[1]), Path(args.rtn[2]), args.length)

    hf = gemma_gguf.ensure(args.gemma.absolute())
    with tempfile.TemporaryDirectory(prefix="modelcar-quality-") as tmp:
        root = Path(tmp)
        calibration, evaluation = _texts(hf, args.gemma / "text", root, args.samples, args.length)
        results = []
        for row in ROWS:
            if args.only and not any(part.strip().lower() in row.name.lower() for part in args.only.split(",")):
                continue
            print(f"== {row.name}", file=sys.stderr, flush=True)
            result = _run_row(row, hf, root, calibration, evaluation, args)
            results.append(result)
            print(f"   {_line(result)}", file=sys.stderr, flush=True)
    _judge(results)
    print(_table(results, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    failed = [gate for r in results for gate in r.gates if gate.startswith("FAIL")]
    for gate in failed:
        print(gate, file=sys.stderr)
    return 1 if failed else 0


def _texts(hf: Path, text: Path, root: Path, samples: int, length: int) -> tuple[Path, Path]:
    """Calibration: `samples` chunks of Wikipedia; evaluation: samples // 8 chunks of lee_background
    (what --evaluate takes of EVALUATE_DATASET): 4 x 512 = 2048 tokens with the defaults."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf)
    wiki = gemma_gguf.token_chunks(tokenizer, list(gemma_gguf.wikipedia_paragraphs(text)), length, samples)
    lee = gemma_gguf.token_chunks(tokenizer, gemma_gguf.lee_articles(text), length, max(1, samples // 8))
    return gemma_gguf.write_jsonl(root / "wiki.jsonl", wiki), gemma_gguf.write_jsonl(root / "lee.jsonl", lee)


def _run_row(row: Row, hf: Path, root: Path, calibration: Path, evaluation: Path, args: Any) -> Result:
    result = Result(row.name)
    workspace = root / "ws"
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(hf, workspace / "model")
    if row.args:
        command = [
            str(MODELCAR),
            "compress",
            "--quiet",
            "--workspace",
            str(workspace),
            *row.args,
            "--dataset",
            str(calibration),
            "--num-calibration-samples",
            str(args.samples),
            "--sequence-length",
            str(args.length),
            "--evaluate",
            "--evaluate-dataset",
            str(evaluation),
            "--max-perplexity-ratio",
            "1e9",  # the benchmark records every number; its own gates judge them
        ]
    else:
        command = [
            sys.executable,
            __file__,
            "--length",
            str(args.length),
            "--rtn",
            str(hf),
            str(workspace),
            str(evaluation),
        ]
    code, output, result.seconds, result.peak_rss_bytes = _measure(command)
    if code != 0:
        result.status = "refused" if code == 2 else "failed"
        result.message = _last_error(output)
        return result
    _read_record(result, workspace / "run.json")
    result.generates = _generates(workspace / "model")
    shutil.rmtree(workspace, ignore_errors=True)
    return result


def _measure(command: list[str]) -> tuple[int, str, float, int]:
    """Runs command; its exit status, output, wall seconds and peak RSS."""
    started = time.monotonic()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    return process.returncode, output, round(time.monotonic() - started, 1), usage.ru_maxrss * 1024


def _last_error(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:") or "Error" in line]
    return (errors[-1] if errors else output.strip().splitlines()[-1] if output.strip() else "")[:600]


def _read_record(result: Result, run_json: Path) -> None:
    record = json.loads(run_json.read_text())
    section = record["compression"]
    evaluation = section["evaluation"]
    result.before, result.after = evaluation["perplexity_before"], evaluation["perplexity_after"]
    result.ratio = evaluation.get("ratio")
    result.bytes_before, result.bytes_after = section["bytes_before"], section["bytes_after"]
    result.compress_seconds = section["seconds"]


def _generates(model_dir: Path) -> bool:
    """The compressed model loads in plain transformers and generates new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"   generates: {text!r}", file=sys.stderr)
    return output.shape[1] > inputs["input_ids"].shape[1]


def _rtn(source: Path, workspace: Path, evaluation: Path, length: int) -> int:
    """The floor: round-to-nearest int4 g128 (no calibration), measured like modelcar measures."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from modelcar.compression import calibration, evaluate, quantize
    from modelcar.compression.device import detect
    from modelcar.compression.staging import directory_bytes

    device = detect()
    tokenizer = quantize.load_tokenizer(source)
    samples = calibration.tokenize(tokenizer, calibration.load_texts(str(evaluation), 64, tokenizer), length)
    before = evaluate.perplexity(source, samples, device)
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128)
    recipe = QuantizationModifier(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}, ignore=["lm_head"]
    )
    started = time.monotonic()
    model = quantize.load_model(source)
    oneshot(model=model, processor=tokenizer, recipe=recipe)
    output = workspace / "model"
    shutil.rmtree(output, ignore_errors=True)
    model.save_pretrained(output, save_compressed=True)
    tokenizer.save_pretrained(output)
    seconds = round(time.monotonic() - started, 3)
    del model
    after = evaluate.perplexity(output, samples, device)
    section = {
        "bytes_before": directory_bytes(source),
        "bytes_after": directory_bytes(output),
        "seconds": seconds,
        "evaluation": {
            "perplexity_before": before["perplexity"],
            "perplexity_after": after["perplexity"],
            "ratio": round(after["perplexity"] / before["perplexity"], 4),
        },
    }
    (workspace / "run.json").write_text(json.dumps({"compression": section}))
    return 0


def _judge(results: list[Result]) -> None:
    by_name = {r.name: r for r in results}
    for row in ROWS:
        result = by_name.get(row.name)
        if result is None:
            continue
        if result.status == "ok" and result.generates is False:
            result.gates.append(f"FAIL {row.name}: the compressed model does not generate")
        if row.gate is None:
            continue
        if result.status == "refused" and row.may_refuse:
            result.gates.append(f"pass {row.name}: refused before any work ({result.message})")
        elif result.status != "ok" or result.ratio is None:
            result.gates.append(f"FAIL {row.name}: {result.status} ({result.message})")
        elif result.ratio > row.gate:
            result.gates.append(f"FAIL {row.name}: ratio {result.ratio} above {row.gate}")
        else:
            result.gates.append(f"pass {row.name}: ratio {result.ratio} within {row.gate}")
    gptq, rtn = by_name.get(ROWS[0].name), by_name.get(ROWS[1].name)
    if gptq and rtn and gptq.ratio is not None and rtn.ratio is not None:
        verdict = "pass" if gptq.ratio < rtn.ratio else "FAIL"
        gptq.gates.append(f"{verdict} GPTQ W4A16 g128 ({gptq.ratio}x) better than RTN ({rtn.ratio}x)")


def _line(result: Result) -> str:
    if result.status != "ok":
        return f"{result.status}: {result.message}"
    return f"{result.before} -> {result.after} ({result.ratio}x) in {result.seconds} s"


def _table(results: list[Result], args: Any) -> str:
    head = (
        f"Gemma-3-270M, {args.samples} x {args.length} tokens of Wikipedia to calibrate, perplexity on "
        f"{max(1, args.samples // 8) * args.length} tokens of lee_background; {os.cpu_count()} CPUs\n\n"
        "| scheme | perplexity before | after | ratio | size before | after | compress s | total s | peak RSS "
        "| gates |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in results:
        gates = "; ".join(g.split(":")[0] for g in r.gates) or "-"
        if r.status != "ok":
            lines.append(
                f"| {r.name} | {r.status}: {r.message} | | | | | | {r.seconds} | {_gb(r.peak_rss_bytes)} | {gates} |"
            )
            continue
        lines.append(
            f"| {r.name} | {r.before} | {r.after} | {r.ratio}x | {_mb(r.bytes_before)} | {_mb(r.bytes_after)} | "
            f"{r.compress_seconds} | {r.seconds} | {_gb(r.peak_rss_bytes)} | {gates} |"
        )
    return "\n".join(lines)


def _mb(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.0f} MB"


def _gb(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


if __name__ == "__main__":
    sys.exit(main())
