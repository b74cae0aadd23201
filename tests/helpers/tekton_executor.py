"""A test-only Tekton executor: runs a Pipeline's YAML on this machine, without a cluster.

It does what the Tekton controller and entrypoint do for the features our pipeline uses, and
fails loudly on anything else, so the pipeline cannot quietly rely on something untested:

- parameters: pipeline params with defaults (string type), required ones checked; pipeline-task
  params passed to the inline taskSpec; and Tekton's propagation (TEP-0107; inside a Pipeline
  since 0.62, tektoncd/pipeline#7930), in its two passes:
  1. the PipelineRun: every `$(params.X)` in an embedded taskSpec whose X is a Pipeline param is
     replaced by the Pipeline's value, or by the value the pipeline task passes under the same
     name (the inner scope wins); a default the taskSpec declares for X does not count then
     (the runtime value wins over a default);
  2. the TaskRun: the remaining `$(params.X)` take the passed value (declared by the taskSpec
     or not: extra params are allowed), else the taskSpec's default; a declared param with
     neither is an error ("missing values"), as is a variable left over;
  and the webhook's check of a Pipeline: a `$(params.X)` in a taskSpec's steps must be declared
  by the taskSpec or by the Pipeline (a param passed but declared by neither does not count);
- variable substitution: $(params.X), $(tasks.T.results.R), $(workspaces.W.path|bound|claim),
  $(results.R.path), $(context.pipelineRun|pipeline|taskRun|task.name|namespace|uid); an unknown
  Tekton variable is an error, while shell command substitution like $(dirname ...) is left alone;
- `when` expressions (in / notin, all must hold); a task whose `when` input refers to a result
  that is missing is skipped, as in Tekton;
- runAfter and result references order the tasks, and only they: as in Tekton, every task whose
  dependencies are done (succeeded or skipped) starts at once, beside the others running (in
  declaration order, so `order` is deterministic); a failed task stops the run: running tasks
  finish, the tasks not yet started are reported as not run;
- workspaces are directories (optional ones may be unbound; subPath honoured); each TaskRun
  gets its own results directory, and declared results are read back after the steps;
- stepTemplate merged into steps (env by name); env valueFrom secretKeyRef from fake secrets,
  honouring `optional`;
- each step runs in its image: the executor is given, for every image reference, the PATH that
  stands for that image (an environment installed as the image's Containerfile installs the
  project, and the base's commands), and nothing else is on PATH; a step whose image has none
  is an error, as an image that cannot be pulled is on a cluster. The script is run with sh in a
  clean environment made of the base env and the step env;
- pipeline results from task results; a result of a skipped or failed task is not emitted.

The step `image` is substituted, recorded and looked up in `images`, not pulled.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Tekton variables: $(params.x), $(params["x"]), $(tasks.t.results.r), $(workspaces.w.path) ...
_VARIABLE = re.compile(r"\$\(((?:params|tasks|workspaces|results|context|steps|inputs)[.\[][^()]*)\)")
_RESULT_MAX_BYTES = 4096

SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"
NOT_RUN = "NotRun"


class TektonError(Exception):
    """The pipeline uses something Tekton would reject (or this executor does not support)."""


class MissingResult(Exception):
    """A $(tasks.T.results.R) reference to a result that was not produced."""


@dataclass
class StepRun:
    name: str
    image: str
    returncode: int
    stdout: str
    stderr: str
    env: dict[str, str]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class TaskRun:
    name: str
    status: str
    reason: str = ""
    results: dict[str, str] = field(default_factory=dict)
    steps: list[StepRun] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    started: float = 0.0  # time.monotonic() when its steps began / ended (0: none ran)
    finished: float = 0.0

    @property
    def output(self) -> str:
        return "".join(step.output for step in self.steps)


@dataclass
class PipelineRunResult:
    status: str
    tasks: dict[str, TaskRun]
    results: dict[str, str]
    order: list[str]

    def status_of(self, task: str) -> str:
        return self.tasks[task].status

    @property
    def statuses(self) -> dict[str, str]:
        return {name: run.status for name, run in self.tasks.items()}

    @property
    def output(self) -> str:
        return "\n".join(f"--- {name} ({run.status})\n{run.output}" for name, run in self.tasks.items())


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def load_pipeline(path: Path, name: str | None = None) -> dict[str, Any]:
    for doc in load_documents(path):
        if doc.get("kind") == "Pipeline" and (name is None or doc["metadata"]["name"] == name):
            return doc
    raise TektonError(f"no Pipeline {name or ''} in {path}")


class PipelineExecutor:
    """Runs one Pipeline (a parsed tekton.dev/v1 Pipeline document) locally."""

    def __init__(
        self,
        pipeline: Mapping[str, Any],
        *,
        images: Mapping[str, Sequence[Path]],
        base_env: Mapping[str, str] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        step_timeout: float = 600,
        namespace: str = "modelcar-tests",
    ) -> None:
        if pipeline.get("apiVersion") != "tekton.dev/v1" or pipeline.get("kind") != "Pipeline":
            raise TektonError("expected a tekton.dev/v1 Pipeline")
        self.pipeline = pipeline
        self.spec: dict[str, Any] = pipeline["spec"]
        _check_param_usage(self.spec)
        self.images = {image: list(paths) for image, paths in images.items()}
        self.base_env = dict(base_env or {})
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.step_timeout = step_timeout
        self.namespace = namespace

    # -- the run ---------------------------------------------------------------------------

    def run(
        self,
        params: Mapping[str, str],
        workspaces: Mapping[str, Path | None],
        run_name: str = "modelcar-pipelinerun",
    ) -> PipelineRunResult:
        values = self._pipeline_params(params)
        bound = self._pipeline_workspaces(workspaces)
        context = {
            "context.pipelineRun.name": run_name,
            "context.pipelineRun.namespace": self.namespace,
            "context.pipelineRun.uid": str(uuid.uuid4()),
            "context.pipeline.name": self.pipeline["metadata"]["name"],
        }
        tasks = self.spec.get("tasks", [])
        finally_tasks = self.spec.get("finally", [])
        runs: dict[str, TaskRun] = {}
        order: list[str] = []
        failed = self._run_dag(self._ordered(tasks), values, bound, runs, order, context)
        for task in finally_tasks:
            run = self._run_pipeline_task(task, values, bound, runs, context)
            runs[task["name"]] = run
            if run.status != SKIPPED:
                order.append(task["name"])
            failed = failed or run.status == FAILED
        results = self._pipeline_results(values, runs)
        return PipelineRunResult(FAILED if failed else SUCCEEDED, runs, results, order)

    def _run_dag(
        self,
        tasks: list[dict[str, Any]],
        values: Mapping[str, str],
        bound: Mapping[str, Path | None],
        runs: dict[str, TaskRun],
        order: list[str],
        context: Mapping[str, str],
    ) -> bool:
        """Runs the tasks as Tekton's DAG does; True when one failed."""
        pending = [t for t in tasks]
        running: dict[str, Future[TaskRun]] = {}
        failed = False
        names = [t["name"] for t in tasks]
        with ThreadPoolExecutor(max_workers=max(1, len(tasks)), thread_name_prefix="taskrun") as pool:
            while pending or running:
                if not failed:
                    for task in list(pending):
                        if self._dependencies(task) <= {n for n in runs if n not in running}:
                            pending.remove(task)
                            # when expressions and params are resolved now, with the results so far
                            run = self._prepare_or_skip(task, values, runs, context)
                            if run is not None:
                                runs[task["name"]] = run
                                continue
                            order.append(task["name"])
                            placeholder = TaskRun(task["name"], "Running")
                            runs[task["name"]] = placeholder
                            running[task["name"]] = pool.submit(
                                self._run_pipeline_task, task, values, bound, runs, context
                            )
                if not running:
                    if failed or not pending:
                        break
                    if not any(self._dependencies(t) <= set(runs) for t in pending):
                        raise TektonError(f"no task can start among {[t['name'] for t in pending]}")
                    continue
                done, _ = wait(list(running.values()), return_when=FIRST_COMPLETED)
                for name in [n for n, job in running.items() if job in done]:
                    run = running.pop(name).result()
                    runs[name] = run
                    failed = failed or run.status == FAILED
        for task in pending:
            runs[task["name"]] = TaskRun(task["name"], NOT_RUN, "PipelineRunStopping")
        for name in names:  # declaration order, as before
            runs[name] = runs.pop(name)
        return failed

    def _prepare_or_skip(
        self,
        task: Mapping[str, Any],
        values: Mapping[str, str],
        runs: Mapping[str, TaskRun],
        context: Mapping[str, str],
    ) -> TaskRun | None:
        """The TaskRun of a task its `when` expressions (or a missing result) skip, else None."""
        variables = {f"params.{k}": v for k, v in values.items()} | dict(context)

        def resolve(text: str) -> str:
            return _substitute(text, variables, runs, f"task {task['name']}")

        try:
            for expression in task.get("when", []):
                if not _when_holds(expression, resolve):
                    return TaskRun(task["name"], SKIPPED, "WhenExpressionsSkip")
            for p in task.get("params", []):
                resolve(p["value"])
        except MissingResult as exc:
            return TaskRun(task["name"], SKIPPED, f"ResultsMissing: {exc}")
        return None

    def _pipeline_params(self, given: Mapping[str, str]) -> dict[str, str]:
        declared = {p["name"]: p for p in self.spec.get("params", [])}
        unknown = set(given) - set(declared)
        if unknown:
            raise TektonError(f"params not declared by the pipeline: {sorted(unknown)}")
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if spec.get("type", "string") != "string":
                raise TektonError(f"param {name}: only string params are supported")
            if name in given:
                values[name] = given[name]
            elif "default" in spec:
                values[name] = spec["default"]
            else:
                raise TektonError(f"param {name} is required (no default) and was not given")
            if not isinstance(values[name], str):
                raise TektonError(f"param {name}: value {values[name]!r} is not a string")
        return values

    def _pipeline_workspaces(self, given: Mapping[str, Path | None]) -> dict[str, Path | None]:
        declared = {w["name"]: w for w in self.spec.get("workspaces", [])}
        unknown = set(given) - set(declared)
        if unknown:
            raise TektonError(f"workspaces not declared by the pipeline: {sorted(unknown)}")
        bound: dict[str, Path | None] = {}
        for name, spec in declared.items():
            path = given.get(name)
            if path is None and not spec.get("optional", False):
                raise TektonError(f"workspace {name} is required and was not bound")
            if path is not None and not path.is_dir():
                raise TektonError(f"workspace {name}: {path} is not a directory")
            bound[name] = path
        return bound

    @staticmethod
    def _dependencies(task: Mapping[str, Any]) -> set[str]:
        deps = set(task.get("runAfter", []))
        text = yaml.safe_dump({k: task.get(k) for k in ("params", "when")})
        deps |= set(re.findall(r"\$\(tasks\.([a-z0-9-]+)\.results\.", text))
        return deps

    def _ordered(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Declaration order, moved as needed so that every task comes after its dependencies."""
        names = [t["name"] for t in tasks]
        if len(set(names)) != len(names):
            raise TektonError(f"duplicate task names in {names}")
        by_name = {t["name"]: t for t in tasks}
        done: list[str] = []
        pending = list(names)
        while pending:
            for name in pending:
                deps = self._dependencies(by_name[name])
                missing = deps - set(names)
                if missing:
                    raise TektonError(f"task {name} depends on unknown tasks {sorted(missing)}")
                if deps <= set(done):
                    done.append(name)
                    pending.remove(name)
                    break
            else:
                raise TektonError(f"dependency cycle among {pending}")
        return [by_name[name] for name in done]

    # -- one pipeline task -----------------------------------------------------------------

    def _run_pipeline_task(
        self,
        task: Mapping[str, Any],
        values: Mapping[str, str],
        bound: Mapping[str, Path | None],
        runs: Mapping[str, TaskRun],
        context: Mapping[str, str],
    ) -> TaskRun:
        name = task["name"]
        if "taskSpec" not in task:
            raise TektonError(f"task {name}: only inline taskSpec is supported")
        variables = {f"params.{k}": v for k, v in values.items()} | dict(context)

        def resolve(text: str) -> str:
            return _substitute(text, variables, runs, f"task {name}")

        try:
            for expression in task.get("when", []):
                if not _when_holds(expression, resolve):
                    return TaskRun(name, SKIPPED, "WhenExpressionsSkip")
            passed = {p["name"]: resolve(p["value"]) for p in task.get("params", [])}
        except MissingResult as exc:
            return TaskRun(name, SKIPPED, f"ResultsMissing: {exc}")
        workspaces: dict[str, tuple[Path | None, str]] = {}
        for binding in task.get("workspaces", []):
            source = bound[binding["workspace"]]
            path = source / binding["subPath"] if source is not None and binding.get("subPath") else source
            if path is not None:
                path.mkdir(parents=True, exist_ok=True)
            workspaces[binding["name"]] = (path, binding["workspace"])
        started = time.monotonic()
        spec = _propagate(task["taskSpec"], values, passed)
        run = self._run_task(name, spec, passed, workspaces, context)
        run.started, run.finished = started, time.monotonic()
        return run

    def _run_task(
        self,
        name: str,
        spec: Mapping[str, Any],
        passed: Mapping[str, str],
        workspaces: Mapping[str, tuple[Path | None, str]],
        context: Mapping[str, str],
    ) -> TaskRun:
        params = _taskrun_params(name, spec, passed)
        run_name = f"{context['context.pipelineRun.name']}-{name}"
        variables: dict[str, str] = {f"params.{k}": v for k, v in params.items()}
        variables |= {
            **context,
            "context.taskRun.name": run_name,
            "context.taskRun.namespace": self.namespace,
            "context.taskRun.uid": str(uuid.uuid4()),
            "context.task.name": name,
        }
        for wspec in spec.get("workspaces", []):
            wname = wspec["name"]
            path, pipeline_ws = workspaces.get(wname, (None, ""))
            if path is None and not wspec.get("optional", False):
                raise TektonError(f"task {name}: workspace {wname} is required and not bound")
            variables[f"workspaces.{wname}.path"] = str(path) if path is not None else ""
            variables[f"workspaces.{wname}.bound"] = "true" if path is not None else "false"
            variables[f"workspaces.{wname}.claim"] = pipeline_ws if path is not None else ""
            variables[f"workspaces.{wname}.volume"] = pipeline_ws if path is not None else ""
        with tempfile.TemporaryDirectory(prefix=f"tekton-{name}-") as tmp:
            results_dir = Path(tmp) / "results"
            results_dir.mkdir()
            scripts_dir = Path(tmp) / "scripts"
            scripts_dir.mkdir()
            for result in spec.get("results", []):
                if result.get("type", "string") != "string":
                    raise TektonError(f"task {name}: only string results are supported")
                variables[f"results.{result['name']}.path"] = str(results_dir / result["name"])
            run = TaskRun(name, SUCCEEDED, params=params)
            template = spec.get("stepTemplate", {})
            for index, step in enumerate(spec["steps"]):
                step_run = self._run_step(name, index, _merge_step(template, step), variables, scripts_dir, tmp)
                run.steps.append(step_run)
                if step_run.returncode != 0:
                    run.status = FAILED
                    run.reason = f"step {step_run.name} exited with {step_run.returncode}"
                    return run
            for result in spec.get("results", []):
                file = results_dir / result["name"]
                if file.is_file():
                    data = file.read_bytes()
                    if len(data) > _RESULT_MAX_BYTES:
                        run.status = FAILED
                        run.reason = f"result {result['name']} is over {_RESULT_MAX_BYTES} bytes"
                        return run
                    run.results[result["name"]] = data.decode()
            return run

    def _run_step(
        self,
        task: str,
        index: int,
        step: Mapping[str, Any],
        variables: Mapping[str, str],
        scripts_dir: Path,
        tmp: str,
    ) -> StepRun:
        where = f"task {task} step {step.get('name', index)}"

        def resolve(text: str) -> str:
            try:
                return _substitute(text, variables, {}, where)
            except MissingResult as exc:  # no task results inside a TaskRun
                raise TektonError(f"{where}: {exc}") from None

        if "script" not in step or "command" in step or "args" in step:
            raise TektonError(f"{where}: only `script` steps are supported")
        image = resolve(step["image"])
        if image not in self.images:
            raise TektonError(f"{where}: no environment stands for image {image!r} (known: {sorted(self.images)})")
        env = dict(self.base_env)
        env["PATH"] = os.pathsep.join(str(p) for p in self.images[image])
        env["HOME"] = env.get("HOME") or tmp
        seen: set[str] = set()
        for item in step.get("env", []):
            if item["name"] in seen:
                raise TektonError(f"{where}: env {item['name']} defined twice")
            seen.add(item["name"])
            if "valueFrom" in item:
                value = self._secret_value(item, where)
                if value is None:
                    env.pop(item["name"], None)
                    continue
                env[item["name"]] = value
            else:
                env[item["name"]] = resolve(str(item.get("value", "")))
        script = scripts_dir / f"step-{index}"
        script.write_text(resolve(step["script"]))
        workdir = Path(resolve(step["workingDir"])) if step.get("workingDir") else Path(tmp)
        proc = subprocess.run(
            ["sh", str(script)],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=self.step_timeout,
        )
        return StepRun(step.get("name", str(index)), image, proc.returncode, proc.stdout, proc.stderr, env)

    def _secret_value(self, item: Mapping[str, Any], where: str) -> str | None:
        source = item["valueFrom"]
        ref = source.get("secretKeyRef")
        if ref is None or len(source) != 1:
            raise TektonError(f"{where}: env {item['name']}: only valueFrom.secretKeyRef is supported")
        secret = self.secrets.get(ref["name"])
        if secret is None or ref["key"] not in secret:
            if ref.get("optional", False):
                return None
            raise TektonError(f"{where}: secret {ref['name']} key {ref['key']} is missing (pod cannot start)")
        return secret[ref["key"]]

    def _pipeline_results(self, values: Mapping[str, str], runs: Mapping[str, TaskRun]) -> dict[str, str]:
        variables = {f"params.{k}": v for k, v in values.items()}
        results: dict[str, str] = {}
        for result in self.spec.get("results", []):
            try:
                results[result["name"]] = _substitute(result["value"], variables, runs, "pipeline results")
            except MissingResult:
                continue  # Tekton does not emit a result whose task was skipped or did not write it
        return results


def _param_names(text: str) -> set[str]:
    """The X of every $(params.X) in text."""
    keys = (_normalise(match.group(1)) for match in _VARIABLE.finditer(text))
    return {key.removeprefix("params.") for key in keys if key.startswith("params.")}


def _check_param_usage(spec: Mapping[str, Any]) -> None:
    """The webhook's check of a Pipeline: each taskSpec's steps use only params that the taskSpec
    or the Pipeline declares (pipeline_validation.go, validateUsageOfDeclaredPipelineTaskParameters).
    Only `steps` are checked there; a stray variable elsewhere fails when the TaskRun is made."""
    pipeline_params = {p["name"] for p in spec.get("params", [])}
    for task in spec.get("tasks", []) + spec.get("finally", []):
        task_spec = task.get("taskSpec")
        if task_spec is None:
            continue
        declared = pipeline_params | {p["name"] for p in task_spec.get("params", [])}
        unknown = _param_names(yaml.safe_dump(task_spec.get("steps", []))) - declared
        if unknown:
            raise TektonError(
                f"task {task['name']}: steps use params declared neither by the taskSpec nor by the "
                f"pipeline: {sorted(unknown)}"
            )


def _propagate(task_spec: Mapping[str, Any], values: Mapping[str, str], passed: Mapping[str, str]) -> dict[str, Any]:
    """The PipelineRun's pass over an embedded taskSpec (resources.propagateParams): each Pipeline
    param, or the value passed under its name, replaced everywhere but in the param declarations."""
    scope = {name: passed.get(name, value) for name, value in values.items()}

    def replace(match: re.Match[str]) -> str:
        key = _normalise(match.group(1))
        name = key.removeprefix("params.")
        return scope[name] if key.startswith("params.") and name in scope else match.group(0)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _VARIABLE.sub(replace, node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        return node

    return {key: item if key == "params" else walk(item) for key, item in task_spec.items()}


def _taskrun_params(task: str, spec: Mapping[str, Any], passed: Mapping[str, str]) -> dict[str, str]:
    """A TaskRun's param values: every passed one (extra params are allowed), and the declared
    defaults of the others; a declared param with neither is Tekton's "missing values" error."""
    params = dict(passed)
    missing = []
    for pspec in spec.get("params", []):
        if pspec["name"] in params:
            continue
        if "default" in pspec:
            params[pspec["name"]] = pspec["default"]
        else:
            missing.append(pspec["name"])
    if missing:
        raise TektonError(f"task {task}: missing values for these params which have no default values: {missing}")
    return params


def _merge_step(template: Mapping[str, Any], step: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in template.items() if k != "env"}
    merged.update({k: v for k, v in step.items() if k != "env"})
    env = {item["name"]: item for item in template.get("env", [])}
    names = [item["name"] for item in step.get("env", [])]
    if len(set(names)) != len(names):
        raise TektonError(f"step {step.get('name')}: duplicate env names {names}")
    env.update({item["name"]: item for item in step.get("env", [])})
    merged["env"] = list(env.values())
    return merged


def _when_holds(expression: Mapping[str, Any], resolve: Callable[[str], str]) -> bool:
    if "cel" in expression:
        raise TektonError("CEL `when` expressions are not supported")
    value = resolve(expression["input"])
    values = [resolve(v) for v in expression["values"]]
    operator = expression["operator"]
    if operator == "in":
        return value in values
    if operator == "notin":
        return value not in values
    raise TektonError(f"unknown `when` operator {operator!r}")


def _substitute(text: str, variables: Mapping[str, str], runs: Mapping[str, TaskRun], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        key = _normalise(match.group(1))
        if key in variables:
            return variables[key]
        task_result = re.fullmatch(r"tasks\.([a-z0-9-]+)\.results\.([A-Za-z0-9_-]+)", key)
        if task_result and runs:
            task, result = task_result.groups()
            if task not in runs:
                raise TektonError(f"{where}: {match.group(0)} refers to a task that has not run yet")
            run = runs[task]
            if run.status != SUCCEEDED or result not in run.results:
                raise MissingResult(f"{match.group(0)} ({task} {run.status})")
            return run.results[result]
        raise TektonError(f"{where}: unknown variable {match.group(0)}")

    return _VARIABLE.sub(replace, text)


def _normalise(key: str) -> str:
    """params["x"] / params['x'] -> params.x"""
    return re.sub(r"\[[\"']([^\"']+)[\"']\]", r".\1", key)
