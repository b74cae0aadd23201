"""The compress-model stage: LLM Compressor one-shot quantization of <workspace>/model in place.

The compressed model replaces <workspace>/model; the original is kept as model-original (and
is what a later run with other settings starts from). See compression/staging.py for how a
kill at any moment is recovered from.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from ..compression import calibration, gate, modelcheck
from ..compression.device import CPU_WARNING, Device
from ..compression.extra import import_extra
from ..compression.recipe import IGNORE
from ..compression.settings import Settings
from ..compression.staging import Staging, directory_bytes
from ..files import inventory
from ..space import require_free_space
from .context import StageContext

NAME = "compress-model"
# What run.json keeps of a compression the quality gate rejected.
REJECTED_KEYS = ("scheme", "preset", "bits", "group_size", "dataset", "num_calibration_samples", "recipe", "evaluation")


def run(context: StageContext) -> None:
    # Whatever the libraries print goes to stderr: stdout is the run record's with --json.
    with contextlib.redirect_stdout(sys.stderr):
        _run(context)


def _run(context: StageContext) -> None:
    params, workspace, ui = context.params, context.workspace, context.ui
    settings = Settings.from_params(params)
    import_extra()

    from ..compression import device as devices
    from ..compression import evaluate, quantize

    staging = Staging(workspace)
    for note in staging.recover():
        ui.info(f"{NAME}: {note}")
    source = staging.choose_source()

    stamp = staging.finished_stamp() if source == workspace.original_dir else None
    if stamp and _reusable(stamp, settings):
        evaluation = stamp["record"].get("evaluation")
        if settings.evaluate and not gate.passes(evaluation, settings):
            _reject(context, staging, settings, {**stamp["record"], "evaluation": evaluation})
        ui.info(f"{NAME}: {workspace.model_dir} is already compressed with these settings; nothing to do")
        _record(context, stamp["record"])
        return

    config = modelcheck.read_config(source)
    modelcheck.check_full_precision(config, source)
    modelcheck.check_causal_lm(config)
    modelcheck.check_group_size(config, settings)
    if settings.scheme == "gptq" and settings.group_size is not None:
        modelcheck.check_layer_widths(modelcheck.linear_widths(source, IGNORE), settings)
    needed = modelcheck.estimate_output_bytes(source, config, settings)
    require_free_space(workspace.root, needed, f"the compressed model of {source.name}")

    device = devices.detect()
    if not device.is_accelerator:
        ui.warn(CPU_WARNING)
    ui.info(f"{NAME}: {settings.describe()} on {device.describe()}")
    quantize.configure_logging(ui.quiet, ui.show_progress)

    tokenizer = None
    calibration_set, held_out, used = None, [], 0
    if settings.dataset is not None:
        tokenizer = quantize.load_tokenizer(source)
        samples, held_out = _samples(context, settings, tokenizer, config)
        used = len(samples)
        if settings.calibrates:
            calibration_set = calibration.to_dataset(samples)

    evaluation: dict[str, Any] = {}
    if settings.evaluate:
        what = f"{len(held_out)} samples of {settings.evaluation_source}"
        ui.info(f"{NAME}: measuring perplexity of the original model on {what}")
        evaluation["before"] = evaluate.perplexity(source, held_out, device)

    bytes_before = directory_bytes(source)
    destination = staging.begin()
    started = time.monotonic()
    modifiers = quantize.quantize(source, destination, settings, tokenizer, calibration_set, device)
    seconds = round(time.monotonic() - started, 3)
    devices.release_memory()

    if settings.evaluate:
        ui.info(f"{NAME}: measuring perplexity of the compressed model")
        evaluation["after"] = evaluate.perplexity(destination, held_out, device)

    section = _section(settings, destination, bytes_before, seconds, device, modifiers, used)
    if evaluation:
        section["evaluation"] = _evaluation(evaluation, settings)
        if not gate.passes(section["evaluation"], settings):
            staging.discard()
            _reject(context, staging, settings, section)
    staging.commit(source, settings.quantization_key(), section)
    _record(context, section)
    ratio = section["bytes_after"] / max(1, bytes_before)
    ui.info(
        f"{NAME}: {_mb(bytes_before)} -> {_mb(section['bytes_after'])} ({ratio:.0%}) in {seconds:.1f} s; "
        f"original kept in {workspace.original_dir}"
    )
    if evaluation:
        e = section["evaluation"]
        ui.info(f"{NAME}: perplexity {e['perplexity_before']} -> {e['perplexity_after']}")


def _reusable(stamp: dict[str, Any], settings: Settings) -> bool:
    """The same compression, and (with --evaluate) measured on the same text."""
    record = stamp.get("record") or {}
    if stamp.get("settings") != settings.quantization_key():
        return False
    if not settings.evaluate:
        return True
    evaluation = record.get("evaluation")
    return isinstance(evaluation, dict) and evaluation.get("dataset") == settings.evaluation_source


def _reject(context: StageContext, staging: Staging, settings: Settings, section: dict[str, Any]) -> NoReturn:
    """The quality gate failed: the original goes back as model/, the record says why, and the
    stage fails (so build-and-push and register-model do not run)."""
    restored = staging.restore_original()
    if restored:
        context.ui.info(f"{NAME}: put the original model back in {context.workspace.model_dir}")
    rejected = {key: section.get(key) for key in REJECTED_KEYS}
    context.record.set("compression", {"enabled": False, "rejected": rejected})
    context.record.set("files", inventory(context.workspace.model_dir))
    raise gate.failure(section["evaluation"], settings)


def _samples(
    context: StageContext, settings: Settings, tokenizer: Any, config: dict[str, Any]
) -> tuple[list[list[int]], list[list[int]]]:
    """Tokenized calibration samples and, with --evaluate, the samples to measure on: from
    EVALUATE_DATASET, or held out of DATASET; either way none of them is a calibration sample."""
    assert settings.dataset and settings.sequence_length and settings.num_calibration_samples
    ui = context.ui
    length = settings.sequence_length
    positions = modelcheck.text_config(config).get("max_position_embeddings")
    if isinstance(positions, int) and 0 < positions < length:
        ui.warn(f"SEQUENCE_LENGTH {length} is longer than the model's {positions} positions; using {positions}")
        length = positions
    wanted = settings.num_calibration_samples if settings.calibrates else 0
    separate = settings.evaluate_dataset is not None
    extra = settings.evaluation_samples if settings.evaluate and not separate else 0
    token = context.params.hf_token.get_secret_value() if context.params.hf_token else None
    samples: list[list[int]] = []
    if wanted + extra:
        ui.info(f"{NAME}: reading {wanted + extra} samples of {calibration.describe_source(settings.dataset)}")
        texts = calibration.load_texts(settings.dataset, wanted + extra, tokenizer, token)
        samples = calibration.tokenize(tokenizer, texts, length)
    held_out: list[list[int]] = []
    if settings.evaluate and separate:
        held_out = _evaluation_samples(settings, tokenizer, length, token, ui)
    elif extra:
        if len(samples) < 2 and settings.calibrates:
            raise calibration.CalibrationDataError(
                f"--evaluate needs at least 2 samples of {settings.dataset} (one to calibrate, one to "
                f"measure); it has {len(samples)}"
            )
        extra = min(extra, len(samples) // 2) if settings.calibrates else len(samples)
        samples, held_out = samples[: len(samples) - extra], samples[len(samples) - extra :]
    if settings.evaluate:
        held_out = _disjoint(held_out, samples if settings.calibrates else [])
        if not held_out:
            where = settings.evaluate_dataset or settings.dataset
            raise calibration.CalibrationDataError(
                f"--evaluate found no usable sample in {where} that calibration does not also use; "
                "give more text, or another EVALUATE_DATASET"
            )
    if settings.calibrates:
        if not samples:
            raise calibration.CalibrationDataError(f"calibration dataset {settings.dataset} holds no usable text")
        if len(samples) < wanted:
            ui.warn(f"only {len(samples)} calibration samples in {settings.dataset} (NUM_CALIBRATION_SAMPLES={wanted})")
    return samples, held_out


def _evaluation_samples(settings: Settings, tokenizer: Any, length: int, token: str | None, ui: Any) -> list[list[int]]:
    """Samples of EVALUATE_DATASET, read with the same loader as the calibration data."""
    assert settings.evaluate_dataset is not None
    count = settings.evaluation_samples
    ui.info(f"{NAME}: reading {count} evaluation samples of {calibration.describe_source(settings.evaluate_dataset)}")
    try:
        texts = calibration.load_texts(settings.evaluate_dataset, count, tokenizer, token)
    except calibration.CalibrationDataError as exc:
        raise calibration.CalibrationDataError(f"EVALUATE_DATASET: {exc}") from None
    return calibration.tokenize(tokenizer, texts, length)


def _disjoint(held_out: list[list[int]], calibration_samples: list[list[int]]) -> list[list[int]]:
    """The held-out samples that are not also calibration samples (a text repeated in the data)."""
    seen = {tuple(ids) for ids in calibration_samples}
    return [ids for ids in held_out if tuple(ids) not in seen]


def _section(
    settings: Settings,
    output: Path,
    bytes_before: int,
    seconds: float,
    device: Device,
    modifiers: list[str],
    used: int,
) -> dict[str, Any]:
    qconfig = modelcheck.read_config(output).get("quantization_config") or {}
    section: dict[str, Any] = {
        "enabled": True,
        "scheme": settings.scheme,
        "preset": settings.label,
        "bits": settings.bits,
        "group_size": settings.group_size,
        "dataset": settings.dataset if settings.calibrates else None,
        "sequence_length": settings.sequence_length if settings.calibrates else None,
        "num_calibration_samples": settings.num_calibration_samples if settings.calibrates else None,
        "calibration_samples_used": used if settings.calibrates else 0,
        "recipe": modifiers,
        "format": qconfig.get("format"),
        "ignore": qconfig.get("ignore"),
        "bytes_before": bytes_before,
        "bytes_after": directory_bytes(output),
        "seconds": seconds,
        "device": device.describe(),
        "original": "model-original",
        "llmcompressor": _version("llmcompressor"),
    }
    return section


def _evaluation(evaluation: dict[str, dict[str, Any]], settings: Settings) -> dict[str, Any]:
    before, after = evaluation["before"], evaluation["after"]
    result = {
        "metric": "perplexity",
        "dataset": settings.evaluation_source,
        "held_out": settings.evaluate_dataset is None,
        "sequence_length": settings.sequence_length,
        "perplexity_before": _finite_or_text(before["perplexity"]),
        "perplexity_after": _finite_or_text(after["perplexity"]),
        "samples": before["samples"],
        "tokens": before["tokens"],
        "max_perplexity_ratio": settings.max_perplexity_ratio,
    }
    value = gate.ratio(result)
    result["ratio"] = round(value, 4) if math.isfinite(value) else _finite_or_text(value)
    return result


def _finite_or_text(value: float | None) -> float | str | None:
    """JSON has no infinity or NaN: those are recorded as the text "inf" / "nan"."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _record(context: StageContext, section: dict[str, Any]) -> None:
    context.record.set("compression", section)
    context.record.set("files", inventory(context.workspace.model_dir))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
