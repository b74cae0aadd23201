#!/usr/bin/env python3
"""Benchmark: an import end to end, Hub -> registry, with download and push overlapped or not.

    .venv/bin/python bench/overlap.py [--sizes 1:2,4:8] [--settings open,hub-capped,registry-capped]

A synthetic model (N GiB of random safetensors shards, a config, a tokenizer) is served by the
fast Hub stand-in (tests/helpers/fast_hub.py, sendfile; olah serves ~20 MB/s) and pushed to a
docker-registry on 127.0.0.1 (plain http, storage on disk), on the busybox base (an OCI layout).
Timed, each as a child process (wall time, CPU time, peak RSS), in one run:
- download alone: `modelcar download`;
- push alone: `modelcar build-push` of that finished workspace;
- `modelcar run --sequential` (the stages one after the other, the old behaviour);
- `modelcar run` (download and push overlapped);
- oci-modelcar 1.3.0 end to end, `--workers 1` and `--workers 2` (PyPI, in .tools/oci-modelcar-venv);
- snapshot_download + olot + skopeo copy, the seed's way.
Three settings: Hub and registry unthrottled; the Hub capped at 200 MB/s (its own option); the
registry behind a 200 MB/s proxy (uploads capped). Ratios: overlapped run / max(download, push),
against oci-modelcar and against the seed's way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.oci_registry import make_busybox_layout, start_registry, stop_registry  # noqa: E402

TOOLS = REPO / ".tools"
MODELCAR = Path(sys.executable).with_name("modelcar")
OCI_MODELCAR_VERSION = "1.3.0"
CAP = 200e6
REPO_ID = "bench/model"


class Run(NamedTuple):
    seconds: float
    rss_mb: float
    cpu: float


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    # What earlier steps wrote (the model made, the last run's files) is on disk before the clock
    # starts: its writeback would otherwise slow this command (the first download most).
    os.sync()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = bytearray()
    reader = threading.Thread(target=lambda: err.extend(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    reader.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err.decode(errors='replace')[-3000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def make_model(root: Path, size_gib: float, shards: int) -> Path:
    model = root / "model-src"
    model.mkdir(parents=True)
    per = int(size_gib * (1 << 30)) // shards
    block = os.urandom(1 << 20)
    for i in range(shards):
        with (model / f"model-{i + 1:05d}-of-{shards:05d}.safetensors").open("wb") as out:
            left = per
            while left > 0:
                n = min(left, len(block))
                out.write(os.urandom(16) + block[16:n] if n > 16 else os.urandom(n))
                left -= n
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    return model


class Throttler:
    """A TCP proxy to `upstream` whose client -> upstream bytes are capped (uploads to a registry)."""

    def __init__(self, upstream: tuple[str, int], rate: float) -> None:
        self.upstream, self.rate = upstream, rate
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._next = time.monotonic()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _take(self, count: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(now, self._next) + count / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)

    def _accept(self) -> None:
        while True:
            client, _ = self.sock.accept()
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, capped: bool) -> None:
        try:
            while data := src.recv(1 << 20):
                if capped:
                    self._take(len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def start_hub(model: Path, bandwidth: float | None, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "tests.helpers.fast_hub", "--repo", f"{REPO_ID}={model}"]
    if bandwidth:
        cmd += ["--bandwidth", str(bandwidth)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("wb"))
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().decode().strip()
    if not endpoint.startswith("http"):
        raise SystemExit(f"the Hub stand-in did not start: {log.read_text()[-2000:]}")
    return proc, endpoint


def ensure_oci_modelcar() -> Path | None:
    exe = TOOLS / "oci-modelcar-venv" / "bin" / "oci-modelcar"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(exe.parents[1])], check=True)
        pip = exe.parents[0] / "pip"
        subprocess.run([str(pip), "install", "--quiet", f"oci-modelcar=={OCI_MODELCAR_VERSION}"], check=True)
    except subprocess.CalledProcessError as exc:
        print(f"oci-modelcar could not be installed ({exc}); skipping it", file=sys.stderr)
        return None
    return exe


SNAPSHOT = (
    "import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], local_dir=sys.argv[2])"
)


def scenario(root: Path, model: Path, setting: str, base: Path, oci_modelcar: Path | None) -> dict[str, Run]:
    hub_cap = CAP if setting == "hub-capped" else None
    registry = start_registry(root / "registry")
    throttler = (
        Throttler(("127.0.0.1", int(registry.host.rsplit(":", 1)[1])), CAP) if setting == "registry-capped" else None
    )
    host = f"127.0.0.1:{throttler.port}" if throttler else registry.host
    hub, endpoint = start_hub(model, hub_cap, root / "hub.log")
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    common = ["--base-image", f"oci:{base}", "--no-tls-verify", "--quiet"]
    runs: dict[str, Run] = {}
    try:
        # Untimed: the first writes of a run cost this VM's kernel several times more (sys time)
        # than later ones; without it the first command measured would pay for that.
        warm = root / "ws-warm-up"
        timed([str(MODELCAR), "download", "--model", REPO_ID, "-w", str(warm), "-q"], env)
        shutil.rmtree(warm, ignore_errors=True)
        ws = root / "ws-download"
        runs["download alone"] = timed([str(MODELCAR), "download", "--model", REPO_ID, "-w", str(ws), "-q"], env)
        runs["push alone"] = timed(
            [str(MODELCAR), "build-push", "-w", str(ws), "--image", f"{host}/bench/push:1", *common], env
        )
        for name, flag, repo in (("modelcar run --sequential", ["--sequential"], "seq"), ("modelcar run", [], "ovl")):
            w = root / f"ws-{repo}"
            runs[name] = timed(
                [
                    str(MODELCAR),
                    "run",
                    "--model",
                    REPO_ID,
                    "-w",
                    str(w),
                    "--image",
                    f"{host}/bench/{repo}:1",
                    *common,
                    *flag,
                ],
                env,
            )
            shutil.rmtree(w, ignore_errors=True)
        if oci_modelcar is not None:
            for workers in (1, 2):
                spool = root / f"spool-{workers}"
                runs[f"oci-modelcar --workers {workers}"] = timed(
                    [
                        str(oci_modelcar),
                        "push",
                        "--hf-repo",
                        REPO_ID,
                        "--hf-endpoint",
                        endpoint,
                        "--registry",
                        host,
                        "--target-repo",
                        f"bench/ocimc{workers}",
                        "--target-tag",
                        "1",
                        "--workers",
                        str(workers),
                        "--spool-dir",
                        str(spool),
                        "--quiet",
                    ],
                    {**env, "HF_HOME": str(root / f"hf-home-ocimc{workers}")},
                )
                shutil.rmtree(spool, ignore_errors=True)
        olot = TOOLS / "olot-venv" / "bin" / "olot"
        if olot.exists() and shutil.which("skopeo"):
            snap = root / "snapshot"
            layout = root / "olot-layout"
            started = time.monotonic()
            a = timed([sys.executable, "-c", SNAPSHOT, REPO_ID, str(snap)], env)
            shutil.copytree(base, layout)
            files = sorted(p for p in snap.iterdir() if p.is_file())
            b = timed([str(olot), str(layout), *map(str, files), "--root-dir", str(snap)], env)
            c = timed(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:latest",
                    f"docker://{host}/bench/seed:1",
                ],
                env,
            )
            runs["snapshot_download + olot + skopeo"] = Run(
                time.monotonic() - started, max(a.rss_mb, b.rss_mb, c.rss_mb), a.cpu + b.cpu + c.cpu
            )
            shutil.rmtree(snap, ignore_errors=True)
            shutil.rmtree(layout, ignore_errors=True)
    finally:
        hub.terminate()
        hub.wait()
        stop_registry(registry)
        shutil.rmtree(root / "registry", ignore_errors=True)
        shutil.rmtree(root / "ws-download", ignore_errors=True)
    return runs


def report(size: str, setting: str, runs: dict[str, Run]) -> None:
    print(f"\n== {size}, {setting}")
    for name, run in runs.items():
        print(f"  {name:36s} {run.seconds:7.2f} s  cpu {run.cpu:6.2f} s  peak RSS {run.rss_mb:6.0f} MB")
    floor = max(runs["download alone"].seconds, runs["push alone"].seconds)
    ours = runs["modelcar run"].seconds
    target = 1.3 if setting == "open" else 1.15
    print(f"  modelcar run / max(download, push)   {ours / floor:.2f}x (target within {target}x)")
    print(f"  modelcar run --sequential / overlapped {runs['modelcar run --sequential'].seconds / ours:.2f}x")
    for name in ("oci-modelcar --workers 1", "oci-modelcar --workers 2", "snapshot_download + olot + skopeo"):
        if name in runs:
            print(f"  {name} / modelcar run {' ' * (24 - len(name))}{runs[name].seconds / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1:2,4:8", help="GiB:shards, comma-separated")
    parser.add_argument("--settings", default="open,hub-capped,registry-capped")
    args = parser.parse_args()
    oci_modelcar = ensure_oci_modelcar()
    print("machine: shared and noisy (other work runs beside it); one run of each, not a timed test")
    with tempfile.TemporaryDirectory(prefix="modelcar-bench-overlap-") as tmp:
        base = make_busybox_layout(Path(tmp) / "base")
        for spec in args.sizes.split(","):
            gib, shards = spec.split(":")
            size_root = Path(tmp) / f"size-{gib}"
            model = make_model(size_root, float(gib), int(shards))
            for setting in args.settings.split(","):
                root = size_root / setting
                root.mkdir()
                runs = scenario(root, model, setting, base, oci_modelcar)
                report(f"{gib} GiB in {shards} shards", setting, runs)
                shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(size_root, ignore_errors=True)


if __name__ == "__main__":
    main()
