"""The base image against KServe's ModelCar contract (sh, ln, sleep, ls on PATH; no ENTRYPOINT),
decided from its layers' tar headers; and a base or destination registry that cannot be reached."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
from pathlib import Path

import pytest

from modelcar.oci.base_check import DEFAULT_PATH, FitnessCache, Platform, check
from modelcar.oci.image import Descriptor
from modelcar.oci.layout import Layout
from modelcar.oci.reference import LayoutRef
from modelcar.oci.rootfs import FILE, LayerFiles, RootFS, read_layer
from modelcar.oci.store import BlobSource, LayoutStore

from .helpers.base_images import (
    Member,
    busybox_members,
    directory,
    file,
    make_base_layout,
    symlink,
    tar_of,
    whiteout,
)
from .helpers.common import CliResult, clean_env, free_port, retry_env, run_cli
from .helpers.fake_model import LLAMA_CONFIG, write_model_dir
from .helpers.oci_registry import Registry, push_layout

try:
    import zstandard  # noqa: F401

    HAS_ZSTD = True
except ImportError:
    HAS_ZSTD = False

FAST = retry_env(attempts=1)  # one try: these failures are not transient, or do not pass
UNRESOLVABLE = "base.registry.invalid"  # .invalid never resolves (RFC 6761), offline or not


# ---- the file tree of a layer stack ------------------------------------------------------------


def tree_of(*layers: list[Member]) -> RootFS:
    tree = RootFS()
    for members in layers:
        tree.apply(read_layer([tar_of(members)]))
    return tree


def test_symlinked_directories_and_hard_links_resolve_as_in_ubi() -> None:
    # ubi9-micro: /bin -> usr/bin, sh -> bash, coreutils' commands as links to one file.
    tree = tree_of(
        [
            symlink("bin", "usr/bin"),
            directory("usr"),
            directory("usr/bin"),
            file("usr/bin/bash"),
            symlink("usr/bin/sh", "bash"),
            file("usr/bin/coreutils"),
            Member("usr/bin/ln", "hardlink", "usr/bin/coreutils", mode=0),  # the target's mode counts
            symlink("usr/bin/sleep", "/usr/bin/coreutils"),
            symlink("usr/bin/ls", "../../usr/./bin/coreutils"),
        ]
    )
    dirs = ["/bin"]
    assert {name: tree.which(name, dirs) for name in ("sh", "ln", "sleep", "ls")} == {
        "sh": "/bin/sh",
        "ln": "/bin/ln",
        "sleep": "/bin/sleep",
        "ls": "/bin/ls",
    }
    assert tree.lookup("/bin/sh").kind == FILE


def test_whiteouts_delete_from_the_layers_below_only() -> None:
    lower = busybox_members()
    upper = [whiteout("bin/ls"), file("bin/extra")]
    tree = tree_of(lower, upper)
    assert tree.which("ls", ["/bin"]) is None
    assert tree.which("sleep", ["/bin"]) == "/bin/sleep"
    # The same layer may delete a lower file and add it again.
    again = tree_of(lower, [whiteout("bin/ls"), file("bin/ls")])
    assert again.which("ls", ["/bin"]) == "/bin/ls"


def test_an_opaque_directory_hides_everything_below_it() -> None:
    tree = tree_of(busybox_members(), [directory("bin"), file("bin/.wh..wh..opq", 0o644), file("bin/sh")])
    assert tree.which("sh", ["/bin"]) == "/bin/sh"
    assert [tree.which(n, ["/bin"]) for n in ("ln", "sleep", "ls")] == [None, None, None]


def test_not_executable_dangling_and_looping_links_are_not_commands() -> None:
    tree = tree_of(
        [
            file("bin/sleep", mode=0o644),
            symlink("bin/ls", "/nowhere/ls"),
            symlink("bin/sh", "sh2"),
            symlink("bin/sh2", "sh"),
            directory("bin/ln"),
        ]
    )
    assert [tree.which(n, ["/bin", "relative/bin"]) for n in ("sleep", "ls", "sh", "ln")] == [None] * 4


def test_a_file_replacing_a_directory_drops_what_was_in_it() -> None:
    tree = tree_of(busybox_members(), [file("bin")])
    assert tree.which("sh", ["/bin"]) is None


def test_gzip_layers_are_read_and_an_unreadable_layer_says_so() -> None:
    members = busybox_members()
    layer = gzip.compress(tar_of(members))
    # Chunks of odd sizes, as a registry sends them.
    chunks = [layer[i : i + 777] for i in range(0, len(layer), 777)]
    files = read_layer(chunks)
    assert isinstance(files, LayerFiles)
    assert {e.parts for e in files.entries} >= {("bin", "sh"), ("bin", "ls")}
    with pytest.raises(Exception, match="not a readable tar archive"):
        read_layer([b"this is not a tar" * 100])


@pytest.mark.skipif(HAS_ZSTD, reason="the zstandard module is installed: zstd layers are read")
def test_a_zstd_layer_without_the_module_is_a_reason_not_a_guess() -> None:
    with pytest.raises(Exception, match="zstd-compressed and the zstandard module is not installed"):
        read_layer([b"\x28\xb5\x2f\xfd" + b"\0" * 64])


# ---- the check, and what it remembers -----------------------------------------------------------


class CountingStore(LayoutStore):
    """A layout base that counts the layer blobs read."""

    def __init__(self, path: Path) -> None:
        super().__init__(LayoutRef(path, "latest"))
        self.reads = 0

    def blob(self, descriptor: Descriptor) -> BlobSource:
        self.reads += 1
        return super().blob(descriptor)


def platforms_of(path: Path, name: str = "linux/amd64") -> list[Platform]:
    layout = Layout(path)
    manifest = layout.read_json(layout.resolve("latest").digest)
    layers = [Descriptor.from_json(d) for d in manifest["layers"]]
    return [Platform(name, layers, layout.read_json(manifest["config"]["digest"]))]


def test_a_busybox_base_is_fit_and_the_verdict_is_remembered(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members()], compress=True)
    store = CountingStore(base)
    cache_file = tmp_path / "check.json"
    first = check(store, "busybox", platforms_of(base), FitnessCache(cache_file))
    assert (first.ready, first.missing, first.cached, first.path) == (True, [], False, DEFAULT_PATH)
    assert first.messages() == []
    assert store.reads == 1

    second = check(store, "busybox", platforms_of(base), FitnessCache(cache_file))
    assert (second.ready, second.cached, second.found) == (True, True, first.found)
    assert store.reads == 1, "the second check read a layer"


def test_path_comes_from_the_config_and_entrypoint_is_a_warning(tmp_path: Path) -> None:
    base = make_base_layout(
        tmp_path / "base",
        [[directory("opt"), directory("opt/tools"), *[file(f"opt/tools/{n}") for n in ("sh", "ln", "sleep", "ls")]]],
        config={"Env": ["LANG=C", "PATH=/opt/tools"], "Entrypoint": ["/opt/tools/entry"]},
    )
    fitness = check(LayoutStore(LayoutRef(base, "latest")), "tools", platforms_of(base), FitnessCache(None))
    assert fitness.missing == [] and fitness.path == "/opt/tools"
    assert fitness.ready is False and fitness.entrypoint == ["/opt/tools/entry"]
    [(level, text)] = fitness.messages()
    assert level == "warning" and "ENTRYPOINT" in text and "/opt/tools/entry" in text and "instead of a shell" in text


def test_one_platform_is_checked_linux_amd64_first_and_named(tmp_path: Path) -> None:
    fit = make_base_layout(tmp_path / "fit", [busybox_members()])
    unfit = make_base_layout(tmp_path / "unfit", [busybox_members(("sh",))])
    store = LayoutStore(LayoutRef(unfit, "latest"))
    # Both layouts' blobs in one store: copy the fit one's blobs next to the unfit one's.
    for blob in (fit / "blobs" / "sha256").iterdir():
        (unfit / "blobs" / "sha256" / blob.name).write_bytes(blob.read_bytes())
    platforms = [*platforms_of(unfit, "linux/arm64"), *platforms_of(fit, "linux/amd64")]
    fitness = check(store, "multi", platforms, FitnessCache(None))
    assert (fitness.platform, fitness.platforms, fitness.ready) == ("linux/amd64", 2, True)
    first_only = check(store, "multi", platforms[:1], FitnessCache(None))
    assert first_only.platform == "linux/arm64" and first_only.missing == ["ln", "sleep", "ls"]
    platforms[0].name = "linux/s390x"
    other = check(store, "multi", [platforms[0], platforms[0]], FitnessCache(None))
    assert "linux/s390x, the one of its 2 platforms checked" in other.messages()[0][1]


def test_a_layer_that_cannot_be_read_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members()])
    platforms = platforms_of(base)
    digest = platforms[0].layers[0].digest
    (base / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(b"garbage" * 1000)
    cache = FitnessCache(tmp_path / "check.json")
    fitness = check(LayoutStore(LayoutRef(base, "latest")), "broken", platforms, cache)
    assert fitness.ready is None and digest in str(fitness.reason)
    [(level, text)] = fitness.messages()
    assert level == "warning" and text.startswith("could not check the base image broken")
    assert not (tmp_path / "check.json").exists(), "a failed check is not remembered"


def test_an_aborted_push_stops_the_check(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members()])
    abort = threading.Event()
    abort.set()
    fitness = check(LayoutStore(LayoutRef(base, "latest")), "b", platforms_of(base), FitnessCache(None), abort)
    assert fitness.ready is None and "stopped" in str(fitness.reason)


# ---- through the CLI ---------------------------------------------------------------------------


def workspace(tmp_path: Path, name: str = "ws") -> Path:
    ws = tmp_path / name
    write_model_dir(ws / "model", {"config.json": LLAMA_CONFIG, "model.safetensors": b"\0" * 4096})
    return ws


def push(ws: Path, image: str, base: str, *extra: str, env: dict[str, str] | None = None) -> CliResult:
    return run_cli(
        "build-push", "--workspace", str(ws), "--image", image, "--base-image", base, *extra, env=env or clean_env()
    )


def kserve_record(ws: Path) -> dict:
    return json.loads((ws / "run.json").read_text())["image"]["kserve"]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_cli_busybox_base_is_ready_without_a_warning(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members()], compress=True)
    ws = workspace(tmp_path)
    result = push(ws, f"oci:{tmp_path / 'out'}:v1", f"oci:{base}")
    assert result.returncode == 0, result.output
    assert warnings(result.stderr) == []
    record = kserve_record(ws)
    assert record["ready"] is True and record["missing"] == [] and record["platform"] == "linux/amd64"
    assert record["found"] == {"sh": "/bin/sh", "ln": "/bin/ln", "sleep": "/bin/sleep", "ls": "/bin/ls"}


def test_cli_a_base_without_sleep_warns_naming_it(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members(("sh", "ln", "ls"))])
    ws = workspace(tmp_path)
    result = push(ws, f"oci:{tmp_path / 'out'}:v1", f"oci:{base}")
    assert result.returncode == 0, result.output
    [warning] = warnings(result.stderr)
    assert "has no sleep on its PATH" in warning and "oci+native://" in warning
    assert kserve_record(ws)["missing"] == ["sleep"] and kserve_record(ws)["ready"] is False


def test_cli_a_whiteout_in_an_upper_layer_removes_ls(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members(), [whiteout("bin/ls")]], compress=True)
    ws = workspace(tmp_path)
    result = push(ws, f"oci:{tmp_path / 'out'}:v1", f"oci:{base}")
    assert result.returncode == 0, result.output
    [warning] = warnings(result.stderr)
    assert "has no ls on its PATH" in warning
    assert kserve_record(ws)["missing"] == ["ls"]


def test_cli_an_entrypoint_warns_that_kserve_args_would_go_to_it(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members()], config={"Entrypoint": ["/bin/busybox"]})
    ws = workspace(tmp_path)
    result = push(ws, f"oci:{tmp_path / 'out'}:v1", f"oci:{base}")
    assert result.returncode == 0, result.output
    [warning] = warnings(result.stderr)
    assert 'ENTRYPOINT ["/bin/busybox"]' in warning and "instead of a shell" in warning
    record = kserve_record(ws)
    assert record["ready"] is False and record["missing"] == [] and record["entrypoint"] == ["/bin/busybox"]


def test_cli_scratch_gets_a_notice_naming_the_storage_that_can_serve_it(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    result = push(ws, f"oci:{tmp_path / 'out'}:v1", "scratch")
    assert result.returncode == 0, result.output
    assert warnings(result.stderr) == []
    assert "oci+native:// or oci+fetch://" in result.stderr and "scratch" in result.stderr
    record = kserve_record(ws)
    assert record["ready"] is False and record["serve_with"] == ["oci+native://", "oci+fetch://"]


def test_cli_a_repush_does_not_read_the_base_layers_again(oci_registry: Registry, tmp_path: Path) -> None:
    # The base in the same registry: its layer is mounted, never copied, so the only GETs of it
    # are the check's.
    layout = make_base_layout(tmp_path / "base", [busybox_members()], compress=True)
    push_layout(layout, f"{oci_registry.host}/checkbase/busybox:1")
    layer = platforms_of(layout)[0].layers[0].digest
    ws = workspace(tmp_path)

    def layer_reads() -> int:
        return sum(1 for m, uri in oci_registry.requests() if m == "GET" and uri.endswith(f"/blobs/{layer}"))

    image, base = f"{oci_registry.host}/checked/model:1", f"{oci_registry.host}/checkbase/busybox:1"
    cache = tmp_path / "user-cache"  # the verdict outlives the workspace, which cleanup empties
    env = clean_env(XDG_CACHE_HOME=str(cache))
    first = push(ws, image, base, "--no-tls-verify", env=env)
    assert first.returncode == 0, first.output
    assert layer_reads() == 1
    assert kserve_record(ws)["ready"] is True and kserve_record(ws)["cached"] is False
    shutil.rmtree(ws)
    ws = workspace(tmp_path)  # a new run: cleanup-workspace emptied it
    second = push(ws, image, base, "--no-tls-verify", env=env)
    assert second.returncode == 0, second.output
    assert layer_reads() == 1, "the re-push read the base's layer again"
    assert kserve_record(ws)["ready"] is True and kserve_record(ws)["cached"] is True
    assert (cache / "modelcar" / "base-check.json").is_file()


def test_a_base_too_large_to_read_during_a_push_is_not_read(tmp_path: Path) -> None:
    base = make_base_layout(tmp_path / "base", [busybox_members()], compress=True)
    store = LayoutStore(LayoutRef(base, "latest"))
    fitness = check(store, "big", platforms_of(base), FitnessCache(None), max_bytes=1024)
    assert fitness.ready is None and "more than the 0 MiB the check reads during a push" in (fitness.reason or "")
    [(level, text)] = fitness.messages()
    assert level == "warning" and "modelcar inspect --check-base" in text
    assert check(store, "big", platforms_of(base), FitnessCache(None), max_bytes=None).ready is True


# ---- a base or destination that cannot be reached ------------------------------------------------


def test_cli_an_unresolvable_base_names_base_image_and_the_ways_around_it(
    oci_registry: Registry, tmp_path: Path
) -> None:
    base = f"{UNRESOLVABLE}/ubi9/ubi9-micro@sha256:" + "4" * 64
    ws = workspace(tmp_path)
    result = push(ws, f"{oci_registry.host}/unreached/model:1", base, "--no-tls-verify", env=clean_env(**FAST))
    assert result.returncode == 1, result.output
    assert "build-and-push" in result.stderr and "Traceback" not in result.output
    assert f"cannot reach the base image BASE_IMAGE={base}" in result.stderr
    assert f"BASE_IMAGE=<mirror-host>/ubi9/ubi9-micro@sha256:{'4' * 64}" in result.stderr  # a mirror
    assert f"skopeo copy docker://{base} oci:DIR:base" in result.stderr  # a layout copied in
    assert "BASE_IMAGE=oci:DIR:base" in result.stderr
    assert "BASE_IMAGE=scratch" in result.stderr and "oci+native://" in result.stderr
    pushed = [(m, uri) for m, uri in oci_registry.requests() if "/unreached/" in uri and m == "PUT"]
    assert not [p for p in pushed if "/manifests/" in p[1]], "an image was pushed"


def test_cli_the_plain_http_hint_is_not_given_for_a_name_that_does_not_resolve(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    out = tmp_path / "out"
    for base in (f"{UNRESOLVABLE}/a/b:1", f"127.0.0.1:{free_port()}/a/b:1"):
        result = push(ws, f"oci:{out}:v1", base, env=clean_env(**FAST))
        assert result.returncode == 1, result.output
        assert f"cannot reach the base image BASE_IMAGE={base}" in result.stderr
        assert "--no-tls-verify" not in result.stderr and "plain-http" not in result.stderr
    index = out / "index.json"
    assert not index.exists() or json.loads(index.read_text())["manifests"] == [], "an image was written"


def test_cli_an_unreachable_destination_names_oci_image(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    image = "dest.registry.invalid/a/model:1"
    result = push(ws, image, "scratch", env=clean_env(**FAST))
    assert result.returncode == 1, result.output
    assert f"cannot reach the destination OCI_IMAGE={image}" in result.stderr
    assert "cannot reach registry dest.registry.invalid" in result.stderr
    assert "--no-tls-verify" not in result.stderr and "OCI_IMAGE=oci:DIR:TAG" in result.stderr


def test_cli_https_to_a_plain_http_registry_still_hints_no_tls_verify(oci_registry: Registry, tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    result = push(ws, f"{oci_registry.host}/tls/model:1", "scratch", env=clean_env(**FAST))
    assert result.returncode == 1, result.output
    assert f"OCI_IMAGE={oci_registry.host}/tls/model:1" in result.stderr
    assert "for a plain-http registry pass --no-tls-verify" in result.stderr
