"""A failed stage keeps what went wrong: the record says it, and the StageFailed raised carries the
stage's own exception (its type, its exit status), not a generic stand-in."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from modelcar.errors import StageFailed
from modelcar.oci.build import DestinationUnreachable
from modelcar.params import load_params
from modelcar.pipeline import run_pipeline
from modelcar.stages import BUILD_PUSH
from modelcar.ui import UI

from .helpers.common import retry_env
from .helpers.fake_model import LLAMA_CONFIG, write_model_dir


def test_a_push_to_nowhere_fails_the_stage_with_its_own_error(
    busybox_layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in retry_env().items():
        monkeypatch.setenv(name, value)
    workspace = tmp_path / "ws"
    write_model_dir(workspace / "model", {"config.json": LLAMA_CONFIG})
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]  # closed again: nothing listens there
    cli = {
        "workspace": str(workspace),
        "image": f"127.0.0.1:{port}/nowhere/model:1",
        "base_image": f"oci:{busybox_layout}",
        "tls_verify": "false",
    }
    with pytest.raises(StageFailed) as caught:
        run_pipeline(load_params(cli, {}), UI(quiet=True), (BUILD_PUSH,), explicit=True)
    failure = caught.value
    assert failure.stage == BUILD_PUSH and failure.exit_code == 1
    assert isinstance(failure.cause, DestinationUnreachable), type(failure.cause)
    assert "cannot reach the destination OCI_IMAGE=" in str(failure.cause)
    assert str(failure).startswith(f"stage {BUILD_PUSH} failed: ") and f"127.0.0.1:{port}" in str(failure)
    record = json.loads((workspace / "run.json").read_text())
    assert record["stages"][BUILD_PUSH]["status"] == "failed"
    assert record["stages"][BUILD_PUSH]["error"] == str(failure).removeprefix(f"stage {BUILD_PUSH} failed: ")
