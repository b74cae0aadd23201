"""The crash-safe swap of model/ and model-original/, at every point a kill can land (no torch needed).

Directories stand in for models here: a config.json with or without a compressed-tensors
quantization_config is all the staging logic looks at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcar.compression.modelcheck import ModelNotFound
from modelcar.compression.staging import DONE, PARTIAL, RESULT, STAMP, Staging, fingerprint
from modelcar.errors import UsageError
from modelcar.workspace import Workspace

from .helpers.fake_model import write_model_dir

KEY = {"scheme": "gptq", "bits": 4, "group_size": 128}


def write_model(directory: Path, name: str, compressed: bool = False) -> Path:
    directory.mkdir(parents=True)  # a fresh directory, never one left over
    config: dict = {"model_type": "llama", "name": name}
    if compressed:
        config["quantization_config"] = {"quant_method": "compressed-tensors"}
    files = {"config.json": json.dumps(config), "model.safetensors": name.encode() * 100, "sub/tokenizer.json": name}
    return write_model_dir(directory, files)


def name_of(directory: Path) -> str:
    return json.loads((directory / "config.json").read_text())["name"]


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    workspace = Workspace(tmp_path / "ws")
    workspace.root.mkdir()
    return Staging(workspace)


def compress_into_partial(staging: Staging, name: str = "compressed") -> Path:
    output = staging.begin()
    output.rmdir()
    return write_model(output, name, compressed=True)


def test_a_complete_compression_swaps_model_and_original(staging: Staging) -> None:
    write_model(staging.model, "original")
    source = staging.choose_source()
    assert source == staging.model
    compress_into_partial(staging)
    staging.commit(source, KEY, {"enabled": True})
    assert name_of(staging.model) == "compressed" and name_of(staging.original) == "original"
    assert not staging.partial.exists() and not staging.done.exists()
    stamp = staging.finished_stamp()
    assert stamp is not None and stamp["settings"] == KEY and stamp["record"] == {"enabled": True}
    assert oct((staging.model / "model.safetensors").stat().st_mode & 0o777) == "0o644"
    # a rerun starts from the original, never from the compressed model
    assert staging.choose_source() == staging.original


def test_a_kill_while_writing_leaves_a_partial_that_is_discarded(staging: Staging) -> None:
    write_model(staging.model, "original")
    output = staging.begin()
    (output / "model.safetensors").write_bytes(b"half")  # killed here
    notes = staging.recover()
    assert any(PARTIAL in note for note in notes)
    assert not staging.partial.exists()
    assert name_of(staging.model) == "original" and not staging.original.exists()
    assert staging.choose_source() == staging.model


@pytest.mark.parametrize("renamed", [False, True])
def test_a_kill_after_the_commit_point_is_completed_on_the_next_run(staging: Staging, renamed: bool) -> None:
    write_model(staging.model, "original")
    source = staging.choose_source()
    compress_into_partial(staging)
    # what commit does up to the rename that marks the output complete, then a kill
    (staging.partial / RESULT).write_text(
        json.dumps({"settings": KEY, "record": {"n": 1}, "source_fingerprint": fingerprint(source)})
    )
    staging.partial.rename(staging.done)
    if renamed:  # killed between moving model/ aside and moving the new one in
        staging.model.rename(staging.original)
    notes = staging.recover()
    assert notes == ["completed the swap of a compression interrupted after it had finished"]
    assert name_of(staging.model) == "compressed" and name_of(staging.original) == "original"
    assert json.loads((staging.original / STAMP).read_text())["record"] == {"n": 1}
    assert not staging.done.exists()


def test_a_kill_before_the_stamp_is_written_is_completed(staging: Staging) -> None:
    write_model(staging.model, "original")
    source = staging.choose_source()
    compress_into_partial(staging)
    staging.commit(source, KEY, {"n": 2})
    # undo the last steps: stamp not written yet, compress.done still there
    (staging.original / STAMP).unlink()
    staging.done.mkdir()
    (staging.done / RESULT).write_text(
        json.dumps({"settings": KEY, "record": {"n": 2}, "source_fingerprint": fingerprint(staging.original)})
    )
    staging.recover()
    assert json.loads((staging.original / STAMP).read_text())["record"] == {"n": 2}
    assert name_of(staging.model) == "compressed" and not staging.done.exists()


def test_a_finished_compression_of_a_model_downloaded_again_since_is_dropped(staging: Staging) -> None:
    write_model(staging.model, "original")
    source = staging.choose_source()
    compress_into_partial(staging)
    (staging.partial / RESULT).write_text(json.dumps({"settings": KEY, "source_fingerprint": fingerprint(source)}))
    staging.partial.rename(staging.done)
    # the download stage replaced model/ before compress ran again
    (staging.model / "model.safetensors").write_bytes(b"a newer revision")
    notes = staging.recover()
    assert notes == ["discarded a finished compression whose source model has changed since"]
    assert not staging.done.exists() and name_of(staging.model) == "original"


def test_a_stale_original_beside_a_new_download_is_replaced(staging: Staging) -> None:
    write_model(staging.original, "old-original")
    write_model(staging.model, "new-download")
    source = staging.choose_source()
    assert source == staging.model
    compress_into_partial(staging)
    staging.commit(source, KEY, {})
    assert name_of(staging.original) == "new-download" and name_of(staging.model) == "compressed"


def test_recompressing_from_the_original_replaces_the_earlier_output(staging: Staging) -> None:
    write_model(staging.model, "original")
    compress_into_partial(staging, "first")
    staging.commit(staging.choose_source(), KEY, {})
    source = staging.choose_source()
    assert source == staging.original
    compress_into_partial(staging, "second")
    staging.commit(source, {**KEY, "bits": 8}, {})
    assert name_of(staging.model) == "second" and name_of(staging.original) == "original"
    assert staging.finished_stamp()["settings"]["bits"] == 8  # type: ignore[index]


def test_the_stamp_no_longer_counts_once_model_is_changed_by_hand(staging: Staging) -> None:
    write_model(staging.model, "original")
    compress_into_partial(staging)
    staging.commit(staging.choose_source(), KEY, {})
    assert staging.finished_stamp() is not None
    (staging.model / "extra.json").write_text("{}")
    assert staging.finished_stamp() is None


def test_leftovers_of_an_interrupted_removal_are_cleaned(staging: Staging) -> None:
    write_model(staging.model, "original")
    write_model(staging.workspace.root / "model-original.removing", "half-deleted")
    staging.recover()
    assert not (staging.workspace.root / "model-original.removing").exists()
    assert name_of(staging.model) == "original"


def test_a_compressed_model_without_its_original_is_refused(staging: Staging) -> None:
    write_model(staging.model, "brought", compressed=True)
    with pytest.raises(UsageError, match=r"already compressed .* no model-original"):
        staging.choose_source()


def test_an_empty_workspace_says_to_download_first(staging: Staging) -> None:
    with pytest.raises(ModelNotFound, match="run download-model first"):
        staging.choose_source()


def test_model_missing_but_original_there_compresses_from_the_original(staging: Staging) -> None:
    write_model(staging.original, "original")
    assert staging.choose_source() == staging.original
    compress_into_partial(staging)
    staging.commit(staging.original, KEY, {})
    assert name_of(staging.model) == "compressed"
    assert not (staging.workspace.root / DONE).exists()
