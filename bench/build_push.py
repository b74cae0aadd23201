#!/usr/bin/env python3
"""Benchmark: modelcar build-push vs olot + skopeo copy vs the floor, on a local registry.

    .venv/bin/python bench/build_push.py --size-gib 1 --shards 2

A synthetic model (N GiB of random safetensors shards, a config, a tokenizer, a README) goes on
top of a busybox base (as an OCI layout) to a docker-registry on 127.0.0.1, three ways:
- modelcar: `modelcar build-push` (first push, then a repeated push);
- olot + skopeo: olot (from PyPI, in .tools/olot-venv) adds the files to a copy of the base
  layout, then `skopeo copy` pushes it (skipped with a message if olot cannot be installed);
- floor: each file's raw bytes streamed once to the registry (one PATCH per file, all files in
  parallel), its sha256 computed on the way, as the PUT that completes an upload needs it;
- floor, digests known: the same with the digests computed before the clock starts (not a real
  push of fresh bytes: it shows what the hashing costs).
Each runs as a child process; its wall time and peak RSS (getrusage of the child) are shown.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.oci_registry import make_busybox_layout, start_registry, stop_registry  # noqa: E402

OLOT_VERSION = "1.2.1"
TOOLS = REPO / ".tools"
MODELCAR = Path(sys.executable).with_name("modelcar")
FLOOR = "floor"
FLOOR_KNOWN = "floor, digests known"
MODELCAR_RUN = "modelcar build-push"
OLOT_SKOPEO = "olot + skopeo"

FLOOR_SCRIPT = r"""
import hashlib, http.client, os, sys, threading, urllib.parse
host, repo = sys.argv[1], sys.argv[2]
jobs = [(sys.argv[i], sys.argv[i + 1]) for i in range(3, len(sys.argv), 2)]
def push(path, digest):  # digest "-": computed on the way, as the file is sent
    conn = http.client.HTTPConnection(host)
    conn.request("POST", f"/v2/{repo}/blobs/uploads/")
    r = conn.getresponse(); r.read(); loc = urllib.parse.urlsplit(r.getheader("Location"))
    hasher = hashlib.sha256()
    def body():
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                if digest == "-":
                    hasher.update(chunk)
                yield chunk
    conn.request("PATCH", loc.path + "?" + loc.query, body=body(),
                 headers={"Content-Length": str(os.path.getsize(path)), "Content-Type": "application/octet-stream"})
    r = conn.getresponse(); r.read(); loc = urllib.parse.urlsplit(r.getheader("Location"))
    final = "sha256:" + hasher.hexdigest() if digest == "-" else digest
    conn.request("PUT", loc.path + "?" + loc.query + "&digest=" + final, body=b"")
    r = conn.getresponse(); r.read(); assert r.status == 201, r.status
threads = [threading.Thread(target=push, args=job) for job in jobs]
[t.start() for t in threads]; [t.join() for t in threads]
"""


def make_model(root: Path, size_gib: float, shards: int) -> Path:
    model = root / "model"
    model.mkdir(parents=True)
    shard_size = int(size_gib * (1 << 30)) // shards
    block = os.urandom(1 << 20)
    for i in range(shards):
        with open(model / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            written = 0
            while written < shard_size:
                n = min(len(block), shard_size - written)
                # Vary each MiB so no two blocks (and no two shards) are equal.
                handle.write(hashlib.sha256(f"{i}:{written}".encode()).digest() + block[32:n])
                written += n
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (model / "tokenizer.json").write_text('{"version": "1.0"}\n' + "x" * 200_000)
    (model / "README.md").write_text("# Synthetic benchmark model\n")
    return model


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a child process."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def drop_registry_data(registry_root: Path) -> None:
    shutil.rmtree(registry_root / "storage" / "docker", ignore_errors=True)


def ensure_olot() -> Path | None:
    olot = TOOLS / "olot-venv" / "bin" / "olot"
    if olot.exists():
        return olot
    try:
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS / "olot-venv")], check=True)
        subprocess.run(
            [str(TOOLS / "olot-venv" / "bin" / "pip"), "install", "--quiet", f"olot=={OLOT_VERSION}"],
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        print(f"olot could not be installed ({exc}); skipping olot + skopeo", file=sys.stderr)
        return None
    return olot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floors and modelcar, best kept (default 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the model (default: a temp dir)")
    parser.add_argument(
        "--registry-dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="the registry's storage (default /dev/shm: a slow disk would time the disk, not the push)",
    )
    args = parser.parse_args()

    # An installed modelcar has its .pyc files; this checkout's editable install would otherwise
    # compile its sources at every start (always, under PYTHONDONTWRITEBYTECODE).
    compileall.compile_dir(str(REPO / "src"), quiet=1)
    root = Path(tempfile.mkdtemp(prefix="modelcar-bench-", dir=args.workdir))
    registry_root = Path(tempfile.mkdtemp(prefix="modelcar-bench-registry-", dir=args.registry_dir))
    registry = start_registry(registry_root)
    rows: list[tuple[str, float, float]] = []
    try:
        print(f"model: {args.size_gib} GiB in {args.shards} shards; registry {registry.host}", file=sys.stderr)
        model = make_model(root / "ws", args.size_gib, args.shards)
        base = make_busybox_layout(root / "busybox")
        files = sorted(p for p in model.iterdir() if p.is_file())
        total = sum(p.stat().st_size for p in files)
        os.sync()  # no writeback of the fresh model competing with the runs

        # The floor reads each file once, hashing it on the way (a push needs the digest); the
        # variant with digests computed before the clock starts shows what the hashing costs.
        jobs_hashing: list[str] = []
        jobs_known: list[str] = []
        for path in files:
            hasher = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    hasher.update(chunk)
            jobs_hashing += [str(path), "-"]
            jobs_known += [str(path), "sha256:" + hasher.hexdigest()]
        floor = [sys.executable, "-c", FLOOR_SCRIPT, registry.host, "bench/floor", *jobs_hashing]
        floor_known = [sys.executable, "-c", FLOOR_SCRIPT, registry.host, "bench/floor", *jobs_known]
        env = {k: v for k, v in os.environ.items() if k not in ("OCI_IMAGE", "BASE_IMAGE", "MODELCAR_WORKSPACE")}
        push = [
            str(MODELCAR),
            "build-push",
            "--workspace",
            str(root / "ws"),
            "--image",
            f"{registry.host}/bench/modelcar:1",
            "--base-image",
            f"oci:{base}",
            "--no-tls-verify",
            "--quiet",
        ]
        cache = root / "ws" / ".modelcar-layer-digests.json"
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):  # alternate, keep each one's best
            for name, cmd in ((FLOOR, floor), (FLOOR_KNOWN, floor_known), (MODELCAR_RUN, push)):
                cache.unlink(missing_ok=True)  # a first push: nothing remembered
                seconds, rss = timed(cmd, env)
                drop_registry_data(registry.root)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, max(rss, best.get(name, (0, 0))[1]))
        rows += [(name, *value) for name, value in best.items()]
        timed(push, env)
        rows.append(("modelcar, pushed again", *timed(push, env)))
        drop_registry_data(registry.root)

        olot = ensure_olot()
        if olot is not None:
            layout = root / "olot-layout"
            shutil.copytree(base, layout)
            started = time.monotonic()
            olot_s, olot_rss = timed([str(olot), str(layout), *map(str, files), "--root-dir", str(model)])
            skopeo_s, skopeo_rss = timed(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:latest",
                    f"docker://{registry.host}/bench/olot:1",
                ]
            )
            rows.append(("olot", olot_s, olot_rss))
            rows.append(("skopeo copy", skopeo_s, skopeo_rss))
            rows.append((OLOT_SKOPEO, time.monotonic() - started, max(olot_rss, skopeo_rss)))
    finally:
        stop_registry(registry)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(registry_root, ignore_errors=True)

    seconds_of = {name: s for name, s, _ in rows}
    ours = seconds_of[MODELCAR_RUN]
    print(f"\n{total / 2**30:.2f} GiB, {len(files)} files, {os.cpu_count()} CPUs, registry storage in {registry_root}")
    print(f"{'run':<24}{'seconds':>9}{'MB/s':>9}{'peak RSS MB':>13}{'vs modelcar':>13}")
    for name, seconds, rss in rows:
        print(f"{name:<24}{seconds:>9.2f}{total / seconds / 1e6:>9.0f}{rss:>13.0f}{seconds / ours:>12.2f}x")
    print(f"\nmodelcar / floor: {ours / seconds_of[FLOOR]:.2f}x (target at most 1.25x)")
    print(f"modelcar / floor with digests known: {ours / seconds_of[FLOOR_KNOWN]:.2f}x")
    if OLOT_SKOPEO in seconds_of:
        print(f"olot + skopeo / modelcar: {seconds_of[OLOT_SKOPEO] / ours:.2f}x (target at least 2.5x)")


if __name__ == "__main__":
    main()
