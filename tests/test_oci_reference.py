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
