"""kill -9 during `modelcar build-push` at several moments, then the same command again.

The rerun must finish without hand cleaning, give the digest of a fault-free push, and, for an
OCI layout destination, leave nothing half-written (no temporary file, every blob whole,
index.json valid). The moments are made exact with the HTTP proxy: a request is stalled at a
known point (mid-upload, at a blob's completing PUT, at the manifest PUT, mid-download of a base
layer) and modelcar is killed while it waits; a layer written to a layout is caught by watching
its temporary file grow.

The sweep of a dead writer's temporary blob that these reruns rely on is tested in-process in
test_oci_layout.py; faults that the command survives without being killed in test_faults_registry.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers.common import run_cli, wait_for
from .helpers.fake_model import write_fault_model
from .helpers.fault_proxy import Action, HttpFaultProxy, ProxyRequest, Stall
from .helpers.image_check import (
    MIB,
    NEEDS_SKOPEO_UMOCI,
    assert_layout_intact,
    build_push_args,
    build_push_command,
    fault_env,
    image_record,
    new_workspace,
    pull_and_compare,
    temp_files,
    unpack_layout_and_compare,
)
from .helpers.oci_registry import Registry, push_layout
from .helpers.secrets import captured_output

pytestmark = NEEDS_SKOPEO_UMOCI
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fault_model(tmp_path_factory.mktemp("crash-model") / "model")


@pytest.fixture(scope="module")
def registry_base(oci_registry: Registry, busybox_layout: Path) -> str:
    """The busybox base in the registry, as crash/base:1 (a base modelcar has to download)."""
    push_layout(busybox_layout, f"{oci_registry.host}/crash/base:1")
    return "crash/base:1"


@pytest.fixture(scope="module")
def references(
    oci_registry: Registry,
    busybox_layout: Path,
    registry_base: str,
    model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Fault-free digests: on the busybox layout base, and on the same base from the registry."""
    out: dict[str, Any] = {}
    for name, base in (
        ("layout-base", f"oci:{busybox_layout}"),
        ("registry-base", f"{oci_registry.host}/{registry_base}"),
    ):
        tmp = tmp_path_factory.mktemp(f"crash-reference-{name}")
        workspace = new_workspace(tmp / "ws", model)
        result = run_cli(*build_push_args(workspace, f"oci:{tmp / 'out'}:v1", base), env=fault_env())
        assert result.returncode == 0, result.output
        image = image_record(workspace)
        out[name] = image["digest"]
        out["model-layers"] = [layer["digest"] for layer in image["layers"]]
    return out


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=fault_env(), stdout=out, stderr=subprocess.STDOUT)


def kill(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """kill -9; True when it was still running (False: it had finished before the signal)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    captured_output.append(log.read_text(errors="replace"))
    return proc.returncode == -signal.SIGKILL


def rerun(command: list[str], workspace: Path) -> dict[str, Any]:
    result = run_cli(*command[1:], env=fault_env(), timeout=180)
    assert result.returncode == 0, result.output
    assert "lock" not in result.stderr.lower(), result.stderr
    return image_record(workspace)


# ---- a registry destination ----------------------------------------------------------------


def _shard_patch(request: ProxyRequest) -> Action | None:
    # The shards' PATCHes (16 and 20 MiB; the base's layer is smaller) stop after 3 MiB.
    big = int(request.headers.get("content-length", "0")) > 8 * MIB
    return Stall(request_after=3 * MIB) if request.kind == "PATCH upload" and big else None


def _second_blob_done(request: ProxyRequest) -> Action | None:
    return Stall() if request.kind == "PUT upload" and request.number >= 2 else None


def _manifest(request: ProxyRequest) -> Action | None:
    return Stall() if request.kind == "PUT manifest" else None


REGISTRY_MOMENTS = {
    "first-layer-uploading": _shard_patch,
    "between-layers": _second_blob_done,
    "before-manifest-put": _manifest,
}


@pytest.mark.parametrize("moment", list(REGISTRY_MOMENTS))
def test_kill_during_a_push_to_a_registry_then_rerun(
    oci_registry: Registry,
    busybox_layout: Path,
    model: Path,
    references: dict[str, Any],
    tmp_path: Path,
    moment: str,
) -> None:
    workspace = new_workspace(tmp_path / "ws", model)
    repository = f"crash/{moment}"
    with HttpFaultProxy(oci_registry.host, REGISTRY_MOMENTS[moment]) as proxy:
        command = build_push_command(workspace, f"{proxy.host}/{repository}:1", f"oci:{busybox_layout}")
        proc = spawn(command, tmp_path / "killed.log")
        assert proxy.stalled.wait(60), (tmp_path / "killed.log").read_text()
        if moment == "between-layers":
            assert wait_for(lambda: [r.status for r in proxy.requests("PUT upload")].count(201) == 1, 10)
        if moment == "before-manifest-put":
            assert (
                len([r for r in proxy.requests("PUT upload") if r.status == 201]) == len(references["model-layers"]) + 2
            )
        assert kill(proc, tmp_path / "killed.log"), "modelcar finished before it could be killed"
        tagged = httpx.get(oci_registry.url(f"/v2/{repository}/manifests/1"), headers={"Accept": MANIFEST_ACCEPT})
        assert tagged.status_code == 404

        proxy.decide = None
        proxy.release()
        before = len(proxy.requests())
        image = rerun(command, workspace)
        again = proxy.requests()[before:]

    assert image["digest"] == references["layout-base"]
    if moment == "before-manifest-put":  # every blob was there: the rerun sends none again
        assert not [r for r in again if r.kind in ("POST upload", "PATCH upload")], [r.target for r in again]
    pull_and_compare(f"docker://{oci_registry.host}/{repository}@{image['digest']}", model, tmp_path, "pulled")


# ---- an OCI layout destination ---------------------------------------------------------------


def _growing_temp(layout: Path) -> bool:
    """A temporary blob of over 1 MiB is in the layout (a layer being written)."""
    directory = layout / "blobs" / "sha256"
    for path in directory.glob(".*") if directory.is_dir() else []:
        try:
            if path.stat().st_size > MIB:
                return True
        except FileNotFoundError:
            continue
    return False


def _has_blob(layout: Path, digest: str) -> bool:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).is_file()


def _assert_not_tagged(layout: Path) -> None:
    index = layout / "index.json"
    if index.is_file():
        assert json.loads(index.read_text())["manifests"] == []


def test_kill_while_a_layer_is_written_to_a_layout_then_rerun(
    busybox_layout: Path, model: Path, references: dict[str, Any], tmp_path: Path
) -> None:
    # Layers are written at disk speed: the moment lasts tens of ms, so it is watched for closely
    # and the run tried again on the rare machine where the process wins the race.
    for attempt in range(5):
        workspace = new_workspace(tmp_path / f"ws{attempt}", model)
        layout = tmp_path / f"out{attempt}"
        command = build_push_command(workspace, f"oci:{layout}:v1", f"oci:{busybox_layout}")
        proc = spawn(command, tmp_path / "killed.log")
        while not _growing_temp(layout) and proc.poll() is None:
            time.sleep(0.0005)
        if kill(proc, tmp_path / "killed.log") and temp_files(layout):
            break  # killed with a blob half-written
        print(f"attempt {attempt}: modelcar got past the moment before the kill")
    else:
        pytest.fail("modelcar always got past the moment to kill it")

    _assert_not_tagged(layout)
    image = rerun(command, workspace)
    assert image["digest"] == references["layout-base"]
    assert_layout_intact(layout, "v1", image["digest"])
    unpack_layout_and_compare(layout, "v1", model, tmp_path, "unpacked")


def test_kill_between_layers_before_the_manifest_of_a_layout_then_rerun(
    oci_registry: Registry, registry_base: str, model: Path, references: dict[str, Any], tmp_path: Path
) -> None:
    """Every model layer is in the layout; the base's layer is half-downloaded; no manifest yet."""

    def decide(request: ProxyRequest) -> Action | None:
        # GET blob #1 is the base's config (read first); #2 its layer, stalled after 64 KiB.
        return Stall(response_after=64 * 1024) if request.kind == "GET blob" and request.number >= 2 else None

    workspace = new_workspace(tmp_path / "ws", model)
    layout = tmp_path / "out"
    with HttpFaultProxy(oci_registry.host, decide) as proxy:
        command = build_push_command(workspace, f"oci:{layout}:v1", f"{proxy.host}/{registry_base}")
        proc = spawn(command, tmp_path / "killed.log")
        assert proxy.stalled.wait(60), (tmp_path / "killed.log").read_text()
        assert wait_for(lambda: all(_has_blob(layout, d) for d in references["model-layers"]))
        assert temp_files(layout), "the base layer is being written"
        assert kill(proc, tmp_path / "killed.log")
        _assert_not_tagged(layout)

        proxy.decide = None
        proxy.release()
        image = rerun(command, workspace)

    assert image["digest"] == references["registry-base"]
    assert_layout_intact(layout, "v1", image["digest"])
    unpack_layout_and_compare(layout, "v1", model, tmp_path, "unpacked")
