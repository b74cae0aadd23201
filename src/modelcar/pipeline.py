"""Stage order, skipping, preflight checks and the run record around each stage."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path

from . import overlap
from .download_record import COMPRESS_RECORD_NAME, StageBeat
from .errors import ModelcarError, ParameterError, StageFailed, UsageError
from .oci.reference import LayoutRef
from .params import Params
from .record import RunRecord
from .stages import BUILD_PUSH, CLEANUP, COMPRESS, DOWNLOAD, REGISTER, STAGE_NAMES
from .stages.context import StageContext
from .ui import UI
from .workspace import LOCK_NAME, PUSH_LOCK_NAME, Workspace

# What a stage makes stale when it starts: its own section and those describing what later stages
# made from the model as it was, so that a result (IMAGE_DIGEST, MODEL_URI, ...) never comes from
# an earlier run, even when this one fails half-way.
INVALIDATES = {
    DOWNLOAD: ("compression", "image", "registry"),
    COMPRESS: ("compression", "image", "registry"),
    BUILD_PUSH: ("image", "registry"),
    REGISTER: ("registry",),
}

STAGE_MODULES = {
    CLEANUP: "cleanup",
    DOWNLOAD: "download",
    COMPRESS: "compress",
    BUILD_PUSH: "build_push",
    REGISTER: "register",
}


@dataclass(frozen=True)
class PlannedStage:
    name: str
    runs: bool
    reason: str = ""


def plan(params: Params, stages: tuple[str, ...] = STAGE_NAMES, explicit: bool = False) -> list[PlannedStage]:
    """Which stages run and why the others do not.

    `explicit` is for a single stage asked for by name (`modelcar compress`): SKIP_TASKS and
    COMPRESS_MODEL then do not apply, since the caller (a user or a Tekton `when`) decided.
    """
    planned = []
    for name in stages:
        if not explicit and name in params.skip:
            planned.append(PlannedStage(name, False, "listed in SKIP_TASKS"))
        elif not explicit and name == COMPRESS and not params.compress:
            planned.append(PlannedStage(name, False, "COMPRESS_MODEL is false"))
        elif name == REGISTER and not params.registry_url:
            planned.append(PlannedStage(name, False, "MODEL_REGISTRY_URL is not set"))
        else:
            planned.append(PlannedStage(name, True))
    return planned


def preflight(params: Params, planned: list[PlannedStage], workspace: Workspace) -> None:
    """Checks that need the plan, before anything is deleted, fetched or pushed (exit 2)."""
    running = {stage.name for stage in planned if stage.runs}
    if DOWNLOAD in running:
        params.require_model()
    if COMPRESS in running:
        from .compression.early import check_before_work

        check_before_work(params, workspace.model_dir, downloads=DOWNLOAD in running)
    if CLEANUP in running:
        workspace.check_cleanable()
        if (
            params.model_is_local
            and params.model
            and Path(params.model).resolve().is_relative_to(workspace.root.resolve())
        ):
            raise ParameterError(
                "HUGGINGFACE_MODEL",
                params.model,
                "a directory outside the workspace (cleanup-workspace would delete it); "
                "move it, or skip cleanup with SKIP_TASKS=cleanup-workspace",
            )
    if BUILD_PUSH in running and params.signing:
        from .signing.check import check_signing

        check_signing(params)
    if REGISTER in running and not params.model_name:
        raise ParameterError("MODEL_NAME", "", "required for register-model when there is no HUGGINGFACE_MODEL")
    if REGISTER in running:
        _check_register(params, running)


def check_environment(params: Params, planned: list[PlannedStage]) -> None:
    """Checks that the packages of the stages this process runs are installed (exit 2).

    Not part of preflight: `modelcar validate` checks parameters for every stage of a Tekton
    pipeline, but runs in the task image, while compress-model runs in an image of its own.
    """
    if any(stage.runs and stage.name == COMPRESS for stage in planned):
        from .compression.extra import check_installed

        check_installed()  # before a long download, not after it
    if any(stage.runs and stage.name == BUILD_PUSH for stage in planned):
        from .signing.check import check_signing

        check_signing(params, installed=True)


def _check_register(params: Params, running: set[str]) -> None:
    """register-model needs the image in a registry, and TLS: a plain http:// MODEL_REGISTRY_URL
    only with --no-tls-verify, since the token would travel in the clear."""
    if (params.registry_url or "").startswith("http://") and params.tls_verify:
        raise ParameterError(
            "MODEL_REGISTRY_URL",
            params.registry_url,
            "an https:// URL; plain http:// (the token in the clear) only with --no-tls-verify / TLS_VERIFY=false",
        )
    if BUILD_PUSH in running and isinstance(params.image_ref, LayoutRef):
        raise ParameterError(
            "OCI_IMAGE",
            params.image,
            "a registry reference host/repo[:tag] when MODEL_REGISTRY_URL is set (register-model "
            "needs the image in a registry, not an oci: layout); or skip register-model",
        )


def run_pipeline(params: Params, ui: UI, stages: tuple[str, ...] = STAGE_NAMES, explicit: bool = False) -> RunRecord:
    """Runs the planned stages in order under the workspace lock; returns the saved record."""
    workspace = Workspace(params.workspace)
    planned = plan(params, stages, explicit)
    preflight(params, planned, workspace)
    check_environment(params, planned)
    # A build-and-push that follows a download still running shares the workspace with it.
    following = params.follow_download and stages == (BUILD_PUSH,)
    with workspace.locked(PUSH_LOCK_NAME if following else LOCK_NAME):
        workspace.ensure()
        record = RunRecord.load(workspace.run_json)
        record.set("params", params.public_view())
        context = StageContext(params, workspace, record, ui)
        side_by_side = overlap.applies(params, {stage.name for stage in planned if stage.runs})
        for stage in planned:
            if not stage.runs:
                ui.info(f"{stage.name}: skipped ({stage.reason})")
                record.mark_stage(stage.name, "skipped", reason=stage.reason)
                record.save()
                continue
            if side_by_side and stage.name == BUILD_PUSH:
                continue  # it ran beside download-model
            try:
                if side_by_side and stage.name == DOWNLOAD:
                    overlap.run_side_by_side(context, _run_stage)
                else:
                    _run_stage(stage.name, context)
            except ModelcarError as exc:
                exc.record = record  # for --json, which prints the record whatever happened
                raise
        return record


def _run_stage(name: str, context: StageContext) -> None:
    if name != COMPRESS:
        _run_recorded(name, context)
        return
    # A build-and-push waiting beside it (Tekton) sees it alive, then its end once recorded.
    with StageBeat(context.workspace.root / COMPRESS_RECORD_NAME):
        _run_recorded(name, context)


def _run_recorded(name: str, context: StageContext) -> None:
    record = context.record
    module = importlib.import_module(f"{__package__}.stages.{STAGE_MODULES[name]}")
    context.ui.info(f"{name}: starting")
    record.drop(*INVALIDATES.get(name, ()))
    record.mark_stage(name, "running")
    record.save()
    started = time.monotonic()
    try:
        module.run(context)
    except BaseException as exc:
        seconds = round(time.monotonic() - started, 3)
        if isinstance(exc, KeyboardInterrupt):
            record.mark_stage(name, "interrupted", seconds=seconds)
            record.save()
            raise
        message = _describe(exc)
        record.mark_stage(name, "failed", seconds=seconds, error=message)
        record.save()
        if isinstance(exc, UsageError):
            raise UsageError(f"stage {name} failed: {message}") from exc
        raise StageFailed(name, exc, message) from exc
    seconds = round(time.monotonic() - started, 3)
    record.mark_stage(name, "succeeded", seconds=seconds)
    record.save()
    context.ui.info(f"{name}: done in {seconds:.1f} s")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc} ({exc.filename})"
    if isinstance(exc, ModelcarError | OSError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (MODELCAR_DEBUG=1 shows where)"
