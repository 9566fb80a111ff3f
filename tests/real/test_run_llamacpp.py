"""`sollol run` through the router against real llama-server backends (the tiny model)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.harness.llama import ServerGroup, ServerProcess
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real

PROMPT = "Tell me about clusters"


def direct_greedy(server: ServerProcess, prompt: str, n: int) -> str:
    """What llama-server itself answers: the chat template applied, then greedy decoding."""

    def post(path: str, body: dict) -> dict:  # type: ignore[type-arg]
        request = urllib.request.Request(
            server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)  # type: ignore[no-any-return]

    templated = post("/apply-template", {"messages": [{"role": "user", "content": prompt}]})["prompt"]
    answer = post("/completion", {"prompt": templated, "n_predict": n, "temperature": 0, "top_k": 1, "seed": 1})
    return answer["content"]  # type: ignore[no-any-return]


def manifest(tmp_path: Path, servers: list[ServerProcess], *, extra: str = "") -> Path:
    path = tmp_path / "cluster.yaml"
    lines = ["name: local", "backends:"]
    lines += [f"  - {{name: ls{i}, kind: llamacpp, address: {s.host}, port: {s.port}}}" for i, s in enumerate(servers)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def two_servers(llama_servers: ServerGroup, tiny_gguf: Path) -> list[ServerProcess]:
    return [llama_servers.llama_server(tiny_gguf, slots=2, extra=["--alias", "tiny"]) for _ in range(2)]


def test_run_streams_the_same_greedy_tokens_as_a_direct_request(
    two_servers: list[ServerProcess], tmp_path: Path
) -> None:
    path = manifest(tmp_path, two_servers)
    expected = direct_greedy(two_servers[0], PROMPT, 24)
    assert len(expected.split()) > 3, "the tiny model should produce varied text"
    result = invoke("run", "tiny", PROMPT, "--temperature", "0", "--seed", "1", "--num-predict", "24", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected + "\n"
    stats = result.stderr.strip().splitlines()[-1]
    assert stats.startswith(("ls0 · distribute · first token", "ls1 · distribute · first token"))
    assert stats.endswith("tokens/s · 24 tokens")


def test_run_json_gives_the_final_ollama_object(two_servers: list[ServerProcess], tmp_path: Path) -> None:
    path = manifest(tmp_path, two_servers)
    result = invoke("run", "tiny", PROMPT, "--temperature", "0", "--num-predict", "8", "--json", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["done"] is True and data["done_reason"] == "length"
    assert data["eval_count"] == 8
    assert data["response"] == direct_greedy(two_servers[1], PROMPT, 8)
    assert isinstance(data["eval_duration"], int) and data["eval_duration"] > 0


def test_prompt_from_stdin(two_servers: list[ServerProcess], tmp_path: Path) -> None:
    path = manifest(tmp_path, two_servers)
    result = invoke("run", "tiny", "--temperature", "0", "--num-predict", "6", "-f", str(path), input=PROMPT)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == direct_greedy(two_servers[0], PROMPT, 6) + "\n"


def test_backend_killed_before_answering_is_retried_elsewhere(two_servers: list[ServerProcess], tmp_path: Path) -> None:
    path = manifest(tmp_path, two_servers)
    expected = direct_greedy(two_servers[1], PROMPT, 8)
    two_servers[0].stop()  # probes at start-up see it down; route to the other
    result = invoke("run", "tiny", PROMPT, "--temperature", "0", "--num-predict", "8", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert result.stderr.strip().splitlines()[-1].startswith("ls1 · distribute")


def test_unknown_model_and_no_backend(two_servers: list[ServerProcess], tmp_path: Path) -> None:
    path = manifest(tmp_path, two_servers)
    missing = invoke("run", "nope", "hi", "-f", str(path))
    assert missing.exit_code == 1
    assert missing.stderr == "error: model 'nope' not found on any node; see `sollol status`\n"
    for server in two_servers:
        server.stop()
    down = invoke("run", "tiny", "hi", "-f", str(path))
    assert down.exit_code == 4
    assert down.stderr == "error: no backend answers (ls0, ls1), so 'tiny' cannot run\n"
