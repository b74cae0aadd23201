"""Image references: registry references and oci: layouts with tags and digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcar.oci.reference import LayoutRef, ReferenceError, RegistryRef, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", RegistryRef("docker.io", "library/busybox")),
        ("127.0.0.1:5000/a/b:1.0", RegistryRef("127.0.0.1:5000", "a/b", "1.0")),
        (f"quay.io/a/b@{DIGEST}", RegistryRef("quay.io", "a/b", None, DIGEST)),
        ("oci:/x/layout", LayoutRef(Path("/x/layout"))),
        ("oci:/x/layout:v1", LayoutRef(Path("/x/layout"), "v1")),
        (f"oci:/x/layout@{DIGEST}", LayoutRef(Path("/x/layout"), None, DIGEST)),
        (f"oci:/x/layout:v1@{DIGEST}", LayoutRef(Path("/x/layout"), "v1", DIGEST)),
    ],
)
def test_parse(text: str, expected: object) -> None:
    assert parse_reference(text) == expected


def test_round_trip_and_pinning() -> None:
    ref = parse_reference("127.0.0.1:5000/a/b:1")
    assert str(ref.with_digest(DIGEST)) == f"127.0.0.1:5000/a/b@{DIGEST}"
    layout = parse_reference("oci:/x/out:latest")
    assert str(layout.with_digest(DIGEST)) == f"oci:/x/out@{DIGEST}"
    assert parse_reference(str(layout.with_digest(DIGEST))) == LayoutRef(Path("/x/out"), None, DIGEST)


@pytest.mark.parametrize("text", ["", "a/UPPER", "a/b:bad tag", "oci:", f"oci:@{DIGEST}", "a@sha256:123"])
def test_bad(text: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", RegistryRef("docker.io", "library/busybox")),
        ("quay.io/me/model:1.0.0", RegistryRef("quay.io", "me/model", "1.0.0")),
        ("localhost:5000/a/b/c", RegistryRef("localhost:5000", "a/b/c")),
        ("127.0.0.1:5000/repo:v1", RegistryRef("127.0.0.1:5000", "repo", "v1")),
        (f"quay.io/me/m@{DIGEST}", RegistryRef("quay.io", "me/m", None, DIGEST)),
        (f"quay.io/me/m:t@{DIGEST}", RegistryRef("quay.io", "me/m", "t", DIGEST)),
        ("me/model", RegistryRef("docker.io", "me/model")),
        ("index.docker.io/me/model", RegistryRef("docker.io", "me/model")),
        ("reg.example.com/a__b/c-d.e:V_1.2-x", RegistryRef("reg.example.com", "a__b/c-d.e", "V_1.2-x")),
        ("oci:./image", LayoutRef(Path("./image"))),
        ("oci:/tmp/x:v2", LayoutRef(Path("/tmp/x"), "v2")),
    ],
)
def test_valid_references(text: str, expected: object) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " quay.io/a",
        "quay.io/Upper/case",
        "quay.io/a:bad:tag",
        "quay.io/a@sha256:123",
        f"quay.io/a@sha256:{'A' * 64}",
        "quay.io/-a",
        "quay.io/a//b",
        "quay.io/a:" + "t" * 129,
        "bad_host.io:port/a",
        "oci:",
        "quay.io/" + "a" * 260,
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(text)


def test_str_round_trip() -> None:
    ref = parse_reference(f"quay.io/me/m:t@{DIGEST}")
    assert str(ref) == f"quay.io/me/m:t@{DIGEST}"
    assert isinstance(ref, RegistryRef)
    assert ref.reference == DIGEST
    assert str(ref.with_digest(DIGEST)) == f"quay.io/me/m@{DIGEST}"
