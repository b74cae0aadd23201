"""Idempotent registration: registered model -> model version -> one model artifact.

Find by name or create; a 409 (someone else created it meanwhile; older servers answer 500) is
answered by reading it again. An existing version is only changed where it differs from what is wanted, so running the
same registration twice changes nothing. A version that already points at another image is an
error unless `overwrite` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import metadata
from .client import ModelRegistryClient
from .errors import Conflict, ModelRegistryApiError, VersionConflict

MODEL_ARTIFACT = "model-artifact"
LIVE = "LIVE"

Json = dict[str, Any]


@dataclass(frozen=True)
class Registration:
    """What the registry should hold once registration is done."""

    model_name: str
    version_name: str
    uri: str  # oci://host/repo@sha256:<digest>
    image_digest: str
    version_properties: Mapping[str, Any] = field(default_factory=dict)  # plain values
    managed_properties: frozenset[str] = frozenset()  # keys modelcar owns: dropped when not wanted
    model_format_name: str | None = None
    model_format_version: str | None = None
    source_kind: str | None = None
    source_name: str | None = None
    description: str | None = None
    license: str | None = None
    version_description: str | None = None

    def artifact_fields(self) -> Json:
        fields = {
            "uri": self.uri,
            "state": LIVE,
            "modelFormatName": self.model_format_name,
            "modelFormatVersion": self.model_format_version,
            "modelSourceKind": self.source_kind,
            "modelSourceName": self.source_name,
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True)
class RegistrationResult:
    api_version: str
    registered_model_id: str
    model_version_id: str
    model_artifact_id: str
    model_uri: str
    actions: dict[str, str]  # entity -> created | found | unchanged | updated


def register(
    client: ModelRegistryClient,
    wanted: Registration,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> RegistrationResult:
    say = log or (lambda _message: None)
    api_version = client.connect()
    model, model_action = _registered_model(client, wanted)
    version, version_created = _model_version(client, wanted, model["id"])
    artifacts = _model_artifacts(client, version["id"])
    if not version_created:
        _check_same_image(wanted, version, artifacts, overwrite, say)
    version_action = "created" if version_created else _reconcile_version(client, wanted, version, say)
    artifact, artifact_action = _artifact(client, wanted, version["id"], artifacts, say)
    return RegistrationResult(
        api_version=api_version,
        registered_model_id=model["id"],
        model_version_id=version["id"],
        model_artifact_id=artifact["id"],
        model_uri=artifact.get("uri") or wanted.uri,
        actions={"registered_model": model_action, "model_version": version_action, "model_artifact": artifact_action},
    )


def _registered_model(client: ModelRegistryClient, wanted: Registration) -> tuple[Json, str]:
    found = client.find_registered_model(wanted.model_name)
    if found is not None:
        return found, "found"
    body: Json = {"name": wanted.model_name, "state": LIVE}
    if wanted.description:
        body["description"] = wanted.description
    if wanted.license:
        body["license"] = wanted.license
    try:
        return client.create_registered_model(body), "created"
    except ModelRegistryApiError as exc:
        if not _maybe_taken(exc):
            raise
        found = client.find_registered_model(wanted.model_name)
        if found is None:
            raise
        return found, "found"


def _model_version(client: ModelRegistryClient, wanted: Registration, model_id: str) -> tuple[Json, bool]:
    found = client.find_model_version(wanted.version_name, model_id)
    if found is not None:
        return found, False
    body: Json = {
        "name": wanted.version_name,
        "registeredModelId": model_id,
        "state": LIVE,
        "customProperties": metadata.encode_all(wanted.version_properties),
    }
    if wanted.version_description:
        body["description"] = wanted.version_description
    try:
        return client.create_model_version(body), True
    except ModelRegistryApiError as exc:
        if not _maybe_taken(exc):
            raise
        found = client.find_model_version(wanted.version_name, model_id)
        if found is None:
            raise
        return found, False


def _model_artifacts(client: ModelRegistryClient, version_id: str) -> list[Json]:
    return [a for a in client.model_version_artifacts(version_id) if a.get("artifactType") == MODEL_ARTIFACT]


def _check_same_image(
    wanted: Registration, version: Json, artifacts: list[Json], overwrite: bool, say: Callable[[str], None]
) -> None:
    """Refuses to repoint an existing version at another image unless overwrite is set."""
    uris = [a.get("uri") for a in artifacts if a.get("uri")]
    if wanted.uri in uris:
        return
    recorded = metadata.decode(version.get("customProperties", {}).get("image_digest") or {})
    if uris:
        current = f"image {uris[0]}"
    elif isinstance(recorded, str) and recorded and recorded != wanted.image_digest:
        current = f"image digest {recorded}"
    else:
        return  # a version without an image yet (an earlier run stopped half-way): complete it
    where = f"model {wanted.model_name!r} version {wanted.version_name!r}"
    if not overwrite:
        raise VersionConflict(
            f"{where} already exists in the Model Registry with {current}, not the image just "
            f"pushed ({wanted.uri}); choose a new MODEL_VERSION, or pass --overwrite (OVERWRITE=true) "
            "to point the existing version at the new image"
        )
    say(f"{where} pointed at {current}; updating it to {wanted.uri} (--overwrite)")


def _reconcile_version(
    client: ModelRegistryClient, wanted: Registration, version: Json, say: Callable[[str], None]
) -> str:
    current: dict[str, Any] = dict(version.get("customProperties") or {})
    desired = metadata.encode_all(wanted.version_properties)
    stale = [key for key in current if key in wanted.managed_properties and key not in desired]
    differs = [key for key, value in desired.items() if not metadata.same(current.get(key), value)]
    if version.get("state") not in (None, LIVE):
        say(f"model version {wanted.version_name!r} is {version.get('state')}; its state is left as it is")
    if not stale and not differs:
        return "unchanged"
    merged = {key: value for key, value in current.items() if key not in stale}
    merged.update(desired)
    client.update_model_version(version["id"], {"customProperties": merged})
    return "updated"


def _artifact(
    client: ModelRegistryClient,
    wanted: Registration,
    version_id: str,
    artifacts: list[Json],
    say: Callable[[str], None],
) -> tuple[Json, str]:
    if not artifacts:
        body = {"artifactType": MODEL_ARTIFACT, "name": wanted.model_name, **wanted.artifact_fields()}
        try:
            return client.add_model_version_artifact(version_id, body), "created"
        except ModelRegistryApiError as exc:
            if not _maybe_taken(exc):
                raise
            artifacts = _model_artifacts(client, version_id)
            if not artifacts:
                raise
    if len(artifacts) > 1:
        say(f"model version {wanted.version_name!r} has {len(artifacts)} model artifacts; keeping one up to date")
    artifact = _pick(artifacts, wanted)
    changes = {key: value for key, value in wanted.artifact_fields().items() if artifact.get(key) != value}
    if not changes:
        return artifact, "unchanged"
    updated = client.update_model_artifact(artifact["id"], {"artifactType": MODEL_ARTIFACT, **changes})
    return updated, "updated"


def _pick(artifacts: list[Json], wanted: Registration) -> Json:
    for artifact in artifacts:
        if artifact.get("uri") == wanted.uri:
            return artifact
    for artifact in artifacts:
        if artifact.get("name") == wanted.model_name:
            return artifact
    return artifacts[0]


def _maybe_taken(exc: ModelRegistryApiError) -> bool:
    """A create that failed because the entity exists: 409, or 5xx from servers that predate 409."""
    return isinstance(exc, Conflict) or exc.status >= 500
