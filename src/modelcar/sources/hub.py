"""Hugging Face Hub source: resolve a revision, download the files the allow patterns select, clear errors.

Uses the real huggingface_hub client, so HF_ENDPOINT, proxies and the Hub's own resume logic
apply. The token is passed to the client and never appears in a message.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import HfFileMetadata
from huggingface_hub.utils import build_hf_headers, disable_progress_bars, enable_progress_bars, filter_repo_objects

from ..errors import ModelcarError
from ..retry import RetryPolicy, call_with_retries, is_transient_error
from . import hub_transfer

T = TypeVar("T")

LARGE_FILE = 16 << 20  # downloaded one at a time, each complete as early as it can be
SMALL_FILE_WORKERS = 4


class HubError(ModelcarError):
    """The Hub refused or could not serve the request; the message says which and what to do."""


@dataclass(frozen=True)
class ResolvedRepo:
    repo_id: str
    revision: str
    sha: str
    files: tuple[str, ...]  # every file at that commit
    sizes: dict[str, int]  # sizes the Hub reported (may be empty)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT


def resolve(repo_id: str, revision: str, token: str | None) -> ResolvedRepo:
    """Finds the commit sha and file list of repo_id@revision, or raises a HubError."""
    api = HfApi(endpoint=endpoint(), token=token or False)

    def fetch() -> ResolvedRepo:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        siblings = info.siblings or []
        sizes = {s.rfilename: s.size for s in siblings if s.size is not None}
        return ResolvedRepo(repo_id, revision, info.sha or revision, tuple(s.rfilename for s in siblings), sizes)

    try:
        return with_network_retries(fetch)
    except RevisionNotFoundError:
        raise _revision_not_found(api, repo_id, revision) from None
    except GatedRepoError:
        raise HubError(_gated_message(repo_id, token)) from None
    except RepositoryNotFoundError:
        # Some servers answer "repository not found" for a missing revision: tell them apart.
        if revision != "main" and _repo_exists(api, repo_id):
            raise _revision_not_found(api, repo_id, revision) from None
        raise HubError(_not_found_message(repo_id, token)) from None
    except HfHubHTTPError as exc:
        raise HubError(_http_message(exc, repo_id, revision, token)) from None
    except (httpx.TransportError, LocalEntryNotFoundError, OSError) as exc:
        raise HubError(_network_message(exc)) from None


def matching(files: tuple[str, ...], patterns: tuple[str, ...]) -> list[str]:
    """The files the allow patterns select, with the Hub's own matching (used for local sources too)."""
    return sorted(filter_repo_objects(list(files), allow_patterns=list(patterns)))


def download_files(
    resolved: ResolvedRepo,
    names: list[str],
    target: Path,
    token: str | None,
    progress: bool,
    on_file: Callable[[str, Path, str | None], None],
    stop: threading.Event | None = None,
    advance: Callable[[int], None] | None = None,
    arriving: Callable[[str, Path, int], None] | None = None,
) -> None:
    """Downloads the named files of the resolved commit into target, each one appearing there
    under its name only once complete (resuming what is there); `on_file(name, path, sha256)`
    after each (sha256 None: not computed on the way).

    Small files first, several at once; then the large ones one after the other, so that each is
    complete as early as it can be (a push that follows the download starts on the first).
    The bodies come by hub_transfer (received into the file, hashed on the way) unless a proxy is
    configured or MODELCAR_HUB_TRANSFER=client; then by huggingface_hub's own download.
    `advance(n)`: bytes received, for a progress bar (ours only). `arriving(name, path, size)`: a
    large file's body is being written into `path`, only appended to (ours only; see hub_transfer).
    """
    own = hub_transfer.usable() and os.environ.get("MODELCAR_HUB_TRANSFER", "").lower() != "client"
    (enable_progress_bars if progress and not own else disable_progress_bars)()
    headers = build_hf_headers(token=token or False)
    small = [n for n in names if resolved.sizes.get(n, 0) < LARGE_FILE]
    large = [n for n in names if resolved.sizes.get(n, 0) >= LARGE_FILE]

    def one(name: str) -> None:
        if stop is not None and stop.is_set():
            raise HubError("download stopped: build-and-push failed")

        def fetch() -> str:
            return hf_hub_download(
                resolved.repo_id,
                name,
                revision=resolved.sha,
                local_dir=target,
                token=token or False,
                endpoint=endpoint(),
            )

        def metadata() -> HfFileMetadata:
            url = hf_hub_url(resolved.repo_id, name, revision=resolved.sha, endpoint=endpoint())
            return get_hf_file_metadata(url, token=token or False)

        try:
            if not own:
                on_file(name, Path(with_network_retries(fetch)), None)
                return
            meta = with_network_retries(metadata)
            path = target / name
            size = meta.size if meta.size is not None else resolved.sizes.get(name, 0)
            if path.is_file() and path.stat().st_size == size:
                on_file(name, path, None)  # complete from an earlier run
                return
            opened = (lambda p: arriving(name, p, size)) if arriving is not None and size >= LARGE_FILE else None
            digest = hub_transfer.fetch(meta.location, headers, target, name, size, meta.etag, advance, opened=opened)
        except GatedRepoError:
            raise HubError(_gated_message(resolved.repo_id, token)) from None
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise HubError(_not_found_message(resolved.repo_id, token)) from None
        except EntryNotFoundError:
            raise HubError(
                f"{name} is listed in {resolved.repo_id}@{resolved.sha[:12]} but cannot be fetched"
            ) from None
        except HfHubHTTPError as exc:
            raise HubError(_http_message(exc, resolved.repo_id, resolved.revision, token)) from None
        except (httpx.TransportError, LocalEntryNotFoundError) as exc:
            raise HubError(_network_message(exc)) from None
        on_file(name, path, digest)

    with ThreadPoolExecutor(max_workers=SMALL_FILE_WORKERS, thread_name_prefix="modelcar-download") as pool:
        for job in [pool.submit(one, name) for name in small]:
            job.result()
    for name in large:
        one(name)


def with_network_retries(call: Callable[[], T], policy: RetryPolicy | None = None) -> T:
    """`call` under the one retry rule (retry.py); a Hub file not reached (LocalEntryNotFoundError,
    huggingface_hub's word for a connection that failed) is transient too."""
    return call_with_retries(
        call,
        policy or RetryPolicy.from_env(),
        transient_error=lambda exc: isinstance(exc, LocalEntryNotFoundError) or is_transient_error(exc),
    )


def _repo_exists(api: HfApi, repo_id: str) -> bool:
    try:
        api.list_repo_refs(repo_id)
    except (HfHubHTTPError, httpx.TransportError, OSError):
        return False
    return True


def _revision_not_found(api: HfApi, repo_id: str, revision: str) -> HubError:
    known = ""
    try:
        refs = api.list_repo_refs(repo_id)
        names = [b.name for b in refs.branches] + [t.name for t in refs.tags]
        if names:
            known = f" (branches and tags: {', '.join(names[:10])})"
    except (HfHubHTTPError, httpx.TransportError, OSError):
        pass
    return HubError(
        f"revision {revision!r} not found in {repo_id}{known}; set HUGGINGFACE_REVISION / --revision "
        "to a branch, tag or full commit sha that exists"
    )


def _not_found_message(repo_id: str, token: str | None) -> str:
    hint = (
        "check the id; if it is private, the token in HUGGINGFACE_TOKEN has no access to it"
        if token
        else "check the id; if it is private or gated, set HUGGINGFACE_TOKEN (or HF_TOKEN)"
    )
    return f"repository {repo_id} not found on {endpoint()}: {hint}"


def _gated_message(repo_id: str, token: str | None) -> str:
    if token:
        return (
            f"repository {repo_id} is gated and the token has no access yet: accept its conditions on "
            f"{endpoint()}/{repo_id} with the token's account, then run again"
        )
    return f"repository {repo_id} is gated: accept its conditions on the Hub and set HUGGINGFACE_TOKEN"


def _http_message(exc: HfHubHTTPError, repo_id: str, revision: str, token: str | None) -> str:
    status = exc.response.status_code if exc.response is not None else None
    if status == 401:
        if token:
            return f"the Hub refused the token for {repo_id} (401): check HUGGINGFACE_TOKEN is valid"
        return _not_found_message(repo_id, token)
    if status == 403:
        return f"access to {repo_id} is forbidden (403): the token lacks read permission for it"
    return f"the Hub at {endpoint()} answered {status} for {repo_id}@{revision}; try again later"


def _network_message(exc: BaseException) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"cannot reach the Hub at {endpoint()} ({reason}); check the network, a proxy, or HF_ENDPOINT "
        "and run again (a partial download resumes)"
    )
