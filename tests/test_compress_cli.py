"""`modelcar compress` and `modelcar run --compress` as a user runs them, kill -9 included."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from modelcar.compression.staging import DONE, PARTIAL
from modelcar.files import inventory
from tests.helpers.common import MODELCAR, clean_env, run_cli

pytestmark = pytest.mark.compress

CALIBRATION = ("--num-calibration-samples", "8", "--sequence-length", "64")


def offline_env() -> dict[str, str]:
    return clean_env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bits", "3"), "invalid BITS='3': 4 or 8 for scheme gptq"),
        (("--group-size", "100"), "invalid GROUP_SIZE='100': a positive whole number, a power of two"),
        (("--scheme", "fp8-dynamic", "--group-size", "64"), "invalid GROUP_SIZE='64': not set"),
        (("--scheme", "fp8-dynamic", "--dataset", "c4"), "invalid DATASET='c4': not set"),
        (("--scheme", "int3"), "invalid SCHEME='int3'"),
        (("--dataset", "/no/such/calibration.jsonl"), "invalid DATASET='/no/such/calibration.jsonl'"),
        (("--num-calibration-samples", "0"), "invalid NUM_CALIBRATION_SAMPLES='0'"),
    ],
)
def test_bad_parameters_exit_2_before_anything_is_touched(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    workspace = tmp_path / "ws"
    (workspace / "model").mkdir(parents=True)
    (workspace / "model" / "config.json").write_text("{}")
    result = run_cli("compress", "--workspace", str(workspace), *args, env=offline_env())
    assert result.returncode == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in workspace.iterdir()) == ["model"]


def test_kill_9_mid_compression_then_rerun(model_workspace: Path, tiny_llama: Path, calibration_txt: Path) -> None:
    args = [str(MODELCAR), "compress", "--workspace", str(model_workspace), "--dataset", str(calibration_txt)]
    proc = subprocess.Popen([*args, *CALIBRATION], env=offline_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (model_workspace / PARTIAL).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # Frozen, the process cannot move on between what we look at and the kill: the state read
    # here is the state the rerun starts from, whichever moment the freeze caught.
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGSTOP)
    interrupted = (model_workspace / PARTIAL).exists() and not (model_workspace / DONE).exists()
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    # whatever the moment, model/ is the original or a complete compression, never half of one
    model = model_workspace / "model"
    if "quantization_config" in json.loads((model / "config.json").read_text()):
        assert (model_workspace / "model-original").is_dir() and not (model_workspace / PARTIAL).exists()
    else:
        assert inventory(model) == inventory(tiny_llama)

    result = run_cli(*args[1:], *CALIBRATION, "--json", env=offline_env(), timeout=300)
    assert result.returncode == 0, result.output
    record = json.loads(result.stdout)
    assert record["compression"]["preset"] == "W4A16" and record["compression"]["group_size"] == 128
    assert record["stages"]["compress-model"]["status"] == "succeeded"
    assert record["files"] == inventory(model)
    assert "compress-model: done" in result.stderr
    if interrupted:  # the rerun throws the partial output away and compresses again
        assert "discarded the unfinished output of an interrupted compression" in result.stderr
        assert "already compressed" not in result.stderr
        if record["compression"]["device"] == "cpu":
            assert "warning: no GPU found" in result.stderr
    else:  # the kill came after the commit point: the rerun keeps that compression
        assert "already compressed with these settings" in result.stderr
    assert not (model_workspace / PARTIAL).exists() and not (model_workspace / DONE).exists()
    assert {f["path"] for f in inventory(model_workspace / "model-original")} >= {
        f["path"] for f in inventory(tiny_llama)
    }


def test_run_downloads_then_compresses(tmp_path: Path, tiny_llama: Path, calibration_txt: Path) -> None:
    workspace = tmp_path / "ws"
    result = run_cli(
        "run",
        "--model",
        str(tiny_llama),
        "--workspace",
        str(workspace),
        "--compress",
        "--scheme",
        "gptq",
        "--bits",
        "8",
        "--group-size",
        "32",
        "--dataset",
        str(calibration_txt),
        *CALIBRATION,
        "--skip",
        "build-and-push",
        "--json",
        env=offline_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.output
    record = json.loads(result.stdout)
    assert record["stages"]["download-model"]["status"] == "succeeded"
    assert record["stages"]["compress-model"]["status"] == "succeeded"
    section = record["compression"]
    assert (section["enabled"], section["bits"], section["group_size"]) == (True, 8, 32)
    weights = json.loads((workspace / "model" / "config.json").read_text())["quantization_config"]
    assert weights["config_groups"]["group_0"]["weights"]["group_size"] == 32
    assert record["files"] == inventory(workspace / "model")
