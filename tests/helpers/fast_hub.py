"""A Hugging Face Hub stand-in fast enough to measure an overlap with (olah serves ~20 MB/s).

Serves, from files on disk (sendfile), what the real huggingface_hub client asks for:
`GET /api/models/{repo}[/revision/{rev}]` (model_info, `?blobs=true` for sizes and LFS sha256),
`GET /api/models/{repo}/tree/{rev}[/{path}]` (list_repo_tree), `GET /api/models/{repo}/refs`,
and `HEAD|GET /{repo}/resolve/{rev}/{path}` with Range, `X-Repo-Commit`, `ETag` and, for large
files, `X-Linked-Etag`/`X-Linked-Size` as the Hub sends for LFS files. Errors carry the Hub's
`X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound), which the client maps to its
exceptions. Revisions: a branch, a tag or a full commit sha.

Options for tests and the benchmark: `bandwidth` (bytes/s over all downloads together),
`latency` (seconds added before every answer), and `hold(path, until)`: a GET of that file waits
(bounded) until `until()` is true, which lets a test prove an order of events without timing;
`pause(path, after, until)` does so after part of the body. `cut`, `fail` and `restart` break a
download in the ways a real Hub or CDN may.

    python -m tests.helpers.fast_hub --port 0 --repo org/name=DIR [--bandwidth 200e6] [--latency 0.02]

serves a directory as a repository (the benchmark's way: no copy), printing its endpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_THRESHOLD = 10 << 20  # the Hub stores larger files in LFS: X-Linked-* headers, `lfs` in listings
CHUNK = 1 << 20
HOLD_LIMIT_S = 120.0


@dataclass
class Commit:
    sha: str
    files: dict[str, Path]  # repo path -> file on disk
    digests: dict[str, str]  # repo path -> sha256 hex


@dataclass
class Repo:
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)


class Throttle:
    """A token bucket shared by every transfer: at most `rate` bytes/s (None: no cap)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, count: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + count / self.rate
            wait = self._next - now  # the end of this chunk's slot: n bytes take n / rate seconds
        if wait > 0:
            time.sleep(wait)


class FastHub:
    def __init__(self, storage: Path, bandwidth: float | None = None, latency: float = 0.0, port: int = 0) -> None:
        self.storage = storage
        self.repos: dict[str, Repo] = {}
        self.throttle = Throttle(bandwidth)
        self.latency = latency
        self.holds: dict[str, Callable[[], bool]] = {}
        self.cuts: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.pauses: dict[str, tuple[int, Callable[[], bool]]] = {}
        self.restarts: dict[str, int] = {}
        self.released: dict[str, bool] = {}  # held path -> whether its condition came true (not the time limit)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.served: dict[str, int] = {}  # repo path -> bytes of its bodies sent
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fast-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FastHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # Repositories

    def create_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        self.repos[repo_id] = Repo()
        return self.commit(repo_id, files)

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit on `branch`: the branch's files with `files` added or replaced."""
        repo = self.repos[repo_id]
        parent = repo.resolve(branch)
        paths = dict(parent.files) if parent else {}
        stage = self.storage / repo_id.replace("/", "--") / f"c{len(repo.commits)}"
        for name, data in files.items():
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            paths[name] = target
        return self._add_commit(repo, paths, branch)

    def serve_directory(self, repo_id: str, directory: Path) -> str:
        """The files under `directory` as repo_id@main, served in place."""
        repo = self.repos.setdefault(repo_id, Repo())
        paths = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
        return self._add_commit(repo, paths, "main")

    def tag(self, repo_id: str, name: str, revision: str = "main") -> None:
        repo = self.repos[repo_id]
        commit = repo.resolve(revision)
        assert commit is not None
        repo.tags[name] = commit.sha

    def branch(self, repo_id: str, name: str, revision: str = "main") -> None:
        repo = self.repos[repo_id]
        commit = repo.resolve(revision)
        assert commit is not None
        repo.branches[name] = commit.sha

    def cut(self, path: str, after: int) -> None:
        """The next GET of the file `path` breaks its connection after `after` bytes of the body."""
        self.cuts[path] = after

    def fail(self, path: str, status: int) -> None:
        """Every GET of the file `path` is answered `status` (403: the client does not retry)."""
        self.failures[path] = status

    def hold(self, path: str, until: Callable[[], bool]) -> None:
        """A GET of the file `path` (any repo) waits until `until()` holds (HOLD_LIMIT_S at most)."""
        self.holds[path] = until

    def pause(self, path: str, after: int, until: Callable[[], bool]) -> None:
        """The next GET of the file `path` sends `after` bytes of its body, then waits until `until()`
        holds (HOLD_LIMIT_S at most; `released[path]` says which) before it sends the rest."""
        self.pauses[path] = (after, until)

    def restart(self, path: str, after: int) -> None:
        """The next GET of the file `path` sends `after` wrong bytes and breaks its connection; the
        one after ignores its Range and sends the whole file (200), as a CDN that lost its cache may."""
        self.restarts[path] = after

    def _add_commit(self, repo: Repo, paths: dict[str, Path], branch: str) -> str:
        digests = {name: _sha256(path) for name, path in paths.items()}
        listing = json.dumps(sorted(digests.items())) + str(len(repo.commits))
        sha = hashlib.sha1(listing.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, paths, digests)
        repo.branches[branch] = sha
        return sha

    # Answers

    def file_info(self, commit: Commit, name: str, blobs: bool) -> dict[str, object]:
        size = commit.files[name].stat().st_size
        item: dict[str, object] = {"rfilename": name}
        if blobs:
            item.update(size=size, blobId=_git_oid(commit, name))
            if size >= LFS_THRESHOLD:
                item["lfs"] = {"sha256": commit.digests[name], "size": size, "pointerSize": 134}
        return item

    def tree_item(self, commit: Commit, name: str) -> dict[str, object]:
        size = commit.files[name].stat().st_size
        item: dict[str, object] = {"type": "file", "oid": _git_oid(commit, name), "size": size, "path": name}
        if size >= LFS_THRESHOLD:
            item["lfs"] = {"oid": commit.digests[name], "size": size, "pointerSize": 134}
        return item


def _git_oid(commit: Commit, name: str) -> str:
    return hashlib.sha1(f"{commit.sha}:{name}".encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _handler(hub: FastHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            query = parse_qs(url.query)
            with hub._lock:
                hub.requests.append((self.command, path, self.headers.get("Range")))
            if hub.latency:
                time.sleep(hub.latency)
            try:
                if path.startswith("/api/models/"):
                    self._api(path[len("/api/models/") :], query, head)
                elif "/resolve/" in path:
                    self._resolve(path.lstrip("/"), head)
                else:
                    self._error(404, "RepoNotFound", "not found", head)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _api(self, rest: str, query: dict[str, list[str]], head: bool) -> None:
            parts = rest.split("/")
            if len(parts) < 2 or f"{parts[0]}/{parts[1]}" not in hub.repos:
                return self._error(404, "RepoNotFound", "Repository not found", head)
            repo_id, repo, tail = f"{parts[0]}/{parts[1]}", hub.repos[f"{parts[0]}/{parts[1]}"], parts[2:]
            if tail == ["refs"]:
                body = {
                    "branches": [_ref(n, "heads", s) for n, s in repo.branches.items()],
                    "tags": [_ref(n, "tags", s) for n, s in repo.tags.items()],
                    "converts": [],
                }
                return self._json(body, head)
            if not tail or tail[0] == "revision":
                commit = repo.resolve(tail[1] if len(tail) > 1 else "main")
                if commit is None:
                    return self._error(404, "RevisionNotFound", "Invalid rev id", head)
                blobs = query.get("blobs", ["false"])[0].lower() == "true"
                body = {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit.sha,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "tags": [],
                    "siblings": [hub.file_info(commit, n, blobs) for n in sorted(commit.files)],
                }
                return self._json(body, head)
            if tail[0] == "tree" and len(tail) >= 2:
                commit = repo.resolve(tail[1])
                if commit is None:
                    return self._error(404, "RevisionNotFound", "Invalid rev id", head)
                prefix = "/".join(tail[2:]).strip("/")
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                return self._json(_tree(hub, commit, prefix, recursive), head)
            return self._error(404, "EntryNotFound", "unknown endpoint", head)

        def _resolve(self, rest: str, head: bool) -> None:
            before, _, after = rest.partition("/resolve/")
            repo = hub.repos.get(before)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found", head)
            revision, _, name = after.partition("/")
            commit = repo.resolve(revision)
            if commit is None and "/" in name:  # a branch name with a slash
                for _ in range(name.count("/")):
                    extra, _, rest_name = name.partition("/")
                    revision, name = f"{revision}/{extra}", rest_name
                    commit = repo.resolve(revision)
                    if commit is not None:
                        break
            if commit is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id", head)
            if name not in commit.files:
                return self._error(404, "EntryNotFound", "Entry not found", head)
            if not head and name in hub.failures:
                return self._error(hub.failures[name], "Forbidden", "refused by the test", head)
            self._send_file(commit, name, head)

        def _send_file(self, commit: Commit, name: str, head: bool) -> None:
            path = commit.files[name]
            size = path.stat().st_size
            start, end = 0, size - 1
            ranged = self.headers.get("Range")
            wrong = 0  # bytes to send inverted before the connection breaks (restart)
            if not head and name in hub.restarts:
                with hub._lock:
                    if ranged:
                        ranged = None  # the Range is ignored: 200, from byte 0
                        hub.restarts.pop(name)
                    else:
                        wrong = hub.restarts[name]
            if ranged and ranged.startswith("bytes="):
                first, _, last = ranged[len("bytes=") :].partition("-")
                start = int(first) if first else max(0, size - int(last))
                end = min(int(last), size - 1) if first and last else size - 1
                if start >= size and size > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            etag = commit.digests[name]
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(max(0, end - start + 1)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("X-Repo-Commit", commit.sha)
            self.send_header("ETag", f'"{_git_oid(commit, name) if size < LFS_THRESHOLD else etag}"')
            if size >= LFS_THRESHOLD:
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(size))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            until = hub.holds.get(name)
            if until is not None:
                deadline = time.monotonic() + HOLD_LIMIT_S
                while not (released := until()) and time.monotonic() < deadline:
                    time.sleep(0.01)
                hub.released[name] = released
            self.wfile.flush()
            with hub._lock:
                cut = hub.cuts.pop(name, None)
                paused = hub.pauses.pop(name, None)
            if wrong:
                with path.open("rb") as handle:
                    self.wfile.write(bytes(b ^ 0xFF for b in handle.read(wrong)))
                self.wfile.flush()
                self.close_connection = True
                return
            with path.open("rb") as handle:
                offset, left = start, end - start + 1
                if cut is not None:
                    left = min(left, cut)
                    self.close_connection = True
                while left > 0:
                    count = min(CHUNK, left)
                    if paused is not None:
                        if offset - start >= paused[0]:
                            deadline = time.monotonic() + HOLD_LIMIT_S
                            while not (released := paused[1]()) and time.monotonic() < deadline:
                                time.sleep(0.01)
                            hub.released[name] = released
                            paused = None
                        else:
                            count = min(count, paused[0] - (offset - start))
                    hub.throttle.take(count)
                    sent = os.sendfile(self.connection.fileno(), handle.fileno(), offset, count)
                    if sent == 0:
                        break
                    offset += sent
                    left -= sent
                    with hub._lock:
                        hub.served[name] = hub.served.get(name, 0) + sent

        def _json(self, body: object, head: bool) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, head: bool) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

    return Handler


def _tree(hub: FastHub, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    folders: set[str] = set()
    for name in sorted(commit.files):
        if prefix and not name.startswith(prefix + "/"):
            continue
        rest = name[len(prefix) + 1 :] if prefix else name
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if (recursive or depth == 1) and folder not in folders:
                folders.add(folder)
                items.append(
                    {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder}
                )
        if recursive or len(parts) == 1:
            items.append(hub.tree_item(commit, name))
    return items


def _ref(name: str, kind: str, sha: str) -> dict[str, str]:
    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}


def resolve_url(endpoint: str, repo_id: str, revision: str, name: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(name)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", action="append", default=[], help="org/name=DIR")
    parser.add_argument("--bandwidth", type=float, default=None, help="bytes per second, all downloads together")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--storage", type=Path, default=None)
    args = parser.parse_args(argv)
    storage = args.storage or Path(os.environ.get("TMPDIR", "/tmp")) / f"fast-hub-{os.getpid()}"
    hub = FastHub(storage, args.bandwidth, args.latency, args.port)
    for spec in args.repo:
        repo_id, _, directory = spec.partition("=")
        hub.serve_directory(repo_id, Path(directory))
    hub.start()
    print(hub.endpoint, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        if args.storage is None:
            shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
