"""The scan of the model directory (oci/model_dir.py): a symbolic link leaving it (directly, through
another link, or absolute) and a loop of links are refused by name, an absolute link inside
becomes relative, special files are refused, a missing directory says what to do.

The layers made from the scan are in test_oci_layers.py; a link leaving the model refused by
`modelcar build-push` in test_build_push_registry.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcar.oci.model_dir import ModelDirError, scan_model


def test_symlink_leaving_the_model_is_refused_with_its_name(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "secret").write_text("no")
    os.symlink("../secret", model / "leak.json")
    with pytest.raises(ModelDirError, match=r"leak\.json.*outside the model directory"):
        scan_model(model)


def test_symlink_escaping_through_another_link_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("no")
    os.symlink("..", model / "sub" / "up")  # inside: the model directory itself
    os.symlink("sub/up/../etc/passwd", model / "esc")  # normpath says model/etc/passwd; it is tmp/etc/passwd
    with pytest.raises(ModelDirError, match=r"esc is a symbolic link to sub/up/\.\./etc/passwd, outside the model"):
        scan_model(model)
    (model / "esc").unlink()
    os.symlink(model / "sub" / "up" / ".." / "etc" / "passwd", model / "esc")  # the same, absolute
    with pytest.raises(ModelDirError, match=r"esc is a symbolic link to .*, outside the model"):
        scan_model(model)
    (model / "esc").unlink()
    (model / "a.json").write_text("{}")
    os.symlink("sub/up/a.json", model / "ok.json")  # through the same link, but staying inside
    entries = {e.name: e for e in scan_model(model)}
    assert entries["ok.json"].target == "sub/up/a.json" and entries["sub/up"].target == ".."


def test_symlink_loop_is_refused_with_its_name(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    os.symlink("loop-b", model / "loop-a")
    os.symlink("loop-a", model / "loop-b")
    with pytest.raises(ModelDirError, match=r"loop-a is a symbolic link to loop-b"):
        scan_model(model)


def test_absolute_symlink_inside_becomes_relative(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "d").mkdir(parents=True)
    (model / "a.json").write_text("{}")
    os.symlink(model / "a.json", model / "d" / "b.json")
    entries = {e.name: e for e in scan_model(model)}
    assert entries["d/b.json"].target == "../a.json"


def test_special_files_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "pipe")
    with pytest.raises(ModelDirError, match="pipe"):
        scan_model(model)


def test_missing_model_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="download-model"):
        scan_model(tmp_path / "nope")
