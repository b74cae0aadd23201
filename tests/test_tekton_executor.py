"""The test executor's parameter rules are Tekton's (tests/helpers/tekton_executor.py).

Propagation as TEP-0107 defines it and tektoncd/pipeline implements it (resources.propagateParams,
the webhook's validateUsageOfDeclaredPipelineTaskParameters, the TaskRun's validateParams), each
case on a one-task Pipeline whose step prints what it got:
- a Pipeline param reaches an embedded taskSpec that neither declares nor is passed it;
- the value a pipeline task passes under a Pipeline param's name wins over the Pipeline's (scope);
- the Pipeline's value wins over a default the taskSpec declares for the same name;
- a taskSpec default counts for a param the Pipeline does not have;
- a param used in steps and declared by neither the taskSpec nor the Pipeline is refused when
  the Pipeline is applied, even if the pipeline task passes it; used elsewhere (stepTemplate) and
  passed, it reaches the TaskRun; used and given nowhere, the run fails;
- a declared param without default, not passed, fails the run although the Pipeline has it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from .helpers.tekton_executor import SUCCEEDED, PipelineExecutor, PipelineRunResult, TektonError

IMAGE = "registry.example.com/tool:1"


def one_task_pipeline(
    pipeline_params: list[dict[str, Any]],
    task_spec_params: list[dict[str, Any]] | None = None,
    passed: list[dict[str, str]] | None = None,
    script_echo: str = "$(params.HELLO)",
    step_template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    step = {"name": "echo", "image": IMAGE, "script": f'#!/bin/sh\necho "{script_echo}"\n'}
    task_spec: dict[str, Any] = {"steps": [step]}
    if task_spec_params is not None:
        task_spec["params"] = task_spec_params
    if step_template is not None:
        task_spec["stepTemplate"] = step_template
    task: dict[str, Any] = {"name": "echo", "taskSpec": task_spec}
    if passed is not None:
        task["params"] = passed
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "propagation"},
        "spec": {"params": pipeline_params, "tasks": [task]},
    }


def run(pipeline: dict[str, Any], tmp_path: Path, **params: str) -> PipelineRunResult:
    """The pipeline run with the given params; its one image holds sh alone (echo is built in)."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        sh = shutil.which("sh")
        assert sh is not None
        (bin_dir / "sh").symlink_to(sh)
    executor = PipelineExecutor(pipeline, images={IMAGE: [bin_dir]}, base_env={})
    return executor.run(params, {})


def echoed(result: PipelineRunResult) -> str:
    assert result.status == SUCCEEDED, result.output
    return result.tasks["echo"].output.strip()


def test_a_pipeline_param_reaches_a_task_spec_that_neither_declares_nor_is_passed_it(tmp_path: Path) -> None:
    pipeline = one_task_pipeline([{"name": "HELLO", "type": "string", "default": "pipeline default"}])
    assert echoed(run(pipeline, tmp_path)) == "pipeline default"
    assert echoed(run(pipeline, tmp_path, HELLO="from the run")) == "from the run"


def test_the_value_a_task_passes_under_the_same_name_wins(tmp_path: Path) -> None:
    pipeline = one_task_pipeline(
        [{"name": "HELLO", "type": "string", "default": "pipeline"}],
        [{"name": "HELLO", "type": "string"}],
        [{"name": "HELLO", "value": "task: $(params.HELLO)"}],
    )
    assert echoed(run(pipeline, tmp_path, HELLO="run")) == "task: run"


def test_the_pipeline_value_wins_over_a_default_the_task_spec_declares(tmp_path: Path) -> None:
    pipeline = one_task_pipeline(
        [{"name": "HELLO", "type": "string", "default": "pipeline default"}],
        [{"name": "HELLO", "type": "string", "default": "task default"}],
    )
    assert echoed(run(pipeline, tmp_path, HELLO="run")) == "run"
    assert echoed(run(pipeline, tmp_path)) == "pipeline default"


def test_a_task_spec_default_counts_for_a_param_the_pipeline_does_not_have(tmp_path: Path) -> None:
    pipeline = one_task_pipeline([], [{"name": "HELLO", "type": "string", "default": "task default"}])
    assert echoed(run(pipeline, tmp_path)) == "task default"
    passed = one_task_pipeline(
        [{"name": "WHO", "type": "string"}],
        [{"name": "HELLO", "type": "string", "default": "task default"}],
        [{"name": "HELLO", "value": "hi $(params.WHO)"}],
    )
    assert echoed(run(passed, tmp_path, WHO="you")) == "hi you"


def test_a_param_in_steps_declared_nowhere_is_refused_when_the_pipeline_is_applied(tmp_path: Path) -> None:
    with pytest.raises(TektonError, match=r"declared neither by the taskSpec nor by the pipeline: \['HELLO'\]"):
        PipelineExecutor(one_task_pipeline([{"name": "OTHER", "type": "string"}]), images={})
    # Passing it is not enough: the webhook checks steps against the declarations only.
    passed_only = one_task_pipeline([], passed=[{"name": "HELLO", "value": "hi"}])
    with pytest.raises(TektonError, match=r"declared neither by the taskSpec nor by the pipeline"):
        PipelineExecutor(passed_only, images={})


def test_a_param_passed_but_not_declared_reaches_the_step_template(tmp_path: Path) -> None:
    # Extra params are allowed on a TaskRun and replaced there; the webhook only checks steps.
    pipeline = one_task_pipeline(
        [],
        passed=[{"name": "HELLO", "value": "extra"}],
        script_echo="$GREETING",
        step_template={"env": [{"name": "GREETING", "value": "$(params.HELLO)"}]},
    )
    assert echoed(run(pipeline, tmp_path)) == "extra"


def test_a_param_given_nowhere_fails_the_run(tmp_path: Path) -> None:
    pipeline = one_task_pipeline(
        [],
        script_echo="$GREETING",
        step_template={"env": [{"name": "GREETING", "value": "$(params.HELLO)"}]},
    )
    with pytest.raises(TektonError, match=r"unknown variable \$\(params\.HELLO\)"):
        run(pipeline, tmp_path)


def test_a_declared_param_without_value_fails_although_the_pipeline_has_it(tmp_path: Path) -> None:
    # Propagation replaces text; the TaskRun still gets only the passed params, so a declared
    # param with no default and nothing passed is missing (validateParams), as in Tekton.
    pipeline = one_task_pipeline(
        [{"name": "HELLO", "type": "string", "default": "pipeline"}],
        [{"name": "HELLO", "type": "string"}],
    )
    with pytest.raises(TektonError, match=r"missing values for these params which have no default values: \['HELLO'\]"):
        run(pipeline, tmp_path)
