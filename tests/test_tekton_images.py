"""Each Tekton step runs in an image that holds what it calls.

- the Containerfiles, the Makefile's test environments for them, `make run` and `make test` all
  install the project with scripts/install-modelcar.sh, each image with its own extras;
- every command a step's script calls is a shell builtin, a command of the base image, or a
  program its image's environment installs (read from the scripts with a real shell parser);
- the task image's environment lacks the compress extra, and what runs in it copes: validate
  accepts COMPRESS_MODEL=true, and compress-model says what is missing, in its own process;
- the executor refuses a step whose image has no environment.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import bashlex
import pytest

from modelcar.compression.extra import PACKAGES

from .helpers.common import REPO_ROOT, clean_env
from .helpers.image_envs import BASE_IMAGE_COMMANDS, IMAGES, env_bin
from .helpers.tekton_executor import PipelineExecutor, TektonError, load_pipeline

PIPELINE = REPO_ROOT / "deploy" / "tekton" / "modelcar-pipeline.yaml"
INSTALL_SCRIPT = "scripts/install-modelcar.sh"

# What POSIX sh runs itself (no program needed in the image).
SH_BUILTINS = {
    ".", ":", "break", "cd", "continue", "eval", "exec", "exit", "export", "false", "printf", "read",
    "readonly", "return", "set", "shift", "test", "[", "echo", "trap", "true", "umask", "unset", "wait",
}  # fmt: skip


def step_images() -> list[tuple[str, str, str]]:
    """(task, image parameter, script) for every step of the pipeline."""
    found = []
    for task in load_pipeline(PIPELINE)["spec"]["tasks"]:
        passed = {p["name"]: p["value"] for p in task.get("params", [])}
        for step in task["taskSpec"]["steps"]:
            image = step["image"]
            inner = re.fullmatch(r"\$\(params\.(\w+)\)", image)
            assert inner, f"{task['name']}: step image {image} is not a parameter"
            outer = re.fullmatch(r"\$\(params\.(\w+)\)", passed[inner.group(1)])
            assert outer, f"{task['name']}: {inner.group(1)} is not passed from a pipeline parameter"
            found.append((task["name"], outer.group(1), step["script"]))
    return found


class _Commands(bashlex.ast.nodevisitor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def visitcommand(self, node: Any, parts: list[Any]) -> None:
        words = [part.word for part in parts if part.kind == "word"]
        while words and words[0] == "exec":
            words = words[1:]
        if words:
            self.names.append(words[0])


def commands_in(script: str) -> list[str]:
    visitor = _Commands()
    for tree in bashlex.parse(script):
        visitor.visit(tree)
    return visitor.names


def installs_of(text: str) -> list[tuple[str, str]]:
    """(source, extras) of every call of the install script in a Containerfile or the Makefile."""
    pattern = rf"{re.escape(INSTALL_SCRIPT)}(?: --editable)? (\S+)(?: ([a-z,]+))?[ \t]*(?:\\|&&|$)"
    calls = "\n".join(line for line in text.splitlines() if not line.startswith("COPY "))
    return [(m.group(1), m.group(2) or "") for m in re.finditer(pattern, calls, re.M)]


def test_every_step_runs_in_one_of_the_images() -> None:
    used = {param for _, param, _ in step_images()}
    assert used == set(IMAGES)


@pytest.mark.parametrize("param", sorted(IMAGES))
def test_containerfile_installs_with_the_shared_script_and_its_extras(param: str) -> None:
    containerfile, extras, _ = IMAGES[param]
    text = (REPO_ROOT / containerfile).read_text()
    assert f"COPY --chown=1001:0 {INSTALL_SCRIPT} /tmp/modelcar-src/scripts/" in text
    assert installs_of(text) == [("/tmp/modelcar-src", extras)]
    assert "pip install" not in text, "install only through the shared script"


@pytest.mark.parametrize("param", sorted(IMAGES))
def test_the_test_environment_of_each_image_is_installed_as_the_image(param: str) -> None:
    _, extras, env = IMAGES[param]
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(rf"^\$\(STAMPS\)/image-env-{env}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, f"the Makefile has no recipe for the {env} image environment"
    assert f"PIP=$(IMAGE_ENVS)/{env}/bin/pip" in recipe.group(1)
    assert installs_of(recipe.group(1)) == [(".", extras)]
    assert "--editable" not in recipe.group(1), "an image installs the package, not a link to the sources"


def test_every_command_a_step_calls_is_in_its_image() -> None:
    for task, param, script in step_images():
        bin_dir = env_bin(IMAGES[param][2])
        for name in commands_in(script):
            assert name in SH_BUILTINS or name in BASE_IMAGE_COMMANDS or (bin_dir / name).is_file(), (
                f"task {task} calls {name!r}, which the {param} image does not hold"
            )


def _find_specs(env: str) -> dict[str, bool]:
    python = env_bin(env) / "python"
    code = f"import importlib.util as u; print(*[u.find_spec(n) is not None for n in {list(PACKAGES)!r}])"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return dict(zip(PACKAGES, (word == "True" for word in out.stdout.split()), strict=True))


def test_the_task_image_lacks_the_compress_extra_and_the_compress_image_has_it() -> None:
    assert not any(_find_specs("task").values()), "the task image's environment must not hold the compress extra"
    assert all(_find_specs("compress").values())


def test_in_the_task_image_validate_accepts_compression_and_compress_says_what_is_missing(tmp_path: Path) -> None:
    modelcar = str(env_bin("task") / "modelcar")
    workspace = tmp_path / "ws"
    (workspace / "model").mkdir(parents=True)
    (workspace / "model" / "config.json").write_text("{}")
    env = clean_env(
        HUGGINGFACE_MODEL="org/model",
        COMPRESS_MODEL="true",
        MODELCAR_WORKSPACE=str(workspace),
        SKIP_TASKS="cleanup-workspace",
    )
    validate = subprocess.run([modelcar, "validate"], env=env, capture_output=True, text=True, timeout=60)
    assert validate.returncode == 0, validate.stderr
    assert "compress-model: runs" in validate.stderr

    for command in (["compress"], ["run"]):
        proc = subprocess.run([modelcar, *command], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "compress-model needs the optional packages torch" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert sorted(p.name for p in workspace.iterdir()) == ["model"], "nothing may happen before the check"


def test_a_step_whose_image_has_no_environment_is_an_error(tmp_path: Path) -> None:
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "one-step"},
        "spec": {
            "tasks": [
                {
                    "name": "only",
                    "taskSpec": {"steps": [{"name": "s", "image": "quay.io/elsewhere/tool:1", "script": "true"}]},
                }
            ]
        },
    }
    executor = PipelineExecutor(pipeline, images={"quay.io/known/image:1": [tmp_path]})
    with pytest.raises(TektonError, match=r"no environment stands for image 'quay.io/elsewhere/tool:1'"):
        executor.run({}, {})


def test_the_shared_install_script_sets_up_each_kind_of_install(tmp_path: Path) -> None:
    """The script's choices, with a recording stand-in for pip: torch first only for compress."""
    log = tmp_path / "pip.log"
    pip = tmp_path / "pip"
    pip.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    pip.chmod(0o755)
    script = str(REPO_ROOT / INSTALL_SCRIPT)

    def calls(*args: str, **env: str) -> list[str]:
        log.write_text("")
        subprocess.run(["sh", script, *args], env=clean_env(PIP=str(pip), **env), check=True, timeout=30)
        return log.read_text().splitlines()

    assert calls("/src") == ["install --quiet /src"]
    assert calls("--editable", ".", "test,compress", TORCH_SPEC="==2.13.0") == [
        "install --quiet torch==2.13.0",
        "install --quiet -e .[test,compress]",
    ]
    assert calls("/src", "compress", TORCH_INDEX_URL="https://download.pytorch.org/whl/cu126") == [
        "install --quiet --extra-index-url https://download.pytorch.org/whl/cu126 /src[compress]"
    ]
    usage = subprocess.run(["sh", script], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage:" in usage.stderr
