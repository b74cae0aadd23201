"""Load the model, run LLM Compressor's oneshot with the recipe, save it compressed."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import ModelcarError, UsageError
from ..files import walk_files
from ..jsonfile import read_object
from .device import Device, is_out_of_memory, out_of_memory
from .modelcheck import WEIGHT_SUFFIXES
from .recipe import build_recipe
from .settings import Settings
from .staging import STAMP

LOG_FORMAT = "{time:HH:mm:ss} | {function} | {level} - {message}"
# Written by save_pretrained for the compressed model; the source's versions are not copied.
REWRITTEN = frozenset({"config.json", "generation_config.json", "recipe.yaml", STAMP})


class CompressionFailed(ModelcarError):
    """LLM Compressor failed on this model."""


def configure_logging(quiet: bool, progress_bars: bool) -> None:
    """LLM Compressor's own log (per-layer progress) to stderr, warnings only with --quiet;
    the libraries' progress bars only on a terminal (in a pod's log they are noise).

    Its default sink is stdout, which `--json` keeps for the run record alone.
    """
    from llmcompressor import logger
    from llmcompressor.logger import support_log_once

    if os.environ.get("LLM_COMPRESSOR_LOG_DISABLED", "").lower() == "true":
        logger.disable("llmcompressor")
        return
    level = os.environ.get("LLM_COMPRESSOR_LOG_LEVEL") or ("WARNING" if quiet else "INFO")
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), format=LOG_FORMAT, filter=support_log_once)
    if not progress_bars:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def load_tokenizer(source: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise UsageError(
            f"cannot load the tokenizer of the model in {source} ({type(exc).__name__}: {exc}); calibration "
            "tokenizes the dataset with the model's own tokenizer, so its files (tokenizer.json, "
            "tokenizer_config.json, ...) must be there: check HUGGINGFACE_ALLOW_PATTERNS"
        ) from None


def load_model(source: Path) -> Any:
    """The full-precision model on the CPU; oneshot moves one layer at a time to the GPU."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(source, dtype="auto")


def quantize(
    source: Path,
    destination: Path,
    settings: Settings,
    tokenizer: Any,
    calibration: Any,
    device: Device,
) -> list[str]:
    """Compresses source into destination; returns the recipe's modifier names."""
    from llmcompressor import oneshot

    config = read_object(source / "config.json", CompressionFailed)
    recipe = build_recipe(settings, config)
    samples = len(calibration) if calibration is not None else None
    step = "loading the model"
    model: Any = None
    try:
        model = load_model(source)
        step = "calibrating and quantizing"
        kwargs: dict[str, Any] = {}
        if calibration is not None:
            kwargs = {
                "dataset": calibration,
                "num_calibration_samples": samples,
                "max_seq_length": settings.sequence_length,
                "shuffle_calibration_samples": False,
            }
        oneshot(model=model, processor=tokenizer, recipe=recipe, **kwargs)
        step = "saving the compressed model"
        plain_enums_in_yaml()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            model.save_pretrained(destination, save_compressed=True)
    except ModelcarError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(device, step, samples, settings.sequence_length) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise CompressionFailed(f"LLM Compressor failed while {step}: {type(exc).__name__}: {first}") from exc
    finally:
        del model
    copy_companions(source, destination)
    return [type(modifier).__name__ for modifier in recipe]


def plain_enums_in_yaml() -> None:
    """recipe.yaml as plain YAML: LLM Compressor dumps the recipe with yaml.dump, which writes an
    enum value (GPTQ's actorder) as a `!!python/object/apply:` tag that neither yaml.safe_load nor
    LLM Compressor's own recipe loader reads back; an enum is written as its value instead."""
    import enum

    import yaml

    yaml.add_multi_representer(enum.Enum, _represent_enum, Dumper=yaml.Dumper)


def _represent_enum(dumper: Any, value: Any) -> Any:
    return dumper.represent_data(value.value)


def copy_companions(source: Path, destination: Path) -> list[str]:
    """Copies the files that are not weights (tokenizer, chat template, model card, ...) as they are."""
    copied = []
    for path in walk_files(source):
        relative = path.relative_to(source)
        name = path.name.lower()
        if path.is_dir() or relative.as_posix() in REWRITTEN or name.endswith(WEIGHT_SUFFIXES):
            continue
        if name.endswith(".index.json"):
            continue  # the shard index of the original weights
        target = destination / relative
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(relative.as_posix())
    return copied
