"""The register-model stage: the pushed image as model / version / artifact in the Model Registry."""

from __future__ import annotations

from ..modelregistry import ModelRegistryClient, register
from ..modelregistry.describe import registration_for_run
from .context import StageContext


def run(context: StageContext) -> None:
    params, record, ui = context.params, context.record, context.ui
    assert params.registry_url and params.model_name  # the plan and preflight make sure of both
    wanted = registration_for_run(
        model_name=params.model_name,
        model_version=params.model_version,
        model_dir=context.workspace.model_dir,
        record=record.data,
        fallback_source=_source_from_params(context),
    )
    token = params.registry_token.get_secret_value() if params.registry_token else None
    with ModelRegistryClient(
        params.registry_url,
        token=token,
        api_version=params.registry_api,
        tls_verify=params.tls_verify,
        ca_bundle=params.ca_bundle,
        log=ui.warn,
    ) as client:
        result = register(client, wanted, overwrite=params.overwrite, log=ui.warn)
        url = client.display_url
    record.set(
        "registry",
        {
            "url": url,
            "api_version": result.api_version,
            "model_name": wanted.model_name,
            "model_version": wanted.version_name,
            "registered_model_id": result.registered_model_id,
            "model_version_id": result.model_version_id,
            "model_artifact_id": result.model_artifact_id,
            "model_uri": result.model_uri,
            "actions": result.actions,
        },
    )
    actions = result.actions
    ui.info(
        f"register-model: model {wanted.model_name!r} (id {result.registered_model_id}, "
        f"{actions['registered_model']}), version {wanted.version_name!r} (id {result.model_version_id}, "
        f"{actions['model_version']}), artifact id {result.model_artifact_id} ({actions['model_artifact']}) "
        f"-> {result.model_uri} [{url}, API {result.api_version}]"
    )


def _source_from_params(context: StageContext) -> dict[str, object]:
    """Where the model came from when run.json has no source section (files brought by the user)."""
    params = context.params
    if not params.model:
        return {}
    if params.model_is_local:
        return {"kind": "local", "path": params.model}
    return {"kind": "huggingface", "repo": params.model, "revision": params.revision, "sha": None}
