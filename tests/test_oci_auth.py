"""Auth files (docker config, containers auth.json, .dockerconfigjson) and WWW-Authenticate challenges."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from modelcar.errors import UsageError
from modelcar.oci.auth import find_credentials, parse_challenge


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_most_specific_entry_wins(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "quay.io": {"auth": _auth("any", "p1")},
                    "quay.io/team": {"auth": _auth("team", "p2")},
                    "https://index.docker.io/v1/": {"auth": _auth("hub", "p3")},
                }
            }
        )
    )
    assert find_credentials("quay.io", "team/model", path).username == "team"  # type: ignore[union-attr]
    assert find_credentials("quay.io", "other/model", path).username == "any"  # type: ignore[union-attr]
    assert find_credentials("docker.io", "library/busybox", path).username == "hub"  # type: ignore[union-attr]
    assert find_credentials("ghcr.io", "x/y", path) is None


def test_default_files_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"auths": {"reg.example": {"auth": _auth("d", "x")}}}))
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(
        json.dumps({"auths": {"other.example": {"username": "c", "password": "y"}}})
    )
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert find_credentials("reg.example", "a/b", None).username == "d"  # type: ignore[union-attr]
    assert find_credentials("other.example", "a/b", None).password == "y"  # type: ignore[union-attr]


def test_bad_files_are_usage_errors_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        find_credentials("quay.io", "a/b", path)
    path.write_text(json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(b"n0-colon-s3cret").decode()}}}))
    with pytest.raises(UsageError) as info:
        find_credentials("quay.io", "a/b", path)
    assert "s3cret" not in str(info.value)
    with pytest.raises(UsageError, match="does not exist"):
        find_credentials("quay.io", "a/b", tmp_path / "missing.json")


def test_entry_without_credentials_means_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "config.json"  # what Docker Desktop writes: the secrets are in its credsStore
    path.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "desktop"}))
    assert find_credentials("docker.io", "library/busybox", path) is None
    path.write_text(json.dumps({"auths": {"quay.io": {"auth": "", "email": "me@example.com"}}}))
    assert find_credentials("quay.io", "a/b", path) is None
    path.write_text(json.dumps({"auths": {"quay.io": {"auth": "not base64!"}}}))
    with pytest.raises(UsageError, match="no usable credentials"):
        find_credentials("quay.io", "a/b", path)


def test_credentials_repr_hides_the_password(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"quay.io": {"auth": _auth("me", "hunter2")}}}))
    creds = find_credentials("quay.io", "a/b", path)
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)


def test_challenges() -> None:
    bearer = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')
    assert bearer is not None and bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull"}
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate abc") is None
