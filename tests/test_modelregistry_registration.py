"""Idempotent registration against the spec-following fake Model Registry (in-process)."""

from __future__ import annotations

import dataclasses

import pytest

from modelcar.modelregistry import ModelRegistryClient, Registration, VersionConflict, metadata, register
from tests.helpers.fake_registry import FAST
from tests.helpers.model_registry_server import ApiError, FakeModelRegistry

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
MANAGED = frozenset({"source", "compressed", "image_digest", "bits", "scheme"})


def wanted(version: str = "1.0.0", digest: str = DIGEST_A, **properties: object) -> Registration:
    props = {"source": "huggingface", "compressed": True, "bits": 4, "scheme": "gptq", "image_digest": digest}
    props.update(properties)
    return Registration(
        model_name="granite",
        version_name=version,
        uri=f"oci://registry.example.com/org/granite@{digest}",
        image_digest=digest,
        version_properties={k: v for k, v in props.items() if v is not None},
        managed_properties=MANAGED,
        model_format_name="safetensors",
        model_format_version="1",
        source_kind="huggingface",
        source_name="org/granite",
        description="A small model.",
        license="apache-2.0",
    )


def run(server: FakeModelRegistry, what: Registration, overwrite: bool = False, **kwargs: object):  # type: ignore[no-untyped-def]
    retry = dataclasses.replace(FAST, attempts=3)  # three tries: a burst of three 500s exhausts them
    with ModelRegistryClient(server.url, retry=retry, **kwargs) as client:  # type: ignore[arg-type]
        return register(client, what, overwrite=overwrite)


def test_first_registration_creates_model_version_and_live_artifact(model_registry) -> None:
    result = run(model_registry, wanted())
    assert result.actions == {"registered_model": "created", "model_version": "created", "model_artifact": "created"}
    [model] = model_registry.registered_models.values()
    assert model["name"] == "granite" and model["license"] == "apache-2.0"
    assert model["description"] == "A small model."
    [version] = model_registry.versions_of(model["id"])
    assert version["name"] == "1.0.0" and version["state"] == "LIVE"
    props = version["customProperties"]
    assert props["compressed"] == {"metadataType": "MetadataBoolValue", "bool_value": True}
    assert props["bits"] == {"metadataType": "MetadataIntValue", "int_value": "4"}
    assert props["image_digest"] == metadata.encode(DIGEST_A)
    [artifact] = model_registry.artifacts_of(version["id"])
    assert artifact["uri"] == f"oci://registry.example.com/org/granite@{DIGEST_A}"
    assert artifact["state"] == "LIVE" and artifact["artifactType"] == "model-artifact"
    assert (artifact["modelFormatName"], artifact["modelFormatVersion"]) == ("safetensors", "1")
    assert (artifact["modelSourceKind"], artifact["modelSourceName"]) == ("huggingface", "org/granite")
    assert (result.registered_model_id, result.model_version_id, result.model_artifact_id) == (
        model["id"],
        version["id"],
        artifact["id"],
    )


def test_the_same_registration_twice_changes_nothing(model_registry) -> None:
    first = run(model_registry, wanted())
    before = model_registry.snapshot()
    writes = len(model_registry.writes())
    again = run(model_registry, wanted())
    assert model_registry.snapshot() == before
    assert len(model_registry.writes()) == writes
    assert again.actions == {"registered_model": "found", "model_version": "unchanged", "model_artifact": "unchanged"}
    assert dataclasses.replace(again, actions={}) == dataclasses.replace(first, actions={})


def test_a_new_version_goes_under_the_same_model(model_registry) -> None:
    first = run(model_registry, wanted("1.0.0"))
    second = run(model_registry, wanted("1.1.0", DIGEST_B))
    assert second.registered_model_id == first.registered_model_id
    assert second.model_version_id != first.model_version_id
    assert len(model_registry.registered_models) == 1
    assert sorted(v["name"] for v in model_registry.model_versions.values()) == ["1.0.0", "1.1.0"]
    assert len(model_registry.artifacts) == 2


def test_the_same_version_name_under_another_model_is_another_version(model_registry) -> None:
    run(model_registry, wanted())
    run(model_registry, dataclasses.replace(wanted(), model_name="other"))
    assert len(model_registry.model_versions) == 2


def test_another_digest_for_an_existing_version_is_refused(model_registry) -> None:
    run(model_registry, wanted())
    before = model_registry.snapshot()
    with pytest.raises(VersionConflict) as caught:
        run(model_registry, wanted(digest=DIGEST_B))
    message = str(caught.value)
    assert "'granite' version '1.0.0' already exists" in message
    assert DIGEST_A in message and DIGEST_B in message and "--overwrite" in message
    assert model_registry.snapshot() == before


def test_overwrite_points_the_version_at_the_new_image(model_registry) -> None:
    first = run(model_registry, wanted())
    version_id = first.model_version_id
    # someone's own property survives; modelcar's stale compression settings do not
    props = dict(model_registry.model_versions[version_id]["customProperties"], team=metadata.encode("nlp"))
    model_registry.model_versions[version_id]["customProperties"] = props
    result = run(model_registry, wanted(digest=DIGEST_B, compressed=False, bits=None, scheme=None), overwrite=True)
    assert result.actions["model_version"] == "updated" and result.actions["model_artifact"] == "updated"
    assert result.model_artifact_id == first.model_artifact_id
    [artifact] = model_registry.artifacts_of(version_id)
    assert artifact["uri"].endswith(DIGEST_B)
    props = model_registry.model_versions[version_id]["customProperties"]
    assert props["image_digest"] == metadata.encode(DIGEST_B)
    assert props["compressed"] == metadata.encode(False)
    assert "bits" not in props and "scheme" not in props
    assert props["team"] == metadata.encode("nlp")
    assert len(model_registry.model_versions) == 1 and len(model_registry.artifacts) == 1


def test_a_version_left_without_artifact_is_completed(model_registry) -> None:
    run(model_registry, wanted())
    model_registry.attributions.clear()
    model_registry.artifacts.clear()
    result = run(model_registry, wanted())
    assert result.actions == {"registered_model": "found", "model_version": "unchanged", "model_artifact": "created"}
    assert len(model_registry.artifacts) == 1


def test_409_races_are_answered_by_reading_again(model_registry) -> None:
    run(model_registry, wanted())
    before = model_registry.snapshot()
    # Another process registered the model and version between our lookups and our creates:
    model_registry.inject(404, path="/registered_model", method="GET")
    model_registry.inject(404, path="/model_version", method="GET")
    result = run(model_registry, wanted())
    assert [e.status for e in model_registry.writes()][-2:] == [409, 409]
    assert result.actions["registered_model"] == "found" and result.actions["model_version"] == "unchanged"
    assert model_registry.snapshot() == before


def test_v1alpha3_only_server(model_registry_factory) -> None:
    server = model_registry_factory(apis=("v1alpha3",))
    result = run(server, wanted())
    assert result.api_version == "v1alpha3"
    assert len(server.registered_models) == len(server.model_versions) == len(server.artifacts) == 1
    before = server.snapshot()
    run(server, wanted())
    assert server.snapshot() == before


def test_5xx_in_the_middle_of_registration_is_retried(model_registry) -> None:
    model_registry.inject(503, times=2, method="POST", path="/model_versions")
    result = run(model_registry, wanted())
    assert result.actions["model_version"] == "created"
    assert len(model_registry.model_versions) == 1


def test_a_lost_answer_to_a_create_is_recovered_through_409(model_registry) -> None:
    """The server created the version, the answer was lost, the retry hits the taken name."""
    original = model_registry._create_version

    def create_then_fail(query, data):  # type: ignore[no-untyped-def]
        original(query, data)
        model_registry._create_version = original
        raise ApiError(503, "the answer was lost")

    model_registry._create_version = create_then_fail
    result = run(model_registry, wanted())
    assert result.actions["model_version"] == "unchanged"
    assert len(model_registry.model_versions) == 1 and len(model_registry.artifacts) == 1


def test_older_servers_answering_500_for_a_taken_name_are_handled_too(model_registry) -> None:
    run(model_registry, wanted())
    before = model_registry.snapshot()
    model_registry.inject(404, path="/registered_model", method="GET")
    model_registry.inject(500, times=3, path="/registered_models", method="POST")
    result = run(model_registry, wanted())
    assert result.actions["registered_model"] == "found"
    assert model_registry.snapshot() == before
