import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelcar.errors import UsageError
from modelcar.record import RunRecord
from modelcar.results import write_results
from modelcar.workspace import MARKER_NAME, Workspace, WorkspaceBusy


def test_cleanup_empties_a_marked_workspace_dotfiles_included(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    (ws.root / ".hidden").write_text("x")
    (ws.root / "model" / ".cache").mkdir(parents=True)
    (ws.root / "run.json").write_text("{}")
    os.symlink("/etc", ws.root / "link")
    assert ws.cleanup() == 4
    assert sorted(p.name for p in ws.root.iterdir()) == [MARKER_NAME]
    assert Path("/etc").exists()


def test_cleanup_refuses_a_directory_modelcar_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"no \.modelcar-workspace marker"):
        Workspace(tmp_path).cleanup()
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_volume_lost_and_found_is_neither_foreign_nor_deleted(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()
    ws = Workspace(tmp_path)
    ws.cleanup()
    assert (tmp_path / "lost+found").is_dir() and ws.is_marked()


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    with ws.locked():
        code = (
            "import sys; from pathlib import Path; from modelcar.workspace import Workspace\n"
            f"ws = Workspace(Path({str(tmp_path)!r}))\n"
            "try:\n    held = ws.locked(); held.__enter__()\nexcept Exception as e:\n    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        assert f"in use by modelcar pid {os.getpid()}" in out
    with ws.locked():  # released: can be taken again
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = (
        "import os; from pathlib import Path; from modelcar.workspace import Workspace\n"
        f"held = Workspace(Path({str(tmp_path)!r})).locked(); held.__enter__(); os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code])
    assert "modelcar pid" in (tmp_path / ".modelcar.lock").read_text()
    with Workspace(tmp_path).locked():
        pass


def test_in_process_second_lock_raises(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    with ws.locked(), pytest.raises(WorkspaceBusy), Workspace(tmp_path).locked():
        pass


def test_record_round_trip_and_results(tmp_path: Path) -> None:
    record = RunRecord.load(tmp_path / "run.json")
    record.set("image", {"digest": "sha256:" + "1" * 64, "pinned": "quay.io/a/b@sha256:" + "1" * 64})
    record.set("registry", {"model_uri": "oci://quay.io/a/b@sha256:" + "1" * 64, "registered_model_id": "1"})
    record.mark_stage("build-and-push", "succeeded", seconds=1.5)
    record.save()
    again = RunRecord.load(tmp_path / "run.json")
    assert again.stage("build-and-push")["status"] == "succeeded"
    results = write_results(tmp_path / "results", again)
    assert set(results) == {"IMAGE_DIGEST", "IMAGE_URL", "MODEL_URI", "REGISTERED_MODEL_ID"}
    assert (tmp_path / "results" / "IMAGE_DIGEST").read_text() == "sha256:" + "1" * 64
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_record_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read the run record"):
        RunRecord.load(tmp_path / "run.json")
    (tmp_path / "run.json").write_text(json.dumps([1]))
    with pytest.raises(UsageError, match="not a JSON object"):
        RunRecord.load(tmp_path / "run.json")
