"""What stands for each container image when the Tekton executor runs a step.

A step finds on PATH only what its image would hold: the project as the image's Containerfile
installs it (an environment `make install-test` builds under .tools/image-envs with
scripts/install-modelcar.sh, the script the Containerfiles run), and the commands of the images'
common base (UBI 9 Python 3.11, `registry.access.redhat.com/ubi9/python-311`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from .common import REPO_ROOT

ENVS_ROOT = REPO_ROOT / ".tools" / "image-envs"

# Each image parameter of the pipeline, the Containerfile that builds it, the extras it installs
# and the environment that stands for it.
IMAGES = {
    "TASK_IMAGE": ("Containerfile", "sign", "task"),
    "COMPRESS_IMAGE": ("Containerfile.compress", "compress", "compress"),
}

# Commands of the UBI 9 Python base (bash, coreutils, grep, sed are all in it) that a step may
# use. A step calling anything else, or a console script its image does not install, fails.
BASE_IMAGE_COMMANDS = (
    "sh",
    "bash",
    "[",
    "test",
    "cat",
    "cp",
    "dirname",
    "basename",
    "env",
    "grep",
    "ln",
    "ls",
    "mkdir",
    "mv",
    "rm",
    "sed",
    "sleep",
)


def env_bin(name: str) -> Path:
    """The bin directory of the environment standing for an image; fails when it was not built."""
    bin_dir = ENVS_ROOT / name / "bin"
    if not (bin_dir / "modelcar").is_file():
        pytest.fail(f"{bin_dir / 'modelcar'} is missing: `make install-test` builds the image environments")
    return bin_dir


def base_commands(directory: Path) -> Path:
    """A directory holding just the base image's commands (links to this machine's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in BASE_IMAGE_COMMANDS:
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not on this machine's PATH")
        link = directory / name
        if not link.exists():
            link.symlink_to(found)
    return directory


def image_paths(
    pipeline_params: Mapping[str, str],
    base: Path,
    override: Mapping[str, Sequence[Path]] | None = None,
) -> dict[str, list[Path]]:
    """PATH for every image the run's steps name: the image's environment, then the base's commands.

    `pipeline_params` are the run's values of TASK_IMAGE and COMPRESS_IMAGE (a param missing
    there takes the pipeline's default, given by the caller). `override` puts other directories
    in place of an image's environment (a recording stand-in for `modelcar`).
    """
    paths: dict[str, list[Path]] = {}
    for param, (_, _, env) in IMAGES.items():
        image = pipeline_params[param]
        own = list(override[param]) if override and param in override else [env_bin(env)]
        paths[image] = [*own, base]
    return paths
