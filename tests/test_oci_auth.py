"""Auth files (docker config, containers auth.json, .dockerconfigjson) and WWW-Authenticate challenges."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from modelcar.errors import UsageError
from modelcar.oci.auth import AuthFiles, find_credentials, parse_challenge


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


# ---- credential helpers (docker-credential-<name> get) ---------------------------------------

HELPER = """#!/bin/sh
# A fake docker-credential helper: logs what it was asked, answers from a table.
[ "$1" = get ] || {{ echo "unexpected command $1" >&2; exit 2; }}
read -r server
echo "$server" >> "{log}"
case "$server" in
  quay.io) echo '{{"ServerURL":"quay.io","Username":"robot","Secret":"helper-s3cret"}}' ;;
  https://index.docker.io/v1/) echo '{{"ServerURL":"hub","Username":"<token>","Secret":"refresh-t0ken"}}' ;;
  broken.example) echo "the keychain is locked" >&2; exit 1 ;;
  garbled.example) echo "not json" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`docker-credential-fake` on PATH; returns the file listing the servers it was asked for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "helper.log"
    program = bin_dir / "docker-credential-fake"
    program.write_text(HELPER.format(log=log))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def test_cred_helpers_entry_asks_its_program_first(tmp_path: Path, helper_log: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"auths": {"quay.io": {"auth": _auth("inline", "p")}}, "credHelpers": {"quay.io": "fake"}})
    )
    creds = find_credentials("quay.io", "team/model", path)
    assert creds is not None and (creds.username, creds.password) == ("robot", "helper-s3cret")
    assert helper_log.read_text().split() == ["quay.io"]
    assert "helper-s3cret" not in repr(creds)


def test_creds_store_serves_registries_without_inline_credentials(tmp_path: Path, helper_log: Path) -> None:
    path = tmp_path / "config.json"  # Docker Desktop's shape: empty entries, secrets in the store
    path.write_text(
        json.dumps(
            {
                "auths": {"https://index.docker.io/v1/": {}, "inline.example": {"auth": _auth("me", "x")}},
                "credsStore": "fake",
            }
        )
    )
    hub = find_credentials("docker.io", "library/busybox", path)
    assert hub is not None and hub.identity_token == "refresh-t0ken" and hub.username == ""
    inline = find_credentials("inline.example", "a/b", path)
    assert inline is not None and inline.username == "me"  # inline credentials win over the store
    assert find_credentials("elsewhere.example", "a/b", path) is None  # "credentials not found"
    assert helper_log.read_text().split() == ["https://index.docker.io/v1/", "elsewhere.example"]


def test_helper_failures_are_usage_errors_naming_the_helper(tmp_path: Path, helper_log: Path) -> None:
    path = tmp_path / "config.json"
    helpers = {"broken.example": "fake", "garbled.example": "fake", "missing.example": "absent"}
    path.write_text(json.dumps({"credHelpers": helpers}))
    with pytest.raises(
        UsageError, match=r"docker-credential-fake .*failed for broken\.example: the keychain is locked"
    ):
        find_credentials("broken.example", "a/b", path)
    with pytest.raises(UsageError, match="not its JSON"):
        find_credentials("garbled.example", "a/b", path)
    with pytest.raises(UsageError, match=r"docker-credential-absent .*is not installed or not on PATH"):
        find_credentials("missing.example", "a/b", path)


def test_a_missing_creds_store_program_means_anonymous(tmp_path: Path, helper_log: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "desktop"}))
    assert find_credentials("docker.io", "library/busybox", path) is None


def test_a_credential_helper_is_asked_once_per_server_whatever_the_repositories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base's repository and the destination's, on one registry, in either order: the helper
    answers for the server, so the keychain asks it once."""
    asked = tmp_path / "asked"
    helper = tmp_path / "bin" / "docker-credential-counting"
    helper.parent.mkdir()
    helper.write_text(
        f'#!/bin/sh\nread -r server; echo "$1 $server" >> "{asked}"\n'
        'printf \'{"ServerURL": "%s", "Username": "me", "Secret": "s3cret"}\' "$server"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:/usr/bin:/bin")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {}, "credHelpers": {"reg.test:5000": "counting"}}))
    keychain = AuthFiles(config)
    for repository in ("base/busybox", "team/model", "base/busybox"):
        creds = keychain.resolve("reg.test:5000", repository)
        assert creds is not None and (creds.username, creds.password) == ("me", "s3cret")
    assert asked.read_text().split() == ["get", "reg.test:5000"]
    assert AuthFiles(config).resolve("reg.test:5000", "team/model") is not None  # another keychain asks again
    assert asked.read_text().split() == ["get", "reg.test:5000"] * 2
