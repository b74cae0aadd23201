"""`make run` installs what the stages it runs need (read with `make -n`, nothing is installed).

With COMPRESS_MODEL true (any spelling modelcar accepts) and compress-model not skipped, it
installs the compress extra, torch first; otherwise the light install.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .helpers.common import REPO_ROOT, clean_env

LIGHT = "./scripts/install-modelcar.sh --editable ."
COMPRESS = "./scripts/install-modelcar.sh --editable . compress"


def planned_install(tmp_path: Path, *assignments: str) -> list[str]:
    """The install commands `make run` would run on a machine where nothing is installed yet."""
    stamps = tmp_path / "stamps"
    proc = subprocess.run(
        ["make", "-n", "run", f"STAMPS={stamps}", *assignments],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "install-modelcar.sh" in line]


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "yes", "1", "on"])
def test_compression_on_installs_torch_and_the_compress_extra(tmp_path: Path, value: str) -> None:
    (line,) = planned_install(tmp_path, "MODEL=org/model", f"COMPRESS_MODEL={value}", "BITS=8")
    assert line.endswith(COMPRESS)
    assert 'TORCH_SPEC="==2.13.0"' in line  # the wheel on disk here, before llmcompressor asks for torch


@pytest.mark.parametrize(
    "assignments",
    [
        (),
        ("COMPRESS_MODEL=false",),
        ("COMPRESS_MODEL=0",),
        ("COMPRESS_MODEL=",),
        ("COMPRESS_MODEL=true", "SKIP_TASKS=build-and-push,compress-model"),
    ],
)
def test_without_compression_the_install_stays_light(tmp_path: Path, assignments: tuple[str, ...]) -> None:
    (line,) = planned_install(tmp_path, "MODEL=org/model", *assignments)
    assert line.endswith(LIGHT)
