"""The specs under tests/schemas are exact copies of the shared, published ones."""

import pytest

from tests.helpers.common import REPO_ROOT

COPIES = REPO_ROOT / "tests" / "schemas"
SHARED = REPO_ROOT.parent / "shared" / "schemas"


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/schemas next to this checkout")
def test_copies_match_the_shared_specs() -> None:
    shared = {p.relative_to(SHARED): p.read_bytes() for p in SHARED.rglob("*") if p.is_file()}
    copies = {p.relative_to(COPIES): p.read_bytes() for p in COPIES.rglob("*") if p.is_file() and p.name != "README.md"}
    assert copies == shared


def test_copies_are_there() -> None:
    assert (COPIES / "tekton.dev" / "pipeline_v1.json").is_file()
    assert (COPIES / "model-registry" / "model-registry-v1.yaml").is_file()
