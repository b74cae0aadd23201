"""The Tekton pipeline run end to end without a cluster (tests/helpers/tekton_executor.py).

The executor reads deploy/tekton/modelcar-pipeline.yaml and runs its tasks on this machine:
parameter substitution, `when` expressions, runAfter order, results files, workspaces as
directories, each step's script run with sh in the environment that stands for its image
(tests/helpers/image_envs.py): the task image's without extras, the compress image's with
[compress]. Against real servers on loopback: a Hub (olah), an OCI registry (docker-registry)
and a Model Registry (in-process, spec-validated).

The cases:
- the whole pipeline, COMPRESS_MODEL false and true: the image in the registry, the registry
  entry, the results, which tasks ran and which were Skipped, no secret in any output;
- SKIP_TASKS variants: the named tasks are Skipped (not Succeeded) and their results absent;
- a bad parameter: validate fails, nothing else runs, nothing is touched;
- the wiring itself, with a recording stand-in for `modelcar`: every parameter reaches every
  task as the environment variable of the same name, secrets only where they belong.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelcar.stages import BUILD_PUSH, CLEANUP, COMPRESS, DOWNLOAD, REGISTER, STAGE_NAMES

from .helpers import model_signing_tool, secrets
from .helpers.common import REPO_ROOT, clean_env
from .helpers.fake_model import fake_model_files, write_model_dir
from .helpers.image_envs import base_commands, env_bin, image_paths
from .helpers.tekton_executor import (
    FAILED,
    NOT_RUN,
    SKIPPED,
    SUCCEEDED,
    PipelineExecutor,
    PipelineRunResult,
    load_pipeline,
)

PIPELINE = REPO_ROOT / "deploy" / "tekton" / "modelcar-pipeline.yaml"
VALIDATE = "validate"
ALL_TASKS = (VALIDATE, *STAGE_NAMES)
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
DEFAULT_PATTERNS = ("*.safetensors", "*.json", "*.txt")


@dataclass
class Run:
    """One local PipelineRun: what went in and what came out."""

    result: PipelineRunResult
    workspace: Path

    def run_json(self) -> dict[str, Any]:
        return json.loads((self.workspace / "run.json").read_text())


def images_for(
    params: Mapping[str, str], tmp_path: Path, override: Mapping[str, list[Path]] | None = None
) -> dict[str, list[Path]]:
    """What stands for each image the run's steps name (the pipeline's defaults unless given)."""
    values = {p["name"]: p.get("default", "") for p in load_pipeline(PIPELINE)["spec"]["params"]} | dict(params)
    return image_paths(values, base_commands(tmp_path / "base-image-bin"), override)


def recorder_executor(params: Mapping[str, str], bin_dir: Path, tmp_path: Path, **kwargs: Any) -> PipelineExecutor:
    """An executor whose images hold the recording stand-in for `modelcar` (and the base's commands)."""
    override = {"TASK_IMAGE": [bin_dir], "COMPRESS_IMAGE": [bin_dir]}
    kwargs.setdefault("base_env", clean_env())
    return PipelineExecutor(load_pipeline(PIPELINE), images=images_for(params, tmp_path, override), **kwargs)


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., Run]:
    """Runs the pipeline with the real `modelcar`, each step in the environment of its image."""
    counter = iter(range(1000))

    def run(
        params: Mapping[str, str],
        *,
        env: Mapping[str, str] | None = None,
        secrets_: Mapping[str, Mapping[str, str]] | None = None,
        registry_auth: Path | None = None,
        sign_key: Path | None = None,
        workspace: Path | None = None,
    ) -> Run:
        workspace = workspace or tmp_path / f"pvc-{next(counter)}"
        workspace.mkdir(parents=True, exist_ok=True)
        executor = PipelineExecutor(
            load_pipeline(PIPELINE),
            images=images_for(params, tmp_path),
            base_env=clean_env(**(env or {})),
            secrets=secrets_,
        )
        bound: dict[str, Path | None] = {"shared-workspace": workspace}
        if registry_auth is not None:
            bound["registry-auth"] = registry_auth
        if sign_key is not None:
            bound["sign-key"] = sign_key
        result = executor.run(dict(params), bound)
        secrets.captured_output.append(result.output)
        assert not secrets.leaks(result.output), "a secret appeared in a task's output"
        return Run(result, workspace)

    return run


def expect_statuses(run: Run, **overrides: str) -> None:
    """All tasks Succeeded except those named (underscores for dashes)."""
    expected = {name: SUCCEEDED for name in ALL_TASKS}
    expected |= {name.replace("_", "-"): status for name, status in overrides.items()}
    assert run.result.statuses == expected, run.result.output


# -- reading the pushed image back -----------------------------------------------------------


def fetch_manifest(client: httpx.Client, base: str, repo: str, reference: str) -> tuple[str, dict[str, Any]]:
    response = client.get(f"{base}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
    response.raise_for_status()
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert response.headers["Docker-Content-Digest"] == digest
    return digest, response.json()


def image_files(host: str, repo: str, reference: str) -> tuple[str, dict[str, tuple[int, bytes]]]:
    """The image's digest and its files (path -> (mode, bytes)) of the first platform."""
    base = f"http://{host}"
    with httpx.Client(timeout=30) as client:
        digest, manifest = fetch_manifest(client, base, repo, reference)
        if "manifests" in manifest:
            _, manifest = fetch_manifest(client, base, repo, manifest["manifests"][0]["digest"])
        files: dict[str, tuple[int, bytes]] = {}
        for layer in manifest["layers"]:
            blob = client.get(f"{base}/v2/{repo}/blobs/{layer['digest']}")
            blob.raise_for_status()
            assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
            with tarfile.open(fileobj=io.BytesIO(blob.content)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        data = tar.extractfile(member)
                        assert data is not None
                        files[member.name.lstrip("./")] = (member.mode, data.read())
    return digest, files


def model_files_in(files: Mapping[str, tuple[int, bytes]]) -> dict[str, bytes]:
    return {path.removeprefix("models/"): data for path, (_, data) in files.items() if path.startswith("models/")}


def allowed(files: Mapping[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if any(fnmatch(name, p) for p in DEFAULT_PATTERNS)}


def docker_config(host: str, user: str, password: str, path: Path) -> Path:
    """A registry-auth workspace as a kubernetes.io/dockerconfigjson secret mounts it."""
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / ".dockerconfigjson").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def custom_property(entity: Mapping[str, Any], name: str) -> Any:
    prop = entity["customProperties"][name]
    return next(v for k, v in prop.items() if k != "metadataType")


# -- the whole pipeline ----------------------------------------------------------------------


@pytest.mark.slow
def test_whole_pipeline_from_the_hub_to_the_model_registry(
    run_pipeline: Callable[..., Run],
    hub: Any,
    oci_registry: Any,
    busybox_layout: Path,
    model_registry_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    files = fake_model_files(seed=61)
    commit = hub.create_repo("tekton/granite-tiny", files)
    registry = model_registry_factory(token=secrets.MODEL_REGISTRY_TOKEN)
    repo = "tekton/granite-tiny"
    auth = docker_config(oci_registry.host, "robot", secrets.REGISTRY_PASSWORD, tmp_path / "quay-auth")

    run = run_pipeline(
        {
            "HUGGINGFACE_MODEL": "tekton/granite-tiny",
            "OCI_IMAGE": f"{oci_registry.host}/{repo}:1.0.0",
            "BASE_IMAGE": f"oci:{busybox_layout}",
            "TLS_VERIFY": "false",
            "MODEL_REGISTRY_URL": registry.url,
            "MODEL_VERSION": "1.0.0",
        },
        env={"HF_ENDPOINT": hub.endpoint},
        secrets_={
            "huggingface-secret": {"HUGGINGFACE_TOKEN": secrets.HUB_TOKEN},
            "model-registry-token": {"MODEL_REGISTRY_TOKEN": secrets.MODEL_REGISTRY_TOKEN},
        },
        registry_auth=auth,
    )

    expect_statuses(run, compress_model=SKIPPED)
    assert run.result.status == SUCCEEDED
    assert run.result.order == [VALIDATE, CLEANUP, DOWNLOAD, BUILD_PUSH, REGISTER]

    # The image in the registry: the allowed files under /models, subdirectories kept.
    digest, pushed = image_files(oci_registry.host, repo, "1.0.0")
    assert model_files_in(pushed) == allowed(files)
    assert "models/pytorch_model.bin" not in pushed
    assert "bin/busybox" in pushed  # on top of the base image

    # The results, as Tekton would report them.
    results = run.result.results
    assert results["IMAGE_DIGEST"] == digest
    assert results["IMAGE_URL"] == f"{oci_registry.host}/{repo}@{digest}"
    assert results["MODEL_URI"] == f"oci://{oci_registry.host}/{repo}@{digest}"
    assert set(results) == {"IMAGE_DIGEST", "IMAGE_URL", "MODEL_URI", "REGISTERED_MODEL_ID", "MODEL_VERSION_ID"}

    # The Model Registry entry, reached with the token from the secret.
    registry.check()
    model = registry.registered_models[results["REGISTERED_MODEL_ID"]]
    assert model["name"] == "granite-tiny"
    (version,) = registry.versions_of(model["id"])
    assert version["id"] == results["MODEL_VERSION_ID"]
    assert version["name"] == "1.0.0"
    assert custom_property(version, "compressed") is False
    assert custom_property(version, "hf_revision") == commit
    (artifact,) = registry.artifacts_of(version["id"])
    assert artifact["uri"] == results["MODEL_URI"]

    # The run record on the shared workspace, written by each task in turn.
    record = run.run_json()
    assert commit in json.dumps(record["source"])
    assert {name: record["stages"][name]["status"] for name in (CLEANUP, DOWNLOAD, BUILD_PUSH, REGISTER)} == {
        CLEANUP: "succeeded",
        DOWNLOAD: "succeeded",
        BUILD_PUSH: "succeeded",
        REGISTER: "succeeded",
    }


@pytest.mark.slow
def test_delete_after_push_leaves_the_workspace_without_the_model(
    run_pipeline: Callable[..., Run], hub: Any, oci_registry: Any, busybox_layout: Path
) -> None:
    files = fake_model_files(seed=67)
    hub.create_repo("tekton/delete-after", files)
    repo = "tekton/delete-after"
    run = run_pipeline(
        {
            "HUGGINGFACE_MODEL": "tekton/delete-after",
            "OCI_IMAGE": f"{oci_registry.host}/{repo}:1",
            "BASE_IMAGE": f"oci:{busybox_layout}",
            "TLS_VERIFY": "false",
            "DELETE_AFTER_PUSH": "true",
        },
        env={"HF_ENDPOINT": hub.endpoint},
        secrets_={"huggingface-secret": {"HUGGINGFACE_TOKEN": secrets.HUB_TOKEN}},
    )
    assert run.result.status == SUCCEEDED, {n: t.output[-2000:] for n, t in run.result.tasks.items()}
    digest, pushed = image_files(oci_registry.host, repo, "1")
    assert model_files_in(pushed) == allowed(files)
    assert run.result.results["IMAGE_DIGEST"] == digest
    model = run.workspace / "model"
    assert not model.exists() or [p for p in model.rglob("*") if p.is_file()] == []  # each file went once pushed


@pytest.mark.slow
@pytest.mark.compress
def test_whole_pipeline_with_compression(
    run_pipeline: Callable[..., Run],
    hub: Any,
    oci_registry: Any,
    model_registry: Any,
    tmp_path: Path,
) -> None:
    pytest.importorskip("llmcompressor")
    from .helpers.tiny_llama import build_tiny_llama, write_text_dataset

    model_dir = build_tiny_llama(tmp_path / "tiny-llama")
    files = {str(p.relative_to(model_dir)): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    hub.create_repo("tekton/tiny-llama", files)
    dataset = write_text_dataset(tmp_path / "calibration.txt")
    repo = "tekton/tiny-llama-w4a16"

    run = run_pipeline(
        {
            "HUGGINGFACE_MODEL": "tekton/tiny-llama",
            "OCI_IMAGE": f"{oci_registry.host}/{repo}:1.0.0",
            "BASE_IMAGE": "scratch",
            "TLS_VERIFY": "false",
            "COMPRESS_MODEL": "true",
            "BITS": "4",
            "GROUP_SIZE": "128",
            "DATASET": str(dataset),
            "SEQUENCE_LENGTH": "64",
            "NUM_CALIBRATION_SAMPLES": "16",
            "MODEL_REGISTRY_URL": model_registry.url,
        },
        env={"HF_ENDPOINT": hub.endpoint},
    )

    expect_statuses(run)
    # build-and-push starts beside download-model (Tekton has no conditional runAfter, issue 14),
    # but with compression on it waits, doing nothing, for compress-model: the work is in order.
    assert run.result.order == [VALIDATE, CLEANUP, DOWNLOAD, BUILD_PUSH, COMPRESS, REGISTER]
    assert "waiting for download-model and compress-model" in run.result.tasks[BUILD_PUSH].output
    stages = run.run_json()["stages"]  # each stage's end, as it recorded it
    assert stages[COMPRESS]["status"] == stages[BUILD_PUSH]["status"] == "succeeded"
    assert stages[COMPRESS]["time"] <= stages[BUILD_PUSH]["time"]
    record = run.run_json()
    assert record["compression"]["enabled"] is True
    assert record["compression"]["bits"] == 4
    assert (run.workspace / "model-original").is_dir()

    digest, pushed = image_files(oci_registry.host, repo, "1.0.0")
    in_image = model_files_in(pushed)
    compressed = {str(p.relative_to(run.workspace / "model")) for p in (run.workspace / "model").rglob("*")}
    assert set(in_image) <= compressed
    config = json.loads(in_image["config.json"])
    assert "quantization_config" in config  # the quantized model is what was packaged
    assert run.result.results["IMAGE_DIGEST"] == digest

    model_registry.check()
    version = model_registry.model_versions[run.result.results["MODEL_VERSION_ID"]]
    assert custom_property(version, "compressed") is True


# -- skipping --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("local-model") / "tiny", fake_model_files(seed=62))


@pytest.mark.parametrize(
    "skip,skipped",
    [
        ("", set()),
        ("cleanup-workspace", {CLEANUP}),
        ("build-and-push", {BUILD_PUSH}),
        (" build-and-push , cleanup-workspace ", {BUILD_PUSH, CLEANUP}),
        ("compress-model,register-model", set()),  # skipped anyway here: no compression, no registry
    ],
)
def test_skip_tasks_shows_the_tasks_as_skipped(
    run_pipeline: Callable[..., Run], local_model: Path, tmp_path: Path, skip: str, skipped: set[str]
) -> None:
    layout = tmp_path / "layout"
    run = run_pipeline(
        {
            "HUGGINGFACE_MODEL": str(local_model),
            "OCI_IMAGE": f"oci:{layout}:1.0.0",
            "BASE_IMAGE": "scratch",
            "SKIP_TASKS": skip,
        }
    )
    # compress-model: COMPRESS_MODEL is false; register-model: no MODEL_REGISTRY_URL.
    expected = {name: SKIPPED for name in skipped | {COMPRESS, REGISTER}}
    expect_statuses(run, **{k.replace("-", "_"): v for k, v in expected.items()})
    assert run.result.status == SUCCEEDED
    if BUILD_PUSH in skipped:
        assert run.result.results == {}  # a skipped task's results are not emitted
        assert not layout.exists()
    else:
        assert set(run.result.results) == {"IMAGE_DIGEST", "IMAGE_URL"}
        assert run.result.results["IMAGE_URL"] == f"oci:{layout}@{run.result.results['IMAGE_DIGEST']}"
    stages = run.run_json()["stages"]
    assert stages[DOWNLOAD]["status"] == "succeeded"
    for name in skipped:
        assert name not in stages or stages[name]["status"] != "succeeded"


def test_skipping_download_uses_the_model_already_in_the_workspace(
    run_pipeline: Callable[..., Run], local_model: Path, tmp_path: Path
) -> None:
    """A workspace holding nothing but model/ (a user bringing their own files)."""
    workspace = tmp_path / "pvc"
    write_model_dir(workspace / "model", fake_model_files(seed=63))
    run = run_pipeline(
        {
            "HUGGINGFACE_MODEL": str(local_model),
            "OCI_IMAGE": f"oci:{tmp_path / 'layout'}:1.0.0",
            "BASE_IMAGE": "scratch",
            "SKIP_TASKS": "cleanup-workspace,download-model",
        },
        workspace=workspace,
    )
    expect_statuses(
        run, cleanup_workspace=SKIPPED, download_model=SKIPPED, compress_model=SKIPPED, register_model=SKIPPED
    )
    assert (workspace / "model" / "config.json").read_bytes() == fake_model_files(seed=63)["config.json"]
    assert run.result.results["IMAGE_DIGEST"].startswith("sha256:")


def sign_key_secret(path: Path, password: str | None) -> tuple[Path, Path]:
    """A sign-key workspace as a secret with sign-key.pem (and password) mounts it; and the public key."""
    path.mkdir(parents=True)
    private, public = model_signing_tool.write_key_pair(path, password=password)
    private.rename(path / "sign-key.pem")
    moved = public.rename(path.parent / "sign-key.pub")
    if password is not None:
        (path / "password").write_text(password)
    return path, moved


def test_a_bound_sign_key_signs_the_image_and_the_registry_entry_says_so(
    run_pipeline: Callable[..., Run],
    local_model: Path,
    oci_registry: Any,
    busybox_layout: Path,
    model_registry_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    model_signing_tool.require()
    registry = model_registry_factory()
    sign_key, public = sign_key_secret(tmp_path / "sign-key", secrets.SIGN_KEY_PASSWORD)
    repo = "tekton/signed"
    run = run_pipeline(
        {
            "HUGGINGFACE_MODEL": str(local_model),
            "OCI_IMAGE": f"{oci_registry.host}/{repo}:1.0.0",
            "BASE_IMAGE": f"oci:{busybox_layout}",
            "TLS_VERIFY": "false",
            "MODEL_REGISTRY_URL": registry.url,
        },
        sign_key=sign_key,
    )
    expect_statuses(run, compress_model=SKIPPED)
    results = run.result.results
    digest = results["IMAGE_DIGEST"]
    assert results["SIGNATURE_REF"] == f"{oci_registry.host}/{repo}:{digest.replace(':', '-')}.sig"
    assert results["SIGNATURE_DIGEST"].startswith("sha256:") and results["MODEL_SIG_DIGEST"].startswith("sha256:")
    signature = run.run_json()["image"]["signature"]
    assert signature["signed"] is True and signature["ref"] == results["SIGNATURE_REF"]

    # The field's tool verifies the image in the registry and model.sig against the files.
    model = run.workspace / "model"
    theirs = model_signing_tool.run(
        "verify", "key", results["IMAGE_URL"], "--public-key", str(public), "--local-model", str(model)
    )
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    theirs = model_signing_tool.run(
        "verify", "key", str(model), "--signature", str(model / "model.sig"), "--public-key", str(public)
    )
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr

    # The Model Registry version says it is signed, and where the signature is.
    registry.check()
    (model_entry,) = registry.registered_models.values()
    (version,) = registry.versions_of(model_entry["id"])
    assert custom_property(version, "signed") is True
    assert custom_property(version, "signature_ref") == results["SIGNATURE_REF"]


def test_a_wrong_sign_key_password_stops_the_run_in_validate(
    run_pipeline: Callable[..., Run], local_model: Path, tmp_path: Path
) -> None:
    sign_key, _ = sign_key_secret(tmp_path / "sign-key", secrets.SIGN_KEY_PASSWORD)
    (sign_key / "password").write_text("not-the-password")
    run = run_pipeline(
        {"HUGGINGFACE_MODEL": str(local_model), "OCI_IMAGE": f"oci:{tmp_path / 'layout'}:1"}, sign_key=sign_key
    )
    assert run.result.statuses == {VALIDATE: FAILED} | {name: NOT_RUN for name in STAGE_NAMES}
    assert run.result.tasks[VALIDATE].steps[0].returncode == 2
    assert "SIGN_KEY_PASSWORD" in run.result.tasks[VALIDATE].output
    assert "not-the-password" not in run.result.output


# -- failing fast ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,named",
    [
        ({"BITS": "3"}, "BITS"),
        ({"SKIP_TASKS": "download"}, "SKIP_TASKS"),
        ({"OCI_IMAGE": "quay.io/UPPER/case:tag"}, "OCI_IMAGE"),
        ({"MODEL_REGISTRY_URL": "registry.example.com"}, "MODEL_REGISTRY_URL"),
        ({"MODEL_REGISTRY_URL": "http://registry.example.com"}, "MODEL_REGISTRY_URL"),
        ({"COMPRESS_MODEL": "maybe"}, "COMPRESS_MODEL"),
        ({"COMPRESS_MODEL": "true", "DELETE_AFTER_PUSH": "true"}, "DELETE_AFTER_PUSH"),
    ],
)
def test_a_bad_parameter_stops_the_run_before_any_work(
    run_pipeline: Callable[..., Run], local_model: Path, tmp_path: Path, params: dict[str, str], named: str
) -> None:
    workspace = tmp_path / "pvc"
    write_model_dir(workspace / "model", {"config.json": b"{}"})
    (workspace / ".modelcar-workspace").write_text("marker\n")
    run = run_pipeline({"HUGGINGFACE_MODEL": str(local_model), **params}, workspace=workspace)
    assert run.result.status == FAILED
    assert run.result.statuses == {VALIDATE: FAILED} | {name: NOT_RUN for name in STAGE_NAMES}
    assert named in run.result.tasks[VALIDATE].output
    assert run.result.tasks[VALIDATE].steps[0].returncode == 2
    assert (workspace / "model" / "config.json").read_bytes() == b"{}"  # nothing cleaned up
    assert run.result.results == {}


def test_a_failing_stage_stops_the_run(run_pipeline: Callable[..., Run], tmp_path: Path) -> None:
    """No file of the model matches the allow patterns: download-model fails, the rest is not run;
    build-and-push, started beside it to follow the download (issue 14), fails naming it."""
    model = write_model_dir(tmp_path / "model", {"README.md": b"no weights here"})
    run = run_pipeline({"HUGGINGFACE_MODEL": str(model), "OCI_IMAGE": f"oci:{tmp_path / 'layout'}"})
    assert run.result.status == FAILED
    expected = {VALIDATE: SUCCEEDED, CLEANUP: SUCCEEDED, DOWNLOAD: FAILED, BUILD_PUSH: FAILED} | {
        name: NOT_RUN for name in (COMPRESS, REGISTER)
    }
    assert run.result.statuses == expected, run.result.output
    assert "download-model" in run.result.tasks[DOWNLOAD].output
    assert "download-model failed: no file of" in run.result.tasks[BUILD_PUSH].output


# -- the wiring, with a recording stand-in for modelcar ---------------------------------------

RECORDER = """\
#!{python}
# Stands in for modelcar: records its arguments and environment, writes validate's results
# (or hands validate to the real modelcar of the task image's environment).
import json, os, sys
from pathlib import Path
log = Path({log!r})
with log.open("a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
args = sys.argv[1:]
real = {real!r}
if real and args[0] == "validate":
    os.execv(real, [real, *args])
if "--results-dir" in args:
    results = Path(args[args.index("--results-dir") + 1])
    if args[0] == "validate":
        skip = os.environ.get("SKIP_TASKS", "").split(",")
        for stage in {stages!r}:
            (results / stage).write_text("false" if stage in skip else "true")
    else:
        (results / "IMAGE_DIGEST").write_text("sha256:" + "0" * 64)
"""


def make_recorder(directory: Path, real_validate: bool = False) -> tuple[Path, Path]:
    bin_dir = directory / "fake-bin"
    bin_dir.mkdir()
    log = directory / "calls.jsonl"
    script = bin_dir / "modelcar"
    real = str(env_bin("task") / "modelcar") if real_validate else None
    script.write_text(RECORDER.format(python=sys.executable, log=str(log), stages=list(STAGE_NAMES), real=real))
    script.chmod(0o755)
    return bin_dir, log


@pytest.fixture
def recording_modelcar(tmp_path: Path) -> tuple[Path, Path]:
    return make_recorder(tmp_path)


def sentinel_params() -> dict[str, str]:
    """A distinct value for every pipeline parameter (the CLI is not asked to accept them)."""
    pipeline = load_pipeline(PIPELINE)
    values = {p["name"]: f"value-of-{p['name']}" for p in pipeline["spec"]["params"]}
    values["COMPRESS_MODEL"] = "yes"  # let the `when` on COMPRESS_MODEL pass
    return values


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_parameter_reaches_every_task_as_its_environment_variable(
    recording_modelcar: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, log = recording_modelcar
    params = sentinel_params()
    workspace = tmp_path / "pvc"
    workspace.mkdir()
    auth = docker_config("quay.io", "robot", secrets.REGISTRY_PASSWORD, tmp_path / "auth")
    executor = recorder_executor(
        params,
        bin_dir,
        tmp_path,
        secrets={
            "huggingface-secret": {"HUGGINGFACE_TOKEN": secrets.HUB_TOKEN},
            "model-registry-token": {"MODEL_REGISTRY_TOKEN": secrets.MODEL_REGISTRY_TOKEN},
        },
    )
    result = executor.run(params, {"shared-workspace": workspace, "registry-auth": auth})
    assert result.statuses == {name: SUCCEEDED for name in ALL_TASKS}, result.output

    recorded = calls(log)
    commands = [c["argv"][0] for c in recorded]
    # build-push runs beside download (and compress, issue 14), register after it: the recording
    # stand-in returns at once, so these calls come in any order the DAG allows.
    assert commands[:2] == ["validate", "cleanup"]
    assert sorted(commands[2:]) == ["build-push", "compress", "download", "register"]
    assert commands.index("download") < commands.index("compress")
    assert commands.index("build-push") < commands.index("register")
    cli_params = {k: v for k, v in params.items() if k not in ("TASK_IMAGE", "COMPRESS_IMAGE")}
    for call in recorded:
        env = call["env"]
        for name, value in cli_params.items():
            assert env.get(name) == value, f"{call['argv'][0]}: {name}"
        assert env["MODELCAR_WORKSPACE"] == str(workspace)
        # Secrets only for the tasks that need them.
        assert ("HUGGINGFACE_TOKEN" in env) == (call["argv"][0] in ("download", "compress"))
        assert ("MODEL_REGISTRY_TOKEN" in env) == (call["argv"][0] == "register")
        # The registry credentials where images are pushed (and checked by validate).
        if call["argv"][0] in ("validate", "build-push"):
            assert env["REGISTRY_AUTH_FILE"] == str(auth / ".dockerconfigjson")
        else:
            assert "REGISTRY_AUTH_FILE" not in env
    # Each task ran in the image its parameter names.
    images = {name: run.steps[0].image for name, run in result.tasks.items()}
    assert images == {name: params["COMPRESS_IMAGE" if name == COMPRESS else "TASK_IMAGE"] for name in ALL_TASKS}
    assert result.results == {"IMAGE_DIGEST": "sha256:" + "0" * 64}


def test_without_optional_secrets_and_credentials_nothing_is_set(
    recording_modelcar: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, log = recording_modelcar
    workspace = tmp_path / "pvc"
    workspace.mkdir()
    executor = recorder_executor({}, bin_dir, tmp_path)
    result = executor.run({"HUGGINGFACE_MODEL": "org/model", "COMPRESS_MODEL": "true"}, {"shared-workspace": workspace})
    assert result.status == SUCCEEDED, result.output
    for call in calls(log):
        assert not {"HUGGINGFACE_TOKEN", "MODEL_REGISTRY_TOKEN", "REGISTRY_AUTH_FILE"} & set(call["env"])
        assert call["env"]["REGISTRY_AUTH_BOUND"] == "false"


@pytest.mark.parametrize(
    "value,runs",
    [("true", True), ("TRUE", True), ("yes", True), ("false", False), ("False", False), ("0", False), ("", False)],
)
def test_compress_model_switch(recording_modelcar: tuple[Path, Path], tmp_path: Path, value: str, runs: bool) -> None:
    bin_dir, _ = recording_modelcar
    workspace = tmp_path / "pvc"
    workspace.mkdir()
    executor = recorder_executor({}, bin_dir, tmp_path)
    result = executor.run({"HUGGINGFACE_MODEL": "org/model", "COMPRESS_MODEL": value}, {"shared-workspace": workspace})
    assert result.status_of(COMPRESS) == (SUCCEEDED if runs else SKIPPED)
    assert result.status_of(BUILD_PUSH) == SUCCEEDED  # a skipped task does not hold back the next


def test_the_real_validate_decides_which_tasks_run(local_model: Path, tmp_path: Path) -> None:
    """The real `modelcar validate` of the task image (the other stages recorded): COMPRESS_MODEL=yes
    and a registry URL. The task image has no compress extra, and validate does not need it."""
    bin_dir, log = make_recorder(tmp_path, real_validate=True)
    executor = recorder_executor({}, bin_dir, tmp_path)
    workspace = tmp_path / "pvc"
    workspace.mkdir()
    params = {
        "HUGGINGFACE_MODEL": str(local_model),
        "OCI_IMAGE": "quay.io/my-user/tiny:1.0.0",
        "COMPRESS_MODEL": "yes",
        "SKIP_TASKS": "cleanup-workspace",
    }
    result = executor.run(
        params | {"MODEL_REGISTRY_URL": "https://registry.example.com"}, {"shared-workspace": workspace}
    )
    assert result.tasks[VALIDATE].status == SUCCEEDED, result.output
    assert result.tasks[VALIDATE].results == {name: "false" if name == CLEANUP else "true" for name in STAGE_NAMES}
    assert result.statuses == {name: SUCCEEDED for name in ALL_TASKS} | {CLEANUP: SKIPPED}, result.output
    commands = [c["argv"][0] for c in calls(log)]  # build-push beside download and compress (issue 14)
    assert commands[0] == "validate"
    assert sorted(commands[1:]) == ["build-push", "compress", "download", "register"]
    assert commands.index("download") < commands.index("compress")
    assert commands.index("build-push") < commands.index("register")

    result = executor.run(params | {"SKIP_TASKS": ",".join(STAGE_NAMES)}, {"shared-workspace": workspace})
    assert result.tasks[VALIDATE].results == {name: "false" for name in STAGE_NAMES}
    assert result.statuses == {VALIDATE: SUCCEEDED} | {name: SKIPPED for name in STAGE_NAMES}
    assert result.results == {}


# -- download-model and build-and-push side by side (issue 14) -------------------------------


@pytest.mark.slow
def test_without_compression_build_and_push_runs_beside_download_model(
    run_pipeline: Callable[..., Run], oci_registry: Any, busybox_layout: Path, tmp_path: Path
) -> None:
    """Proven by order: the stand-in Hub holds the last shard back until the registry has the
    first shard's layer, so the run completes only if build-and-push pushed while download-model
    was still downloading."""
    from modelcar.oci.layers import plan_layers
    from modelcar.oci.model_dir import scan_model

    from .helpers.fast_hub import FastHub

    first, last = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    files = {"config.json": b'{"a": 1}', first: bytes(range(256)) * 80_000, last: b"\x07" * 18_000_000}
    model = write_model_dir(tmp_path / "model", files)
    (plan,) = [p for p in plan_layers(scan_model(model)) if p.title == first]
    layer = "sha256:" + hashlib.sha256(b"".join(plan.stream().chunks())).hexdigest()
    repo = "tekton/side-by-side"
    hub = FastHub(tmp_path / "hub").start()
    try:
        hub.create_repo("acme/sharded", files)
        hub.hold(last, lambda: httpx.head(f"http://{oci_registry.host}/v2/{repo}/blobs/{layer}").status_code == 200)
        run = run_pipeline(
            {
                "HUGGINGFACE_MODEL": "acme/sharded",
                "OCI_IMAGE": f"{oci_registry.host}/{repo}:1",
                "BASE_IMAGE": f"oci:{busybox_layout}",
                "TLS_VERIFY": "false",
            },
            env={"HF_ENDPOINT": hub.endpoint},
        )
    finally:
        hub.stop()
    expect_statuses(run, compress_model=SKIPPED, register_model=SKIPPED)
    assert hub.released[last], "the last shard went out on the time limit, not after the first layer arrived"
    download, push = run.result.tasks[DOWNLOAD], run.result.tasks[BUILD_PUSH]
    assert push.started < download.finished  # the two tasks ran at the same time
    digest, pushed = image_files(oci_registry.host, repo, "1")
    assert model_files_in(pushed) == files
    record = run.run_json()
    assert record["stages"][DOWNLOAD]["status"] == record["stages"][BUILD_PUSH]["status"] == "succeeded"
    assert record["image"]["digest"] == digest and record["source"]["repo"] == "acme/sharded"
