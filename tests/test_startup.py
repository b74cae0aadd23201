"""What a command imports before it starts work: start-up is serial time in every pipeline step."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import modelcar.cli, modelcar.stages.build_push, modelcar.oci.build, modelcar.oci.upload, httpx
print(" ".join(sorted(m for m in ("pydantic", "rich", "pygments", "huggingface_hub", "torch") if m in sys.modules)))
"""


def test_build_push_imports_nothing_heavy() -> None:
    # pydantic (a quarter of a second) is not used; rich only on a terminal; httpx's CLI not at all.
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_httpx_main_still_works_after_the_cli_is_imported() -> None:
    code = (
        "import modelcar.cli, httpx\n"
        "from click.testing import CliRunner\n"
        "result = CliRunner().invoke(httpx.main, ['--help'])\n"
        "print(result.exit_code, type(httpx.main).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "Command"]


def test_importing_modelcar_as_a_library_leaves_httpx_alone() -> None:
    # Only the command line puts its placeholder for httpx._main into sys.modules (_lean_httpx).
    code = (
        "import sys\n"
        "import modelcar\n"
        "print('httpx._main' in sys.modules)\n"
        "import httpx\n"
        "print(type(httpx.main).__name__, getattr(sys.modules['httpx._main'], '__file__', None) is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "Command", "True"]
