"""download-model and build-and-push side by side: order, failure, kill -9 and rerun.

The overlap is proven by order, not by timing: the stand-in Hub holds the last shard back until
the registry has the first shard's layer, so a run that completes pushed before it downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from modelcar.oci.layers import plan_layers
from modelcar.oci.model_dir import scan_model

from .helpers.common import MODELCAR, clean_env, retry_env, run_cli, wait_for
from .helpers.fake_model import LLAMA_CONFIG, model_files, write_model_dir
from .helpers.fast_hub import FastHub
from .helpers.image_check import MIB, NEEDS_SKOPEO_UMOCI, pull_and_compare
from .helpers.oci_registry import Registry
from .helpers.secrets import captured_output

pytestmark = NEEDS_SKOPEO_UMOCI

FIRST, LAST = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
REPO = "acme/overlap"


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return model_files(
        {
            "config.json": LLAMA_CONFIG,
            "tokenizer.json": '{"version": "1.0"}',
            "sub/generation_config.json": '{"max_new_tokens": 16}',
            FIRST: 24 * MIB + 5,
            LAST: 18 * MIB,
        }
    )


@pytest.fixture(scope="module")
def model_dir(files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("overlap-model") / "model", files)


@pytest.fixture(scope="module")
def layer_digests(model_dir: Path) -> dict[str, str]:
    """Each file's layer digest, as modelcar builds it."""
    out = {}
    for plan in plan_layers(scan_model(model_dir)):
        digest = hashlib.sha256()
        for chunk in plan.stream().chunks():
            digest.update(chunk)
        out[plan.title] = "sha256:" + digest.hexdigest()
    return out


@pytest.fixture
def hub(files: dict[str, bytes], tmp_path: Path) -> Iterator[FastHub]:
    server = FastHub(tmp_path / "hub").start()
    server.create_repo(REPO, files)
    yield server
    server.stop()


def _has_blob(registry: Registry, repository: str, digest: str) -> bool:
    return httpx.head(registry.url(f"/v2/{repository}/blobs/{digest}")).status_code == 200


def _has_tag(registry: Registry, repository: str, tag: str) -> bool:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    return httpx.head(registry.url(f"/v2/{repository}/manifests/{tag}"), headers={"Accept": accept}).status_code == 200


def _env(hub: FastHub, workspace: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        HF_ENDPOINT=hub.endpoint,
        MODELCAR_WORKSPACE=str(workspace),
        HF_HOME=str(workspace.parent / "hf-home"),
        **retry_env(attempts=3),
        **extra,
    )


def _run_args(image: str, base: str, *extra: str) -> list[str]:
    return ["run", "--model", REPO, "--image", image, "--base-image", base, "--no-tls-verify", "--json", *extra]


def _digest(result_stdout: str) -> str:
    return json.loads(result_stdout)["image"]["digest"]


def test_the_push_starts_before_the_download_ends(
    hub: FastHub, oci_registry: Registry, layer_digests: dict[str, str], busybox_layout: Path, tmp_path: Path
) -> None:
    repository = "overlap/order"
    hub.hold(LAST, lambda: _has_blob(oci_registry, repository, layer_digests[FIRST]))
    base = f"oci:{busybox_layout}:latest"
    overlapped = run_cli(*_run_args(f"{oci_registry.host}/{repository}:1", base), env=_env(hub, tmp_path / "ws"))
    assert overlapped.returncode == 0, overlapped.output
    assert hub.released[LAST], "the last shard went out on the time limit, not after the first layer arrived"
    record = json.loads(overlapped.stdout)
    assert record["stages"]["download-model"]["status"] == "succeeded"
    assert record["stages"]["build-and-push"]["status"] == "succeeded"
    assert {f["path"] for f in record["files"]} == set(hub.repos[REPO].resolve("main").files)  # type: ignore[union-attr]

    sequential = run_cli(
        *_run_args(f"{oci_registry.host}/{repository}:2", base, "--sequential"), env=_env(hub, tmp_path / "ws2")
    )
    assert sequential.returncode == 0, sequential.output
    assert _digest(sequential.stdout) == _digest(overlapped.stdout)


def _bytes_in(files: Iterable[Path]) -> int:
    """The bytes of files being written (one that is renamed meanwhile counts as none)."""
    total = 0
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _upload_received(registry: Registry, repository: str) -> int:
    """The bytes Distribution has stored of the blob uploads open in `repository`."""
    uploads = registry.root / "storage/docker/registry/v2/repositories" / repository / "_uploads"
    return _bytes_in(uploads.glob("*/data"))


def _manifest_blobs(registry: Registry, repository: str, tag: str) -> set[str]:
    """The config and layers the image's manifest names."""
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    manifest = httpx.get(registry.url(f"/v2/{repository}/manifests/{tag}"), headers=accept).json()
    return {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


def _layout_received(layout: Path) -> int:
    """The bytes of the blobs being written into the OCI layout (temporary files)."""
    return _bytes_in((layout / "blobs" / "sha256").glob("*.tmp"))


@pytest.mark.parametrize("destination", ["registry", "layout"])
def test_a_shard_streams_while_it_downloads(
    destination: str,
    hub: FastHub,
    oci_registry: Registry,
    layer_digests: dict[str, str],
    busybox_layout: Path,
    tmp_path: Path,
) -> None:
    """The Hub stops half-way through the first shard until the destination holds part of its
    layer: the layer goes out from the file still downloading (to a plain-http registry by
    sendfile; into a layout from the chunks, as httpx sends them over TLS)."""
    repository, layout = "overlap/stream", tmp_path / "layout"
    if destination == "registry":
        image = f"{oci_registry.host}/{repository}:1"
        hub.pause(FIRST, 12 * MIB, lambda: _upload_received(oci_registry, repository) >= 4 * MIB)
    else:
        image = f"oci:{layout}:1"
        hub.pause(FIRST, 12 * MIB, lambda: _layout_received(layout) >= 4 * MIB)
    result = run_cli(*_run_args(image, f"oci:{busybox_layout}:latest"), env=_env(hub, tmp_path / "ws"))
    assert result.returncode == 0, result.output
    assert hub.released[FIRST], "the first shard's layer did not start before the shard was on disk"
    record = json.loads(result.stdout)
    assert layer_digests[FIRST] in {layer["digest"] for layer in record["image"]["layers"]}
    shard = {f["path"]: f for f in record["files"]}[FIRST]
    assert shard["sha256"] == hashlib.sha256((tmp_path / "ws" / "model" / FIRST).read_bytes()).hexdigest()


def test_a_shard_started_again_by_the_download_is_pushed_again(
    hub: FastHub,
    oci_registry: Registry,
    model_dir: Path,
    layer_digests: dict[str, str],
    busybox_layout: Path,
    tmp_path: Path,
) -> None:
    """The first GET of the shard sends wrong bytes and breaks; the next ignores the Range and
    sends it whole. The layer streamed from the wrong bytes must not be the image's."""
    repository = "overlap/restart"
    hub.restart(FIRST, 6 * MIB)
    image = f"{oci_registry.host}/{repository}:1"
    result = run_cli(*_run_args(image, f"oci:{busybox_layout}:latest"), env=_env(hub, tmp_path / "ws"))
    assert result.returncode == 0, result.output
    ranges = [r for method, path, r in hub.requests if method == "GET" and path.endswith(FIRST)]
    assert ranges == [None, f"bytes={6 * MIB}-", None], ranges  # broken; resumed, answered from 0; again
    layers = {layer["digest"] for layer in json.loads(result.stdout)["image"]["layers"]}
    assert layer_digests[FIRST] in layers
    completed = {
        unquote(uri.split("digest=", 1)[1].split("&")[0])
        for method, uri in oci_registry.requests()
        if method == "PUT" and f"/{repository}/blobs/uploads/" in uri and "digest=" in uri
    }
    assert layer_digests[FIRST] in completed
    assert completed <= _manifest_blobs(oci_registry, repository, "1"), "a blob of the wrong bytes was completed"
    pull_and_compare(f"docker://{image}", model_dir, tmp_path, "pulled")


def test_a_download_failing_midway_ends_the_push_and_leaves_no_tag(
    hub: FastHub, oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    repository = "overlap/failing"
    hub.fail(LAST, 403)
    result = run_cli(
        *_run_args(f"{oci_registry.host}/{repository}:1", f"oci:{busybox_layout}:latest"),
        env=_env(hub, tmp_path / "ws"),
    )
    assert result.returncode == 1, result.output
    assert "download-model" in result.stderr and "403" in result.stderr, result.stderr
    stages = json.loads(result.stdout)["stages"]
    assert stages["download-model"]["status"] == "failed"
    assert stages["build-and-push"]["status"] == "failed"
    assert "download-model failed" in stages["build-and-push"]["error"]
    assert not _has_tag(oci_registry, repository, "1")


def _record_lists(workspace: Path, name: str) -> bool:
    try:
        data = json.loads((workspace / "download.progress").read_text())
    except (OSError, ValueError):
        return False
    return any(item["path"] == name for item in data.get("complete") or [])


def _first_shard_arriving(hub: FastHub) -> Callable[[Path, Registry, str, str], bool]:
    return lambda ws, registry, repository, digest: hub.served.get(FIRST, 0) > 4 * MIB


def _first_shard_on_disk(hub: FastHub) -> Callable[[Path, Registry, str, str], bool]:
    return lambda ws, registry, repository, digest: _record_lists(ws, FIRST)


def _first_layer_in_registry(hub: FastHub) -> Callable[[Path, Registry, str, str], bool]:
    return lambda ws, registry, repository, digest: _has_blob(registry, repository, digest)


@pytest.mark.parametrize(
    "moment", [_first_shard_arriving, _first_shard_on_disk, _first_layer_in_registry], ids=lambda f: f.__name__
)
def test_kill_9_then_rerun_gives_the_sequential_image(
    moment: Callable[[FastHub], Callable[[Path, Registry, str, str], bool]],
    files: dict[str, bytes],
    model_dir: Path,
    layer_digests: dict[str, str],
    oci_registry: Registry,
    busybox_layout: Path,
    tmp_path: Path,
) -> None:
    repository = f"overlap/kill-{moment.__name__.strip('_').replace('_', '-')}"
    image = f"{oci_registry.host}/{repository}:1"
    base = f"oci:{busybox_layout}:latest"
    hub = FastHub(tmp_path / "hub", bandwidth=40e6).start()  # slow enough to catch the first shard mid-way
    try:
        hub.create_repo(REPO, files)
        killed = False
        hub.hold(LAST, lambda: killed)  # the last shard waits for the kill: the run is caught mid-way
        ws = tmp_path / "ws"
        env = _env(hub, ws)
        proc = subprocess.Popen(
            [str(MODELCAR), *_run_args(image, base)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        reached = moment(hub)
        assert wait_for(
            lambda: reached(ws, oci_registry, repository, layer_digests[FIRST]) or proc.poll() is not None, 60
        )
        assert proc.poll() is None, "the run ended before the moment to kill it came"
        os.kill(proc.pid, signal.SIGKILL)
        captured_output.append(proc.communicate()[0].decode(errors="replace"))
        killed = True
        assert not _has_tag(oci_registry, repository, "1")
        served_before = dict(hub.served)
        had_first_layer = _has_blob(oci_registry, repository, layer_digests[FIRST])
        log_before = len(oci_registry.requests())

        rerun = run_cli(*_run_args(image, base, "--skip", "cleanup-workspace"), env=env)
        assert rerun.returncode == 0, rerun.output
        if moment is not _first_shard_arriving:  # the first shard was complete on disk: kept
            assert hub.served.get(FIRST, 0) == served_before.get(FIRST, 0), "the first shard was downloaded again"
        if had_first_layer:  # the registry had its layer: not sent again
            sent = [uri for method, uri in oci_registry.requests()[log_before:] if method in ("PUT", "PATCH")]
            assert not [uri for uri in sent if layer_digests[FIRST].split(":")[1] in uri], sent
        sequential = run_cli(
            *_run_args(f"{oci_registry.host}/{repository}:seq", base, "--sequential"), env=_env(hub, tmp_path / "seq")
        )
        assert sequential.returncode == 0, sequential.output
    finally:
        hub.stop()
    assert _digest(rerun.stdout) == _digest(sequential.stdout)
    pull_and_compare(f"docker://{image}", model_dir, tmp_path, "pulled")


def test_delete_after_push_leaves_no_file_behind_and_refuses_a_repush(
    hub: FastHub, oci_registry: Registry, model_dir: Path, busybox_layout: Path, tmp_path: Path
) -> None:
    image = f"{oci_registry.host}/overlap/delete:1"
    base = f"oci:{busybox_layout}:latest"
    env = _env(hub, tmp_path / "ws")
    result = run_cli(*_run_args(image, base, "--delete-after-push"), env=env)
    assert result.returncode == 0, result.output
    left = [p for p in (tmp_path / "ws" / "model").rglob("*") if p.is_file()]
    assert left == [], left
    assert {f["path"] for f in json.loads(result.stdout)["files"]} == {
        p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()
    }
    pull_and_compare(f"docker://{image}", model_dir, tmp_path, "pulled")
    again = run_cli("build-push", "--image", image, "--base-image", base, "--no-tls-verify", env=env)
    assert again.returncode == 1 and "DELETE_AFTER_PUSH" in again.stderr and "download-model again" in again.stderr
    refused = run_cli(*_run_args(image, base, "--delete-after-push", "--compress"), env=env)
    assert refused.returncode == 2 and "DELETE_AFTER_PUSH" in refused.stderr


def test_a_followed_download_that_vanishes_ends_build_push_in_bounded_time(
    hub: FastHub, oci_registry: Registry, busybox_layout: Path, tmp_path: Path
) -> None:
    hub.hold(LAST, lambda: False)  # the download never finishes: its process is killed mid-way
    ws = tmp_path / "ws"
    env = _env(hub, ws, MODELCAR_DOWNLOAD_STALE_S="3")
    assert run_cli("cleanup", env=env).returncode == 0
    download = subprocess.Popen(
        [str(MODELCAR), "download", "--model", REPO], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    push = subprocess.Popen(
        [
            str(MODELCAR),
            "build-push",
            "--follow-download",
            "--image",
            f"{oci_registry.host}/overlap/vanish:1",
            "--base-image",
            f"oci:{busybox_layout}:latest",
            "--no-tls-verify",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: _record_lists(ws, FIRST), 60)
        os.kill(download.pid, signal.SIGKILL)
        captured_output.append(download.communicate()[0].decode(errors="replace"))
        _, err = push.communicate(timeout=60)
    finally:
        for proc in (download, push):
            if proc.poll() is None:
                proc.kill()
    assert push.returncode == 1, err
    assert b"download-model stopped without a word" in err
    assert not _has_tag(oci_registry, "overlap/vanish", "1")
