"""Files' sha256 taken from run.json only while the files are unchanged since they were recorded."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from modelcar.oci.file_digests import recorded_digests


def _record(model: Path, finished: float, precise: bool = True) -> dict:
    files = [
        {"path": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(model.iterdir())
    ]
    stage = {"status": "succeeded", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished))}
    if precise:
        stage["time_ns"] = int(finished * 1e9)
    return {"files": files, "stages": {"download-model": stage}}


def test_recorded_digests_are_taken_for_unchanged_files_only(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in ("a.json", "b.json", "c.json"):
        (model / name).write_text(f'{{"{name}": 1}}')
    record = _record(model, time.time() + 1)
    later = time.time() + 5
    (model / "b.json").write_text('{"b.json": 2}')  # same size, changed after the record
    os.utime(model / "b.json", (later, later))
    (model / "c.json").write_text("{}")  # another size
    found = recorded_digests(record, model)
    assert found == {"a.json": "sha256:" + hashlib.sha256((model / "a.json").read_bytes()).hexdigest()}


def test_no_recording_stage_no_digests(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.json").write_text("{}")
    record = _record(model, time.time())
    record["stages"]["download-model"]["status"] = "failed"
    assert recorded_digests(record, model) == {}
    assert recorded_digests({}, model) == {}


@pytest.mark.parametrize("precise", [True, False])
def test_a_same_size_rewrite_right_after_the_stage_is_hashed_again(tmp_path: Path, precise: bool) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.json").write_text('{"a": 1}')
    time.sleep(0.1)  # the coarse file clock behind the stage's end
    record = _record(model, time.time(), precise)
    (model / "a.json").write_text('{"a": 2}')  # same size, within the stage's last second
    assert recorded_digests(record, model) == {}
